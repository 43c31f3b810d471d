package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ---------------------------------------------------------------- the event-loop relay

// relay is the least a user-space relay process costs per connection, written the way
// nginx and HAProxy are and the Go gateway is not: one OS thread, one epoll set, every
// system call raw and non-blocking, edge-triggered with EPOLLRDHUP, so a read shorter than
// the buffer needs no second read that says EAGAIN (nginx's trick; the Go netpoller does
// not pass EPOLLRDHUP on). For each LISTEN=TARGET pair it accepts (TCP_DEFER_ACCEPT and
// TCP_NODELAY on the listener, as the gateway's), connects to TARGET (TCP_NODELAY), and
// copies both ways through one 16 KiB buffer per direction with read and write, passing
// each EOF on with shutdown and closing both sockets once both directions ended. No hello
// is read, no route chosen, no timer, limit, counter or drain: a floor, not a proxy.
func relay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	var pairs [][2]netip.AddrPort
	fs.Func("relay", "LISTEN=TARGET (repeat; IPv4 ip:port)", func(v string) error {
		l, t, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("%q: want LISTEN=TARGET", v)
		}
		la, err := netip.ParseAddrPort(l)
		if err != nil {
			return err
		}
		ta, err := netip.ParseAddrPort(t)
		if err != nil {
			return err
		}
		pairs = append(pairs, [2]netip.AddrPort{la, ta})
		return nil
	})
	fs.Parse(args)
	runtime.LockOSThread()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	lp := &loop{ep: ep, listeners: map[int]netip.AddrPort{}, conns: map[int]*rconn{}}
	for _, p := range pairs {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 3)
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(p[0].Port()), Addr: p[0].Addr().As4()}); err != nil {
			return fmt.Errorf("bind %s: %w", p[0], err)
		}
		if err := unix.Listen(fd, 4096); err != nil {
			return err
		}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}); err != nil {
			return err
		}
		lp.listeners[fd] = p[1]
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	go func() { <-stop; os.Exit(0) }()
	fmt.Println("ready")
	return lp.run()
}

type loop struct {
	ep        int
	listeners map[int]netip.AddrPort
	conns     map[int]*rconn // by either fd
}

// rconn is one relayed connection: half 0 copies a.fd to b.fd, half 1 b.fd to a.fd.
type rconn struct {
	fd   [2]int
	half [2]rhalf
}

type rhalf struct {
	readable bool // src may have bytes (or EOF) queued
	rdhup    bool // src's peer sent its FIN (EPOLLRDHUP): read until 0
	buf      [16 << 10]byte
	off, end int  // bytes read from src not yet written to dst
	done     bool // src's EOF passed on to dst
}

func (lp *loop) run() error {
	evs := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(lp.ep, evs, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		for i := 0; i < n; i++ {
			fd, ev := int(evs[i].Fd), evs[i].Events
			if target, ok := lp.listeners[fd]; ok {
				lp.accept(fd, target)
				continue
			}
			c := lp.conns[fd]
			if c == nil {
				continue
			}
			side := 0
			if c.fd[1] == fd {
				side = 1
			}
			h := &c.half[side] // the direction reading fd
			if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				h.readable = true
			}
			if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				h.rdhup = true
			}
			if !lp.pump(c, side) || !lp.pump(c, 1-side) {
				lp.close(c)
				continue
			}
			if c.half[0].done && c.half[1].done {
				lp.close(c)
			}
		}
	}
}

func (lp *loop) accept(lfd int, target netip.AddrPort) {
	for {
		cfd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lfd), 0, 0, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		if e != 0 {
			return // EAGAIN, or an error of the pending connection
		}
		ufd, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if e != 0 {
			syscall.RawSyscall(syscall.SYS_CLOSE, cfd, 0, 0)
			continue
		}
		one := int32(1)
		syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, ufd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
		sa := syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: target.Addr().As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(target.Port()>>8), byte(target.Port())
		if _, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, ufd, uintptr(unsafe.Pointer(&sa)), syscall.SizeofSockaddrInet4); e != 0 && e != syscall.EINPROGRESS {
			syscall.RawSyscall(syscall.SYS_CLOSE, cfd, 0, 0)
			syscall.RawSyscall(syscall.SYS_CLOSE, ufd, 0, 0)
			continue
		}
		c := &rconn{fd: [2]int{int(cfd), int(ufd)}}
		for _, fd := range c.fd {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
			syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(lp.ep), unix.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
			lp.conns[fd] = c
		}
	}
}

// pump moves what it can of direction side (fd[side] to fd[1-side]); false on an error
// (the connection is to be closed).
func (lp *loop) pump(c *rconn, side int) bool {
	h := &c.half[side]
	src, dst := c.fd[side], c.fd[1-side]
	for !h.done {
		if h.off < h.end {
			n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(dst), uintptr(unsafe.Pointer(&h.buf[h.off])), uintptr(h.end-h.off))
			if e == syscall.EAGAIN {
				return true // EPOLLOUT on dst calls again
			}
			if e != 0 {
				return false
			}
			h.off += int(n)
			continue
		}
		if !h.readable {
			return true
		}
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(src), uintptr(unsafe.Pointer(&h.buf[0])), uintptr(len(h.buf)))
		switch {
		case e == syscall.EAGAIN:
			h.readable = false
		case e != 0:
			return false
		case n == 0:
			syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(dst), syscall.SHUT_WR, 0)
			h.done = true
		default:
			h.off, h.end = 0, int(n)
			if int(n) < len(h.buf) && !h.rdhup {
				// All that was queued: the next bytes or the FIN raise a new edge.
				h.readable = false
			}
		}
	}
	return true
}

func (lp *loop) close(c *rconn) {
	for _, fd := range c.fd {
		delete(lp.conns, fd)
		syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0) // leaves the epoll set with it
	}
}
