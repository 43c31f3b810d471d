package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/eastwest/internal/sockmap"
)

const (
	sniEcho = "outbound_.8443_._.echo.demo.svc.cluster.local"
	sniBulk = "outbound_.8443_._.bulk.demo.svc.cluster.local"
	sniIdle = "outbound_.8443_._.idle.demo.svc.cluster.local"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchload backends|floor|relay|run|cost|rate [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "backends":
		err = backends(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	case "floor":
		err = floor(os.Args[2:])
	case "relay":
		err = relay(os.Args[2:])
	case "rate":
		err = rate(os.Args[2:])
	case "cost":
		err = cost(os.Args[2:])
	case "freeports":
		// Free loopback ports for the script's listeners (bound and released at once).
		n, _ := strconv.Atoi(os.Args[2])
		var lns []net.Listener
		for i := 0; i < n; i++ {
			ln, lerr := net.Listen("tcp", "127.0.0.1:0")
			if lerr != nil {
				err = lerr
				break
			}
			lns = append(lns, ln)
			fmt.Println(ln.Addr().(*net.TCPAddr).Port)
		}
		for _, ln := range lns {
			ln.Close()
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchload:", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------- backends

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "echo.demo.svc"},
		DNSNames: []string{"echo.demo.svc"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func backends(args []string) error {
	fs := flag.NewFlagSet("backends", flag.ExitOnError)
	echoAddr := fs.String("echo", "127.0.0.1:19001", "TLS echo server (a hello with the replay ALPN gets the replayed flights instead: replay.go)")
	sinkAddr := fs.String("sink", "127.0.0.1:19002", "raw sink: reads a hello, then discards")
	holdAddr := fs.String("hold", "127.0.0.1:19003", "raw hold: reads a hello, answers one byte, then holds")
	fs.Parse(args)
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	serve := func(addr string, h func(net.Conn)) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go h(c)
			}
		}()
		return nil
	}
	fl, err := measureFlights(cfg)
	if err != nil {
		return err
	}
	if err := serve(*echoAddr, func(c net.Conn) {
		defer c.Close()
		echoOrReplay(c, cfg, fl)
	}); err != nil {
		return err
	}
	if err := serve(*sinkAddr, func(c net.Conn) {
		defer c.Close()
		if _, err := peekHello(c); err != nil {
			return
		}
		io.Copy(io.Discard, c)
	}); err != nil {
		return err
	}
	if err := serve(*holdAddr, func(c net.Conn) {
		defer c.Close()
		if _, err := peekHello(c); err != nil {
			return
		}
		c.Write([]byte{1})
		io.Copy(io.Discard, c) // until the client closes
	}); err != nil {
		return err
	}
	fmt.Println("ready")
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
	return nil
}

// ---------------------------------------------------------------- the floor relay

// floor is the least a relay can add: for each LISTEN=TARGET pair it accepts, connects to
// TARGET, and hands both sockets to the kernel (the gateway's sockmap path: an sk_skb
// verdict redirects each socket's bytes to the other), doing nothing in user space after
// accept and connect but closing both when they end. No hello is read, no route chosen.
func floor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ExitOnError)
	var pairs [][2]string
	fs.Func("relay", "LISTEN=TARGET (repeat)", func(v string) error {
		l, t, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("%q: want LISTEN=TARGET", v)
		}
		pairs = append(pairs, [2]string{l, t})
		return nil
	})
	fs.Parse(args)
	if err := sockmap.Probe(); err != nil {
		return fmt.Errorf("the floor relay needs the sockmap path: %w", err)
	}
	r, err := sockmap.New(sockmap.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	for _, p := range pairs {
		ln, err := net.Listen("tcp", p[0])
		if err != nil {
			return err
		}
		go func(ln net.Listener, target string) {
			d := net.Dialer{KeepAlive: -1}
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					up, err := d.Dial("tcp", target)
					if err != nil {
						c.Close()
						return
					}
					if _, err := r.Splice(c.(*net.TCPConn), up.(*net.TCPConn), nil, 0, nil); err != nil {
						c.Close()
						up.Close()
					}
				}()
			}
		}(ln, p[1])
	}
	fmt.Println("ready")
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
	return nil
}

