package main

import (
	"github.com/meshfed/meshfed/harness/devup"

	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/discovery/kube"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/federate"
	"github.com/meshfed/meshfed/trust/source"
)

// trustFlags are the trust flags of `meshfed federation`. All are optional: without them
// the federation service runs without its trust part.
type trustFlags struct {
	trustDomain    string
	bundleSource   string
	bundleDir      string
	bundleEndpoint string
	endpointCert   string
	endpointKey    string
	endpointDNS    []string
	devCADir       string
	configMap      string
	cmKubeconfig   string
	poll           time.Duration
}

// defaultDevCADir is where `meshfed trust dev-ca` and --bundle-source dev keep the
// development CA unless told otherwise.
const defaultDevCADir = devup.DefaultDevCADir

const trustFlagsHelp = `trust (all optional; see docs/trust.md):
  --trust-domain TD         this cluster's SPIFFE trust domain
  --bundle-source SPEC      where this cluster's own bundle comes from, published to etcd:
                              file:PATH | workload:SOCKET | dev |
                              endpoint:URL[,profile=https_web|https_spiffe,id=SPIFFE-ID,bundle=PATH,ca=PATH,refresh=DUR]
  --bundle-dir DIR          write every federated bundle: <td>.pem and bundle-map.json
  --bundle-endpoint ADDR    serve the SPIFFE bundle endpoint (GET / and /<td>)
  --bundle-configmap NS/NAME  write the same files into a ConfigMap`

// addTrustFlags adds the trust flags to fs.
func addTrustFlags(fs *pflag.FlagSet) *trustFlags {
	f := &trustFlags{}
	fs.StringVar(&f.trustDomain, "trust-domain", "", "this cluster's SPIFFE trust domain (bare name, e.g. east.example.org)")
	fs.StringVar(&f.bundleSource, "bundle-source", "", "this cluster's bundle: file:PATH, workload:SOCKET, endpoint:URL[,profile=https_web|https_spiffe,id=SPIFFE-ID,bundle=PATH,ca=PATH,refresh=DURATION] or dev")
	fs.StringVar(&f.bundleDir, "bundle-dir", "", "directory receiving <td>.pem per trust domain and bundle-map.json (SPIFFE bundle map for grpc-go), written atomically")
	fs.StringVar(&f.bundleEndpoint, "bundle-endpoint", "", "serve the SPIFFE federation bundle endpoint on HOST:PORT (no client auth, per the spec)")
	fs.StringVar(&f.endpointCert, "bundle-endpoint-cert", "", "serving certificate of the bundle endpoint (Web PKI for https_web, or an SVID for https_spiffe); default with --bundle-source dev: an SVID of the dev CA")
	fs.StringVar(&f.endpointKey, "bundle-endpoint-key", "", "key of --bundle-endpoint-cert")
	fs.StringSliceVar(&f.endpointDNS, "bundle-endpoint-dns", nil, "DNS names for the dev-CA-issued bundle endpoint certificate")
	fs.StringVar(&f.devCADir, "dev-ca-dir", defaultDevCADir, "development CA directory (--bundle-source dev)")
	fs.StringVar(&f.configMap, "bundle-configmap", "", "also write the bundle files into this ConfigMap (NAMESPACE/NAME)")
	fs.StringVar(&f.cmKubeconfig, "bundle-configmap-kubeconfig", "in-cluster", "kubeconfig for --bundle-configmap (\"in-cluster\" inside a pod)")
	fs.DurationVar(&f.poll, "bundle-poll-interval", time.Second, "how often file and dev bundle sources look for changes")
	return f
}

// enabled reports whether any trust output or source is asked for.
func (f *trustFlags) enabled() bool {
	return f.bundleSource != "" || f.bundleDir != "" || f.bundleEndpoint != "" || f.configMap != ""
}

