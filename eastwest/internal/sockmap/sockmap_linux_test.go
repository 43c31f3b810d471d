package sockmap

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshfed/meshfed/internal/waitfor"
)

// newRedirector skips (saying why) where the sockmap path cannot run: not root, no BPF.
func newRedirector(t *testing.T) *Redirector {
	t.Helper()
	if err := Probe(); err != nil {
		t.Skipf("sockmap path not available here: %v (needs Linux with BPF sockhash and sk_skb, and CAP_BPF+CAP_NET_ADMIN)", err)
	}
	r, err := New(Options{MaxConns: 1024})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// pair is a client connection relayed through the kernel path to a server connection.
type pair struct {
	client, server *net.TCPConn
	conn           *Conn
}

// relay connects a client to a server through r: before Splice, prep runs with the two
// relay-side connections (to read or write what a gateway would), and its result is the
// first bytes written upstream.
func relay(t *testing.T, r *Redirector, idle time.Duration, prep func(down, up *net.TCPConn) []byte, onConnect ...func(client, server net.Conn)) pair {
	t.Helper()
	srvLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srvLn.Close()
	relLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer relLn.Close()
	client, err := net.Dial("tcp", relLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	down, err := relLn.Accept()
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.Dial("tcp", srvLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := srvLn.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p := pair{client: client.(*net.TCPConn), server: server.(*net.TCPConn)}
	t.Cleanup(func() { p.client.Close(); p.server.Close() })
	for _, f := range onConnect {
		f(client, server)
	}
	var first []byte
	if prep != nil {
		first = prep(down.(*net.TCPConn), up.(*net.TCPConn))
	}
	p.conn, err = r.Splice(down.(*net.TCPConn), up.(*net.TCPConn), first, idle, nil)
	if err != nil {
		down.Close()
		up.Close()
		t.Fatalf("Splice: %v", err)
	}
	t.Cleanup(p.conn.Close)
	return p
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func waitDone(t *testing.T, c *Conn) error {
	t.Helper()
	select {
	case <-c.Done():
		return c.Err()
	case <-time.After(10 * time.Second):
		t.Fatal("connection did not end within 10s")
		return nil
	}
}

func readAllDeadline(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func TestProbe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: Probe is expected to say why (checked by the skip message of the other tests)")
	}
	if err := Probe(); err != nil {
		t.Skipf("root, but the kernel lacks something: %v", err)
	}
}

// Bytes both ways, then half-close from the client first: the client's FIN reaches the
// server only after all its bytes, the server still answers, and its FIN reaches the client.
func TestHalfCloseClientFirst(t *testing.T) {
	r := newRedirector(t)
	p := relay(t, r, 0, nil)
	req := randBytes(3 << 20)
	resp := randBytes(2 << 20)
	go func() {
		_, _ = p.client.Write(req)
		_ = p.client.CloseWrite()
	}()
	got := readAllDeadline(t, p.server) // ends at the client's FIN, passed on
	if !bytes.Equal(got, req) {
		t.Fatalf("server got %d bytes, want the %d the client sent (in order)", len(got), len(req))
	}
	go func() {
		_, _ = p.server.Write(resp)
		_ = p.server.CloseWrite()
	}()
	back := readAllDeadline(t, p.client)
	if !bytes.Equal(back, resp) {
		t.Fatalf("client got %d bytes, want %d", len(back), len(resp))
	}
	if err := waitDone(t, p.conn); err != nil {
		t.Fatalf("connection ended with %v, want a clean end", err)
	}
	ab, ba := p.conn.Bytes()
	if ab != uint64(len(req)) || ba != uint64(len(resp)) {
		t.Fatalf("counters %d/%d, want %d/%d", ab, ba, len(req), len(resp))
	}
	if m := r.Misses(); m != 0 {
		t.Fatalf("%d verdicts found no peer", m)
	}
}

// The server ends first; the client keeps sending after it got the server's FIN.
func TestHalfCloseServerFirst(t *testing.T) {
	r := newRedirector(t)
	p := relay(t, r, 0, nil)
	resp := randBytes(1 << 20)
	go func() {
		_, _ = p.server.Write(resp)
		_ = p.server.CloseWrite()
	}()
	if back := readAllDeadline(t, p.client); !bytes.Equal(back, resp) {
		t.Fatalf("client got %d bytes, want %d", len(back), len(resp))
	}
	req := randBytes(1 << 20)
	go func() {
		_, _ = p.client.Write(req)
		_ = p.client.CloseWrite()
	}()
	if got := readAllDeadline(t, p.server); !bytes.Equal(got, req) {
		t.Fatalf("server got %d bytes, want %d", len(got), len(req))
	}
	if err := waitDone(t, p.conn); err != nil {
		t.Fatalf("connection ended with %v, want a clean end", err)
	}
}

// What a gateway does: the relay read the client's first bytes (the hello) and writes them
// upstream as first. Before Splice, the client has already sent more (another segment) and
// the server has spoken first: those bytes sit in the relay sockets' receive queues. They
// must move at once (no later byte needed to wake the verdict), the client's after first,
// and ahead of anything sent later.
func TestQueuedBeforeSplice(t *testing.T) {
	r := newRedirector(t)
	hello := []byte("hello-0123456789")
	early := []byte("early-data")
	banner := []byte("server-banner")
	var client, server net.Conn
	p := relay(t, r, 0, func(down, up *net.TCPConn) []byte {
		buf := make([]byte, len(hello))
		if _, err := io.ReadFull(down, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := client.Write(early); err != nil {
			t.Fatal(err)
		}
		if _, err := server.Write(banner); err != nil {
			t.Fatal(err)
		}
		waitfor.Cond(t, 5*time.Second, func() bool { return inq(down) == len(early) && inq(up) == len(banner) },
			"bytes not queued on the relay sockets: %d/%d", inq(down), inq(up))
		return buf
	}, func(c, s net.Conn) {
		client, server = c, s
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
	})
	want := append(append([]byte{}, hello...), early...)
	got := make([]byte, len(want))
	_ = p.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(p.server, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("server got %q (%v), want %q", got, err, want)
	}
	gotB := make([]byte, len(banner))
	_ = p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(p.client, gotB); err != nil || !bytes.Equal(gotB, banner) {
		t.Fatalf("client got %q (%v), want %q", gotB, err, banner)
	}
	late := []byte("late")
	_, _ = p.client.Write(late)
	_ = p.client.CloseWrite()
	if rest := readAllDeadline(t, p.server); !bytes.Equal(rest, late) {
		t.Fatalf("server then got %q, want %q", rest, late)
	}
	_ = p.server.CloseWrite()
	if err := waitDone(t, p.conn); err != nil {
		t.Fatalf("ended with %v", err)
	}
	if ab, ba := p.conn.Bytes(); ab != uint64(len(early)+len(late)) || ba != uint64(len(banner)) {
		t.Fatalf("counters %d/%d, want %d/%d (first bytes excluded)", ab, ba, len(early)+len(late), len(banner))
	}
}

func inq(c *net.TCPConn) int {
	fd, _ := rawFD(c)
	n, _ := unix.IoctlGetInt(fd, unix.SIOCINQ)
	return n
}

func TestIdleTimeout(t *testing.T) {
	r := newRedirector(t)
	idle := 300 * time.Millisecond
	p := relay(t, r, idle, nil)
	// Busy for three idle periods: bytes every 100 ms keep it open.
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 10)
		for i := 0; i < 9; i++ {
			if _, err := p.client.Write([]byte("0123456789")); err != nil {
				return
			}
			_ = p.server.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.ReadFull(p.server, buf); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond) //nolint:forbidigo // pacing the traffic, not synchronizing
		}
	}()
	<-done
	select {
	case <-p.conn.Done():
		t.Fatalf("ended while busy: %v", p.conn.Err())
	default:
	}
	start := time.Now()
	if err := waitDone(t, p.conn); !errors.Is(err, ErrIdle) {
		t.Fatalf("ended with %v, want the idle timeout", err)
	}
	if el := time.Since(start); el > 2*idle {
		t.Fatalf("idle close took %v after the last bytes, want about %v", el, idle)
	}
	// Both sides see the connection closed.
	_ = p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read succeeded after the idle close")
	}
}

