package eastwest

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Listen opens the gateway's listener on addr. Accepted connections get no TCP keepalive
// (the idle timeout closes dead peers; keepalive costs four setsockopt calls per
// connection), and on Linux the socket has TCP_DEFER_ACCEPT: accept returns only once the
// client's first bytes (its ClientHello) have arrived, which saves a wake-up per
// connection and leaves connections that never speak to the kernel. helloTimeout bounds
// that wait (rounded up to whole seconds). It also has TCP_NODELAY, which accepted
// sockets inherit.
func Listen(ctx context.Context, addr string, helloTimeout time.Duration) (net.Listener, error) {
	secs := int((helloTimeout + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	lc := net.ListenConfig{
		KeepAlive: -1,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = setListenerOpts(int(fd), secs) })
			if err != nil {
				return err
			}
			return serr
		},
	}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// Listen is the package's Listen with this gateway's hello timeout.
func (g *Gateway) Listen(ctx context.Context, addr string) (net.Listener, error) {
	return Listen(ctx, addr, g.cfg.HelloTimeout)
}
