//go:build !linux

package eastwest

import (
	"net"

	"github.com/prometheus/client_golang/prometheus"
)

const pollSpliceSupported = false

func (p *proxied) pollSplice(dst, src *net.TCPConn, counter prometheus.Counter) error {
	return p.ioCopy(dst, src, counter)
}
