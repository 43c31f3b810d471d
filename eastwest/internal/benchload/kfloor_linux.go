package main

import (
	"fmt"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelFlights is what one connection of the conn phase carries through a proxy, in
// order, as the gateway's strace shows it (Go client and server, TLS 1.3): the
// ClientHello (client to server), the server's flight, the client's ChangeCipherSpec +
// Finished + the 32-byte echo, the echo back. Sizes are bytes; a positive size goes from
// the connecting side to the accepting side, a negative one back.
var kernelFlights = []int{1537, -1764, 118, -54}

// kernelFloor is the kernel's share of the second TCP connection a relay adds, and nothing
// else: n loopback connections made, carried and closed in this one OS thread with
// blocking system calls, each carrying kernelFlights and closed as the client closes its
// connection (connecting side first; the accepting side reads the EOF, then closes). On
// loopback the receiving side's TCP work runs in the sender's system call, so every packet
// of the connection, both ends, is counted here: socket, TCP_NODELAY, connect, accept4,
// 4 writes, 5 reads, 2 closes per connection (15 system calls), no epoll, no wake-up, no
// user-space work. It returns the thread's CPU time and context switches and the system
// calls made; the listener has TCP_NODELAY and TCP_DEFER_ACCEPT as the gateway's.
func kernelFloor(n int) (cpu time.Duration, switches int64, syscalls int, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, 0, 0, err
	}
	defer unix.Close(lfd)
	_ = unix.SetsockoptInt(lfd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 3)
	_ = unix.SetsockoptInt(lfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return 0, 0, 0, err
	}
	if err := unix.Listen(lfd, 128); err != nil {
		return 0, 0, 0, err
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		return 0, 0, 0, err
	}
	port := sa.(*unix.SockaddrInet4).Port
	raw := syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	pb := (*[2]byte)(unsafe.Pointer(&raw.Port))
	pb[0], pb[1] = byte(port>>8), byte(port)
	buf := make([]byte, 4096)
	one := int32(1)

	var ru0, ru1 unix.Rusage
	var t0, t1 unix.Timespec
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru0)
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0)
	for i := 0; i < n; i++ {
		c, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if e != 0 {
			return 0, 0, 0, fmt.Errorf("socket: %w", e)
		}
		syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, c, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
		if _, _, e := syscall.Syscall(syscall.SYS_CONNECT, c, uintptr(unsafe.Pointer(&raw)), syscall.SizeofSockaddrInet4); e != 0 {
			return 0, 0, 0, fmt.Errorf("connect: %w", e)
		}
		// With TCP_DEFER_ACCEPT the accept waits for the first bytes: write them first.
		if err := kwrite(int(c), buf[:kernelFlights[0]]); err != nil {
			return 0, 0, 0, err
		}
		s, _, e := syscall.Syscall6(syscall.SYS_ACCEPT4, uintptr(lfd), 0, 0, syscall.SOCK_CLOEXEC, 0, 0)
		if e != 0 {
			return 0, 0, 0, fmt.Errorf("accept4: %w", e)
		}
		ends := [2]int{int(c), int(s)}
		for j, f := range kernelFlights {
			from, to, size := ends[0], ends[1], f
			if f < 0 {
				from, to, size = ends[1], ends[0], -f
			}
			if j > 0 {
				if err := kwrite(from, buf[:size]); err != nil {
					return 0, 0, 0, err
				}
			}
			if err := kread(to, buf[:size]); err != nil {
				return 0, 0, 0, err
			}
		}
		syscall.RawSyscall(syscall.SYS_CLOSE, c, 0, 0)
		if m, _, e := syscall.Syscall(syscall.SYS_READ, s, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf))); e != 0 || m != 0 {
			return 0, 0, 0, fmt.Errorf("read at EOF: %d, %v", m, e)
		}
		syscall.RawSyscall(syscall.SYS_CLOSE, s, 0, 0)
	}
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t1)
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru1)
	cpu = time.Duration(t1.Nano() - t0.Nano())
	switches = (ru1.Nvcsw + ru1.Nivcsw) - (ru0.Nvcsw + ru0.Nivcsw)
	return cpu, switches, 15 * n, nil
}

func kwrite(fd int, p []byte) error {
	for len(p) > 0 {
		m, _, e := syscall.Syscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != 0 {
			return fmt.Errorf("write: %w", e)
		}
		p = p[m:]
	}
	return nil
}

// kread reads exactly len(p) bytes (one read when the flight arrived whole, as on
// loopback it does).
func kread(fd int, p []byte) error {
	for len(p) > 0 {
		m, _, e := syscall.Syscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != 0 {
			return fmt.Errorf("read: %w", e)
		}
		if m == 0 {
			return fmt.Errorf("read: early EOF")
		}
		p = p[m:]
	}
	return nil
}
