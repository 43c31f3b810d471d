package sockmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Errors a connection can end with (Conn.Err).
var (
	// ErrIdle: no bytes moved either way for the idle timeout.
	ErrIdle = errors.New("idle timeout")
	// ErrCut: Close was called (drain timeout, shutdown).
	ErrCut = errors.New("cut")
	// ErrAborted (from Splice): the setup failed after bytes were read or written; both
	// connections have been closed. Any other Splice error leaves them untouched.
	ErrAborted = errors.New("sockmap setup aborted, connections closed")
	// ErrNotNow (from Splice): this connection cannot take the kernel path (its client
	// closed before it was spliced, or sent too much before it was routed); it is untouched.
	ErrNotNow = errors.New("not for the kernel path")
)

const (
	capNetAdmin = 12
	capSysAdmin = 21
	capBPF      = 39
)

// Probe reports nil when the sockmap path can be used here, or an error saying why not:
// no BPF syscall, no sockhash maps, no sk_skb programs, or neither CAP_BPF nor
// CAP_NET_ADMIN (with CAP_SYS_ADMIN) in the effective set.
func Probe() error {
	caps, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	has := func(c uint) bool { return caps&(1<<c) != 0 }
	// Loading sk_skb programs and sockhash maps needs CAP_BPF and CAP_NET_ADMIN (or
	// CAP_SYS_ADMIN, which implies both for BPF).
	if !(has(capSysAdmin) || has(capBPF) && has(capNetAdmin)) {
		return errors.New("needs CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN)")
	}
	if err := features.HaveMapType(ebpf.SockHash); err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return errors.New("no BPF system call in this kernel")
		}
		return fmt.Errorf("no sockhash maps: %w", err)
	}
	if err := features.HaveProgramType(ebpf.SkSKB); err != nil {
		return fmt.Errorf("no sk_skb programs: %w", err)
	}
	return nil
}

func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// Options size a Redirector.
type Options struct {
	// MaxConns is the most connections held at once (each takes two entries in each map).
	// 0: as many as the process's file descriptor limit allows (two per connection).
	MaxConns int
}

// connStat is the program's struct conn_stat (bpf/redirect.c).
type connStat struct {
	Bytes     uint64
	LastNS    uint64
	Off       uint64 // the peer's written figure when Bytes was 0 (base + first bytes)
	Checked   uint64
	Held      uint64 // 1: the program no longer redirects this socket (its peer fell behind)
	HeldBytes uint64 // bytes it has kept for user space since
}

// Redirector holds the loaded program and maps and the epoll instance that watches the
// sockets for end of stream. One per process is enough; it is safe for concurrent use.
type Redirector struct {
	objs redirectObjects
	epfd int
	epf  *os.File // epfd in the Go netpoller: the loop waits there, holding no thread
	done chan struct{}

	mu       sync.Mutex
	bySd     map[uint64]*side    // by side id (epoll data): ids are never reused, fds are
	byCookie map[uint64]*side    // by socket cookie (backlog events)
	early    map[uint64]struct{} // backlog events for sockets not registered yet (cookies)
	events   *ringbuf.Reader
	ids      uint64
	live     map[*Conn]struct{}
	close    sync.Once
	err      error
	max      int
}