func (f *trustFlags) validate() error {
	var errs validate.Errors
	if f.trustDomain != "" {
		if _, err := trust.ParseTrustDomain(f.trustDomain); err != nil {
			errs.Add("--trust-domain", "%v", err)
		}
	}
	if f.bundleSource != "" && f.trustDomain == "" {
		errs.Add("--trust-domain", "--bundle-source needs the trust domain its bundle belongs to")
	}
	if f.bundleEndpoint != "" {
		if err := validate.HostPort(f.bundleEndpoint); err != nil && !strings.HasSuffix(f.bundleEndpoint, ":0") {
			errs.Add("--bundle-endpoint", "%v", err)
		}
		if f.endpointCert == "" && f.bundleSource != "dev" && !strings.HasPrefix(f.bundleSource, "dev:") {
			errs.Add("--bundle-endpoint-cert", "the bundle endpoint needs a serving certificate (--bundle-endpoint-cert/--bundle-endpoint-key), or --bundle-source dev to use the dev CA")
		}
	}
	if (f.endpointCert == "") != (f.endpointKey == "") {
		errs.Add("--bundle-endpoint-cert/--bundle-endpoint-key", "give both, or neither")
	}
	if f.configMap != "" {
		if _, _, err := federate.ParseConfigMapRef(f.configMap); err != nil {
			errs.AddErr("", flagErr(err, trustFlagOf))
		}
	}
	if f.poll < 10*time.Millisecond {
		errs.Add("--bundle-poll-interval", "%v: at least 10ms", f.poll)
	}
	return errs.Err()
}

// build makes the trust component of the federation service of cluster, or returns nil
// when no trust flag is set. The caller subscribes its outputs (xDS SDS, health checker)
// with Subscribe, adds Ready to /readyz, and runs it with Run(ctx).
func (f *trustFlags) build(cluster string, st *store.Store, log *slog.Logger, reg prometheus.Registerer) (*federate.Service, error) {
	if !f.enabled() {
		return nil, nil
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	cfg := federate.Config{Cluster: cluster, TrustDomain: f.trustDomain, BundleDir: f.bundleDir, Store: st, Log: log, Registry: reg}
	if f.bundleSource != "" {
		src, err := source.Parse(f.bundleSource, f.trustDomain, source.Options{Log: log, Metrics: source.NewMetrics(reg), Poll: f.poll, DevCADir: f.devCADir})
		if err != nil {
			return nil, flagErr(err, sourceFlagOf)
		}
		cfg.Source = src
	}
	if f.bundleEndpoint != "" {
		ep := &federate.EndpointConfig{Addr: f.bundleEndpoint, CertFile: f.endpointCert, KeyFile: f.endpointKey, DNSNames: f.endpointDNS}
		if f.endpointCert == "" {
			ep.DevCADir = f.devCADir
			if _, dir, ok := strings.Cut(f.bundleSource, "dev:"); ok && dir != "" {
				ep.DevCADir = dir
			}
		}
		cfg.Endpoint = ep
	}
	if f.configMap != "" {
		ns, name, _ := federate.ParseConfigMapRef(f.configMap)
		cl, err := kube.NewClients(f.cmKubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--bundle-configmap-kubeconfig: %w", err)
		}
		cfg.ConfigMap = &federate.ConfigMapOutput{Client: cl.Kube, Namespace: ns, Name: name}
	}
	svc, err := federate.New(cfg)
	return svc, flagErr(err, trustFlagOf)
}

// trustFlagOf and sourceFlagOf map the fields of trust/federate's and trust/source's
// errors to the flags.
var (
	trustFlagOf = map[string]string{
		federate.FieldTrustDomain:     "--trust-domain",
		federate.FieldEndpoint:        "--bundle-endpoint",
		federate.FieldEndpointCertKey: "--bundle-endpoint-cert/--bundle-endpoint-key",
		federate.FieldConfigMap:       "--bundle-configmap",
	}
	sourceFlagOf = map[string]string{
		source.FieldTrustDomain: "--trust-domain",
		source.FieldSpec:        "--bundle-source",
		source.FieldDevCADir:    "--dev-ca-dir",
	}
)
