package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ---------------------------------------------------------------- cost: fixed work, counted

// cost drives every target with the same fixed work (N connections, B bytes) in rounds
// that interleave the targets, and counts what each costs in figures that a loaded machine
// moves little: the proxy's CPU time per connection and per GB, and (with perf) its system
// calls and context switches per connection and per GB, which do not depend on the load at
// all. The machine column (load generator, backends, proxies, kernel threads; minus direct)
// is the same as run's. Medians over the rounds.
func cost(args []string) error {
	fs := flag.NewFlagSet("cost", flag.ExitOnError)
	var targets []*target
	fs.Func("target", "NAME=ADDR[@PIDFILE] (repeat; the first is the direct baseline)", func(v string) error {
		t, err := parseTarget(v)
		targets = append(targets, t)
		return err
	})
	nConns := fs.Int("conns", 3000, "connections per target per round")
	conc := fs.Int("conc", 16, "concurrent clients")
	bulkMB := fs.Int("bulk-mb", 2000, "MB sent per target per round (0: no bulk phase)")
	streams := fs.Int("streams", 4, "parallel bulk streams")
	rounds := fs.Int("rounds", 5, "rounds interleaving the targets")
	usePerf := fs.Bool("perf", true, "count system calls and context switches with perf stat (when it runs)")
	work := fs.String("work", "tls", "each connection's work: tls (a TLS 1.3 handshake and a 32-byte echo) or replay (the same bytes each way, no cryptography at the ends: replay.go)")
	kfloor := fs.Bool("kernel-floor", false, "also measure, in each round, the kernel's share of the second TCP connection a relay adds (kernelFloor)")
	var extraPIDs []int
	fs.Func("account-pid", "another process the machine figures count (the backends); repeat", func(v string) error {
		n, err := strconv.Atoi(v)
		extraPIDs = append(extraPIDs, n)
		return err
	})
	fs.Parse(args)
	if len(targets) < 2 {
		return errors.New("give the direct baseline and at least one proxy with --target")
	}
	one := oneConn
	switch *work {
	case "tls":
	case "replay":
		one = oneReplay
	default:
		return fmt.Errorf("--work %q: want tls or replay", *work)
	}
	for _, t := range targets {
		if err := t.loadPIDs(); err != nil {
			return err
		}
	}
	if *usePerf {
		if err := exec.Command("perf", "stat", "-e", "raw_syscalls:sys_enter", "-x,", "true").Run(); err != nil {
			fmt.Fprintln(os.Stderr, "note: perf stat with raw_syscalls:sys_enter does not run here; no system call counts:", err)
			*usePerf = false
		}
	}
	acct := []int{os.Getpid()}
	for _, t := range targets {
		acct = append(acct, t.pids...)
	}
	acct = append(acct, extraPIDs...)
	for _, t := range targets {
		if err := one(t.AddrEcho); err != nil {
			return fmt.Errorf("%s (%s): warm-up connection: %w", t.Name, t.AddrEcho, err)
		}
	}
	type fig struct{ proxyUS, machUS, sys, cs, rate float64 }
	conns := make([][]fig, len(targets))
	bulks := make([][]fig, len(targets))
	var kfl []fig
	var errs atomic.Int64
	// others is the CPU of processes outside the benchmark (the whole machine's, /proc/stat,
	// less what benchCPU counts) while measuring: printed, so that a reader knows whether
	// the machine column was read on a quiet machine.
	var others, span time.Duration
	measure := func(t *target, work func() float64) (fig, error) {
		var pc *perfCounter
		if *usePerf && len(t.pids) > 0 {
			var err error
			if pc, err = startPerf(t.pids); err != nil {
				return fig{}, err
			}
		}
		p0, _ := readProc(t.pids)
		w0, m0 := machineCPU(), benchCPU(acct)
		t0 := time.Now()
		units := work()
		el := time.Since(t0)
		w1, m1 := machineCPU(), benchCPU(acct)
		p1, _ := readProc(t.pids)
		others += (w1 - w0) - (m1 - m0)
		span += el
		f := fig{proxyUS: float64((p1.cpu - p0.cpu).Microseconds()) / units, machUS: float64((m1 - m0).Microseconds()) / units,
			rate: units / el.Seconds()}
		if pc != nil {
			sys, cs, err := pc.stop()
			if err != nil {
				return fig{}, err
			}
			f.sys, f.cs = float64(sys)/units, float64(cs)/units
		}
		return f, nil
	}
	for round := 0; round < *rounds; round++ {
		for i, t := range targets {
			f, err := measure(t, func() float64 {
				n, e := fixedConns(t.AddrEcho, *conc, *nConns, one)
				errs.Add(e)
				return float64(n)
			})
			if err != nil {
				return err
			}
			conns[i] = append(conns[i], f)
		}
		if *kfloor {
			m0 := benchCPU(acct)
			t0 := time.Now()
			cpu, cs, sys, err := kernelFloor(*nConns)
			if err != nil {
				return fmt.Errorf("kernel floor: %w", err)
			}
			el := time.Since(t0)
			m1 := benchCPU(acct)
			n := float64(*nConns)
			kfl = append(kfl, fig{proxyUS: float64(cpu.Microseconds()) / n, machUS: float64((m1 - m0).Microseconds()) / n,
				sys: float64(sys) / n, cs: float64(cs) / n, rate: n / el.Seconds()})
		}
		if *bulkMB > 0 {
			for i, t := range targets {
				f, err := measure(t, func() float64 {
					n, err := fixedBulk(t.AddrBulk, *streams, int64(*bulkMB)<<20)
					if err != nil {
						fmt.Fprintf(os.Stderr, "bulk %s: %v\n", t.Name, err)
						errs.Add(1)
					}
					return float64(n) / 1e9 // per GB
				})
				if err != nil {
					return err
				}
				bulks[i] = append(bulks[i], f)
			}
		}
		fmt.Fprintf(os.Stderr, "round %d/%d done (load average %s)\n", round+1, *rounds, loadAvg())
	}
	med := func(fs []fig, get func(fig) float64) float64 {
		v := make([]float64, len(fs))
		for i, f := range fs {
			v[i] = get(f)
		}
		return median(v)
	}
	// Added machine CPU: per round, minus direct's of the same round, then the median.
	addedRounds := func(all [][]fig, i int) []float64 {
		v := make([]float64, len(all[i]))
		for r := range all[i] {
			v[r] = all[i][r].machUS - all[0][r].machUS
		}
		return v
	}
	added := func(all [][]fig, i int) float64 { return median(addedRounds(all, i)) }
	// spread is the range of the rounds' added figures: the median alone hides how far
	// apart the rounds were, which on a shared 2-core machine decides whether a ratio holds.
	spread := func(all [][]fig, i int) string {
		v := addedRounds(all, i)
		sort.Float64s(v)
		return fmt.Sprintf("%+.0f to %+.0f", v[0], v[len(v)-1])
	}
	find := func(prefix string) int {
		for i, t := range targets {
			if strings.HasPrefix(strings.ToLower(t.Name), prefix) {
				return i
			}
		}
		return -1
	}
	hap, ngx := find("haproxy"), find("nginx")
	ratio := func(a float64, i int, get func(int) float64) string {
		if i < 0 || get(i) <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", a/get(i))
	}
	print := func(title, unit string, all [][]fig, scale float64) {
		fmt.Printf("%s\n\n", title)
		fmt.Printf("| target | rate | proxy CPU %s | syscalls %s | ctx switches %s | added machine CPU %s | rounds' range | proxy ×HAProxy | proxy ×nginx | added ×HAProxy | added ×nginx |\n", unit, unit, unit, unit)
		fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
		proxy := func(i int) float64 { return med(all[i], func(f fig) float64 { return f.proxyUS }) }
		add := func(i int) float64 { return added(all, i) }
		for i, t := range targets {
			rate := med(all[i], func(f fig) float64 { return f.rate })
			if i == 0 {
				fmt.Printf("| %s | %.0f | - | - | - | (machine %.0f µs) | - | - | - | - | - |\n", t.Name, rate*scale,
					med(all[i], func(f fig) float64 { return f.machUS }))
				continue
			}
			sys, cs := "-", "-"
			if *usePerf {
				sys = fmt.Sprintf("%.1f", med(all[i], func(f fig) float64 { return f.sys }))
				cs = fmt.Sprintf("%.2f", med(all[i], func(f fig) float64 { return f.cs }))
			}
			fmt.Printf("| %s | %.0f | %.0f µs | %s | %s | %+.0f µs | %s | %s | %s | %s | %s |\n", t.Name, rate*scale,
				proxy(i), sys, cs, add(i), spread(all, i), ratio(proxy(i), hap, proxy), ratio(proxy(i), ngx, proxy),
				ratio(add(i), hap, add), ratio(add(i), ngx, add))
		}
		fmt.Println()
	}
	fmt.Printf("%d cores, load average %s at the end; %d rounds of %d connections (concurrency %d) and %d MB (%d streams) per target; %d errors; other processes took %.2f cores on average while measuring (not counted)\n\n",
		numCPU(), loadAvg(), *rounds, *nConns, *conc, *bulkMB, *streams, errs.Load(), others.Seconds()/span.Seconds())
	title := "Per connection (rate: conn/s; TCP + TLS 1.3 handshake + 32-byte echo + close):"
	if *work == "replay" {
		title = "Per connection, replayed (rate: conn/s; TCP + the bytes of a TLS 1.3 handshake and a 32-byte echo, no cryptography at the ends + close):"
	}
	print(title, "/conn", conns, 1)
	if len(kfl) > 0 {
		// Not a target: its work is the second connection alone, so its machine CPU is
		// not taken minus direct's, and its proxy column is the thread's own CPU.
		get := func(g func(fig) float64) float64 { return med(kfl, g) }
		k := get(func(f fig) float64 { return f.proxyUS })
		proxy := func(i int) float64 { return med(conns[i], func(f fig) float64 { return f.proxyUS }) }
		fmt.Printf("Kernel floor (one more loopback TCP connection carrying the same bytes, both ends in one thread: socket, connect, accept4, 4 writes, 5 reads, 2 closes; no proxy): %.0f conn/s, %.0f µs of its thread's CPU (%s HAProxy's proxy CPU, %s nginx's), %.1f system calls, %.2f context switches, machine %.0f µs per connection\n\n",
			get(func(f fig) float64 { return f.rate }), k, ratio(k, hap, proxy), ratio(k, ngx, proxy),
			get(func(f fig) float64 { return f.sys }), get(func(f fig) float64 { return f.cs }), get(func(f fig) float64 { return f.machUS }))
	}
	if *bulkMB > 0 {
		print("Per GB (rate: MB/s; one ClientHello then raw bytes):", "/GB", bulks, 1000)
	}
	return nil
}