// New loads the program, creates the maps and starts the event loop. Probe first to learn
// why it cannot work here.
func New(opts Options) (*Redirector, error) {
	max := opts.MaxConns
	if max <= 0 {
		var rl unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 0 && rl.Cur < 1<<24 {
			max = int(rl.Cur / 2)
		} else {
			max = 1 << 16
		}
	}
	spec, err := loadRedirect()
	if err != nil {
		return nil, err
	}
	for _, name := range []string{redirectMapPeers, redirectMapSources, redirectMapStats} {
		spec.Maps[name].MaxEntries = uint32(2 * max)
	}
	r := &Redirector{epfd: -1, done: make(chan struct{}), bySd: map[uint64]*side{}, byCookie: map[uint64]*side{}, early: map[uint64]struct{}{}, live: map[*Conn]struct{}{}, max: max}
	if err := spec.LoadAndAssign(&r.objs, nil); err != nil {
		return nil, fmt.Errorf("loading the sockmap program: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: r.objs.Sources.FD(), Program: r.objs.Redirect, Attach: ebpf.AttachSkSKBStreamVerdict,
	}); err != nil {
		r.objs.Close()
		return nil, fmt.Errorf("attaching the stream verdict program: %w", err)
	}
	if r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		r.objs.Close()
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// An epoll fd is itself pollable: non-blocking, it goes into the Go netpoller, so the
	// loop below parks like any socket read instead of holding a thread in epoll_wait.
	if err := unix.SetNonblock(r.epfd, true); err != nil {
		unix.Close(r.epfd)
		r.objs.Close()
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	r.epf = os.NewFile(uintptr(r.epfd), "sockmap-epoll")
	if r.events, err = ringbuf.NewReader(r.objs.Events); err != nil {
		r.epf.Close()
		r.objs.Close()
		return nil, fmt.Errorf("sockmap events: %w", err)
	}
	go r.backlogEvents()
	go r.loop()
	return r, nil
}

// MaxConns is the number of connections the maps hold.
func (r *Redirector) MaxConns() int { return r.max }

// Misses is how many times the program found no peer for a socket's bytes (and left them
// to the socket): always 0 unless something is wrong.
func (r *Redirector) Misses() uint64 {
	var v uint64
	_ = r.objs.Misses.Lookup(uint32(0), &v)
	return v
}

// Live is the number of connections in the kernel path now.
func (r *Redirector) Live() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// Close cuts every live connection, stops the event loop and unloads the program.
func (r *Redirector) Close() error {
	r.close.Do(func() {
		r.mu.Lock()
		conns := make([]*Conn, 0, len(r.live))
		for c := range r.live {
			conns = append(conns, c)
		}
		r.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		r.epf.Close() // ends the loop
		<-r.done
		r.events.Close() // ends backlogEvents
		r.err = r.objs.Close()
	})
	return r.err
}

func (r *Redirector) loop() {
	defer close(r.done)
	rc, err := r.epf.SyscallConn()
	if err != nil {
		return
	}
	events := make([]unix.EpollEvent, 128)
	var batch []*side
	var evs []uint32
	for {
		// Called when the netpoller sees the epoll fd readable: take every ready event
		// (epoll_wait with no timeout) until none is left, then park again.
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, err := unix.EpollWait(int(fd), events, 0)
				if err == unix.EINTR {
					continue
				}
				if n <= 0 {
					return false
				}
				batch, evs = batch[:0], evs[:0]
				r.mu.Lock()
				for _, ev := range events[:n] {
					if s := r.bySd[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]; s != nil {
						batch = append(batch, s)
						evs = append(evs, ev.Events)
					}
				}
				r.mu.Unlock()
				for i, s := range batch {
					s.c.event(s, evs[i])
				}
			}
		})
		if err != nil {
			return // closed
		}
	}
}

// backlogEvents takes the program's backlog events (a source whose peer fell more than
// BACKLOG_MAX behind: the program holds its bytes from then on) and has user space move
// that direction. It blocks in the ring buffer's own poll: it wakes only for those events.
func (r *Redirector) backlogEvents() {
	var rec ringbuf.Record
	for {
		if err := r.events.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		if len(rec.RawSample) < 8 {
			continue
		}
		cookie := binary.NativeEndian.Uint64(rec.RawSample)
		r.mu.Lock()
		s := r.byCookie[cookie]
		if s == nil {
			// The program can hold a socket while Splice is still setting it up (a sender
			// streaming from the first byte on a busy machine): Splice takes the event
			// over when it registers the socket. Dropped, its bytes would wait forever.
			r.early[cookie] = struct{}{}
		}
		r.mu.Unlock()
		if s != nil {
			s.c.hold(s)
		}
	}
}

