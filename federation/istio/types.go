package istio

// Type URLs istiod's config-source client (istio's pkg/adsc, ConfigInitialRequests) asks for
// in the pinned istio (istio.io/istio v0.0.0-20260827124520-eed52ebb66ad): MeshConfig, then
// every Pilot collection by group/version/kind. istiod is synced only after one response for
// each MCP type; a v1alpha3 answer to a v1 request is ignored. The server answers any other
// type too (an empty full state), so a newer istiod asking for more still syncs.
const (
	TypeMeshConfig            = "core/v1alpha1/MeshConfig"
	TypeServiceEntry          = "networking.istio.io/v1/ServiceEntry"
	TypeWorkloadEntry         = "networking.istio.io/v1/WorkloadEntry"
	TypeDestinationRule       = "networking.istio.io/v1/DestinationRule"
	TypeVirtualService        = "networking.istio.io/v1/VirtualService"
	TypeGateway               = "networking.istio.io/v1/Gateway"
	TypeSidecar               = "networking.istio.io/v1/Sidecar"
	TypeWorkloadGroup         = "networking.istio.io/v1/WorkloadGroup"
	TypeEnvoyFilter           = "networking.istio.io/v1alpha3/EnvoyFilter"
	TypeProxyConfig           = "networking.istio.io/v1beta1/ProxyConfig"
	TypeAuthorizationPolicy   = "security.istio.io/v1/AuthorizationPolicy"
	TypePeerAuthentication    = "security.istio.io/v1/PeerAuthentication"
	TypeRequestAuthentication = "security.istio.io/v1/RequestAuthentication"
	TypeTelemetry             = "telemetry.istio.io/v1/Telemetry"
	TypeTrafficExtension      = "extensions.istio.io/v1alpha1/TrafficExtension"
	TypeWasmPlugin            = "extensions.istio.io/v1alpha1/WasmPlugin"
)

// KnownTypes are the types the pinned istiod asks for. Those meshfed does not produce are
// answered with an empty state; a type outside this list is answered the same way and
// counted (meshfed_istio_mcp_unknown_types_total), since it means istiod is newer or older
// than the one meshfed was tested with.
var KnownTypes = []string{
	TypeMeshConfig,
	TypeAuthorizationPolicy, TypeDestinationRule, TypeEnvoyFilter, TypeGateway,
	TypePeerAuthentication, TypeProxyConfig, TypeRequestAuthentication, TypeServiceEntry,
	TypeSidecar, TypeTelemetry, TypeTrafficExtension, TypeVirtualService, TypeWasmPlugin,
	TypeWorkloadEntry, TypeWorkloadGroup,
}

// ProducedTypes are the types meshfed fills.
var ProducedTypes = []string{TypeServiceEntry, TypeWorkloadEntry, TypeDestinationRule}

func known(t string) bool {
	for _, k := range KnownTypes {
		if k == t {
			return true
		}
	}
	return false
}