// ---------------------------------------------------------------- measuring a process

type procStat struct {
	cpu  time.Duration // utime + stime
	rss  int64         // bytes
	fds  int
	pids int
}

func readProc(pids []int) (procStat, error) {
	var s procStat
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return s, err
		}
		// Fields after the ")" of comm: state is field 3; utime 14, stime 15, rss 24 (pages).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		rss, _ := strconv.ParseInt(f[21], 10, 64)
		s.cpu += time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
		s.rss += rss * int64(os.Getpagesize())
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		s.fds += len(ents)
		s.pids++
	}
	return s, nil
}

func slabBytes() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		if k == "Slab" || k == "KernelStack" || k == "PageTables" {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			total += n << 10
		}
	}
	return total
}

// ---------------------------------------------------------------- targets and phases

type target struct {
	Name string
	// Addr serves every phase (a proxy routing by SNI); a direct baseline gives the three
	// backends instead, as AddrEcho, AddrBulk, AddrIdle.
	AddrEcho, AddrBulk, AddrIdle string
	PIDFile                      string // file holding the pids (one per line), read at each measurement
	Idle                         int    // idle connections for this target (0: --idle)
	pids                         []int
}

func (t *target) loadPIDs() error {
	t.pids = nil
	if t.PIDFile == "" {
		return nil
	}
	b, err := os.ReadFile(t.PIDFile)
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("%s: %q is not a pid", t.PIDFile, f)
		}
		t.pids = append(t.pids, n)
	}
	return nil
}

// result is one target's figures: each is the median over the rounds, and the machine
// figures are the whole machine's CPU (every process and the kernel, /proc/stat) over the
// phase; "added" is minus the direct baseline's figure of the same round.
type result struct {
	Name                   string
	LatP50, LatP99         time.Duration
	LatN                   int
	ConnsPerSec            float64
	ConnErrors             int64
	CPUPer1000Conns        time.Duration // the proxy's processes
	MachPer1000Conns       time.Duration // whole machine
	AddedPer1000Conns      time.Duration // whole machine, minus direct's
	BulkGBps               float64
	CPUPerGB               time.Duration
	MachPerGB              time.Duration
	AddedPerGB             time.Duration
	BulkErrors             int
	IdleConns              int
	RSSPerConn, FDsPerConn float64
	SlabPerConn            float64
	IdleErrors             int64
	HasProc                bool
	Rounds                 []roundFig
}

// roundFig is one round's figures for one target (kept in the JSON output).
type roundFig struct {
	LatP50, LatP99                        time.Duration
	ConnsPerSec                           float64
	CPUPer1000, MachPer1000, AddedPer1000 time.Duration
	BulkGBps                              float64
	CPUPerGB, MachPerGB, AddedPerGB       time.Duration
}

// machineCPU is the whole machine's busy CPU time so far: every field of /proc/stat's cpu
// line except idle and iowait (user, nice, system, irq, softirq, steal; guest time is
// already inside user). On a machine shared with other work it counts that work too.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait, guest, guest_nice
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// benchCPU is the CPU time of everything the benchmark involves: the given processes (this
// load generator, the backends, every proxy under test) and every kernel thread (softirq
// threads, the workqueue workers that run sockmap's redirects, ...). Softirq work done in a
// process's context is inside that process's system time (this kernel has no
// IRQ_TIME_ACCOUNTING; with it, /proc/stat's irq and softirq would have to be added). It
// is the whole machine's CPU less the other users' processes, which on a shared machine
// would otherwise swamp the figures.
func benchCPU(pids []int) time.Duration {
	s, _ := readProc(pids)
	total := s.cpu
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if len(f) < 13 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != 2 && pid != 2 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * time.Second / 100
	}
	return total
}

// p50p99 sorts l and returns its median and 99th percentile (zero for an empty l).
func p50p99(l []time.Duration) (p50, p99 time.Duration) {
	if len(l) == 0 {
		return 0, 0
	}
	slices.Sort(l)
	return l[len(l)/2], l[len(l)*99/100]
}