// parseTarget reads NAME=ADDR[@PIDFILE]; ADDR is one address for every phase, or three
// (echo,bulk,idle) separated by commas.
func parseTarget(v string) (*target, error) {
	name, rest, ok := strings.Cut(v, "=")
	if !ok {
		return nil, fmt.Errorf("%q: want NAME=ADDR[@PIDFILE]", v)
	}
	addr, pidf, _ := strings.Cut(rest, "@")
	t := &target{Name: name, AddrEcho: addr, AddrBulk: addr, AddrIdle: addr, PIDFile: pidf}
	if a := strings.Split(addr, ","); len(a) == 3 {
		t.AddrEcho, t.AddrBulk, t.AddrIdle = a[0], a[1], a[2]
	}
	return t, nil
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "\nprocessor") + 1
}

// fixedConns makes n connections (one: oneConn or oneReplay) with conc workers.
func fixedConns(addr string, conc, n int, one func(string) error) (ok, errs int64) {
	var left atomic.Int64
	left.Store(int64(n))
	var good, bad atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := one(addr); err != nil {
					bad.Add(1)
					continue
				}
				good.Add(1)
			}
		}()
	}
	wg.Wait()
	return good.Load(), bad.Load()
}

// fixedBulk sends total bytes after one ClientHello, over streams connections.
func fixedBulk(addr string, streams int, total int64) (int64, error) {
	hello := rawHello(sniBulk)
	var sent atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	per := total / int64(streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialer().Dial("tcp", addr)
			if err != nil {
				firstErr.Store(err)
				return
			}
			defer c.Close()
			if _, err := c.Write(hello); err != nil {
				firstErr.Store(err)
				return
			}
			buf := make([]byte, 256<<10)
			for left := per; left > 0; {
				// A write that makes no progress for 10 s is a stall: counted, not waited out.
				c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				n, err := c.Write(buf[:min(int64(len(buf)), left)])
				left -= int64(n)
				sent.Add(int64(n))
				if err != nil {
					firstErr.Store(fmt.Errorf("stream stalled or failed after %d of %d bytes: %w", per-left, per, err))
					return
				}
			}
			// Wait for the far end to have it all: half-close, then the sink closes.
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			io.Copy(io.Discard, c)
		}()
	}
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return sent.Load(), e
	}
	return sent.Load(), nil
}