// side is one socket of a connection.
type side struct {
	c      *Conn
	fd     int
	id     uint64
	cookie uint64
	base   uint64     // bytes written into its send queue at setup (bytes_acked + SIOCOUTQ)
	first  uint64     // bytes user space wrote to it at setup
	eof    bool       // its peer sent FIN (EPOLLRDHUP)
	shut   bool       // its write side is shut (the other side's EOF passed on)
	source bool       // in sources (its bytes are redirected by the kernel)
	held   bool       // the program holds its bytes: user space moves them (moveHeld)
	extra  uint64     // bytes of it user space moved to the peer (queued at setup, held)
	files  []*os.File // held: the duplicates moveHeld reads and writes through
	peer   *side
}

// Conn is one connection in the kernel path.
type Conn struct {
	r        *Redirector
	a, b     side
	idle     time.Duration
	start    int64 // CLOCK_MONOTONIC ns at setup
	mu       sync.Mutex
	timer    *time.Timer // idle timer
	retry    *time.Timer // flush re-check
	wait     time.Duration
	ended    bool
	err      error
	final    [2]uint64
	queued   uint64 // bytes of a read by Splice and sent after first (counted a→b)
	onEnd    func(*Conn)
	done     chan struct{}
	closed   atomic.Bool
	notified atomic.Bool
	pauses   atomic.Int64
}

// Pauses is how many sides were held back because their peer fell behind (their bytes then
// go through user space, whose blocking writes hold the sender back).
func (c *Conn) Pauses() int64 { return c.pauses.Load() }

