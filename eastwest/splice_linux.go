package eastwest

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

const pollSpliceSupported = true

const (
	spliceMove     = 0x1 // SPLICE_F_MOVE
	spliceNonblock = 0x2 // SPLICE_F_NONBLOCK
	fSetPipeSz     = 1031
	// pipeSize is what each pooled pipe is grown to (as Go's own splice does): one splice
	// then moves up to this much, so bulk transfers make few system calls.
	pipeSize = 1 << 20
)

// spipe is a pipe used as the in-kernel buffer between two sockets. It is taken from the
// pool only while bytes are in flight, so an idle connection holds none (io.Copy's splice
// keeps one per blocked direction: 4 extra fds per idle connection).
type spipe struct {
	r, w int
	size int
}

var pipePool = sync.Pool{New: func() any {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil
	}
	p := &spipe{r: fds[0], w: fds[1], size: 64 << 10}
	// Best effort: an unprivileged process may be limited by /proc/sys/fs/pipe-max-size.
	if n, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[1]), fSetPipeSz, pipeSize); e == 0 {
		p.size = int(n)
	}
	// The pool drops items at GC: close their fds then.
	runtime.SetFinalizer(p, func(p *spipe) { p.close() })
	return p
}}

func (p *spipe) close() {
	syscall.Close(p.r)
	syscall.Close(p.w)
}

func getPipe() *spipe {
	p, _ := pipePool.Get().(*spipe)
	return p
}

func putPipe(p *spipe, empty bool) {
	if !empty {
		// Bytes left in it (the write side failed): never hand it to another connection.
		runtime.SetFinalizer(p, nil)
		p.close()
		return
	}
	pipePool.Put(p)
}

// splice moves up to n bytes between a socket and a pipe. Every fd involved is
// non-blocking and SPLICE_F_NONBLOCK is set, so the call never blocks: it is made as a raw
// system call, skipping the scheduler hand-off (entersyscall, which also wakes sysmon)
// that syscall.Splice pays on every call (visible in perf profiles as sysmon wake-ups).
func splice(from, to int, n int) (int, error) {
	for {
		m, _, e := syscall.RawSyscall6(syscall.SYS_SPLICE, uintptr(from), 0, uintptr(to), 0, uintptr(n), spliceMove|spliceNonblock)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(m), nil
	}
}

var errNoPipe = errors.New("no pipe for splice (out of file descriptors?)")

// splicer is one direction's state. Its fill and drain methods are bound once, so the
// per-chunk path allocates nothing.
type splicer struct {
	pp   *spipe
	n    int // bytes in the pipe from the last fill
	left int // bytes still to drain
	err  error
	fill func(uintptr) bool
	drn  func(uintptr) bool
}

// fillFn splices what src has queued into a pipe, taken from the pool only now: when
// nothing is queued the pipe goes back before the goroutine sleeps in the netpoller.
func (s *splicer) fillFn(fd uintptr) bool {
	if s.pp == nil {
		if s.pp = getPipe(); s.pp == nil {
			s.err = errNoPipe
			return true
		}
	}
	s.n, s.err = splice(int(fd), s.pp.w, s.pp.size)
	if s.err == syscall.EAGAIN {
		putPipe(s.pp, true)
		s.pp = nil
		return false
	}
	return true
}

// drainFn splices the pipe into dst until empty; false (wait for writability) when dst's
// send buffer is full.
func (s *splicer) drainFn(fd uintptr) bool {
	for s.left > 0 {
		m, e := splice(s.pp.r, int(fd), s.left)
		if m > 0 {
			s.left -= m
			continue
		}
		if e == syscall.EAGAIN {
			return false
		}
		if e == nil {
			e = syscall.EPIPE
		}
		s.err = os.NewSyscallError("splice", e)
		return true
	}
	return true
}

// pollSplice moves src to dst: wait for src to be readable in the netpoller, splice what
// is queued into a pooled pipe, splice the pipe into dst (waiting for writability when
// dst's buffer is full), return the pipe. Returns nil on src's EOF.
// Deadlines implement the idle timeout: armed once, and on expiry re-armed from the time
// of the last bytes moved either way (so a busy connection costs no timer updates).
func (p *proxied) pollSplice(dst, src sock, counter prometheus.Counter) error {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return err
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	idleSet := p.g.cfg.IdleTimeout > 0
	if idleSet {
		p.armIdle(src)
		// A peer that stops reading must not hold the connection forever, even when the
		// other direction has already finished and cannot notice.
		_ = dst.SetWriteDeadline(nowTime().Add(p.g.cfg.IdleTimeout))
	}
	s := &splicer{}
	s.fill, s.drn = s.fillFn, s.drainFn
	for {
		s.err, s.n = nil, 0
		rerr := srcRaw.Read(s.fill)
		if rerr != nil {
			if s.pp != nil {
				putPipe(s.pp, s.n <= 0)
				s.pp = nil
			}
			if errors.Is(rerr, os.ErrDeadlineExceeded) {
				if dl, ok := p.stillAlive(); ok {
					_ = src.SetReadDeadline(dl)
					continue
				}
				if p.idleNow() {
					return errIdle
				}
			}
			return rerr
		}
		if s.err != nil {
			if s.pp != nil {
				putPipe(s.pp, true)
				s.pp = nil
			}
			if s.err == errNoPipe {
				return s.err
			}
			return os.NewSyscallError("splice", s.err)
		}
		if s.n == 0 {
			putPipe(s.pp, true)
			s.pp = nil
			return nil // EOF
		}
		s.left = s.n
		err := dstRaw.Write(s.drn)
		for err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			dl, ok := p.stillAlive()
			if !ok {
				break
			}
			_ = dst.SetWriteDeadline(dl)
			err = dstRaw.Write(s.drn)
		}
		putPipe(s.pp, s.left == 0)
		s.pp = nil
		moved := s.n - s.left
		if moved > 0 {
			counter.Add(float64(moved))
			if idleSet {
				p.last.Store(nowNano())
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && p.idleNow() {
				return errIdle
			}
			return err
		}
		if s.err != nil {
			return s.err
		}
	}
}
