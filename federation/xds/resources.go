package xds

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshfed/meshfed/api/fault"
	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/keyspace/records"
)

// Names of the Envoy SDS secrets this server serves and refers to.
const (
	// SPIFFEValidatorSecret is the validation context holding Envoy's SPIFFE certificate
	// validator with every federated trust domain's bundle.
	SPIFFEValidatorSecret = "meshfed-spiffe-validator"
	// BundleSecretPrefix + <trust domain> is one trust domain's bundle as a plain
	// validation context (trusted_ca), for Envoy configurations that pick one domain.
	BundleSecretPrefix = "meshfed-bundle:"
	// DefaultEnvoyIdentitySecret is the SDS secret name of the Envoy workload's own
	// certificate; the CDS refers to it without an sds_config, so Envoy takes it from its
	// bootstrap's static_resources.secrets (see docs/xds.md).
	DefaultEnvoyIdentitySecret = "meshfed-identity"
	// DefaultCertProviderInstance is the certificate provider instance a proxyless gRPC
	// client's bootstrap must define (file_watcher): identity and roots.
	DefaultCertProviderInstance = "meshfed"

	spiffeValidatorName = "envoy.tls.cert_validator.spiffe"
	tlsSocketName       = "envoy.transport_sockets.tls"
	routerFilterName    = "envoy.filters.http.router"
)

var adsSource = &corev3.ConfigSource{
	ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	ResourceApiVersion:    corev3.ApiVersion_V3,
}

// validator is what every go-control-plane resource type implements (protoc-gen-validate).
type validator interface {
	Validate() error
}

// checked validates r: nothing invalid is ever put in a cache.
func checked[T types.Resource](r T) (T, error) {
	if v, ok := any(r).(validator); ok {
		if err := v.Validate(); err != nil {
			var zero T
			return zero, err
		}
	}
	return r, nil
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", m, err)) // only on a programming error
	}
	return a
}

// buildCLA turns a port plan into a ClusterLoadAssignment: one locality per level (per
// zone for this cluster's own endpoints), priority = level index. bld (may be nil) shares
// remote levels between services.
func buildCLA(name string, pp *planner.PortPlan, bld *builder) (*endpointv3.ClusterLoadAssignment, error) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if pp != nil {
		cla.Endpoints = make([]*endpointv3.LocalityLbEndpoints, 0, len(pp.Levels)+2)
		for prio, lv := range pp.Levels {
			if lv.Direct {
				cla.Endpoints = appendByZone(cla.Endpoints, lv, uint32(prio))
				continue
			}
			cla.Endpoints = append(cla.Endpoints, bld.level(lv, uint32(prio)))
		}
	}
	return checked(cla)
}

// appendByZone splits this cluster's own endpoints by zone (one locality each), so that a
// node locality can prefer its own zone (Envoy zone-aware routing).
func appendByZone(out []*endpointv3.LocalityLbEndpoints, lv planner.Level, prio uint32) []*endpointv3.LocalityLbEndpoints {
	zoneOf := func(e planner.Endpoint) string {
		if e.Zone == "" {
			return lv.Zone
		}
		return e.Zone
	}
	eps := lv.Endpoints
	sorted := true
	for i := 1; i < len(eps); i++ {
		if zoneOf(eps[i-1]) > zoneOf(eps[i]) {
			sorted = false
			break
		}
	}
	if !sorted {
		eps = slices.Clone(eps)
		slices.SortStableFunc(eps, func(a, b planner.Endpoint) int { return strings.Compare(zoneOf(a), zoneOf(b)) })
	}
	for i := 0; i < len(eps); {
		j := i + 1
		for j < len(eps) && zoneOf(eps[j]) == zoneOf(eps[i]) {
			j++
		}
		out = append(out, locality(lv, zoneOf(eps[i]), prio, eps[i:j]))
		i = j
	}
	return out
}

// builder makes resources for one worker of one planning pass. A remote cluster's level
// is the same for every service it exports with the same weight and priority (same
// gateways), so its LocalityLbEndpoints is built once and shared: protobuf messages are
// never changed after they are built, and marshalling only reads them.
type builder struct {
	levels map[levelKey]cachedLevel
}

type levelKey struct {
	cluster, region, zone string
	prio, weight          uint32
}

type cachedLevel struct {
	eps []planner.Endpoint
	lle *endpointv3.LocalityLbEndpoints
}

func newBuilder() *builder { return &builder{levels: map[levelKey]cachedLevel{}} }

