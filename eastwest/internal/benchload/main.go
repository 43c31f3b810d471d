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
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	sniEcho = "outbound_.8443_._.echo.demo.svc.cluster.local"
	sniBulk = "outbound_.8443_._.bulk.demo.svc.cluster.local"
	sniIdle = "outbound_.8443_._.idle.demo.svc.cluster.local"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchload backends|run [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "backends":
		err = backends(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
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

// readHello consumes one TLS record (the ClientHello the raw clients send).
func readHello(c net.Conn) error {
	var h [5]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return err
	}
	n := int(h[3])<<8 | int(h[4])
	_, err := io.CopyN(io.Discard, c, int64(n))
	return err
}

func backends(args []string) error {
	fs := flag.NewFlagSet("backends", flag.ExitOnError)
	echoAddr := fs.String("echo", "127.0.0.1:19001", "TLS echo server")
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
	if err := serve(*echoAddr, func(c net.Conn) {
		defer c.Close()
		tc := tls.Server(c, cfg)
		buf := make([]byte, 512)
		for {
			n, err := tc.Read(buf)
			if err != nil {
				return
			}
			if _, err := tc.Write(buf[:n]); err != nil {
				return
			}
		}
	}); err != nil {
		return err
	}
	if err := serve(*sinkAddr, func(c net.Conn) {
		defer c.Close()
		if readHello(c) != nil {
			return
		}
		io.Copy(io.Discard, c)
	}); err != nil {
		return err
	}
	if err := serve(*holdAddr, func(c net.Conn) {
		defer c.Close()
		if readHello(c) != nil {
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

type result struct {
	Name                      string
	LatP50, LatP99            time.Duration
	LatN                      int
	ConnsPerSec               float64
	ConnErrors                int64
	CPUPer1000Conns           time.Duration
	BulkGBps                  float64
	CPUPerGB                  time.Duration
	IdleConns                 int
	RSSPerConn, FDsPerConn    float64
	SlabPerConn               float64
	IdleErrors                int64
	HasProc                   bool
	CPUMeasuredConns, CPUBulk time.Duration
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

func rawHello(sni string) []byte {
	c1, c2 := net.Pipe()
	go func() {
		tls.Client(c1, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake() //nolint:gosec
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
	// of them alike; each round gives every target 1/rounds of each phase's time.
	R := time.Duration(*rounds)
	lat := make([][]time.Duration, len(targets))
	type acc struct {
		n, errs int64
		el, cpu time.Duration
	}
	cr := make([]acc, len(targets))
	br := make([]acc, len(targets))
	for round := 0; round < *rounds; round++ {
		for i, t := range targets {
			l, err := latency(t.AddrEcho, *latTime/R, *latMax / *rounds)
			if err != nil {
				return fmt.Errorf("%s latency: %w", t.Name, err)
			}
			lat[i] = append(lat[i], l...)
		}
		for i, t := range targets {
			before, _ := readProc(t.pids)
			n, errs, el := connRate(t.AddrEcho, *conc, *connTime/R)
			after, _ := readProc(t.pids)
			cr[i].n += n
			cr[i].errs += errs
			cr[i].el += el
			cr[i].cpu += after.cpu - before.cpu
		}
		for i, t := range targets {
			before, _ := readProc(t.pids)
			n, el, err := bulk(t.AddrBulk, *streams, *bulkTime/R)
			after, _ := readProc(t.pids)
			if err != nil {
				logf("bulk %s: %v", t.Name, err)
			}
			br[i].n += n
			br[i].el += el
			br[i].cpu += after.cpu - before.cpu
		}
		logf("round %d/%d done", round+1, *rounds)
	}
	for i, t := range targets {
		l := lat[i]
		sort.Slice(l, func(a, b int) bool { return l[a] < l[b] })
		res[i].LatP50, res[i].LatP99, res[i].LatN = l[len(l)/2], l[len(l)*99/100], len(l)
		res[i].ConnsPerSec = float64(cr[i].n) / cr[i].el.Seconds()
		res[i].ConnErrors = cr[i].errs
		if cr[i].n > 0 {
			res[i].CPUPer1000Conns = cr[i].cpu * 1000 / time.Duration(cr[i].n)
		}
		res[i].CPUMeasuredConns = cr[i].cpu
		res[i].BulkGBps = float64(br[i].n) / br[i].el.Seconds() / 1e9
		if br[i].n > 0 {
			res[i].CPUPerGB = time.Duration(float64(br[i].cpu) * 1e9 / float64(br[i].n))
		}
		res[i].CPUBulk = br[i].cpu
		logf("%-16s latency p50 %v p99 %v (%d) | %.0f conn/s (%d errors) proxy CPU %v | bulk %.2f GB/s proxy CPU %v",
			t.Name, res[i].LatP50, res[i].LatP99, len(l), res[i].ConnsPerSec, cr[i].errs, cr[i].cpu, res[i].BulkGBps, br[i].cpu)
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
	printTable(os.Stdout, res)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		os.MkdirAll(filepath.Dir(*jsonOut), 0o755)
		return os.WriteFile(*jsonOut, b, 0o644)
	}
	return nil
}

func printTable(w io.Writer, res []*result) {
	direct := res[0]
	var haproxy *result
	for _, r := range res {
		if strings.HasPrefix(strings.ToLower(r.Name), "haproxy") {
			haproxy = r
		}
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d.Microseconds())/1000) }
	added := func(a, b time.Duration) string {
		return fmt.Sprintf("%+.3f ms", float64((a-b).Microseconds())/1000)
	}
	fmt.Fprintln(w, "| target | conn/s | ×direct | ×HAProxy | p50 | p99 | added p50 | added p99 | bulk GB/s | ×direct | ×HAProxy | proxy CPU /1000 conns | proxy CPU /GB | idle conns | RSS /idle conn | fds /idle conn | kernel /idle conn |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range res {
		hx := func(a, b float64) string {
			if haproxy == nil {
				return "-"
			}
			return ratio(a, b)
		}
		cpuC, cpuG, rss, fds := "-", "-", "-", "-"
		if r.HasProc {
			cpuC = ms(r.CPUPer1000Conns)
			cpuG = ms(r.CPUPerGB)
			rss = fmt.Sprintf("%.1f KiB", r.RSSPerConn/1024)
			fds = fmt.Sprintf("%.2f", r.FDsPerConn)
		}
		kern := fmt.Sprintf("%.1f KiB", r.SlabPerConn/1024)
		if r != direct {
			kern = fmt.Sprintf("%+.1f KiB", (r.SlabPerConn-direct.SlabPerConn)/1024)
		}
		hConn, hBulk := "-", "-"
		if haproxy != nil {
			hConn, hBulk = hx(r.ConnsPerSec, haproxy.ConnsPerSec), hx(r.BulkGBps, haproxy.BulkGBps)
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %s | %s | %s | %.2f | %s | %s | %s | %s | %d | %s | %s | %s |\n",
			r.Name, r.ConnsPerSec, ratio(r.ConnsPerSec, direct.ConnsPerSec), hConn,
			ms(r.LatP50), ms(r.LatP99), added(r.LatP50, direct.LatP50), added(r.LatP99, direct.LatP99),
			r.BulkGBps, ratio(r.BulkGBps, direct.BulkGBps), hBulk, cpuC, cpuG, r.IdleConns, rss, fds, kern)
	}
}