// perfCounter is a perf stat attached to some processes, counting from when startPerf
// returns (its control fifo acknowledged "enable") until stop.
type perfCounter struct {
	cmd      *exec.Cmd
	dir, out string
}

func startPerf(pids []int) (*perfCounter, error) {
	dir, err := os.MkdirTemp("", "benchload-perf")
	if err != nil {
		return nil, err
	}
	ctl, ack := filepath.Join(dir, "ctl"), filepath.Join(dir, "ack")
	for _, f := range []string{ctl, ack} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			return nil, err
		}
	}
	ps := make([]string, len(pids))
	for i, p := range pids {
		ps[i] = strconv.Itoa(p)
	}
	pc := &perfCounter{dir: dir, out: filepath.Join(dir, "out")}
	pc.cmd = exec.Command("perf", "stat", "-x,", "-D", "-1", "--control", "fifo:"+ctl+","+ack,
		"-e", "raw_syscalls:sys_enter,context-switches", "-p", strings.Join(ps, ","), "-o", pc.out)
	if err := pc.cmd.Start(); err != nil {
		return nil, err
	}
	cf, err := os.OpenFile(ctl, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer cf.Close()
	af, err := os.OpenFile(ack, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer af.Close()
	if _, err := cf.WriteString("enable\n"); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(af).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ack") {
		return nil, fmt.Errorf("perf stat control: %q %v", line, err)
	}
	return pc, nil
}

func (pc *perfCounter) stop() (sys, cs int64, err error) {
	defer os.RemoveAll(pc.dir)
	pc.cmd.Process.Signal(os.Interrupt)
	pc.cmd.Wait()
	b, err := os.ReadFile(pc.out)
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ",")
		if len(f) < 3 {
			continue
		}
		n, perr := strconv.ParseInt(f[0], 10, 64)
		if perr != nil {
			continue
		}
		switch f[2] {
		case "raw_syscalls:sys_enter":
			sys = n
		case "context-switches":
			cs = n
		}
	}
	return sys, cs, nil
}