func (b *builder) level(lv planner.Level, prio uint32) *endpointv3.LocalityLbEndpoints {
	if b == nil {
		return locality(lv, lv.Zone, prio, lv.Endpoints)
	}
	k := levelKey{lv.Cluster, lv.Region, lv.Zone, prio, lv.Weight}
	if c, ok := b.levels[k]; ok && slices.Equal(c.eps, lv.Endpoints) {
		return c.lle
	}
	lle := locality(lv, lv.Zone, prio, lv.Endpoints)
	b.levels[k] = cachedLevel{eps: lv.Endpoints, lle: lle}
	return lle
}

// weights are shared wrappers of small weights (immutable).
var weights = func() []*wrapperspb.UInt32Value {
	w := make([]*wrapperspb.UInt32Value, 1025)
	for i := range w {
		w[i] = wrapperspb.UInt32(uint32(i))
	}
	return w
}()

func weight(v uint32) *wrapperspb.UInt32Value {
	if int(v) < len(weights) {
		return weights[v]
	}
	return wrapperspb.UInt32(v)
}

// locality builds one LocalityLbEndpoints; the per-endpoint messages are allocated in
// slabs (one allocation per message type, not per endpoint).
func locality(lv planner.Level, zone string, prio uint32, eps []planner.Endpoint) *endpointv3.LocalityLbEndpoints {
	n := len(eps)
	lbs := make([]endpointv3.LbEndpoint, n)
	ends := make([]endpointv3.Endpoint, n)
	hids := make([]endpointv3.LbEndpoint_Endpoint, n)
	addrs := make([]corev3.Address, n)
	sas := make([]corev3.SocketAddress, n)
	asas := make([]corev3.Address_SocketAddress, n)
	pvs := make([]corev3.SocketAddress_PortValue, n)
	ptrs := make([]*endpointv3.LbEndpoint, n)
	var sum uint32
	for i, e := range eps {
		sum += e.Weight
		pvs[i].PortValue = e.Port
		sa := &sas[i]
		sa.Protocol, sa.Address, sa.PortSpecifier = corev3.SocketAddress_TCP, e.Host, &pvs[i]
		asas[i].SocketAddress = sa
		addrs[i].Address = &asas[i]
		ends[i].Address = &addrs[i]
		hids[i].Endpoint = &ends[i]
		lb := &lbs[i]
		lb.HostIdentifier, lb.HealthStatus, lb.LoadBalancingWeight = &hids[i], corev3.HealthStatus_HEALTHY, weight(e.Weight)
		if e.HBONEPort != 0 {
			lb.Metadata = hboneMetadata(e.HBONEPort)
		}
		ptrs[i] = lb
	}
	w := lv.Weight
	if lv.Direct || w == 0 {
		w = sum // grpc-go ignores a locality of weight 0
	}
	return &endpointv3.LocalityLbEndpoints{
		Locality:            &corev3.Locality{Region: lv.Region, Zone: zone, SubZone: lv.Cluster},
		LbEndpoints:         ptrs,
		LoadBalancingWeight: weight(w),
		Priority:            prio,
	}
}

// hboneMetadata carries an endpoint's HBONE port to the gateway (docs/xds.md, the gateway
// contract): filter_metadata["meshfed.endpoint"] = {"hbonePort": <port>}.
func hboneMetadata(port uint32) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		names.EndpointMetadataKey: {Fields: map[string]*structpb.Value{names.HBONEPortField: structpb.NewNumberValue(float64(port))}},
	}}
}

// clusterTLS is what the outbound cluster's TLS depends on.
type clusterTLS struct {
	SNI          string
	TrustDomains []string // of every exporting cluster, sorted
}

func (c clusterTLS) key() string { return c.SNI + "|" + strings.Join(c.TrustDomains, ",") }

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}

func transportSocket(utc *tlsv3.UpstreamTlsContext) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: tlsSocketName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(utc)}}
}

// buildGRPCCluster is the outbound cluster for proxyless gRPC: TLS from the bootstrap's
// certificate provider instance (identity and roots; with GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE
// its spiffe_trust_bundle_map_file gives one root set per trust domain), the peer's
// SPIFFE ID checked by URI prefix, and the SNI (sent when GRPC_EXPERIMENTAL_XDS_SNI=true).
func buildGRPCCluster(name string, t clusterTLS, instance string) (*clusterv3.Cluster, error) {
	c := edsCluster(name)
	c.TransportSocket = transportSocket(&tlsv3.UpstreamTlsContext{
		Sni: t.SNI,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: instance},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: instance},
				MatchSubjectAltNames:          spiffeMatchers(t.TrustDomains),
			}},
		},
	})
	return checked(c)
}