func median[T int64 | float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := append([]T(nil), v...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

var localSeq atomic.Uint32

// dialer spreads client connections over 127.0.0.0/8 source addresses so that TIME_WAIT
// from one phase never exhausts the ephemeral ports of the next.
func dialer() *net.Dialer {
	n := localSeq.Add(1)
	ip := net.IPv4(127, 10+byte(n/60000%200), byte(n/250%240)+1, byte(n%250)+1)
	return &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: ip}}
}

var clientTLS = &tls.Config{ServerName: sniEcho, InsecureSkipVerify: true} //nolint:gosec // benchmark client

// oneConn: TCP connect, TLS handshake, 32-byte echo, close.
func oneConn(addr string) error {
	c, err := dialer().Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, clientTLS)
	msg := []byte("0123456789abcdef0123456789abcdef")
	if _, err := tc.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(tc, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

func latency(addr string, d time.Duration, max int) ([]time.Duration, error) {
	var lat []time.Duration
	end := time.Now().Add(d)
	for time.Now().Before(end) && len(lat) < max {
		t0 := time.Now()
		if err := oneConn(addr); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

func connRate(addr string, conc int, d time.Duration) (n, errs int64, el time.Duration) {
	var ok, bad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if err := oneConn(addr); err != nil {
					bad.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return ok.Load(), bad.Load(), time.Since(start)
}

// rawHello is the ClientHello Go's TLS client sends for sni, offering alpn if given.
func rawHello(sni string, alpn ...string) []byte {
	c1, c2 := net.Pipe()
	go func() {
		tls.Client(c1, &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: true}).Handshake() //nolint:gosec
	}()
	buf := make([]byte, 16<<10)
	n, _ := c2.Read(buf)
	c2.Close()
	c1.Close()
	return buf[:n]
}

func bulk(addr string, streams int, d time.Duration) (int64, time.Duration, error) {
	hello := rawHello(sniBulk)
	var total atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	end := start.Add(d)
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
			for time.Now().Before(end) {
				n, err := c.Write(buf)
				total.Add(int64(n))
				if err != nil {
					firstErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return total.Load(), time.Since(start), e
	}
	return total.Load(), time.Since(start), nil
}

// idle opens n connections that each send a hello and wait for the backend's one-byte
// answer (so the proxy has connected both sides), then leaves them idle.
func idle(addr string, n int) ([]net.Conn, int64) {
	hello := rawHello(sniIdle)
	conns := make([]net.Conn, n)
	var errs atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialer().Dial("tcp", addr)
			if err != nil {
				errs.Add(1)
				return
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			var b [1]byte
			if _, err := c.Write(hello); err != nil {
				errs.Add(1)
				c.Close()
				return
			}
			if _, err := io.ReadFull(c, b[:]); err != nil {
				errs.Add(1)
				c.Close()
				return
			}
			c.SetDeadline(time.Time{})
			conns[i] = c
		}(i)
	}
	wg.Wait()
	return conns, errs.Load()
}

// settle waits until f's value stops changing (the proxy finished its work), bounded.
func settle(f func() int64, max time.Duration) {
	end := time.Now().Add(max)
	prev := f()
	for time.Now().Before(end) {
		time.Sleep(300 * time.Millisecond)
		cur := f()
		if cur == prev {
			return
		}
		prev = cur
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var targets []*target
	fs.Func("target", "NAME=ADDR[@PIDFILE][!IDLE] (repeat; the first is the direct baseline)", func(v string) error {
		name, rest, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("%q: want NAME=ADDR[@PIDFILE]", v)
		}
		rest, idleN, _ := strings.Cut(rest, "!")
		addr, pidf, _ := strings.Cut(rest, "@")
		t := &target{Name: name, AddrEcho: addr, AddrBulk: addr, AddrIdle: addr, PIDFile: pidf}
		if idleN != "" {
			n, err := strconv.Atoi(idleN)
			if err != nil {
				return fmt.Errorf("%q: idle count %q", v, idleN)
			}
			t.Idle = n
		}
		if a := strings.Split(addr, ","); len(a) == 3 {
			t.AddrEcho, t.AddrBulk, t.AddrIdle = a[0], a[1], a[2]
		}
		targets = append(targets, t)
		return nil
	})
	latTime := fs.Duration("lat-time", 3*time.Second, "latency phase length per target")
	latMax := fs.Int("lat-max", 3000, "at most this many sequential connections per target")
	connTime := fs.Duration("conn-time", 4*time.Second, "connection-rate phase length per target")
	conc := fs.Int("conc", 16, "concurrent clients in the connection-rate phase")
	bulkTime := fs.Duration("bulk-time", 4*time.Second, "bulk phase length per target")
	streams := fs.Int("streams", 4, "parallel bulk streams")
	nIdle := fs.Int("idle", 10000, "idle connections held per target")
	var extraPIDs []int
	fs.Func("account-pid", "another process whose CPU the machine figures count (the backends); repeat", func(v string) error {
		n, err := strconv.Atoi(v)
		extraPIDs = append(extraPIDs, n)
		return err
	})
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	rounds := fs.Int("rounds", 3, "rounds interleaving the targets in the latency, conns and bulk phases")
	fs.Parse(args)
	if len(targets) < 2 {
		return errors.New("give the direct baseline and at least one proxy with --target")
	}
	for _, t := range targets {
		if err := t.loadPIDs(); err != nil {
			return err
		}
	}
	res := make([]*result, len(targets))
	for i, t := range targets {
		res[i] = &result{Name: t.Name, HasProc: len(t.pids) > 0}
	}
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }

	// Warm up every path once (and fail early on a broken config).
	for _, t := range targets {
		if err := oneConn(t.AddrEcho); err != nil {
			return fmt.Errorf("%s (%s): warm-up connection: %w", t.Name, t.AddrEcho, err)
		}
	}
	// Rounds interleave the targets so that load from elsewhere on the machine falls on all
	// of them alike; each round gives every target 1/rounds of each phase's time, and each
	// figure is the median over the rounds.
	R := time.Duration(*rounds)
	acct := []int{os.Getpid()}
	for _, t := range targets {
		acct = append(acct, t.pids...)
	}
	acct = append(acct, extraPIDs...)
	var othersAll, spanAll time.Duration
	for round := 0; round < *rounds; round++ {
		figs := make([]roundFig, len(targets))
		var others, span time.Duration // CPU of other users' processes while measuring
		for i, t := range targets {
			l, err := latency(t.AddrEcho, *latTime/R, *latMax / *rounds)
			if err != nil {
				return fmt.Errorf("%s latency: %w", t.Name, err)
			}
			figs[i].LatP50, figs[i].LatP99 = p50p99(l)
			res[i].LatN += len(l)
		}
		for i, t := range targets {
			before, _ := readProc(t.pids)
			m0, w0 := benchCPU(acct), machineCPU()
			n, errs, el := connRate(t.AddrEcho, *conc, *connTime/R)
			m1, w1 := benchCPU(acct), machineCPU()
			others += (w1 - w0) - (m1 - m0)
			span += el
			after, _ := readProc(t.pids)
			res[i].ConnErrors += errs
			figs[i].ConnsPerSec = float64(n) / el.Seconds()
			if n > 0 {
				figs[i].CPUPer1000 = (after.cpu - before.cpu) * 1000 / time.Duration(n)
				figs[i].MachPer1000 = (m1 - m0) * 1000 / time.Duration(n)
			}
		}
		for i, t := range targets {
			before, _ := readProc(t.pids)
			m0, w0 := benchCPU(acct), machineCPU()
			n, el, err := bulk(t.AddrBulk, *streams, *bulkTime/R)
			m1, w1 := benchCPU(acct), machineCPU()
			others += (w1 - w0) - (m1 - m0)
			span += el
			after, _ := readProc(t.pids)
			if err != nil {
				logf("bulk %s: %v", t.Name, err)
				res[i].BulkErrors++
			}
			figs[i].BulkGBps = float64(n) / el.Seconds() / 1e9
			if n > 0 {
				figs[i].CPUPerGB = time.Duration(float64(after.cpu-before.cpu) * 1e9 / float64(n))
				figs[i].MachPerGB = time.Duration(float64(m1-m0) * 1e9 / float64(n))
			}
		}
		for i := range targets {
			figs[i].AddedPer1000 = figs[i].MachPer1000 - figs[0].MachPer1000
			figs[i].AddedPerGB = figs[i].MachPerGB - figs[0].MachPerGB
			res[i].Rounds = append(res[i].Rounds, figs[i])
		}
		logf("round %d/%d done (load average %s; other users' processes took %.2f cores while measuring)",
			round+1, *rounds, loadAvg(), others.Seconds()/span.Seconds())
		othersAll += others
		spanAll += span
	}
	for i, t := range targets {
		r := res[i]
		pick := func(f func(roundFig) time.Duration) time.Duration {
			v := make([]time.Duration, len(r.Rounds))
			for k, x := range r.Rounds {
				v[k] = f(x)
			}
			return median(v)
		}
		pickF := func(f func(roundFig) float64) float64 {
			v := make([]float64, len(r.Rounds))
			for k, x := range r.Rounds {
				v[k] = f(x)
			}
			return median(v)
		}
		r.LatP50 = pick(func(x roundFig) time.Duration { return x.LatP50 })
		r.LatP99 = pick(func(x roundFig) time.Duration { return x.LatP99 })
		r.ConnsPerSec = pickF(func(x roundFig) float64 { return x.ConnsPerSec })
		r.CPUPer1000Conns = pick(func(x roundFig) time.Duration { return x.CPUPer1000 })
		r.MachPer1000Conns = pick(func(x roundFig) time.Duration { return x.MachPer1000 })
		r.AddedPer1000Conns = pick(func(x roundFig) time.Duration { return x.AddedPer1000 })
		r.BulkGBps = pickF(func(x roundFig) float64 { return x.BulkGBps })
		r.CPUPerGB = pick(func(x roundFig) time.Duration { return x.CPUPerGB })
		r.MachPerGB = pick(func(x roundFig) time.Duration { return x.MachPerGB })
		r.AddedPerGB = pick(func(x roundFig) time.Duration { return x.AddedPerGB })
		logf("%-16s latency p50 %v p99 %v (%d) | %.0f conn/s (%d errors) CPU/1000 proxy %v machine %v added %v | bulk %.2f GB/s CPU/GB proxy %v machine %v added %v",
			t.Name, r.LatP50, r.LatP99, r.LatN, r.ConnsPerSec, r.ConnErrors, r.CPUPer1000Conns, r.MachPer1000Conns, r.AddedPer1000Conns,
			r.BulkGBps, r.CPUPerGB, r.MachPerGB, r.AddedPerGB)
	}
	for i, t := range targets {
		procFDs := func() int64 { s, _ := readProc(t.pids); return int64(s.fds) }
		settle(procFDs, 10*time.Second)
		before, _ := readProc(t.pids)
		slab0 := slabBytes()
		n := *nIdle
		if t.Idle > 0 {
			n = t.Idle
		}
		conns, errs := idle(t.AddrIdle, n)
		settle(func() int64 { s, _ := readProc(t.pids); return s.rss }, 10*time.Second)
		after, _ := readProc(t.pids)
		slab1 := slabBytes()
		open := 0
		for _, c := range conns {
			if c != nil {
				open++
			}
		}
		res[i].IdleConns, res[i].IdleErrors = open, errs
		if open > 0 {
			res[i].RSSPerConn = float64(after.rss-before.rss) / float64(open)
			res[i].FDsPerConn = float64(after.fds-before.fds) / float64(open)
			res[i].SlabPerConn = float64(slab1-slab0) / float64(open)
		}
		logf("idle     %-18s %d open (%d failed): RSS %+.1f KiB/conn, %+.2f fds/conn, kernel %+.1f KiB/conn (whole machine)",
			t.Name, open, errs, res[i].RSSPerConn/1024, res[i].FDsPerConn, res[i].SlabPerConn/1024)
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		settle(procFDs, 20*time.Second)
	}
	fmt.Printf("Measured with load average %s at the end; other users' processes took %.2f cores on average while measuring (not counted).\n\n",
		loadAvg(), othersAll.Seconds()/spanAll.Seconds())
	printTables(os.Stdout, res)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		os.MkdirAll(filepath.Dir(*jsonOut), 0o755)
		return os.WriteFile(*jsonOut, b, 0o644)
	}
	return nil
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// printTables prints the figures as markdown tables, with ratios against the baselines
// run in the same script: direct (the first target), and the targets named HAProxy,
// nginx and floor* when present.
func printTables(w io.Writer, res []*result) {
	direct := res[0]
	find := func(prefix string) []*result {
		var out []*result
		for _, r := range res {
			if strings.HasPrefix(strings.ToLower(r.Name), prefix) {
				out = append(out, r)
			}
		}
		return out
	}
	one := func(prefix string) *result {
		if f := find(prefix); len(f) > 0 {
			return f[0]
		}
		return nil
	}
	haproxy, nginx := one("haproxy"), one("nginx")
	floorConn, floorBulk := one("floor"), one("floor")
	ratio := func(a, b float64) string {
		if b <= 0 || a < 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	vs := func(base *result, a float64, f func(*result) float64) string {
		if base == nil {
			return "-"
		}
		return ratio(a, f(base))
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d.Microseconds())/1000) }
	sdur := func(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }
	added := func(a, b time.Duration) string {
		return fmt.Sprintf("%+.3f ms", float64((a-b).Microseconds())/1000)
	}
	conns := func(r *result) float64 { return r.ConnsPerSec }
	gbps := func(r *result) float64 { return r.BulkGBps }
	addC := func(r *result) float64 { return float64(r.AddedPer1000Conns) }
	addG := func(r *result) float64 { return float64(r.AddedPerGB) }

	fmt.Fprintln(w, "Connections (TCP + TLS 1.3 handshake + 32-byte echo + close):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | conn/s | ×direct | ×HAProxy | ×nginx | failed | p50 | p99 | added p50 | added p99 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range res {
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %d | %s | %s | %s | %s |\n",
			r.Name, r.ConnsPerSec, ratio(r.ConnsPerSec, direct.ConnsPerSec), vs(haproxy, r.ConnsPerSec, conns), vs(nginx, r.ConnsPerSec, conns),
			r.ConnErrors, ms(r.LatP50), ms(r.LatP99), added(r.LatP50, direct.LatP50), added(r.LatP99, direct.LatP99))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU per 1000 connections (proxy = its own processes; machine = the load generator, backends, proxies and every kernel thread, softirq included; added = machine minus direct's in the same round):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | proxy CPU | machine CPU | added machine CPU | ×HAProxy | ×nginx | ×floor |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range res {
		p := "-"
		if r.HasProc {
			p = ms(r.CPUPer1000Conns)
		}
		a := fmt.Sprintf("%+.3f ms", float64(r.AddedPer1000Conns.Microseconds())/1000)
		if r == direct {
			a = "-"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Name, p, ms(r.MachPer1000Conns), a,
			vs(haproxy, addC(r), addC), vs(nginx, addC(r), addC), vs(floorConn, addC(r), addC))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Bulk (one ClientHello, then raw bytes client to backend) and CPU per GB:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | GB/s | ×direct | ×HAProxy | ×nginx | proxy CPU /GB | machine CPU /GB | added machine CPU /GB | ×HAProxy | ×nginx | ×floor |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range res {
		p := "-"
		if r.HasProc {
			p = sdur(r.CPUPerGB)
		}
		a := fmt.Sprintf("%+.3f s", r.AddedPerGB.Seconds())
		if r == direct {
			a = "-"
		}
		fmt.Fprintf(w, "| %s | %.2f | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Name, r.BulkGBps,
			ratio(r.BulkGBps, direct.BulkGBps), vs(haproxy, r.BulkGBps, gbps), vs(nginx, r.BulkGBps, gbps),
			p, sdur(r.MachPerGB), a, vs(haproxy, addG(r), addG), vs(nginx, addG(r), addG), vs(floorBulk, addG(r), addG))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Idle connections:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | idle conns | failed | RSS /idle conn | fds /idle conn | kernel /idle conn |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range res {
		rss, fds := "-", "-"
		if r.HasProc {
			rss = fmt.Sprintf("%.1f KiB", r.RSSPerConn/1024)
			fds = fmt.Sprintf("%.2f", r.FDsPerConn)
		}
		kern := fmt.Sprintf("%.1f KiB", r.SlabPerConn/1024)
		if r != direct {
			kern = fmt.Sprintf("%+.1f KiB", (r.SlabPerConn-direct.SlabPerConn)/1024)
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s |\n", r.Name, r.IdleConns, r.IdleErrors, rss, fds, kern)
	}
}
