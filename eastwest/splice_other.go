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

// sockaddr is Linux only (dialSend's raw connect).
type sockaddr struct{}

func newSockaddr(string) (sockaddr, error) { return sockaddr{}, nil }

func dialSend(sockaddr, []byte, time.Duration) (sock, error) {
	return nil, errors.New("dialSend is Linux only")
}