// buildEnvoyCluster is the outbound cluster for Envoy: its own certificate from the SDS
// secret DefaultEnvoyIdentitySecret (static, from its bootstrap), and the SPIFFE validator
// over every federated trust domain from this server's SDS.
func buildEnvoyCluster(name string, t clusterTLS, identitySecret string) (*clusterv3.Cluster, error) {
	c := edsCluster(name)
	var typed []*tlsv3.SubjectAltNameMatcher
	for _, m := range spiffeMatchers(t.TrustDomains) {
		typed = append(typed, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m})
	}
	c.TransportSocket = transportSocket(&tlsv3.UpstreamTlsContext{
		Sni: t.SNI,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: identitySecret}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: typed},
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: SPIFFEValidatorSecret, SdsConfig: adsSource},
				}},
		},
	})
	return checked(c)
}

func spiffeMatchers(tds []string) []*matcherv3.StringMatcher {
	out := make([]*matcherv3.StringMatcher, 0, len(tds))
	for _, td := range tds {
		out = append(out, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + td + "/"}})
	}
	return out
}

// buildListener is the proxyless gRPC client listener: an ApiListener whose
// HttpConnectionManager takes its routes from RDS over ADS.
func buildListener(name string) (*listenerv3.Listener, error) {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "meshfed",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource, RouteConfigName: name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       routerFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}},
	}
	return checked(&listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
	})
}

// buildRoute sends every call for the listener's host to the service port's cluster.
func buildRoute(name, host, cluster string) (*routev3.RouteConfiguration, error) {
	return checked(&routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    host,
			Domains: []string{host, name},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			}},
		}},
	})
}

// buildInboundCluster is what the local gateway gets per exported service port (no TLS:
// the gateway never terminates the workloads' TLS), with the drill fault it is to carry
// out, if any, in its metadata (docs/xds.md, the gateway contract).
func buildInboundCluster(name string, f *fault.Fault) (*clusterv3.Cluster, error) {
	c := edsCluster(name)
	if f != nil {
		md, err := f.Struct()
		if err != nil {
			return nil, fmt.Errorf("fault of drill %s: %w", f.ID, err)
		}
		c.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{fault.MetadataKey: md}}
	}
	return checked(c)
}

// buildInboundCLA lists the local export's ready endpoints at the port's target port, one
// locality per zone (sub_zone = this cluster).
func buildInboundCLA(name, cluster, region string, e *records.Export, p records.Port) (*endpointv3.ClusterLoadAssignment, error) {
	target := uint32(p.Port)
	if p.TargetPort != 0 {
		target = uint32(p.TargetPort)
	}
	lv := planner.Level{Cluster: cluster, Direct: true, Region: region}
	lv.Endpoints = make([]planner.Endpoint, 0, len(e.Endpoints))
	for _, ep := range e.Endpoints {
		if !ep.Ready {
			continue
		}
		w := ep.Weight
		if w == 0 {
			w = 1
		}
		lv.Endpoints = append(lv.Endpoints, planner.Endpoint{Host: ep.Address, Port: target, Weight: w, Zone: ep.Zone, HBONEPort: uint32(ep.HBONEPort)})
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	cla.Endpoints = appendByZone(nil, lv, 0)
	return checked(cla)
}

// buildSecrets makes Envoy's SDS secrets from the trust bundles: the SPIFFE validator
// over all trust domains, and one plain validation context per trust domain.
func buildSecrets(bundles map[string][]*x509.Certificate) (map[string]*tlsv3.Secret, error) {
	out := map[string]*tlsv3.Secret{}
	tds := make([]string, 0, len(bundles))
	for td := range bundles {
		tds = append(tds, td)
	}
	sort.Strings(tds)
	spiffe := &tlsv3.SPIFFECertValidatorConfig{}
	for _, td := range tds {
		if len(bundles[td]) == 0 {
			continue // an empty bundle trusts nothing from that domain: leave it out
		}
		var pemBytes []byte
		for _, c := range bundles[td] {
			pemBytes = append(pemBytes, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		ds := &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: pemBytes}}
		spiffe.TrustDomains = append(spiffe.TrustDomains, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{Name: td, TrustBundle: ds})
		s, err := checked(&tlsv3.Secret{Name: BundleSecretPrefix + td, Type: &tlsv3.Secret_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: ds}}})
		if err != nil {
			return nil, fmt.Errorf("bundle of %s: %w", td, err)
		}
		out[s.Name] = s
	}
	if len(spiffe.TrustDomains) == 0 {
		return out, nil
	}
	s, err := checked(&tlsv3.Secret{Name: SPIFFEValidatorSecret, Type: &tlsv3.Secret_ValidationContext{
		ValidationContext: &tlsv3.CertificateValidationContext{CustomValidatorConfig: &corev3.TypedExtensionConfig{
			Name: spiffeValidatorName, TypedConfig: mustAny(spiffe)}}}})
	if err != nil {
		return nil, fmt.Errorf("spiffe validator: %w", err)
	}
	out[s.Name] = s
	return out, nil
}

func portStr(p uint32) string { return strconv.FormatUint(uint64(p), 10) }
