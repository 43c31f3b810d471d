package eastwest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// rawSock is a TCP socket the gateway made (dialSend) or accepted (acceptLoopRaw) itself:
// an *os.File in the Go netpoller (deadlines, SyscallConn waiting for readiness), read
// and half-closed with raw system calls. Closing goes through the os.File.
type rawSock struct {
	*os.File
	rc syscall.RawConn
}

func newRawSock(fd int, name string) *rawSock {
	f := os.NewFile(uintptr(fd), name)
	rc, _ := f.SyscallConn() // only fails on a nil or closed file
	return &rawSock{File: f, rc: rc}
}

// Read is os.File's Read (waiting in the netpoller, under the read deadline) with a raw
// read(2).
func (s *rawSock) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var e syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			r, _, en := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch en {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, e = int(r), en
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case e != 0:
		return 0, os.NewSyscallError("read", e)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// CloseWrite sends the FIN (shutdown(SHUT_WR)).
func (s *rawSock) CloseWrite() error {
	var e syscall.Errno
	if err := s.rc.Control(func(fd uintptr) {
		_, _, e = syscall.RawSyscall(syscall.SYS_SHUTDOWN, fd, syscall.SHUT_WR, 0)
	}); err != nil {
		return err
	}
	if e != 0 {
		return os.NewSyscallError("shutdown", e)
	}
	return nil
}

// sockaddr is an endpoint's address as connect(2) takes it (sockaddr_in or sockaddr_in6
// bytes), made once, when the endpoint enters the route table (newSockaddr): an IPv6 zone
// is resolved to its interface's index then, not at every dial.
type sockaddr struct {
	b      []byte
	family int
}

// newSockaddr makes the sockaddr of addr: "ip:port", "[ipv6]:port" or "[ipv6%zone]:port"
// (zone: an interface's name or index, as net.Dial takes it).
func newSockaddr(addr string) (sockaddr, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return sockaddr{}, fmt.Errorf("endpoint address %q: %w", addr, err)
	}
	b, family, err := rawSockaddr(ap)
	if err != nil {
		return sockaddr{}, fmt.Errorf("endpoint address %q: %w", addr, err)
	}
	return sockaddr{b: b, family: family}, nil
}

// dialSend connects to sa and writes first, all within timeout, making
// only the system calls a relay needs: socket, TCP_NODELAY, connect, write, and the
// netpoller's registration (fcntl, epoll_ctl). net.Dialer adds a getsockopt(SO_ERROR), a
// getpeername and a getsockname to every dial (for addresses a relay never asks for),
// and parks the goroutine until the connect completes. Here the hello is written at once
// after connect: on a fast network the handshake is already done by then (on loopback it
// always is), and while it is not, the write says EAGAIN and the netpoller waits for
// writability, which is the connect's completion. A failed connect is the write's error
// (the socket's pending error), so no SO_ERROR read is needed either.
//
// Every system call here is made raw (none of them blocks: the socket is non-blocking):
// a system call through syscall.Syscall tells the Go scheduler it may block, and the
// first such call after the process was idle wakes the runtime's monitor thread (sysmon),
// which then polls every 20 µs for a while: measured, half of the gateway's context
// switches per connection (docs/benchmarks.md).
//
// TCP_NODELAY is kept: the gateway passes each TLS record on as it arrives, and with
// Nagle's algorithm a small record sent while an earlier one is unacknowledged would wait
// for that ACK (up to the peer's delayed-ACK timer).
func dialSend(sa sockaddr, first []byte, timeout time.Duration) (*rawSock, error) {
	deadline := time.Now().Add(timeout)
	fd, err := syscall.Socket(sa.family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	one := int32(1)
	if _, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY,
		uintptr(unsafe.Pointer(&one)), 4, 0); e != 0 {
		rawClose(fd)
		return nil, os.NewSyscallError("setsockopt TCP_NODELAY", e)
	}
	if err := rawConnect(fd, sa.b); err != nil {
		rawClose(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	n, err := writeSome(fd, first)
	if err != nil {
		rawClose(fd)
		return nil, connectErr(err)
	}
	u := newRawSock(fd, "upstream")
	if n == len(first) {
		return u, nil
	}
	// The handshake is still under way (or the send buffer is full): wait for writability.
	_ = u.SetWriteDeadline(deadline)
	var werr error
	err = u.rc.Write(func(fd uintptr) bool {
		m, e := writeSome(int(fd), first[n:])
		n += m
		if e != nil {
			werr = e
			return true
		}
		return n == len(first)
	})
	_ = u.SetWriteDeadline(time.Time{})
	if err == nil {
		err = werr
	}
	if err != nil {
		u.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("connect: no answer within %s", timeout)
		}
		return nil, connectErr(err)
	}
	return u, nil
}

// writeSome writes p to the non-blocking fd until it is written or the socket says
// EAGAIN (not an error: the count written so far is returned). A raw system call, as
// splice's: it never blocks.
func writeSome(fd int, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
		switch {
		case e == syscall.EINTR:
		case e == syscall.EAGAIN:
			return n, nil
		case e != 0:
			return n, e
		default:
			n += int(m)
		}
	}
	return n, nil
}

// connectErr names a write error on a socket being connected for what it is: the
// connect's failure (refused, unreachable, reset) reported by the socket.
func connectErr(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return os.NewSyscallError("connect", errno)
	}
	return err
}

// rawSockaddr is ap as the kernel's sockaddr (sockaddr_in or sockaddr_in6 bytes, the
// zone as sin6_scope_id: a link-local address needs it, the kernel refuses its connect
// with EINVAL otherwise).
func rawSockaddr(ap netip.AddrPort) ([]byte, int, error) {
	a, port := ap.Addr(), ap.Port()
	if a.Is4() || a.Is4In6() {
		var sa syscall.RawSockaddrInet4
		sa.Family = syscall.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], port)
		sa.Addr = a.Unmap().As4()
		return unsafe.Slice((*byte)(unsafe.Pointer(&sa)), syscall.SizeofSockaddrInet4), syscall.AF_INET, nil
	}
	var sa syscall.RawSockaddrInet6
	sa.Family = syscall.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], port)
	sa.Addr = a.As16()
	if z := a.Zone(); z != "" {
		i, err := zoneIndex(z)
		if err != nil {
			return nil, 0, err
		}
		sa.Scope_id = i
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&sa)), syscall.SizeofSockaddrInet6), syscall.AF_INET6, nil
}

// rawConnect starts a non-blocking connect: nil when it is under way (or done).
func rawConnect(fd int, sa []byte) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa)))
	switch e {
	case 0, syscall.EINPROGRESS, syscall.EALREADY, syscall.EINTR:
		// EINTR: the connect goes on in the background, as EINPROGRESS says.
		return nil
	}
	return e
}

func rawClose(fd int) { syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0) }
