package istio

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	meshconfig "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/api/validate"
)

// SettingsInput is what istiod's settings for one cluster are made of.
type SettingsInput struct {
	// Cluster is the meshfed cluster istiod runs in; ClusterID is istiod's cluster ID
	// (default: Cluster).
	Cluster, ClusterID string
	// Network is the Istio network of the cluster (default: its cluster record's network).
	// meshfed's resources do not depend on it (remote gateways are dialled directly), but
	// istiod and its sidecars should agree on it.
	Network string
	// MCPAddress is HOST:PORT of meshfed's MCP listener as istiod reaches it.
	MCPAddress string
	// MCPTLS: the listener serves TLS (istiod verifies it against MCPCAPEM when set, its
	// system roots otherwise). MCPCAPEM is the CA certificate(s) in PEM, embedded as they
	// are: the pinned istiod reads a config source's tlsSettings.caCertificates as PEM
	// content (pilot/pkg/bootstrap/configcontroller.go, AppendCertsFromPEM), not as a path.
	MCPTLS   bool
	MCPCAPEM string
	// TrustDomain of this cluster, and Roots of every federated trust domain (this one
	// included), from the bundles/ records.
	TrustDomain string
	Roots       map[string][]*x509.Certificate
	// BundleURL, when set, is the base URL of a SPIFFE bundle endpoint serving GET
	// <BundleURL>/<trust domain> (meshfed federation --bundle-endpoint): each other trust
	// domain is then given to istiod as spiffeBundleUrl (istiod fetches it over https_web,
	// verifying the endpoint against its system roots, and follows rotations itself)
	// instead of as PEM. Its trust domains are those of Roots.
	BundleURL string
}

// Settings are istiod's settings: MeshConfig is the fragment to merge into its mesh config
// (usable alone as the --meshConfig file); Env the variables to set on istiod.
type Settings struct {
	MeshConfig *meshconfig.MeshConfig
	Env        map[string]string
	// Network is the cluster's Istio network: an install setting (Helm
	// values.global.network, or the istio-system namespace's topology.istio.io/network
	// label), not istiod's environment; the YAML output names it in a comment.
	Network string
}

// BuildSettings makes istiod's settings: configSources (meshfed's MCP listener, then k8s://
// so istiod keeps reading Kubernetes config), trustDomain, trustDomainAliases (every other
// federated trust domain: Istio then accepts their SPIFFE IDs where it checks identities)
// and caCertificates (each other trust domain's roots, with its trust domain, so sidecars
// verify the remote workloads' certificates: Istio's multi-root mesh, ISTIO_MULTIROOT_MESH).
func BuildSettings(in SettingsInput) (*Settings, error) {
	if in.Cluster == "" {
		return nil, errors.New("cluster: required")
	}
	if _, _, err := net.SplitHostPort(in.MCPAddress); err != nil {
		return nil, &validate.FieldError{Msg: fmt.Sprintf("mcp address %q: %v (HOST:PORT of the federation's %s as istiod reaches it)", in.MCPAddress, err, validate.Ref(FieldListen))}
	}
	if in.TrustDomain == "" {
		return nil, errors.New("trust domain: the cluster record has none")
	}
	if in.MCPCAPEM != "" {
		if !in.MCPTLS {
			return nil, errors.New("mcp ca: only with TLS on the MCP listener")
		}
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(in.MCPCAPEM)) {
			return nil, errors.New("mcp ca: no PEM certificate in it (istiod takes the CA's PEM itself, not a path)")
		}
	}
	cid := in.ClusterID
	if cid == "" {
		cid = in.Cluster
	}
	src := &meshconfig.ConfigSource{Address: "xds://" + in.MCPAddress}
	if in.MCPTLS {
		src.TlsSettings = &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_SIMPLE, CaCertificates: in.MCPCAPEM}
	}
	mc := &meshconfig.MeshConfig{
		ConfigSources: []*meshconfig.ConfigSource{src, {Address: "k8s://"}},
		TrustDomain:   in.TrustDomain,
	}
	base, err := bundleURLBase(in.BundleURL)
	if err != nil {
		return nil, err
	}
	tds := make([]string, 0, len(in.Roots))
	for td := range in.Roots {
		tds = append(tds, td)
	}
	sort.Strings(tds)
	for _, td := range tds {
		if td == in.TrustDomain {
			continue
		}
		mc.TrustDomainAliases = append(mc.TrustDomainAliases, td)
		if len(in.Roots[td]) == 0 {
			continue // a revoked (empty) bundle: trust nothing from it
		}
		if base != "" {
			mc.CaCertificates = append(mc.CaCertificates, &meshconfig.MeshConfig_CertificateData{
				CertificateData: &meshconfig.MeshConfig_CertificateData_SpiffeBundleUrl{SpiffeBundleUrl: base + "/" + td},
				TrustDomains:    []string{td},
			})
			continue
		}
		var b strings.Builder
		for _, c := range in.Roots[td] {
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		if b.Len() == 0 {
			continue // a revoked (empty) bundle: trust nothing from it
		}
		mc.CaCertificates = append(mc.CaCertificates, &meshconfig.MeshConfig_CertificateData{
			CertificateData: &meshconfig.MeshConfig_CertificateData_Pem{Pem: b.String()},
			TrustDomains:    []string{td},
		})
	}
	env := map[string]string{
		"CLUSTER_ID":           cid,
		"ISTIO_MULTIROOT_MESH": "true",
	}
	if len(mc.CaCertificates) > 0 {
		// istiod pushes the merged roots over PCDS only to proxies that ask for it, and the
		// sidecar's agent asks only with PROXY_CONFIG_XDS_AGENT=true
		// (pkg/istio-agent/xds_proxy.go): set in every proxy's metadata through the mesh
		// default, as Istio's own multi-root test does (tests/integration/security/ca_custom_root).
		mc.DefaultConfig = &meshconfig.ProxyConfig{ProxyMetadata: map[string]string{"PROXY_CONFIG_XDS_AGENT": "true"}}
	}
	return &Settings{MeshConfig: mc, Env: env, Network: in.Network}, nil
}

// bundleURLBase checks a SPIFFE bundle endpoint base URL: istiod fetches it over https only
// (it prefixes https:// to a URL without a scheme).
func bundleURLBase(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("spiffe bundle url %q: %v", raw, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("spiffe bundle url %q: want https://HOST[:PORT][/PATH] (istiod fetches SPIFFE bundles over https only; <url>/<trust domain> must serve the bundle)", raw)
	}
	return strings.TrimRight(raw, "/"), nil
}

// MeshConfigYAML is the mesh config as istiod's --meshConfig file takes it.
func (s *Settings) MeshConfigYAML() ([]byte, error) {
	j, err := s.meshConfigJSON()
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(j)
}

func (s *Settings) meshConfigJSON() ([]byte, error) {
	return protojson.MarshalOptions{UseProtoNames: false}.Marshal(s.MeshConfig)
}

// Document is the settings as one object with the keys meshConfig and env (the contract of
// `meshfed istio config -o json`).
func (s *Settings) Document() (map[string]any, error) {
	j, err := s.meshConfigJSON()
	if err != nil {
		return nil, err
	}
	var mc map[string]any
	if err := json.Unmarshal(j, &mc); err != nil {
		return nil, err
	}
	return map[string]any{"meshConfig": mc, "env": s.Env}, nil
}
