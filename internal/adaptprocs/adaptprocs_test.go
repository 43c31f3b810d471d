package adaptprocs

import (
	"context"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/internal/waitfor"
)

func TestDecide(t *testing.T) {
	c := Config{}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		procs, def int
		cores      float64
		lowFor     time.Duration
		want       int
	}{
		{"busy at one P goes up", 1, 4, 0.9, 0, 4},
		{"at one P, just under Up, stays", 1, 4, 0.69, 0, 1},
		{"one CPU: nothing to go up to", 1, 1, 1.0, 0, 1},
		{"quiet long enough goes down", 4, 4, 0.1, 2 * time.Second, 1},
		{"quiet, not yet long enough", 4, 4, 0.1, 1900 * time.Millisecond, 4},
		{"between Down and Up at the default stays", 4, 4, 0.5, 0, 4},
		{"busy at the default stays", 4, 4, 3.5, 0, 4},
	} {
		if got := decide(tc.procs, tc.def, tc.cores, tc.lowFor, &c); got != tc.want {
			t.Errorf("%s: decide(%d, %d, %.2f, %v) = %d, want %d", tc.name, tc.procs, tc.def, tc.cores, tc.lowFor, got, tc.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Down: 0.8, Up: 0.7},
		{Interval: time.Second, DownAfter: 100 * time.Millisecond},
		{Interval: -time.Second},
	} {
		if err := c.defaults(); err == nil {
			t.Errorf("%+v: want an error", c)
		}
	}
}

// TestRunFollowsUse drives the controller with a CPU clock the test sets: idle, it goes
// to one P; busy, back to the default; at the end the default is restored.
func TestRunFollowsUse(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: the controller has nothing to adapt")
	}
	t.Setenv("GOMAXPROCS", "") // t.Setenv restores it; unset below so Run takes control
	unsetenv(t)
	def := runtime.GOMAXPROCS(0)
	var busy atomic.Bool
	var cpu atomic.Int64
	last := time.Now()
	clock := func() (time.Duration, error) {
		now := time.Now()
		if busy.Load() {
			cpu.Add(int64(now.Sub(last))) // one core's worth
		}
		last = now
		return time.Duration(cpu.Load()), nil
	}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Interval: 10 * time.Millisecond, DownAfter: 50 * time.Millisecond, Registerer: reg, cpu: clock})
	}()
	waitfor.Cond(t, 5*time.Second, func() bool { return runtime.GOMAXPROCS(0) == 1 }, "GOMAXPROCS 1 while idle")
	busy.Store(true)
	waitfor.Cond(t, 5*time.Second, func() bool { return runtime.GOMAXPROCS(0) == def }, "GOMAXPROCS back to %d while busy", def)
	busy.Store(false)
	waitfor.Cond(t, 5*time.Second, func() bool { return runtime.GOMAXPROCS(0) == 1 }, "GOMAXPROCS 1 once idle again")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Errorf("after Run: GOMAXPROCS %d, want the default %d", got, def)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 2 {
		t.Errorf("metrics: got %d families, want meshfed_gomaxprocs and meshfed_gomaxprocs_changes_total", len(mfs))
	}
}

func TestRunLeavesAnEnvironmentSetting(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	if err := Run(context.Background(), Config{}); err != ErrFixed {
		t.Fatalf("Run with GOMAXPROCS set: %v, want ErrFixed", err)
	}
}

// unsetenv removes GOMAXPROCS for the rest of the test (after t.Setenv has saved it).
func unsetenv(t *testing.T) {
	t.Helper()
	if err := os.Unsetenv("GOMAXPROCS"); err != nil {
		t.Fatal(err)
	}
}
