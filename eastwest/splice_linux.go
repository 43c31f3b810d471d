package eastwest

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const pollSpliceSupported = true

const (
	spliceMove     = 0x1 // SPLICE_F_MOVE
	spliceNonblock = 0x2 // SPLICE_F_NONBLOCK
	// maxSplice is one pipe's default capacity (16 pages): one splice moves at most that.
	maxSplice = 64 << 10
)

// spipe is a pipe used as the in-kernel buffer between two sockets. It is taken from the
// pool only while bytes are in flight, so an idle connection holds none (io.Copy's splice
// keeps one per blocked direction: 4 extra fds per idle connection).
type spipe struct{ r, w int }

var pipePool = sync.Pool{New: func() any {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil
	}
	p := &spipe{r: fds[0], w: fds[1]}
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

func splice(from, to int, n int) (int, error) {
	for {
		m, err := syscall.Splice(from, nil, to, nil, n, spliceMove|spliceNonblock)
		if err == syscall.EINTR {
			continue
		}
		return int(m), err
	}
}

var errNoPipe = errors.New("no pipe for splice (out of file descriptors?)")

// pollSplice moves src to dst: wait for src to be readable in the netpoller, splice what
// is queued into a pooled pipe, splice the pipe into dst (waiting for writability when
// dst's buffer is full), return the pipe. Returns nil on src's EOF.
func (p *proxied) pollSplice(dst, src *net.TCPConn, counter prometheus.Counter) error {
	srcRaw, err := src.SyscallConn()
	if err != nil {
		return err
	}
	dstRaw, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	p.armIdle(src)
	idleSet := p.g.cfg.IdleTimeout > 0
	for {
		var (
			pp   *spipe
			n    int
			serr error
		)
		rerr := srcRaw.Read(func(fd uintptr) bool {
			if pp == nil {
				if pp = getPipe(); pp == nil {
					serr = errNoPipe
					return true
				}
			}
			n, serr = splice(int(fd), pp.w, maxSplice)
			if serr == syscall.EAGAIN {
				// Nothing queued: give the pipe back before sleeping in the netpoller.
				putPipe(pp, true)
				pp = nil
				return false
			}
			return true
		})
		if rerr != nil {
			if pp != nil {
				putPipe(pp, n <= 0)
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
		if serr != nil {
			if pp != nil {
				putPipe(pp, true)
			}
			return os.NewSyscallError("splice", serr)
		}
		if n == 0 {
			putPipe(pp, true)
			return nil // EOF
		}
		left := n
		var werr error
		write := func(fd uintptr) bool {
			for left > 0 {
				m, e := splice(pp.r, int(fd), left)
				if m > 0 {
					left -= m
					continue
				}
				if e == syscall.EAGAIN {
					return false
				}
				if e == nil {
					e = syscall.EPIPE
				}
				werr = os.NewSyscallError("splice", e)
				return true
			}
			return true
		}
		if idleSet {
			// A peer that stops reading must not hold the connection forever, even when
			// the other direction has already finished and cannot notice.
			_ = dst.SetWriteDeadline(time.Now().Add(p.g.cfg.IdleTimeout))
		}
		err := dstRaw.Write(write)
		for err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			dl, ok := p.stillAlive()
			if !ok {
				break
			}
			_ = dst.SetWriteDeadline(dl)
			err = dstRaw.Write(write)
		}
		putPipe(pp, left == 0)
		moved := n - left
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
		if werr != nil {
			return werr
		}
	}
}