// A reset from one side ends the connection with an error and closes the other side.
func TestResetEndsBoth(t *testing.T) {
	r := newRedirector(t)
	p := relay(t, r, 0, nil)
	_ = p.server.SetLinger(0)
	p.server.Close()
	if err := waitDone(t, p.conn); err == nil {
		t.Fatal("ended cleanly after a reset, want an error")
	}
	_ = p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read succeeded after the server's reset")
	}
}

// Close cuts a live connection: both ends see it closed, and it is no longer live.
func TestCloseCuts(t *testing.T) {
	r := newRedirector(t)
	p := relay(t, r, 0, nil)
	if r.Live() != 1 {
		t.Fatalf("live %d, want 1", r.Live())
	}
	p.conn.Close()
	if err := waitDone(t, p.conn); !errors.Is(err, ErrCut) {
		t.Fatalf("ended with %v, want ErrCut", err)
	}
	if r.Live() != 0 {
		t.Fatalf("live %d after Close, want 0", r.Live())
	}
	for _, c := range []net.Conn{p.client, p.server} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read succeeded after the cut")
		}
	}
}

// A reader slower than the writer: every byte arrives, in order, and the counters agree.
func TestSlowReader(t *testing.T) {
	r := newRedirector(t)
	p := relay(t, r, 0, nil)
	data := randBytes(16 << 20)
	go func() {
		_, _ = p.client.Write(data)
		_ = p.client.CloseWrite()
	}()
	var got bytes.Buffer
	buf := make([]byte, 64<<10)
	_ = p.server.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := 0; ; i++ {
		n, err := p.server.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
		if i%16 == 0 {
			time.Sleep(time.Millisecond) //nolint:forbidigo // a slow reader, not synchronization
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("server got %d bytes, want %d in order", got.Len(), len(data))
	}
	p.server.Close()
	_ = waitDone(t, p.conn)
	if ab, _ := p.conn.Bytes(); ab != uint64(len(data)) {
		t.Fatalf("counter %d, want %d", ab, len(data))
	}
}

// Many connections at once, each echoing, all through one Redirector.
func TestManyConnections(t *testing.T) {
	r := newRedirector(t)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		p := relay(t, r, 0, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			go func() { _, _ = io.Copy(p.server, p.server); _ = p.server.CloseWrite() }()
			msg := randBytes(4096)
			_, _ = p.client.Write(msg)
			back := make([]byte, len(msg))
			_ = p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(p.client, back); err != nil || !bytes.Equal(back, msg) {
				t.Errorf("echo: %v", err)
			}
			p.client.Close()
		}()
	}
	wg.Wait()
	waitfor.Cond(t, 10*time.Second, func() bool { return r.Live() == 0 }, "%d connections still live after every client closed", r.Live())
}