// Splice moves a and b into the kernel path: from now on, bytes arriving on a are sent on
// b and the other way round, and first is written to b before any byte of a. It takes
// ownership of both connections (their descriptors are duplicated and the *net.TCPConn
// closed, so the Go netpoller forgets them): do not use them again. On error the
// connections are untouched and still the caller's, unless the error is ErrAborted.
// idle > 0 closes the connection after that long without bytes either way. onEnd, when
// not nil, is called once when the connection has ended (from the goroutine that ended
// it, after Done is closed): a caller holding many connections needs no goroutine per
// connection to learn of their end.
func (r *Redirector) Splice(a, b *net.TCPConn, first []byte, idle time.Duration, onEnd func(*Conn)) (*Conn, error) {
	c := &Conn{r: r, idle: idle, done: make(chan struct{}), onEnd: onEnd}
	c.a.c, c.b.c = c, c
	c.a.peer, c.b.peer = &c.b, &c.a
	fa, err := rawFD(a)
	if err != nil {
		return nil, err
	}
	fb, err := rawFD(b)
	if err != nil {
		return nil, err
	}
	for _, s := range []*side{&c.a, &c.b} {
		fd := fa
		if s == &c.b {
			fd = fb
		}
		if s.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE); err != nil {
			return nil, fmt.Errorf("SO_COOKIE: %w", err)
		}
		// Nothing has been written on either socket yet (the caller writes nothing to a, and
		// first goes to b below), so the send queue is empty: the base is bytes_acked alone.
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return nil, fmt.Errorf("TCP_INFO: %w", err)
		}
		s.base = ti.Bytes_acked
	}
	now := monoNow()
	c.start = now
	undo := func() {
		for _, k := range []uint64{c.a.cookie, c.b.cookie} {
			_ = r.objs.Sources.Delete(k)
			_ = r.objs.Peers.Delete(k)
			_ = r.objs.Stats.Delete(k)
		}
		r.mu.Lock()
		delete(r.early, c.a.cookie)
		delete(r.early, c.b.cookie)
		r.mu.Unlock()
	}
	// Stats first (the program counts into them), then the redirect targets: a's bytes go
	// to b, b's to a. No socket is a source yet, so nothing moves.
	// What a has queued now is read below (asked before a is in any sockhash: then the
	// ioctl counts the psock's queue instead); more than maxQueued (a client streaming
	// before it is routed: no TLS client does) is left to the caller's user-space copy.
	inq, err := unix.IoctlGetInt(fa, unix.SIOCINQ)
	if err != nil {
		return nil, fmt.Errorf("SIOCINQ: %w", err)
	}
	if inq > maxQueued {
		return nil, fmt.Errorf("%w: %d bytes queued before the connection was spliced", ErrNotNow, inq)
	}
	// Own the descriptors: duplicates for us (the originals are closed at the end, so the
	// Go netpoller lets go of them).
	da, err := unix.FcntlInt(uintptr(fa), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup: %w", err)
	}
	db, err := unix.FcntlInt(uintptr(fb), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.Close(da)
		return nil, fmt.Errorf("dup: %w", err)
	}
	fail := func(err error) (*Conn, error) {
		undo()
		unix.Close(da)
		unix.Close(db)
		return nil, err
	}
	// Stats first (the program counts into them), then the redirect targets: a's bytes go
	// to b, b's to a. No socket is a source yet, so nothing moves.
	for _, s := range []*side{&c.a, &c.b} {
		if err := r.objs.Stats.Update(s.cookie, connStat{LastNS: uint64(now), Off: s.peer.base}, ebpf.UpdateNoExist); err != nil {
			return fail(fmt.Errorf("sockmap stats: %w", err))
		}
	}
	if err := r.objs.Peers.Update(c.a.cookie, uint64(fb), ebpf.UpdateNoExist); err != nil {
		return fail(notNow("sockmap peers", err))
	}
	if err := r.objs.Peers.Update(c.b.cookie, uint64(fa), ebpf.UpdateNoExist); err != nil {
		return fail(notNow("sockmap peers", err))
	}
	// b joins first: whatever it answers to first goes to a in the kernel.
	if err := r.objs.Sources.Update(c.b.cookie, uint64(fb), ebpf.UpdateNoExist); err != nil {
		return fail(fmt.Errorf("sockmap sources: %w", err))
	}
	c.b.source = true
	// From here bytes are read or written: an error ends both connections.
	abort := func(err error) (*Conn, error) {
		fail(nil)
		a.Close()
		b.Close()
		return nil, fmt.Errorf("%w: %w", ErrAborted, err)
	}
	// Bytes still queued on a must not be left for the verdict if the caller read part of
	// their segment (a gateway reading the hello stops mid-segment): the kernel would send
	// the segment whole, the part already read twice. So read everything queued now and
	// send it after first; what arrives from here on is whole segments, swept in order
	// when a joins.
	callerFirst := len(first)
	first, err = readQueued(fa, first, inq)
	if err != nil {
		return abort(err)
	}
	c.a.extra = uint64(len(first) - callerFirst)
	if len(first) > 0 {
		if err := writeAll(fb, first, 5*time.Second); err != nil {
			return abort(fmt.Errorf("writing the first bytes: %w", err))
		}
		c.b.first = uint64(len(first))
	}
	// a's bytes land in b after first: the program measures b's backlog from there.
	if err := r.objs.Stats.Update(c.a.cookie, connStat{LastNS: uint64(now), Off: c.b.base + c.b.first}, ebpf.UpdateExist); err != nil {
		return abort(fmt.Errorf("sockmap stats: %w", err))
	}
	if err := r.objs.Sources.Update(c.a.cookie, uint64(fa), ebpf.UpdateNoExist); err != nil {
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return abort(fmt.Errorf("sockmap sources: %w", err))
		}
		// a is no longer established: its FIN arrived since it became a redirect target
		// (a sockhash takes established sockets only). Nothing more can arrive on it, so
		// what it holds is read and written to b here, and its EOF is passed on as usual
		// (epoll reports it once registered); b's bytes still go to a in the kernel.
		rest, err := readQueued(fa, nil, -1)
		if err != nil {
			return abort(err)
		}
		if err := writeAll(fb, rest, 5*time.Second); err != nil {
			return abort(fmt.Errorf("writing the last bytes: %w", err))
		}
		c.b.first += uint64(len(rest))
		c.a.extra += uint64(len(rest))
	} else {
		c.a.source = true
	}
	// Bytes already queued on either socket arrived before it joined: run the verdict over
	// them now (setting SO_RCVLOWAT calls data_ready), in order, ahead of anything later.
	for _, fd := range []int{fb, fa} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1); err != nil {
			return abort(fmt.Errorf("SO_RCVLOWAT: %w", err))
		}
	}
	a.Close()
	b.Close()
	c.a.fd, c.b.fd = da, db
	r.mu.Lock()
	r.live[c] = struct{}{}
	r.ids++
	c.a.id = r.ids
	r.ids++
	c.b.id = r.ids
	r.bySd[c.a.id] = &c.a
	r.bySd[c.b.id] = &c.b
	r.byCookie[c.a.cookie] = &c.a
	r.byCookie[c.b.cookie] = &c.b
	var early []*side
	for _, s := range []*side{&c.a, &c.b} {
		if _, ok := r.early[s.cookie]; ok {
			delete(r.early, s.cookie)
			early = append(early, s)
		}
	}
	r.mu.Unlock()
	if idle > 0 {
		c.mu.Lock()
		c.timer = time.AfterFunc(idle, c.checkIdle)
		c.mu.Unlock()
	}
	for _, s := range []*side{&c.a, &c.b} {
		ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(uint32(s.id)), Pad: int32(uint32(s.id >> 32))}
		if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
			c.end(fmt.Errorf("epoll_ctl: %w", err))
			return c, nil
		}
	}
	for _, s := range early {
		c.hold(s)
	}
	return c, nil
}

