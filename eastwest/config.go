package eastwest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest/internal/hello"
)

// CopyMode selects how proxied bytes are moved.
type CopyMode string

const (
	// CopyPollSplice waits for readability through the Go netpoller, then splices exactly
	// the queued bytes through a pooled pipe: an idle connection holds no pipe (Linux).
	CopyPollSplice CopyMode = "poll-splice"
	// CopyIOCopy is io.Copy between the two *net.TCPConn: splice(2) too, but each blocked
	// direction holds a pipe (2 fds) while it waits.
	CopyIOCopy CopyMode = "io-copy"
	// CopySockmap hands both sockets of a routed connection to a BPF sockhash whose
	// sk_skb program redirects each one's bytes to the other: the bytes never wake the
	// gateway (Linux, CAP_BPF and CAP_NET_ADMIN; see eastwest/internal/sockmap).
	CopySockmap CopyMode = "sockmap"
	// CopyAuto is sockmap where this kernel and process allow it, else poll-splice (one
	// log line says why). Not the default: on the measured machine sockmap costs more per
	// connection and per GB than poll-splice (docs/benchmarks.md).
	CopyAuto CopyMode = "auto"
)

// CopyModes lists the modes a user can ask for.
var CopyModes = []CopyMode{CopyAuto, CopySockmap, CopyPollSplice, CopyIOCopy}

// Config is the gateway's configuration; zero values take the documented defaults.
type Config struct {
	Cluster            string        // this cluster's name, reported by the health name
	Domain             string        // SNI domain, default cluster.local
	HelloTimeout       time.Duration // default 3s
	MaxHelloBytes      int           // default 16 KiB
	IdleTimeout        time.Duration // 0: none; default set by the command (1h)
	ConnectTimeout     time.Duration // per attempt, default 2s
	ConnectAttempts    int           // endpoints tried per connection, default 3
	DrainTimeout       time.Duration // default 30s
	DrainAcceptPeriod  time.Duration // keep accepting (health says draining) this long first; default 0
	MaxConns           int           // all client connections held, default 0 = unlimited
	MaxConnsPerService int           // proxied connections per service, default 0 = unlimited
	EjectBase          time.Duration // first ejection after a failed connect, default 1s
	EjectMax           time.Duration // longest ejection, default 30s
	CopyMode           CopyMode      // default poll-splice (measured cheapest: docs/benchmarks.md)
	// HBONE, when set, lets the gateway serve HBONE (ServeHBONE) besides SNI passthrough.
	HBONE *HBONEConfig
	// HealthCert answers health.meshfed.internal; nil generates a self-signed one.
	HealthCert *tls.Certificate
	Log        *slog.Logger
	Registry   prometheus.Registerer
}

func (c *Config) defaults() error {
	if c.Domain == "" {
		c.Domain = names.DefaultDomain
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = 3 * time.Second
	}
	if c.MaxHelloBytes == 0 {
		c.MaxHelloBytes = hello.DefaultMaxBytes
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 2 * time.Second
	}
	if c.ConnectAttempts == 0 {
		c.ConnectAttempts = 3
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.EjectBase == 0 {
		c.EjectBase = time.Second
	}
	if c.EjectMax == 0 {
		c.EjectMax = 30 * time.Second
	}
	if c.CopyMode == "" {
		c.CopyMode = CopyPollSplice
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	switch {
	case c.MaxHelloBytes < 512 || c.MaxHelloBytes > 64<<10:
		return fmt.Errorf("max hello bytes %d: use 512-65536 (a Go 1.26 hello is ~1.6 KiB, a browser's ~2 KiB)", c.MaxHelloBytes)
	case c.HelloTimeout < 0 || c.IdleTimeout < 0 || c.ConnectTimeout < 0 || c.DrainTimeout < 0 || c.DrainAcceptPeriod < 0:
		return errors.New("timeouts must not be negative")
	case c.MaxConns < 0 || c.MaxConnsPerService < 0 || c.ConnectAttempts < 0:
		return errors.New("limits must not be negative (0 means unlimited)")
	case !slices.Contains(CopyModes, c.CopyMode):
		return fmt.Errorf("copy mode %q: use one of %v", c.CopyMode, CopyModes)
	}
	return nil
}

// DefaultMaxHelloBytes is the default ClientHello size cap (16 KiB, records included).
const DefaultMaxHelloBytes = hello.DefaultMaxBytes
