//go:build !linux

package eastwest

import (
	"fmt"
	"log/slog"
	"net"
	"time"
)

// kernelRedirector: the sockmap path is Linux only.
type kernelRedirector struct{}

func (*kernelRedirector) Close() error { return nil }

func newKernelRedirector(int) (*kernelRedirector, error) {
	return nil, fmt.Errorf("copy mode %s needs Linux", CopySockmap)
}

func chooseCopyMode(mode CopyMode, log *slog.Logger) (CopyMode, error) {
	switch mode {
	case CopySockmap:
		return "", fmt.Errorf("copy mode %s needs Linux", CopySockmap)
	case CopyAuto:
		log.Info("copy mode auto: using poll-splice, the sockmap path is Linux only")
		return CopyPollSplice, nil
	}
	return mode, nil
}

func (g *Gateway) spliceKernel(c, up *net.TCPConn, hello []byte, r *route, ep *epState, start time.Time) bool {
	return false
}

func (g *Gateway) syncKernelBytes() {}
