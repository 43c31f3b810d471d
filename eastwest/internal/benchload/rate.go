package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// rate is what each target costs at fixed, low connection rates, open loop (a connection
// starts every 1/rate seconds whatever the earlier ones do), and idle (rate 0): for every
// rate, each target in turn gets SECS of connections (TLS handshake + 32-byte echo +
// close), and its processes' CPU time (the threads' run time from
// /proc/PID/task/*/schedstat, in ns, not clock ticks) and context switches (the threads'
// voluntary and involuntary counts) over that window are printed per second and per
// connection. Where bench/11's cost phase keeps every target busy, this shows what a
// setting costs a gateway that is mostly idle (the steady sysmon: docs/benchmarks.md).
func rate(args []string) error {
	fs := flag.NewFlagSet("rate", flag.ExitOnError)
	var targets []*target
	fs.Func("target", "NAME=ADDR@PIDFILE (repeat)", func(v string) error {
		t, err := parseTarget(v)
		if err == nil && t.PIDFile == "" {
			err = fmt.Errorf("%q: want NAME=ADDR@PIDFILE (the processes to measure)", v)
		}
		targets = append(targets, t)
		return err
	})
	ratesFlag := fs.String("rates", "0,10,50,200", "connections per second, comma-separated (0: idle)")
	secs := fs.Duration("for", 20*time.Second, "time per target and rate")
	fs.Parse(args)
	if len(targets) == 0 {
		return errors.New("give at least one --target")
	}
	var rates []float64
	for _, s := range strings.Split(*ratesFlag, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r < 0 {
			return fmt.Errorf("--rates: %q is not a rate", s)
		}
		rates = append(rates, r)
	}
	for _, t := range targets {
		if err := t.loadPIDs(); err != nil {
			return err
		}
		if err := oneConn(t.AddrEcho); err != nil {
			return fmt.Errorf("%s (%s): warm-up connection: %w", t.Name, t.AddrEcho, err)
		}
	}
	fmt.Printf("Open loop, %s per target and rate, one target after the other; load average %s at the start\n\n", *secs, loadAvg())
	fmt.Println("| rate | target | conns (failed) | CPU /s | CPU /conn | ctx switches /s | ctx switches /conn | p50 | p99 |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range rates {
		for _, t := range targets {
			c0, s0, err := threadsCost(t.pids)
			if err != nil {
				return err
			}
			ok, bad, lat := openLoop(t.AddrEcho, r, *secs)
			c1, s1, err := threadsCost(t.pids)
			if err != nil {
				return err
			}
			sec := secs.Seconds()
			cpu, sw := float64(c1-c0)/1e3, float64(s1-s0) // µs, switches
			perConn := func(v float64, f string) string {
				if ok == 0 {
					return "-"
				}
				return fmt.Sprintf(f, v/float64(ok))
			}
			p50, p99 := "-", "-"
			if len(lat) > 0 {
				l50, l99 := p50p99(lat)
				p50 = fmt.Sprintf("%.3f ms", float64(l50.Microseconds())/1e3)
				p99 = fmt.Sprintf("%.3f ms", float64(l99.Microseconds())/1e3)
			}
			fmt.Printf("| %g/s | %s | %d (%d) | %.2f ms | %s | %.0f | %s | %s | %s |\n", r, t.Name, ok, bad,
				cpu/sec/1e3, perConn(cpu, "%.0f µs"), sw/sec, perConn(sw, "%.2f"), p50, p99)
		}
	}
	return nil
}

// openLoop starts a connection (oneConn) every 1/r seconds for d (r = 0: waits d) and
// waits for the last to end; lat holds each good connection's time, start to close.
func openLoop(addr string, r float64, d time.Duration) (ok, bad int64, lat []time.Duration) {
	if r == 0 {
		time.Sleep(d)
		return 0, 0, nil
	}
	var good, failed atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / r))
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if err := oneConn(addr); err != nil {
				failed.Add(1)
				return
			}
			el := time.Since(t0)
			good.Add(1)
			mu.Lock()
			lat = append(lat, el)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return good.Load(), failed.Load(), lat
}

// threadsCost sums, over every thread of pids, the time run on a CPU (ns, schedstat's first
// field) and the context switches (voluntary + involuntary).
func threadsCost(pids []int) (ns, switches int64, err error) {
	for _, pid := range pids {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		if err != nil || len(tasks) == 0 {
			return 0, 0, fmt.Errorf("pid %d: no tasks", pid)
		}
		for _, t := range tasks {
			b, err := os.ReadFile(t + "/schedstat")
			if err != nil {
				continue // the thread ended meanwhile
			}
			if f := strings.Fields(string(b)); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				ns += n
			}
			st, err := os.ReadFile(t + "/status")
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(st), "\n") {
				if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					switches += n
				}
			}
		}
	}
	return ns, switches, nil
}