// The committed objects are what bpf2go makes from bpf/redirect.c with clang 14.
func TestObjectsFresh(t *testing.T) {
	if _, err := exec.LookPath("clang-14"); err != nil {
		t.Skip("clang-14 not installed: cannot check that the committed BPF objects are fresh")
	}
	if testing.Short() {
		t.Skip("-short: builds bpf2go")
	}
	// Run gen.go's own go:generate command (bpf2go, pinned by the module's tool
	// directive), with its output sent to a temporary directory.
	gen, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	_, cmdline, ok := strings.Cut(string(gen), "//go:generate go tool bpf2go ")
	if !ok {
		t.Fatal("gen.go has no bpf2go go:generate line")
	}
	cmdline, _, _ = strings.Cut(cmdline, "\n")
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", "go tool bpf2go -output-dir \""+dir+"\" "+cmdline)
	cmd.Env = append(os.Environ(), "GOPACKAGE=sockmap", "GOFILE=gen.go")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, out)
	}
	for _, f := range []string{"redirect_bpfel.o", "redirect_bpfeb.o", "redirect_bpfel.go", "redirect_bpfeb.go"} {
		want, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `go generate ./eastwest/internal/sockmap` (clang-14) and commit the result", f)
		}
	}
}

// The relay read only part of what the client had sent in one segment (a gateway reads the
// hello; the client sent more right behind it): the rest of that segment is queued, partly
// consumed. Exactly the unread bytes must follow first, none twice.
func TestPartlyReadSegment(t *testing.T) {
	r := newRedirector(t)
	data := randBytes(60 << 10)
	var client net.Conn
	p := relay(t, r, 0, func(down, up *net.TCPConn) []byte {
		if _, err := client.Write(data); err != nil {
			t.Fatal(err)
		}
		waitfor.Cond(t, 5*time.Second, func() bool { return inq(down) == len(data) }, "%d of %d bytes queued", inq(down), len(data))
		buf := make([]byte, 1000)
		if _, err := io.ReadFull(down, buf); err != nil {
			t.Fatal(err)
		}
		return buf
	}, func(c, _ net.Conn) { client = c })
	_ = p.client.CloseWrite()
	if got := readAllDeadline(t, p.server); !bytes.Equal(got, data) {
		i := 0
		for i < len(got) && i < len(data) && got[i] == data[i] {
			i++
		}
		j := bytes.Index(data, got[i:i+16])
		t.Fatalf("server got %d bytes (want %d, in order, none twice); first difference at %d, which continues data at %d", len(got), len(data), i, j)
	}
}