// maxQueued bounds what Splice reads from a before it joins the kernel path.
const maxQueued = 4 << 20

// readQueued appends to first exactly the n bytes fd has queued (n from SIOCINQ just
// before): the queue is then empty up to a segment boundary, whatever part of its head
// segment the caller had read, and segments arriving meanwhile stay whole behind it.
// n < 0 reads until EOF or EAGAIN (a socket that can receive nothing more: its receive
// buffer bounds what is read).
func readQueued(fd int, first []byte, n int) ([]byte, error) {
	if n == 0 {
		return first, nil
	}
	size := n
	if n < 0 {
		size = 64 << 10
	}
	out := append(make([]byte, 0, len(first)+size), first...)
	for read := 0; n < 0 || read < n; {
		want := size
		if n >= 0 {
			want = n - read
		}
		if cap(out)-len(out) < want {
			out = append(out, make([]byte, want)...)[:len(out)]
		}
		m, _, err := unix.Recvfrom(fd, out[len(out):len(out)+want], unix.MSG_DONTWAIT)
		if m > 0 {
			out = out[:len(out)+m]
			read += m
			continue
		}
		switch {
		case err == unix.EINTR:
		case n < 0 && (err == unix.EAGAIN || err == nil): // all read, or EOF
			return out, nil
		case err == nil:
			return nil, fmt.Errorf("reading queued bytes: EOF after %d of %d", read, n)
		default:
			return nil, fmt.Errorf("reading queued bytes: %w", err)
		}
	}
	return out, nil
}

// notNow marks EOPNOTSUPP (a socket no longer established: a sockhash refuses it) as
// ErrNotNow.
func notNow(what string, err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%w: %s: the connection is no longer established", ErrNotNow, what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func rawFD(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// written is how many bytes have entered fd's send queue since the connection began, up
// to a constant: bytes acknowledged plus bytes still queued. TCP_INFO is read first, so a
// concurrent ACK can only make the sum smaller, never larger than the truth.
func written(fd int) (uint64, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("TCP_INFO: %w", err)
	}
	q, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0, fmt.Errorf("SIOCOUTQ: %w", err)
	}
	return ti.Bytes_acked + uint64(q), nil
}

