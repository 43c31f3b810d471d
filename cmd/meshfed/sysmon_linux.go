package main

import (
	"os"
	"syscall"
)

// reexecSteadySysmon re-executes this process (same binary, arguments and descriptors) with
// sysmonEnv's environment, when that differs from the current one. It returns only when no
// re-execution is needed, or with the error that prevented it.
func reexecSteadySysmon() error {
	env, changed := sysmonEnv(os.Environ())
	if !changed {
		return nil
	}
	return syscall.Exec("/proc/self/exe", os.Args, env)
}
