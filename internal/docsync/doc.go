// Package docsync keeps the values the project's documents quote in step
// with the code. A package's test renders, from its own constants, the
// phrases a document states them in (Dur and Size write them the way the
// documents do: "10 s", "500 ms", "4 MiB") and Check fails, naming the
// document and the phrase, when the document no longer says so: either the
// value changed and the document did not follow, or the document was
// reworded and the test must follow.
//
// It is used by tests only; it reads files relative to the module root.
package docsync