func writeAll(fd int, p []byte, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		if n > 0 {
			p = p[n:]
		}
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			ms := int(time.Until(deadline) / time.Millisecond)
			if ms <= 0 {
				return os.ErrDeadlineExceeded
			}
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(fds, ms); err != nil && err != unix.EINTR {
				return err
			}
		case err != nil:
			return err
		}
	}
	return nil
}

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// event handles an epoll event for s.
func (c *Conn) event(s *side, ev uint32) {
	defer c.notify()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	if ev&unix.EPOLLERR != 0 {
		e, _ := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if syscall.Errno(e) == unix.EPIPE && s.shut {
			// The kernel worker found this socket's write side shut: only what came after
			// the drain check (nothing but FIN carriers) can be behind that. Not an error.
			return
		}
		err := error(syscall.Errno(e))
		if e == 0 {
			err = errors.New("socket error")
		}
		c.endLocked(os.NewSyscallError("socket", err))
		return
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 && !s.eof {
		s.eof = true
		c.flushLocked()
	}
}

// flushLocked passes each EOF on once everything redirected before it has been handed to
// the peer's send queue, and ends the connection when both directions are done. When the
// kernel's worker has not caught up yet, it looks again shortly.
func (c *Conn) flushLocked() {
	pending := false
	for _, s := range []*side{&c.a, &c.b} {
		if !s.eof || s.peer.shut || s.held {
			continue // held: moveHeld passes its EOF on
		}
		ok, held, err := c.drainedLocked(s)
		if err != nil {
			c.endLocked(err)
			return
		}
		if held {
			// The EOF came after bytes the program kept for user space (the backlog
			// event is on its way): moveHeld passes them on, then the EOF.
			c.holdLocked(s)
			continue
		}
		if !ok {
			pending = true
			continue
		}
		if err := unix.Shutdown(s.peer.fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
			c.endLocked(os.NewSyscallError("shutdown", err))
			return
		}
		s.peer.shut = true
	}
	if c.a.shut && c.b.shut {
		c.endLocked(nil)
		return
	}
	if pending {
		c.wait = min(max(2*c.wait, 100*time.Microsecond), 20*time.Millisecond)
		if c.retry == nil {
			c.retry = time.AfterFunc(c.wait, c.recheck)
		} else {
			c.retry.Reset(c.wait)
		}
	}
}

func (c *Conn) recheck() {
	defer c.notify()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended {
		c.flushLocked()
	}
}

// drainedLocked: has every byte redirected from s reached s.peer's send queue? held says
// whether the program holds s's bytes now (then they are moveHeld's to pass on, even
// before the backlog event has arrived).
func (c *Conn) drainedLocked(s *side) (drained, held bool, err error) {
	var st connStat
	if err := c.r.objs.Stats.Lookup(s.cookie, &st); err != nil {
		return false, false, fmt.Errorf("sockmap stats: %w", err)
	}
	w, err := written(s.peer.fd)
	if err != nil {
		return false, false, err
	}
	return w-s.peer.base >= s.peer.first+st.Bytes, st.Held != 0, nil
}

// hold takes over a side whose bytes the program now keeps with it (its peer fell more
// than BACKLOG_MAX behind): user space moves them to the peer (moveHeld). Only the
// program stops the redirect, in its verdict: taking the socket out of sources from here
// would race with a verdict on another CPU, which the kernel then drops.
func (c *Conn) hold(s *side) {
	defer c.notify()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holdLocked(s)
}

func (c *Conn) holdLocked(s *side) {
	if c.ended || s.held {
		return
	}
	// Duplicates in the Go netpoller: blocking reads and writes that park no thread, and
	// that endLocked ends by closing them.
	for _, fd := range []int{s.fd, s.peer.fd} {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			c.endLocked(fmt.Errorf("dup: %w", err))
			return
		}
		s.files = append(s.files, os.NewFile(uintptr(d), "sockmap-held"))
	}
	s.held = true
	c.pauses.Add(1)
	go c.moveHeld(s, s.files[0], s.files[1])
}

