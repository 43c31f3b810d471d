package healthcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshfed/meshfed/api/healthwire"
	"github.com/meshfed/meshfed/api/names"
)

// MaxLine bounds the status line a checker reads.
const MaxLine = healthwire.MaxLine

// Result is one probe's outcome.
type Result struct {
	Healthy bool
	Status  string            // first word: ok, draining, not-ready
	Fields  map[string]string // key=value pairs after it (cluster, service_ports, ...)
	Line    string            // the line as received, without the newline
	RTT     time.Duration     // connect + handshake + line
}

// ErrUnhealthy wraps a status line that is not "ok".
var ErrUnhealthy = errors.New("gateway not healthy")

// Probe dials addr, does TLS with SNI health.meshfed.internal and reads the status line.
// cfg may be nil: the gateway's default health certificate is self-signed, and the line
// carries no secret, so by default the certificate is not verified (pass a cfg with
// RootCAs to pin a --health-cert). The error is nil only for an "ok" line.
func Probe(ctx context.Context, addr string, cfg *tls.Config) (Result, error) {
	start := time.Now()
	if cfg == nil {
		cfg = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see doc comment
	} else {
		cfg = cfg.Clone()
	}
	cfg.ServerName = names.HealthSNI
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Result{}, fmt.Errorf("health %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	line, err := healthwire.ReadLine(c)
	if err != nil {
		return Result{}, fmt.Errorf("health %s: read status line: %w", addr, err)
	}
	r := Parse(line)
	r.RTT = time.Since(start)
	if !r.Healthy {
		return r, fmt.Errorf("health %s: %w: %s", addr, ErrUnhealthy, r.Line)
	}
	return r, nil
}

// Parse reads a status line ("ok cluster=east service_ports=2 ...") by the shared wire
// format (api/healthwire); a malformed line is not healthy.
func Parse(line string) Result {
	line = strings.TrimRight(line, "\r\n")
	r := Result{Line: line, Fields: map[string]string{}}
	l, err := healthwire.ParseLine(line)
	if err != nil {
		return r
	}
	r.Status, r.Healthy = l.Word, l.Word == "ok"
	for k, v := range l.Fields {
		r.Fields[k] = v
	}
	return r
}
