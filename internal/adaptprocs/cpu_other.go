//go:build !unix

package adaptprocs

import (
	"errors"
	"time"
)

// processCPU is not read off Unix: Run then returns this error and leaves GOMAXPROCS alone.
func processCPU() (time.Duration, error) {
	return 0, errors.New("the process's CPU time is read with getrusage, on Unix only")
}
