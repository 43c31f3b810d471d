//go:build !linux

package main

// reexecSteadySysmon does nothing off Linux (the gateway's measured path is Linux's).
func reexecSteadySysmon() error { return nil }
