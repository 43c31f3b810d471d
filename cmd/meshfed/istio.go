package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/internal/admin"
	"github.com/meshfed/meshfed/operator"
)

func init() { register(newIstioCmd) }

func newIstioCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "istio",
		Short: "Istio interop: istiod's settings for meshfed as its config source",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newIstioConfigCmd(), newIstioSourceCmd())
	return cmd
}

type istioConfigFlags struct {
	etcd   etcdFlags
	opts   operator.IstioConfigOptions
	mcpCA  string // --mcp-ca-cert: a file here, embedded as PEM
	output string
}

func newIstioConfigCmd() *cobra.Command {
	var f istioConfigFlags
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print istiod's settings for one cluster (meshConfig, env)",
		Long: `Prints the settings that make a cluster's istiod take meshfed as a config source,
as one document with the keys

  meshConfig   a MeshConfig: configSources (xds://<--mcp-address>, then k8s:// so istiod
               keeps reading Kubernetes config), trustDomain, trustDomainAliases (the other
               federated trust domains) and caCertificates (their roots, from etcd's
               bundles/, or --bundle-dir; with --spiffe-bundle-url, URLs istiod fetches
               them from). Usable as istiod's --meshConfig file unchanged, or merged into the
               'mesh' key of the istio ConfigMap (Helm: meshConfig).
  env          name → value for istiod's environment (CLUSTER_ID, ISTIO_MULTIROOT_MESH, ...).

Trust needs Istio's multi-root mesh (ISTIO_MULTIROOT_MESH=true, in env; read in the pinned
istiod, 1.31-dev): istiod then hands the roots to its proxies (PCDS), which accept the other trust
domains' workloads. PEM roots are a copy: re-run after a rotation adds a root (or use
--spiffe-bundle-url, which istiod re-fetches).

meshNetworks is not printed: meshfed's resources name each remote gateway directly and
need no Istio network gateways.

The federation service of the cluster must run with --istio-mcp-listen, reachable from
istiod at --mcp-address. YAML with comments by default, -o json for the same keys.

` + etcdFlagsHelp + `

Examples:
  meshfed istio config --cluster east --mcp-address meshfed-istio.meshfed-system.svc:15020
  meshfed istio config --cluster east --mcp-address 127.0.0.1:15020 -o json | jq .meshConfig

See docs/istio.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runIstioConfig(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), &f)
		},
	}
	fl := cmd.Flags()
	addEtcdFlags(fl, &f.etcd)
	fl.StringVar(&f.opts.Cluster, "cluster", "", "the cluster whose istiod is configured (its meshfed name)")
	fl.StringVar(&f.opts.MCPAddress, "mcp-address", "", "HOST:PORT of that cluster's federation --istio-mcp-listen, as istiod reaches it")
	fl.StringVar(&f.opts.ClusterID, "cluster-id", "", "istiod's cluster ID (default: the meshfed cluster name)")
	fl.StringVar(&f.opts.Network, "network", "", "the Istio network of the cluster (default: its cluster record's network)")
	fl.BoolVar(&f.opts.MCPTLS, "mcp-tls", false, "the MCP listener serves TLS (--istio-mcp-tls-cert): istiod connects with TLS (no client certificate)")
	fl.StringVar(&f.mcpCA, "mcp-ca-cert", "", "with --mcp-tls: PEM file of the CA that signed the listener's certificate, read now and embedded (istiod takes the PEM itself, not a path; default: istiod's system roots)")
	fl.StringVar(&f.opts.BundleDir, "bundle-dir", "", "take the trust roots from this bundle directory (what 'meshfed federation --bundle-dir' writes) instead of etcd's bundles/")
	fl.StringVar(&f.opts.BundleURL, "spiffe-bundle-url", "", "give istiod the other trust domains as spiffeBundleUrl <URL>/<trust domain> (https; e.g. a federation's --bundle-endpoint behind a Web PKI certificate) instead of PEM: istiod then follows rotations itself")
	fl.StringVarP(&f.output, "output", "o", outputYAML, "output format: yaml (with comments) or json")
	return cmd
}

func (f *istioConfigFlags) validate() error {
	var errs validate.Errors
	errs.AddErr("--cluster", validate.DNSLabel(f.opts.Cluster))
	if f.opts.MCPAddress == "" {
		errs.Add("--mcp-address", "required: HOST:PORT of the federation's --istio-mcp-listen as istiod reaches it")
	} else {
		errs.AddErr("--mcp-address", validate.HostPort(f.opts.MCPAddress))
	}
	if f.opts.ClusterID != "" && strings.ContainsAny(f.opts.ClusterID, " \t\n/") {
		errs.Add("--cluster-id", "%q: no spaces or slashes", f.opts.ClusterID)
	}
	if f.opts.Network != "" {
		errs.AddErr("--network", validate.DNSLabel(f.opts.Network))
	}
	if f.mcpCA != "" && !f.opts.MCPTLS {
		errs.Add("--mcp-ca-cert", "only with --mcp-tls")
	}
	if f.opts.BundleURL != "" && f.opts.BundleDir != "" {
		errs.Add("--spiffe-bundle-url", "give --spiffe-bundle-url or --bundle-dir, not both (the URL replaces the PEM roots)")
	}
	if f.opts.BundleURL != "" && !strings.HasPrefix(f.opts.BundleURL, "https://") {
		errs.Add("--spiffe-bundle-url", "%q: must start with https:// (istiod fetches SPIFFE bundles over https only)", f.opts.BundleURL)
	}
	if f.output != outputYAML && f.output != outputJSON {
		errs.Add("-o/--output", "%q: use yaml or json", f.output)
	}
	return errs.Err()
}

func runIstioConfig(ctx context.Context, out, errOut io.Writer, f *istioConfigFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	if f.mcpCA != "" {
		b, err := os.ReadFile(f.mcpCA)
		if err != nil {
			return fmt.Errorf("--mcp-ca-cert: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return fmt.Errorf("--mcp-ca-cert %s: no PEM certificate in it", f.mcpCA)
		}
		f.opts.MCPCAPEM = string(b)
	}
	st, cli, err := f.etcd.open(ctx, slog.Default())
	if err != nil {
		return err
	}
	defer cli.Close()
	s, warnings, err := operator.IstioConfig(ctx, st, f.opts)
	if err != nil {
		return flagErr(err, map[string]string{"BundleDir": "--bundle-dir", "MCPAddress": "--mcp-address", istio.FieldListen: "--istio-mcp-listen"})
	}
	for _, w := range warnings {
		fmt.Fprintln(errOut, "warning:", w)
	}
	doc, err := s.Document()
	if err != nil {
		return err
	}
	if f.output == outputJSON {
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		_, err = out.Write(append(b, '\n'))
		return err
	}
	mc, err := s.MeshConfigYAML()
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# istiod settings for meshfed cluster %q (meshfed istio config; docs/istio.md).\n", f.opts.Cluster)
	b.WriteString("#\n# meshConfig: usable as istiod's --meshConfig file as it is, or merged into the\n")
	b.WriteString("# 'mesh' key of the istio ConfigMap (Helm: meshConfig). configSources lists meshfed's\n")
	b.WriteString("# MCP listener, then k8s:// so istiod keeps reading Kubernetes config; caCertificates and\n")
	b.WriteString("# trustDomainAliases make sidecars accept the other clusters' workloads; the sidecars'\n")
	b.WriteString("# agents fetch those roots from istiod only with defaultConfig.proxyMetadata\n")
	b.WriteString("# PROXY_CONFIG_XDS_AGENT=true (set at injection: restart the workloads after merging).\n")
	b.WriteString("meshConfig:\n")
	for _, line := range strings.Split(strings.TrimRight(string(mc), "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	if s.Network != "" {
		fmt.Fprintf(&b, "# The cluster's Istio network is %q: set it at install (Helm values.global.network,\n", s.Network)
		b.WriteString("# or label istio-system topology.istio.io/network); meshfed's resources do not depend on it.\n")
	}
	b.WriteString("# env: set on istiod (Helm: pilot.env). CLUSTER_ID is the meshfed cluster name;\n")
	b.WriteString("# ISTIO_MULTIROOT_MESH lets sidecars trust the caCertificates above.\n")
	b.WriteString("env:\n")
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, _ := yaml.Marshal(s.Env[k])
		fmt.Fprintf(&b, "  %s: %s", k, v)
	}
	_, err = io.WriteString(out, b.String())
	return err
}

type istioSourceFlags struct {
	upstream    string
	upstreamTLS bool
	upstreamCA  string
	listen      string
	stateFile   string
	admin       string
	istiodXDS   string
}

func newIstioSourceCmd() *cobra.Command {
	var f istioSourceFlags
	cmd := &cobra.Command{
		Use:   "source",
		Short: "Run beside istiod: its config source, copying the federation's MCP state and keeping it on disk",
		Long: `A small MCP config source to run beside istiod (a container in istiod's pod). It
follows the federation service's --istio-mcp-listen (--upstream), keeps the last full state in
--state-file, and serves it to istiod on --listen (loopback: only istiod's pod reaches it).

Why: istiod exits at start when an xds:// config source is unreachable. With this source in
istiod's pod, an istiod restart never depends on etcd, a federation replica or a remote
cluster being up: the source answers from its file at once, and catches up when the
upstream is back. It links no etcd client.

Point istiod at it: meshfed istio config --mcp-address 127.0.0.1:15021 ...

Examples:
  meshfed istio source --upstream meshfed-istio.meshfed-system.svc:15020 \
    --listen 127.0.0.1:15021 --state-file /var/lib/meshfed/istio-state.json

See docs/istio.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runIstioSource(cmd.Context(), &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.upstream, "upstream", "", "HOST:PORT of the federation service's --istio-mcp-listen")
	fl.BoolVar(&f.upstreamTLS, "upstream-tls", false, "dial --upstream with TLS (no client certificate)")
	fl.StringVar(&f.upstreamCA, "upstream-ca", "", "with --upstream-tls: PEM bundle the upstream's certificate chains to (default: system roots)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:15021", "MCP listener for istiod")
	fl.StringVar(&f.stateFile, "state-file", "", "file keeping the last full state (required: it is what an istiod restart is answered from)")
	fl.StringVar(&f.admin, "admin", "127.0.0.1:15022", "admin listener: /metrics, /healthz, /readyz, /debug/istio")
	fl.StringVar(&f.istiodXDS, "istiod-xds", "127.0.0.1:15010", "istiod's plaintext xDS in this pod: its PCDS (the roots istiod gives its proxies) is reported upstream for the rotation gates (empty: not followed)")
	return cmd
}

func (f *istioSourceFlags) validate() error {
	var errs validate.Errors
	if f.upstream == "" {
		errs.Add("--upstream", "required: HOST:PORT of the federation's --istio-mcp-listen")
	} else {
		errs.AddErr("--upstream", validate.HostPort(f.upstream))
	}
	errs.AddErr("--listen", validate.ListenAddr(f.listen))
	errs.AddErr("--admin", validate.ListenAddr(f.admin))
	if f.istiodXDS != "" {
		errs.AddErr("--istiod-xds", validate.ListenAddr(f.istiodXDS))
	}
	if f.stateFile == "" {
		errs.Add("--state-file", "required: the file the last state is kept in (e.g. on an emptyDir or a PVC)")
	}
	if f.upstreamCA != "" && !f.upstreamTLS {
		errs.Add("--upstream-ca", "only with --upstream-tls")
	}
	return errs.Err()
}

func runIstioSource(ctx context.Context, f *istioSourceFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	log := slog.Default()
	adm := admin.New(log)
	srv, err := istio.NewServer(log, adm.Registry, istio.Options{Listen: f.listen, StateFile: f.stateFile, IstiodXDS: f.istiodXDS})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return flagErr(err, map[string]string{istio.FieldListen: "--listen"})
	}
	var tc *tls.Config
	if f.upstreamTLS {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
		if f.upstreamCA != "" {
			pem, err := os.ReadFile(f.upstreamCA)
			if err != nil {
				return fmt.Errorf("--upstream-ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return fmt.Errorf("--upstream-ca %s: no PEM certificate in it", f.upstreamCA)
			}
		}
	}
	host, _ := os.Hostname()
	relay := &istio.Relay{Upstream: f.upstream, TLS: tc, Node: "meshfed-istio-source~" + host, Local: srv, Log: log}
	adm.AddReadiness("istio-mcp", srv.Ready)
	adm.Handle("/debug/istio", srv.DebugHandler())
	if err := adm.Listen(f.admin); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{"admin": adm.Serve, "mcp": srv.Run, "relay": relay.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	wg.Wait()
	return runErr
}
