package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Exit statuses of detour. With `-- CMD` (intercept, run, shell) detour
// exits with CMD's own status instead, whatever it is.
const (
	ExitOK      = 0 // done
	ExitRuntime = 1 // the cluster, the daemon, the network or a file said no
	ExitUsage   = 2 // the command line is wrong; nothing was changed
)

// ErrUsage marks an error in the command line itself: an unknown command or
// flag, a missing or malformed argument, flags that contradict each other.
// Such errors are found before detour changes anything, and exit with
// ExitUsage. Check with errors.Is.
var ErrUsage = errors.New("usage error")

// ExitCode is returned when detour must exit with a given status, e.g. the
// status of the command run with `detour intercept ... -- CMD`.
type ExitCode int

func (e ExitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageError is an error in the command line: it is ErrUsage and its cause.
type usageError struct{ err error }

func (e usageError) Error() string   { return e.err.Error() }
func (e usageError) Unwrap() []error { return []error{ErrUsage, e.err} }

// usage marks err as an error in the command line (nil stays nil).
func usage(err error) error {
	if err == nil || errors.Is(err, ErrUsage) {
		return err
	}
	return usageError{err}
}

// usagef is usage(fmt.Errorf(format, args...)).
func usagef(format string, args ...any) error { return usage(fmt.Errorf(format, args...)) }

// ExitStatus is the status detour exits with after err: CMD's own for an
// ExitCode, ExitUsage for an error in the command line, else ExitRuntime.
func ExitStatus(err error) int {
	var code ExitCode
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &code):
		return int(code)
	case errors.Is(err, ErrUsage):
		return ExitUsage
	}
	return ExitRuntime
}

// exitCodesHelp is the part of the root command's --help about exit statuses.
const exitCodesHelp = `Exit status: 0 done; 1 the cluster, the daemon, the network or a file
refused (see docs/troubleshooting.md); 2 the command line is wrong (an
unknown command or flag, a missing or malformed argument, flags that
conflict): nothing was changed, fix it and retry. With -- CMD, detour exits
with CMD's own status (128+N when a signal N ended it).`

// Main runs detour with args (without the program name) and returns the
// status to exit with; errors are printed to stderr as "detour: MESSAGE".
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	return execute(ctx, root, stderr)
}

// execute runs the command tree. Cobra finds every error of its own (an
// unknown command or flag, a flag's malformed value, a missing required
// flag, the wrong number of arguments) before it calls a command's RunE:
// an error returned before any RunE started is a usage error. A RunE marks
// its own usage errors with usage().
func execute(ctx context.Context, root *cobra.Command, stderr io.Writer) int {
	started := false
	markStart(root, &started)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && !started {
		err = usage(err)
	}
	status := ExitStatus(err)
	var code ExitCode
	if err == nil || errors.As(err, &code) {
		return status // CMD has spoken for itself
	}
	fmt.Fprintln(stderr, "detour:", err)
	if status == ExitUsage && !strings.Contains(err.Error(), "--help") && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return status
}

// markStart wraps the RunE of c and its subcommands so that *started is set
// once one of them begins.
func markStart(c *cobra.Command, started *bool) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			*started = true
			return run(cmd, args)
		}
	}
	for _, sub := range c.Commands() {
		markStart(sub, started)
	}
}
