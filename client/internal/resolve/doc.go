// Package resolve turns what a user typed (`detour intercept NAME --port
// LOCAL[:SVCPORT] [--workload W] [-n NS] [--service S]`) into exactly one
// workload, Service, Service port and container port, or an error that names
// what was not found and lists the choices. Every function here is pure: the
// objects come in as arguments, so each rule is a table test.
package resolve
