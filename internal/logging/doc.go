// Package logging builds the one kind of logger detour's processes use:
// zap, JSON lines with ISO 8601 times, to a writer given by main. Each
// long-running part gets it passed in; nothing logs through a global.
package logging
