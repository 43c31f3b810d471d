package ctxtime

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends. It reports whether the whole d passed with ctx still
// live (false: ctx ended; stop). A d of zero or less returns at once.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Poll calls cond every interval until it reports done or fails, or ctx ends (ctx's
// error). It is how code waits on a condition: with a deadline in ctx, never a bare sleep.
func Poll(ctx context.Context, every time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		done, err := cond()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