// moveHeld moves a held side's bytes to its peer in user space until its EOF, which it
// passes on. It starts once everything the kernel redirected before the hold has entered
// the peer's send queue, so the bytes stay in order.
func (c *Conn) moveHeld(s *side, from, to *os.File) {
	var wait time.Duration
	for {
		c.mu.Lock()
		if c.ended {
			c.mu.Unlock()
			return
		}
		ok, _, err := c.drainedLocked(s)
		if err != nil {
			c.endLocked(err)
		}
		c.mu.Unlock()
		if err != nil {
			c.notify()
			return
		}
		if ok {
			break
		}
		wait = min(max(2*wait, 100*time.Microsecond), 20*time.Millisecond)
		time.Sleep(wait) //nolint:forbidigo // polling the kernel's send progress: no event tells it
	}
	buf := make([]byte, 64<<10)
	for {
		n, rerr := from.Read(buf)
		if n > 0 {
			if _, err := to.Write(buf[:n]); err != nil {
				c.endMoved(fmt.Errorf("writing held bytes: %w", err))
				return
			}
			c.mu.Lock()
			s.extra += uint64(n)
			s.peer.first += uint64(n)
			c.mu.Unlock()
		}
		switch {
		case rerr == io.EOF:
			c.mu.Lock()
			if !c.ended {
				if err := unix.Shutdown(s.peer.fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
					c.endLocked(os.NewSyscallError("shutdown", err))
				} else {
					s.peer.shut = true
					if c.a.shut && c.b.shut {
						c.endLocked(nil)
					}
				}
			}
			c.mu.Unlock()
			c.notify()
			return
		case rerr != nil:
			c.endMoved(fmt.Errorf("reading held bytes: %w", rerr))
			return
		}
	}
}

// endMoved ends the connection with err unless it has already ended (then err is only
// the closing of moveHeld's files).
func (c *Conn) endMoved(err error) {
	c.mu.Lock()
	if !c.ended {
		c.endLocked(err)
	}
	c.mu.Unlock()
	c.notify()
}

func (c *Conn) checkIdle() {
	defer c.notify()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	last := c.start
	for _, s := range []*side{&c.a, &c.b} {
		var st connStat
		if err := c.r.objs.Stats.Lookup(s.cookie, &st); err == nil && int64(st.LastNS) > last {
			last = int64(st.LastNS)
		}
	}
	if left := time.Duration(last + int64(c.idle) - monoNow()); left > 0 {
		c.timer.Reset(left)
		return
	}
	c.endLocked(ErrIdle)
}

// Close cuts the connection now (both sockets closed); Done is closed on return.
func (c *Conn) Close() {
	c.end(ErrCut)
}

func (c *Conn) end(err error) {
	c.mu.Lock()
	c.endLocked(err)
	c.mu.Unlock()
	c.notify()
}

// notify calls onEnd once, after the connection ended and c.mu is released.
func (c *Conn) notify() {
	if c.closed.Load() && c.notified.CompareAndSwap(false, true) && c.onEnd != nil {
		c.onEnd(c)
	}
}

func (c *Conn) endLocked(err error) {
	if c.ended {
		return
	}
	c.ended = true
	c.err = err
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.retry != nil {
		c.retry.Stop()
	}
	r := c.r
	for i, s := range []*side{&c.a, &c.b} {
		var st connStat
		if err := r.objs.Stats.LookupAndDelete(s.cookie, &st); err == nil {
			c.final[i] = st.Bytes
		}
		c.final[i] += s.extra
	}
	r.mu.Lock()
	delete(r.bySd, c.a.id)
	delete(r.bySd, c.b.id)
	delete(r.byCookie, c.a.cookie)
	delete(r.byCookie, c.b.cookie)
	delete(r.live, c)
	r.mu.Unlock()
	// Closing a socket takes it out of both sockhashes and out of the epoll set.
	unix.Close(c.a.fd)
	unix.Close(c.b.fd)
	for _, s := range []*side{&c.a, &c.b} {
		for _, f := range s.files {
			f.Close()
		}
	}
	c.closed.Store(true)
	close(c.done)
}

// Done is closed when the connection has ended (both directions finished, an error, the
// idle timeout or Close); Err then tells which.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is nil when both sides ended cleanly (EOF both ways, passed on), ErrIdle, ErrCut, or
// the socket error that ended it. Valid once Done is closed.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Bytes is how many bytes have moved a→b and b→a past the caller's first bytes (the kernel's
// redirects, and what Splice found queued on a): live while the connection runs, final once
// it has ended.
func (c *Conn) Bytes() (ab, ba uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return c.final[0], c.final[1]
	}
	var sa, sb connStat
	_ = c.r.objs.Stats.Lookup(c.a.cookie, &sa)
	_ = c.r.objs.Stats.Lookup(c.b.cookie, &sb)
	return sa.Bytes + c.a.extra, sb.Bytes + c.b.extra
}
