package main

import (
	"slices"
	"testing"
)

func TestSysmonEnv(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
		changed  bool
	}{
		{[]string{"A=1"}, []string{"A=1", "GODEBUG=" + steadySchedtrace}, true},
		{[]string{"GODEBUG=gctrace=1", "B=2"}, []string{"GODEBUG=gctrace=1," + steadySchedtrace, "B=2"}, true},
		{[]string{"GODEBUG="}, []string{"GODEBUG=" + steadySchedtrace}, true},
		// Set by the operator (0: the runtime's default behaviour): left alone.
		{[]string{"GODEBUG=schedtrace=0"}, []string{"GODEBUG=schedtrace=0"}, false},
		{[]string{"GODEBUG=gctrace=1, schedtrace=1000"}, []string{"GODEBUG=gctrace=1, schedtrace=1000"}, false},
		// After the re-execution: nothing more to do.
		{[]string{"GODEBUG=" + steadySchedtrace}, []string{"GODEBUG=" + steadySchedtrace}, false},
		// The runtime reads the first GODEBUG: that one is the one completed.
		{[]string{"GODEBUG=x=1", "GODEBUG=schedtrace=5"}, []string{"GODEBUG=x=1," + steadySchedtrace, "GODEBUG=schedtrace=5"}, true},
	} {
		in := slices.Clone(tc.in)
		got, changed := sysmonEnv(in)
		if changed != tc.changed || !slices.Equal(got, tc.want) {
			t.Errorf("sysmonEnv(%q) = %q, %v; want %q, %v", tc.in, got, changed, tc.want, tc.changed)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("sysmonEnv modified its argument: %q", in)
		}
	}
}
