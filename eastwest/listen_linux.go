package eastwest

import "syscall"

// setListenerOpts sets TCP_DEFER_ACCEPT, and TCP_NODELAY, which accepted sockets inherit
// (so the raw accept loop need not set it on each).
func setListenerOpts(fd, secs int) error {
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, secs); err != nil {
		return err
	}
	return syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
}
