package poll

import (
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Check reports whether the state is reached, a progress line to show
// while it is not ("" shows nothing), and an error that ends the wait.
type Check func(ctx context.Context) (done bool, progress string, err error)

// Result is how a wait ended when it did not succeed.
type Result struct {
	// Last is the last progress line shown ("" if none).
	Last string
}

// Until runs check at once, then every interval, until it is done or fails,
// or timeout passes, or ctx ends. A progress line that differs from the one
// before is written to out (nil: nowhere). The check's ctx carries the
// timeout.
//
// timedOut reports that the time ran out (or ctx ended): err is then the
// context's error (context.DeadlineExceeded, context.Canceled), for the
// caller to wrap in its own words. Otherwise err is the check's own error,
// as it returned it.
func Until(ctx context.Context, interval, timeout time.Duration, out io.Writer, check Check) (r Result, timedOut bool, err error) {
	var checkErr error
	err = wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		done, progress, err := check(ctx)
		if err != nil {
			checkErr = err
			return false, err
		}
		if progress != "" && progress != r.Last {
			if out != nil {
				fmt.Fprintln(out, progress)
			}
			r.Last = progress
		}
		return done, nil
	})
	switch {
	case err == nil:
		return r, false, nil
	case checkErr != nil:
		return r, false, checkErr
	}
	return r, true, err
}
