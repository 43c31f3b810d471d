package eastwest

import "syscall"

func setDeferAccept(fd, secs int) error {
	return syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, secs)
}
