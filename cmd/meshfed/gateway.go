package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/internal/adaptprocs"
)

func init() { register(newGatewayCmd) }

type gatewayFlags struct {
	cluster, listen, admin, exports, domain string
	federation, federationCache             string
	fedCA, fedCert, fedKey, fedServerName   string
	federationCacheMaxAge                   time.Duration
	healthCert, healthKey                   string
	helloTimeout, idleTimeout               time.Duration
	connectTimeout, drainTimeout            time.Duration
	drainAccept, pollInterval               time.Duration
	maxHelloBytes, maxConns, maxPerService  int
	connectAttempts                         int
	copyMode                                string
	steadySysmon                            bool
	adaptiveProcs                           bool
	hboneListen, hboneCert, hboneKey        string
	spiffeSocket, bundleDir                 string
	hboneAllowTD                            []string
}

func newGatewayCmd() *cobra.Command {
	var f gatewayFlags
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "East-west gateway: route TLS by SNI to this cluster's exported services, without terminating it",
		Long: `The east-west gateway lets other clusters reach this cluster's exported services.
It reads the SNI of each TLS ClientHello (never terminating TLS), routes names of the form

  outbound_.<port>_._.<service>.<namespace>.svc.cluster.local

to a ready endpoint of that exported service, and splices the bytes both ways. Any other
name, a missing SNI, non-TLS bytes, an oversize or slow hello is closed without contacting
a backend. health.meshfed.internal is answered by the gateway itself (one status line over
TLS); it says "draining" from the moment SIGTERM arrives.

The routes come from exactly one of two sources. --federation ADDR takes them from this
cluster's federation service over xDS (gRPC ADS): its exported service ports and their
ready endpoints. The gateway is ready once the first whole table has arrived, and keeps
routing with the last good table while the federation is unreachable (it reconnects with
backoff and reports how stale the table is); with --federation-cache FILE that table also
survives a restart of the gateway during a federation outage. --exports FILE takes them
from a YAML or JSON file re-read when it changes (an invalid file is refused and the last
good table stays in force):

  services:
    - name: echo
      namespace: demo
      ports:
        - {name: tls, port: 8443, targetPort: 9443}
      endpoints:
        - {address: 10.0.1.7, zone: z1}
        - {address: 10.0.1.8, zone: z2, ready: false}

Examples:
  # Route what cluster "east" exports, as its federation service says (xDS on loopback)
  meshfed gateway --cluster east --federation 127.0.0.1:15010

  # Serve the exports of cluster "east" from a file on :15443, metrics on 127.0.0.1:15000
  meshfed gateway --cluster east --exports /etc/meshfed/exports.yaml

  # Call through it (from another cluster): the SNI picks the service and port
  openssl s_client -connect gw.east.example:15443 \
    -servername outbound_.8443_._.echo.demo.svc.cluster.local

  # Also take Istio ambient's HBONE on :15008 (mTLS with this gateway's SVID; callers'
  # SVIDs verified against the federated bundles the federation writes to --bundle-dir)
  meshfed gateway --cluster east --federation 127.0.0.1:15010 --hbone-listen :15008 \
    --hbone-cert /etc/meshfed/svid.pem --hbone-key /etc/meshfed/svid-key.pem \
    --bundle-dir /var/run/meshfed/bundles

  # Health-check it as a remote cluster does
  openssl s_client -quiet -connect gw.east.example:15443 -servername health.meshfed.internal

  # Metrics, liveness, readiness
  curl -s 127.0.0.1:15000/metrics | grep meshfed_gateway_
  curl -s 127.0.0.1:15000/readyz

With --hbone-listen ADDR the gateway also serves HBONE (Istio ambient multi-network): mTLS
with this gateway's SVID (--hbone-cert/--hbone-key, re-read when they change, or the
SPIFFE Workload API at --spiffe-socket), ALPN h2, callers' SVIDs verified against the
bundle of their own trust domain among the federated ones (--bundle-dir, or the Workload
API), narrowed by --hbone-allow-trust-domain. Each HTTP/2 CONNECT whose authority is
<service>.<namespace>.svc.<domain>:<port> of an exported service port is carried,
unchanged, to the HBONE port of one of its ready endpoints that has one; anything else is
an HTTP error, and no backend is contacted.

See docs/eastwest.md for the health wire protocol, HBONE, metrics and limits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.steadySysmon {
				// Before anything starts: the process is replaced (same pid, arguments and
				// descriptors) and comes back here with the setting in force.
				if err := reexecSteadySysmon(); err != nil {
					slog.Warn("runtime monitor left in its default mode: re-executing with GODEBUG failed", "err", err)
				}
			}
			return runGateway(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.adaptiveProcs, "adaptive-procs", true, "run the Go scheduler on one P (GOMAXPROCS=1) after the gateway has used less than 0.35 of a core for 2s, and on the default (CPU count or cgroup limit) as soon as 250ms at one P use more than 0.7 of a core: a third fewer context switches and up to a fifth less CPU per connection at tens to thousands of connections per second; a burst after a quiet spell runs its first 250ms on one core (docs/benchmarks.md); each change is logged and in meshfed_gateway_gomaxprocs; off when the environment sets GOMAXPROCS")
	fl.StringVar(&f.cluster, "cluster", "", "this cluster's name (DNS label), reported by the health name (required)")
	fl.StringVar(&f.listen, "listen", ":15443", "ADDR the gateway accepts TLS on")
	fl.StringVar(&f.admin, "admin", "127.0.0.1:15000", "ADDR of /metrics, /healthz and /readyz")
	fl.StringVar(&f.exports, "exports", "", "exports FILE (YAML or JSON) naming the services and endpoints to route (this or --federation)")
	fl.StringVar(&f.federation, "federation", "", "HOST:PORT of this cluster's federation xDS server to take the routes from (this or --exports), e.g. 127.0.0.1:15010")
	fl.StringVar(&f.federationCache, "federation-cache", "", "FILE keeping the last route table from --federation, used at start until the federation answers (default: memory only)")
	fl.DurationVar(&f.federationCacheMaxAge, "federation-cache-max-age", 24*time.Hour, "ignore a --federation-cache older than this (0: any age)")
	fl.StringVar(&f.fedCA, "federation-ca", "", "PEM CA bundle to verify the federation's xDS server with: TLS instead of plaintext (default: plaintext, right on loopback only)")
	fl.StringVar(&f.fedCert, "federation-cert", "", "PEM client certificate for mTLS to the federation (with --federation-key; re-read at every connection)")
	fl.StringVar(&f.fedKey, "federation-key", "", "PEM private key of --federation-cert")
	fl.StringVar(&f.fedServerName, "federation-server-name", "", "name the federation's certificate must carry: a DNS name (default: the host of --federation) or a SPIFFE ID spiffe://...")
	fl.StringVar(&f.domain, "domain", "cluster.local", "cluster DNS domain carried in SNI names")
	fl.StringVar(&f.healthCert, "health-cert", "", "PEM certificate for health.meshfed.internal (default: self-signed at start)")
	fl.StringVar(&f.healthKey, "health-key", "", "PEM private key of --health-cert")
	fl.DurationVar(&f.helloTimeout, "hello-timeout", 3*time.Second, "time a client has to send its whole ClientHello")
	fl.IntVar(&f.maxHelloBytes, "max-hello-bytes", eastwest.DefaultMaxHelloBytes, "largest ClientHello accepted, records included (512-65536)")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", time.Hour, "close a proxied connection after this long without bytes either way (0: never)")
	fl.DurationVar(&f.connectTimeout, "connect-timeout", 2*time.Second, "time to connect to one endpoint before trying another")
	fl.IntVar(&f.connectAttempts, "connect-attempts", 3, "endpoints tried per connection before refusing it")
	fl.DurationVar(&f.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, time live connections get to finish before they are cut")
	fl.DurationVar(&f.drainAccept, "drain-accept-period", 0, "on SIGTERM, keep accepting this long (health answers \"draining\") before closing the listener")
	fl.IntVar(&f.maxConns, "max-conns", 50000, "client connections held at once, all phases (0: unlimited)")
	fl.IntVar(&f.maxPerService, "max-conns-per-service", 0, "proxied connections per service at once (0: unlimited)")
	fl.DurationVar(&f.pollInterval, "exports-poll", time.Second, "how often --exports is checked for changes")
	fl.StringVar(&f.hboneListen, "hbone-listen", "", "ADDR of the HBONE listener (Istio ambient's double HBONE; Istio's port is 15008); off when empty")
	fl.StringVar(&f.hboneCert, "hbone-cert", "", "PEM X.509 SVID of this gateway for --hbone-listen (with --hbone-key; re-read when it changes)")
	fl.StringVar(&f.hboneKey, "hbone-key", "", "PEM private key of --hbone-cert")
	fl.StringVar(&f.spiffeSocket, "spiffe-socket", "", "SPIFFE Workload API socket PATH (or unix:///PATH) giving the SVID, and without --bundle-dir the federated bundles, for --hbone-listen")
	fl.StringVar(&f.bundleDir, "bundle-dir", "", "DIR the federation writes the federated bundles to (meshfed federation --bundle-dir): HBONE callers must chain to their trust domain's bundle there")
	fl.StringArrayVar(&f.hboneAllowTD, "hbone-allow-trust-domain", nil, "TD allowed to call over HBONE (repeatable; default: every federated trust domain)")
	fl.BoolVar(&f.steadySysmon, "steady-sysmon", true, "keep the Go runtime's monitor thread polling every 10 ms, not deep-sleeping whenever the gateway idles to be woken (to 20 µs polls) by the next connection's close: ~1 context switch and ~10 % CPU less per connection under load, 0.4 % of a core more when idle (docs/benchmarks.md); done by re-executing with "+steadySchedtrace+" added to GODEBUG, unless GODEBUG sets schedtrace")
	fl.StringVar(&f.copyMode, "copy-mode", string(eastwest.CopyPollSplice), "byte mover: poll-splice (splice through pooled pipes, none held by idle connections; measured cheapest), sockmap (the kernel redirects the bytes: Linux, CAP_BPF and CAP_NET_ADMIN), io-copy (stdlib io.Copy), or auto (sockmap where it can run, else poll-splice, logged once)")
	return cmd
}

func (f *gatewayFlags) validate() error {
	var errs validate.Errors
	if f.cluster == "" {
		errs.Add("--cluster", "required: this cluster's name, e.g. --cluster east")
	} else if err := validate.DNSLabel(f.cluster); err != nil {
		errs.Add("--cluster", "%v", err)
	}
	switch {
	case f.exports == "" && f.federation == "":
		errs.Add("--exports", "required: the exports file to route, e.g. --exports /etc/meshfed/exports.yaml, or --federation 127.0.0.1:15010 to take the routes from the federation service")
	case f.exports != "" && f.federation != "":
		errs.Add("--federation", "give --federation or --exports, not both: one route source")
	case f.federation != "":
		if _, _, err := net.SplitHostPort(f.federation); err != nil {
			errs.Add("--federation", "%q is not HOST:PORT of the federation's xDS server (e.g. 127.0.0.1:15010)", f.federation)
		}
	}
	if f.federationCache != "" && f.federation == "" {
		errs.Add("--federation-cache", "only with --federation (the exports file is its own cache)")
	}
	if f.federation == "" && f.fedCA+f.fedCert+f.fedKey+f.fedServerName != "" {
		errs.Add("--federation-ca", "the --federation-* TLS flags need --federation")
	}
	if f.fedCA == "" && f.fedCert+f.fedKey+f.fedServerName != "" {
		errs.Add("--federation-ca", "required with --federation-cert, --federation-key or --federation-server-name: the CA that verifies the federation")
	}
	if (f.fedCert == "") != (f.fedKey == "") {
		errs.Add("--federation-cert", "give both --federation-cert and --federation-key, or neither")
	}
	if f.federationCacheMaxAge < 0 {
		errs.Add("--federation-cache-max-age", "%v: must not be negative (0: any age)", f.federationCacheMaxAge)
	}
	for name, v := range map[string]string{"--listen": f.listen, "--admin": f.admin} {
		if _, _, err := net.SplitHostPort(v); err != nil {
			errs.Add(name, "%q is not HOST:PORT (e.g. :15443 or 127.0.0.1:15000)", v)
		}
	}
	if err := validate.DNSSubdomain(f.domain); err != nil {
		errs.Add("--domain", "%v", err)
	}
	if (f.healthCert == "") != (f.healthKey == "") {
		errs.Add("--health-cert", "give both --health-cert and --health-key, or neither for a self-signed certificate")
	}
	if f.maxHelloBytes < 512 || f.maxHelloBytes > 64<<10 {
		errs.Add("--max-hello-bytes", "%d: use 512-65536 (a Go 1.26 hello is ~1.6 KiB, a browser's ~2 KiB)", f.maxHelloBytes)
	}
	for name, d := range map[string]time.Duration{"--hello-timeout": f.helloTimeout, "--connect-timeout": f.connectTimeout, "--exports-poll": f.pollInterval} {
		if d <= 0 {
			errs.Add(name, "%v: must be positive, e.g. 3s", d)
		}
	}
	for name, d := range map[string]time.Duration{"--idle-timeout": f.idleTimeout, "--drain-timeout": f.drainTimeout, "--drain-accept-period": f.drainAccept} {
		if d < 0 {
			errs.Add(name, "%v: must not be negative", d)
		}
	}
	for name, n := range map[string]int{"--max-conns": f.maxConns, "--max-conns-per-service": f.maxPerService} {
		if n < 0 {
			errs.Add(name, "%d: use 0 for unlimited or a positive limit", n)
		}
	}
	if f.connectAttempts < 1 || f.connectAttempts > 16 {
		errs.Add("--connect-attempts", "%d: use 1-16", f.connectAttempts)
	}
	if m := eastwest.CopyMode(f.copyMode); !slices.Contains(eastwest.CopyModes, m) {
		errs.Add("--copy-mode", "%q: use one of %v", f.copyMode, eastwest.CopyModes)
	}
	f.validateHBONE(&errs)
	return errs.Err()
}

func (f *gatewayFlags) validateHBONE(errs *validate.Errors) {
	if f.hboneListen == "" {
		if f.hboneCert+f.hboneKey+f.spiffeSocket+f.bundleDir != "" || len(f.hboneAllowTD) > 0 {
			errs.Add("--hbone-listen", "required by --hbone-cert, --hbone-key, --spiffe-socket, --bundle-dir and --hbone-allow-trust-domain (they configure the HBONE listener)")
		}
		return
	}
	if _, _, err := net.SplitHostPort(f.hboneListen); err != nil {
		errs.Add("--hbone-listen", "%q is not HOST:PORT (e.g. :15008)", f.hboneListen)
	}
	files := f.hboneCert != "" || f.hboneKey != ""
	switch {
	case files && (f.hboneCert == "" || f.hboneKey == ""):
		errs.Add("--hbone-cert", "give both --hbone-cert and --hbone-key")
	case files && f.spiffeSocket != "":
		errs.Add("--spiffe-socket", "the SVID comes from --hbone-cert/--hbone-key or from --spiffe-socket, not both")
	case !files && f.spiffeSocket == "":
		errs.Add("--hbone-cert", "--hbone-listen needs this gateway's SVID: --hbone-cert and --hbone-key, or --spiffe-socket")
	}
	if f.bundleDir == "" && f.spiffeSocket == "" {
		errs.Add("--bundle-dir", "--hbone-listen needs the federated bundles: --bundle-dir (what meshfed federation --bundle-dir writes) or --spiffe-socket")
	}
	for _, td := range f.hboneAllowTD {
		if err := validate.DNSSubdomain(td); err != nil {
			errs.Add("--hbone-allow-trust-domain", "%v (a bare trust domain such as east.example)", err)
		}
	}
}

func runGateway(ctx context.Context, f gatewayFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	log := slog.Default().With("component", "gateway", "cluster", f.cluster)
	// Each proxied connection holds two descriptors. The Go runtime has already raised the
	// soft RLIMIT_NOFILE to the hard limit at start (Go 1.19+); say what that allows.
	var nofile syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile); err == nil {
		log.Info("file descriptor limit", "soft", nofile.Cur, "hard", nofile.Max, "connections_at_most", nofile.Cur/2)
	}
	cfg := process.Config{
		Gateway: eastwest.Config{
			Cluster: f.cluster, Domain: f.domain,
			HelloTimeout: f.helloTimeout, MaxHelloBytes: f.maxHelloBytes, IdleTimeout: f.idleTimeout,
			ConnectTimeout: f.connectTimeout, ConnectAttempts: f.connectAttempts,
			DrainTimeout: f.drainTimeout, DrainAcceptPeriod: f.drainAccept,
			MaxConns: f.maxConns, MaxConnsPerService: f.maxPerService,
			CopyMode: eastwest.CopyMode(f.copyMode), Log: log,
		},
		HealthCertFile: f.healthCert, HealthKeyFile: f.healthKey,
		Listen: f.listen, Admin: f.admin,
		Exports: f.exports, ExportsPoll: f.pollInterval,
	}
	if f.hboneListen != "" {
		cfg.HBONE = &process.HBONE{Listen: f.hboneListen, CertFile: f.hboneCert, KeyFile: f.hboneKey,
			SPIFFESocket: f.spiffeSocket, BundleDir: f.bundleDir, AllowTrustDomains: f.hboneAllowTD}
	}
	srcFlag, origin := "--exports", f.exports
	if f.federation != "" {
		srcFlag, origin = "--federation", f.federation
		cfg.Exports = ""
		cfg.Federation = &xdsroutes.Config{Address: f.federation,
			CacheFile: f.federationCache, CacheMaxAge: f.federationCacheMaxAge, Version: Version}
		if f.fedCA != "" {
			cfg.FederationTLS = &xdsroutes.TLSFiles{CA: f.fedCA, Cert: f.fedCert, Key: f.fedKey, ServerName: f.fedServerName}
		}
	}
	p, err := process.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil
		}
		var pe *process.Error
		if errors.As(err, &pe) {
			flag := map[process.Part]string{
				process.PartHealthCert:    "--health-cert/--health-key",
				process.PartFederationTLS: "--federation-ca/--federation-cert/--federation-key",
				process.PartFederation:    "--federation",
				process.PartExports:       "--exports",
				process.PartAdmin:         "--admin",
				process.PartListen:        "--listen",
				process.PartHBONECert:     "--hbone-cert/--hbone-key/--spiffe-socket",
				process.PartHBONEBundles:  "--bundle-dir/--spiffe-socket",
				process.PartHBONEListen:   "--hbone-listen",
			}[pe.Part]
			return fmt.Errorf("%s: %w", flag, pe.Err)
		}
		return err
	}
	if f.adaptiveProcs {
		go func() {
			err := adaptprocs.Run(ctx, adaptprocs.Config{Log: log, Registerer: p.Registry(), Namespace: "meshfed_gateway"})
			if errors.Is(err, adaptprocs.ErrFixed) {
				log.Info("adaptive GOMAXPROCS off: " + err.Error())
			} else if err != nil {
				log.Warn("adaptive GOMAXPROCS stopped", "err", err)
			}
		}()
	}
	log.Info("gateway listening", "listen", p.Addr(), "hbone_listen", p.HBONEAddr(), "admin", p.AdminAddr(), "copy_mode", p.Gateway().CopyMode(), "routes_from", srcFlag+" "+origin, "pid", os.Getpid())
	_ = p.Wait() // until ctx ends and the drain is over
	return p.Close()
}
