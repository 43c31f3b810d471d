package eastwest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/meshfed/meshfed/internal/ctxtime"
)

const rawAcceptSupported = true

// rawListener is the SNI listener in poll-splice mode: a duplicate of the net.Listener's
// socket as an *os.File, whose RawConn can wait for readability (a net.Listener's cannot).
// The net.Listener itself is closed at once (the socket stays open through the duplicate);
// Close closes the duplicate, which ends acceptLoopRaw.
type rawListener struct {
	addr net.Addr
	f    *os.File
	rc   syscall.RawConn
}

func newRawListener(ln net.Listener) (*rawListener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("the raw accept loop needs a *net.TCPListener, not a %T", ln)
	}
	f, err := tl.File()
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	l := &rawListener{addr: ln.Addr(), f: f, rc: rc}
	ln.Close()
	return l, nil
}

func (l *rawListener) Accept() (net.Conn, error) { return nil, syscall.EINVAL } // acceptLoopRaw accepts
func (l *rawListener) Close() error              { return l.f.Close() }
func (l *rawListener) Addr() net.Addr            { return l.addr }

// acceptedConn is a client connection accepted by acceptLoopRaw: a net.Conn (for the
// health name's TLS and the drill's faults) over a rawSock.
type acceptedConn struct {
	*rawSock
	local  net.Addr // the listener's address
	remote netip.AddrPort
}

func (c *acceptedConn) LocalAddr() net.Addr  { return c.local }
func (c *acceptedConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

// SetLinger is SO_LINGER, as net.TCPConn's (0: close resets the connection).
func (c *acceptedConn) SetLinger(sec int) error {
	l := syscall.Linger{}
	if sec >= 0 {
		l.Onoff, l.Linger = 1, int32(sec)
	}
	var e syscall.Errno
	if err := c.rc.Control(func(fd uintptr) {
		_, _, e = syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, fd, syscall.SOL_SOCKET, syscall.SO_LINGER,
			uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
	}); err != nil {
		return err
	}
	if e != 0 {
		return os.NewSyscallError("setsockopt SO_LINGER", e)
	}
	return nil
}

// acceptLoopRaw is acceptLoop for the SNI listener in poll-splice mode, without the net
// package: accept4 as a raw system call when the netpoller says the listener is readable,
// and the connection registered with the netpoller as an *os.File (fcntl, epoll_ctl).
// net.Listener's Accept adds a getsockname and a TCP_NODELAY setsockopt to every
// connection (the listener has TCP_NODELAY, which accepted sockets inherit) and makes
// accept4 and read through syscall.Syscall, which wake the runtime's monitor thread
// (docs/benchmarks.md). ln is the rawListener Serve made.
func (g *Gateway) acceptLoopRaw(closed context.Context, ln net.Listener) error {
	l := ln.(*rawListener)
	var backoff time.Duration
	for {
		var nfd int
		var sa syscall.RawSockaddrAny
		var e syscall.Errno
		err := l.rc.Read(func(fd uintptr) bool {
			for {
				salen := uint32(syscall.SizeofSockaddrAny)
				r, _, en := syscall.RawSyscall6(syscall.SYS_ACCEPT4, fd, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)),
					syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
				switch en {
				case syscall.EAGAIN:
					return false
				case syscall.EINTR, syscall.ECONNABORTED,
					// accept(2): errors of the pending connection, to be retried.
					syscall.ENETDOWN, syscall.EPROTO, syscall.ENOPROTOOPT, syscall.EHOSTDOWN, syscall.ENONET,
					syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ENETUNREACH:
					continue
				}
				nfd, e = int(r), en
				return true
			}
		})
		if err != nil {
			if g.draining.Load() {
				return net.ErrClosed
			}
			return err
		}
		if e != 0 {
			if e == syscall.EMFILE || e == syscall.ENFILE || e == syscall.ENOBUFS || e == syscall.ENOMEM {
				// Out of fds or memory: back off rather than spin (as acceptLoop does).
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				g.log.Warn("accept failed; retrying", "err", os.NewSyscallError("accept4", e), "in", backoff)
				ctxtime.Sleep(closed, backoff) // cut short when ln is closed: accept then says so
				continue
			}
			return os.NewSyscallError("accept4", e)
		}
		backoff = 0
		c := &acceptedConn{rawSock: newRawSock(nfd, "client"), local: l.addr, remote: addrPort(&sa)}
		if ok, err := g.take(c, ProtocolSNI); err != nil {
			return err
		} else if ok {
			go g.handle(c)
		}
	}
}

// addrPort is the address of a sockaddr_in or sockaddr_in6.
func addrPort(sa *syscall.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case syscall.AF_INET:
		p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), uint16(port[0])<<8|uint16(port[1]))
	case syscall.AF_INET6:
		p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(p.Addr), uint16(port[0])<<8|uint16(port[1]))
	}
	return netip.AddrPort{}
}