// onEnd is called exactly once, after Done, whichever way the connection ends.
func TestOnEndOnce(t *testing.T) {
	r := newRedirector(t)
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rel, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rel.Close()
	client, _ := net.Dial("tcp", rel.Addr().String())
	defer client.Close()
	down, _ := rel.Accept()
	up, _ := net.Dial("tcp", srv.Addr().String())
	server, _ := srv.Accept()
	defer server.Close()
	var calls sync.WaitGroup
	calls.Add(1)
	n := 0
	c, err := r.Splice(down.(*net.TCPConn), up.(*net.TCPConn), nil, 0, func(c *Conn) {
		select {
		case <-c.Done():
		default:
			t.Error("onEnd before Done")
		}
		n++
		calls.Done()
	})
	if err != nil {
		t.Fatal(err)
	}
	server.(*net.TCPConn).SetLinger(0)
	server.Close() // reset: ends it from the event loop
	calls.Wait()
	c.Close() // a second end: no second call
	if n != 1 {
		t.Fatalf("onEnd called %d times", n)
	}
}

// A client that has already sent everything and closed before its connection is spliced
// is not for the kernel path (a sockhash takes established sockets only): Splice says so
// and leaves both connections to the caller, intact.
func TestClosedBeforeSplice(t *testing.T) {
	r := newRedirector(t)
	var client net.Conn
	var splErr error
	srvLn, _ := net.Listen("tcp", "127.0.0.1:0")
	defer srvLn.Close()
	relLn, _ := net.Listen("tcp", "127.0.0.1:0")
	defer relLn.Close()
	client, _ = net.Dial("tcp", relLn.Addr().String())
	defer client.Close()
	down, _ := relLn.Accept()
	defer down.Close()
	up, _ := net.Dial("tcp", srvLn.Addr().String())
	defer up.Close()
	_, _ = client.Write([]byte("request"))
	_ = client.(*net.TCPConn).CloseWrite()
	buf := make([]byte, 7)
	if _, err := io.ReadFull(down, buf); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 5*time.Second, func() bool {
		fd, _ := rawFD(down.(*net.TCPConn))
		st, _ := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return st != nil && st.State == 8 // TCP_CLOSE_WAIT
	}, "the relay socket never saw the client's FIN")
	_, splErr = r.Splice(down.(*net.TCPConn), up.(*net.TCPConn), buf, 0, nil)
	if !errors.Is(splErr, ErrNotNow) {
		t.Fatalf("Splice of a half-closed client: %v, want ErrNotNow", splErr)
	}
	// Still the caller's: EOF is there to read, and up still writes.
	if n, err := down.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("client side after the refused Splice: %d %v, want EOF", n, err)
	}
	if _, err := up.Write([]byte("x")); err != nil {
		t.Fatalf("upstream side after the refused Splice: %v", err)
	}
	if r.Live() != 0 {
		t.Fatal("a refused connection is live")
	}
}

// The kernel's redirect has no backpressure of its own: a fast sender and a slow reader
// would queue without bound in the kernel. The program measures the reader's backlog and
// holds the sender's bytes back (user space then moves them): what is in flight stays
// bounded, and every byte still arrives, in order, EOF last.
func TestBackpressure(t *testing.T) {
	r := newRedirector(t)
	p := relay(t, r, 0, nil)
	const total = 96 << 20
	data := randBytes(1 << 20)
	var sent atomic.Int64
	go func() {
		for i := 0; i < total/len(data); i++ {
			n, err := p.client.Write(data)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
		_ = p.client.CloseWrite()
	}()
	var got int64
	var worst int64
	buf := make([]byte, 64<<10)
	_ = p.server.SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := 0; ; i++ {
		n, err := p.server.Read(buf)
		for k := 0; k < n; k++ {
			if buf[k] != data[(got+int64(k))%int64(len(data))] {
				t.Fatalf("byte %d differs: bytes lost, repeated or reordered", got+int64(k))
			}
		}
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read after %d bytes: %v", got, err)
		}
		ab, _ := p.conn.Bytes()
		if inflight := int64(ab) - got; inflight > worst {
			worst = inflight
		}
		if i < 2000 && i%8 == 0 {
			time.Sleep(time.Millisecond) //nolint:forbidigo // a slow reader, not synchronization
		}
	}
	if got != total {
		t.Fatalf("server got %d bytes, want %d", got, total)
	}
	t.Logf("largest amount redirected but not yet read: %d KiB; pauses %d", worst>>10, p.conn.Pauses())
	// Bound: the backlog limit, plus the socket buffers on the way (send and receive
	// queues of the upstream connection), plus one check interval.
	if worst > 48<<20 {
		t.Fatalf("%d MiB redirected ahead of the reader: no backpressure", worst>>20)
	}
	if p.conn.Pauses() == 0 {
		t.Fatal("the sender was never held back")
	}
	_ = p.server.CloseWrite()
	if err := waitDone(t, p.conn); err != nil {
		t.Fatalf("ended with %v, want a clean end", err)
	}
	if ab, _ := p.conn.Bytes(); ab != total {
		t.Fatalf("counter %d, want %d", ab, total)
	}
}
