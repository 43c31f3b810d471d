package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/federation/xds"
)

type xdsFlags struct {
	listen                        string
	minReassign                   time.Duration
	healthInterval, healthTimeout time.Duration
	healthPing, healthDownAfter   time.Duration
	healthStream                  bool
	certInstance                  string
	tlsCert, tlsKey, tlsClientCA  string
}

func addXDSFlags(fl *pflag.FlagSet, f *xdsFlags) {
	fl.StringVar(&f.listen, "xds-listen", xds.DefaultListen, "xDS (ADS) listener for this cluster's gRPC clients, Envoys and east-west gateway")
	fl.DurationVar(&f.minReassign, "xds-min-reassign", planner.DefaultMinReassign, "shortest time between two priority reassignments of one service (a cluster going away is never held)")
	fl.DurationVar(&f.healthInterval, "health-interval", time.Second, "interval between health checks of each remote gateway address")
	fl.DurationVar(&f.healthTimeout, "health-timeout", 500*time.Millisecond, "timeout of one gateway health check (connect, TLS, status line)")
	fl.BoolVar(&f.healthStream, "health-stream", true, "check gateways that offer it over one long-lived health stream (pings); false: one connection per check, every --health-interval")
	fl.DurationVar(&f.healthPing, "health-ping-interval", 250*time.Millisecond, "interval between two pings on a health stream")
	fl.DurationVar(&f.healthDownAfter, "health-down-after", 2*time.Second, "a gateway whose health stream leaves a ping unanswered this long is down (blackhole detection time)")
	fl.StringVar(&f.certInstance, "xds-cert-provider-instance", xds.DefaultCertProviderInstance, "certificate provider instance that proxyless gRPC bootstraps define")
	fl.StringVar(&f.tlsCert, "xds-tls-cert", "", "serve xDS over TLS with this certificate chain (PEM; read again at every handshake); needed when --xds-listen is not loopback")
	fl.StringVar(&f.tlsKey, "xds-tls-key", "", "private key (PEM) of --xds-tls-cert")
	fl.StringVar(&f.tlsClientCA, "xds-tls-client-ca", "", "with --xds-tls-cert: require every xDS client to present a certificate chaining to this PEM bundle (mTLS)")
}

// healthOptions are the gateway health checker's options.
func (f *xdsFlags) healthOptions() health.Options {
	return health.Options{Interval: f.healthInterval, Timeout: f.healthTimeout,
		PingInterval: f.healthPing, DownAfter: f.healthDownAfter, NoStream: !f.healthStream}
}

// serverTLS is the xDS listener's TLS configuration (nil: plaintext).
func (f *xdsFlags) serverTLS() (*tls.Config, error) {
	if f.tlsCert == "" && f.tlsKey == "" {
		return nil, nil
	}
	tc, err := xds.TLSFiles{Cert: f.tlsCert, Key: f.tlsKey, ClientCA: f.tlsClientCA}.ServerConfig()
	if err != nil {
		return nil, fmt.Errorf("--xds-tls-cert/--xds-tls-key/--xds-tls-client-ca: %w", err)
	}
	return tc, nil
}

func (f *xdsFlags) validate() error {
	var errs validate.Errors
	errs.AddErr("--xds-listen", validate.ListenAddr(f.listen))
	if f.minReassign < 0 {
		errs.Add("--xds-min-reassign", "must not be negative")
	}
	if f.healthInterval < 100*time.Millisecond {
		errs.Add("--health-interval", "%v: at least 100ms", f.healthInterval)
	}
	if f.healthTimeout <= 0 || f.healthTimeout > f.healthInterval {
		errs.Add("--health-timeout", "%v: positive and at most --health-interval", f.healthTimeout)
	}
	if f.healthPing < 10*time.Millisecond {
		errs.Add("--health-ping-interval", "%v: at least 10ms", f.healthPing)
	}
	if f.healthDownAfter < 2*f.healthPing {
		errs.Add("--health-down-after", "%v: at least twice --health-ping-interval (%v)", f.healthDownAfter, f.healthPing)
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		errs.Add("--xds-tls-cert", "give --xds-tls-cert and --xds-tls-key together (or neither, for plaintext on loopback)")
	}
	if f.tlsClientCA != "" && f.tlsCert == "" {
		errs.Add("--xds-tls-client-ca", "mTLS needs the server side too: add --xds-tls-cert and --xds-tls-key")
	}
	return errs.Err()
}

// loopbackListen reports whether a listen address binds loopback only (":port" and
// "0.0.0.0:port" bind every address).
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
