//go:build unix

package adaptprocs

import (
	"syscall"
	"time"
)

// processCPU is the process's user and system CPU time so far (getrusage, RUSAGE_SELF).
func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
