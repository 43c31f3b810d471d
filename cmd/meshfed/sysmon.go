package main

import "strings"

// steadySchedtrace is the GODEBUG setting that keeps the Go runtime's monitor thread
// (sysmon) out of its deep sleep: with schedtrace > 0 sysmon never sleeps deeply (it must
// print the trace on time), so it polls every 20 µs at first, backing off to every 10 ms,
// and stays at 10 ms. Without it, sysmon sleeps deeply whenever every P is idle, and the
// next system call made through syscall.Syscall (each connection's close) wakes it and
// resets it to 20 µs polls: measured, 1.1-1.4 of the gateway's 3.6-4.0 context switches
// per connection under load (docs/benchmarks.md, "Per connection: the floors and the
// runtime's monitor thread"). The period is the largest schedtrace takes (ms, int32: 24.8
// days), so the trace is as good as never printed; a fatal panic prints the scheduler's
// state once more before the traceback.
const steadySchedtrace = "schedtrace=2147483647"

// sysmonEnv is environ with steadySchedtrace added to GODEBUG (the first one: the one the
// runtime reads), and whether that changed anything: a GODEBUG that already sets
// schedtrace (e.g. schedtrace=0, the runtime's default behaviour) is left as it is.
func sysmonEnv(environ []string) ([]string, bool) {
	for i, kv := range environ {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			continue
		}
		for _, s := range strings.Split(v, ",") {
			if strings.HasPrefix(strings.TrimSpace(s), "schedtrace=") {
				return environ, false
			}
		}
		out := append([]string(nil), environ...)
		if strings.TrimSpace(v) == "" {
			out[i] = "GODEBUG=" + steadySchedtrace
		} else {
			out[i] = "GODEBUG=" + v + "," + steadySchedtrace
		}
		return out, true
	}
	return append(append([]string(nil), environ...), "GODEBUG="+steadySchedtrace), true
}
