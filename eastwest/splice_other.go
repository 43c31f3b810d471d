//go:build !linux

package eastwest

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const pollSpliceSupported = false

func (p *proxied) pollSplice(dst, src sock, counter prometheus.Counter) error {
	return p.ioCopy(dst, src, counter)
}

func dialSend(addr string, first []byte, timeout time.Duration) (sock, error) {
	return nil, errors.New("dialSend is Linux only")
}
