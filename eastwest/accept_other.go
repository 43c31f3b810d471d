//go:build !linux

package eastwest

import (
	"context"
	"errors"
	"net"
)

const rawAcceptSupported = false

func newRawListener(ln net.Listener) (net.Listener, error) {
	return nil, errors.New("the raw accept loop is Linux only")
}

func (g *Gateway) acceptLoopRaw(closed context.Context, ln net.Listener) error {
	return errors.New("the raw accept loop is Linux only")
}
