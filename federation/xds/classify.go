package xds

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshfed/meshfed/api/names"
)

// Client classes: each gets resources in the shape it accepts.
const (
	// ClassGRPC is a proxyless gRPC client (node user_agent_name "gRPC Go", "gRPC Java",
	// ...): TLS from certificate provider instances; grpc-go NACKs SDS and custom
	// validators.
	ClassGRPC = "grpc"
	// ClassEnvoy is Envoy and every other client: TLS through SDS and the SPIFFE validator.
	ClassEnvoy = "envoy"
	// ClassGateway is this cluster's east-west gateway (node metadata meshfed.role=gateway):
	// inbound clusters of the local exports.
	ClassGateway = "gateway"
)

// classOf sorts a node. The gateway says who it is in its metadata; gRPC libraries put
// "gRPC <language>" in user_agent_name; everything else is served like Envoy.
func classOf(n *corev3.Node) string {
	if n == nil {
		return ClassEnvoy
	}
	if f := n.GetMetadata().GetFields()[names.NodeRoleKey]; f != nil && f.GetStringValue() == names.NodeRoleGateway {
		return ClassGateway
	}
	if strings.HasPrefix(strings.ToLower(n.GetUserAgentName()), "grpc") {
		return ClassGRPC
	}
	return ClassEnvoy
}

// Cache keys of the mux: <class or "any">/<type>.
const (
	keyEDS      = "any/eds" // gRPC and Envoy share the outbound ClusterLoadAssignments
	keyGRPCCDS  = "grpc/cds"
	keyGRPCLDS  = "grpc/lds"
	keyGRPCRDS  = "grpc/rds"
	keyEnvoyCDS = "envoy/cds"
	keyEnvoySDS = "envoy/sds"
	keyGwCDS    = "gateway/cds"
	keyGwEDS    = "gateway/eds"
	// Empty caches answer the types a class has nothing of (an ADS stream dies on a
	// type no cache serves, taking the class's other types with it).
	keyEmptyCDS = "empty/cds"
	keyEmptyEDS = "empty/eds"
	keyEmptyLDS = "empty/lds"
	keyEmptyRDS = "empty/rds"
	keyEmptySDS = "empty/sds"
)

var cacheTypes = map[string]string{
	keyEDS: resourcev3.EndpointType, keyGRPCCDS: resourcev3.ClusterType, keyGRPCLDS: resourcev3.ListenerType,
	keyGRPCRDS: resourcev3.RouteType, keyEnvoyCDS: resourcev3.ClusterType, keyEnvoySDS: resourcev3.SecretType,
	keyGwCDS: resourcev3.ClusterType, keyGwEDS: resourcev3.EndpointType,
	keyEmptyCDS: resourcev3.ClusterType, keyEmptyEDS: resourcev3.EndpointType, keyEmptyLDS: resourcev3.ListenerType,
	keyEmptyRDS: resourcev3.RouteType, keyEmptySDS: resourcev3.SecretType,
}

// cacheKey picks the cache serving a request of typeURL from node.
func cacheKey(n *corev3.Node, typeURL string) string {
	class := classOf(n)
	switch class {
	case ClassGateway:
		switch typeURL {
		case resourcev3.ClusterType:
			return keyGwCDS
		case resourcev3.EndpointType:
			return keyGwEDS
		}
	case ClassGRPC:
		switch typeURL {
		case resourcev3.ClusterType:
			return keyGRPCCDS
		case resourcev3.EndpointType:
			return keyEDS
		case resourcev3.ListenerType:
			return keyGRPCLDS
		case resourcev3.RouteType:
			return keyGRPCRDS
		}
	default:
		switch typeURL {
		case resourcev3.ClusterType:
			return keyEnvoyCDS
		case resourcev3.EndpointType:
			return keyEDS
		case resourcev3.SecretType:
			return keyEnvoySDS
		}
	}
	switch typeURL {
	case resourcev3.ClusterType:
		return keyEmptyCDS
	case resourcev3.EndpointType:
		return keyEmptyEDS
	case resourcev3.ListenerType:
		return keyEmptyLDS
	case resourcev3.RouteType:
		return keyEmptyRDS
	case resourcev3.SecretType:
		return keyEmptySDS
	}
	return "unsupported"
}
