package istio

import (
	"slices"
	"sort"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// SkipNoServiceAccount: a remote cluster serves the service through endpoints whose
// service account its export does not give (exports `serviceAccount`), so the SPIFFE IDs
// of its workloads are unknown. For sidecars (BuildService) the ServiceEntry then carries
// no subjectAltNames at all, and the sidecars check the remote certificate against the
// federated roots only; for ambient (BuildAmbient) the cluster is left out, because
// ztunnel accepts a destination only when its SPIFFE ID is in the ServiceEntry's
// subjectAltNames.
const SkipNoServiceAccount = "no-service-account"

// Identities are the SPIFFE IDs the remote clusters' workloads of one service run as, for
// a ServiceEntry's subjectAltNames.
type Identities struct {
	// SANs: spiffe://<exporting cluster's trust domain>/ns/<namespace>/sa/<account> of every
	// remote cluster's ready endpoints, sorted, each once.
	SANs []string
	// Unknown names the remote clusters (sorted) with ready endpoints whose account is
	// not given, or whose cluster record (its trust domain) is not known.
	Unknown []string
}

// ServiceIdentities is what the ServiceEntry of svc, imported by cluster self, can say of
// the remote workloads' identities: every other cluster that exports svc with ready
// endpoints counts (whether or not the plan uses it right now, so that a drill or a
// health change does not rewrite every sidecar's cluster TLS). clusters are the cluster
// records by name (trust domains; a sharer's is its owner's, records.Cluster.WorkloadID).
func ServiceIdentities(svc *view.Service, clusters map[string]*records.Cluster, self string) Identities {
	var id Identities
	if svc == nil {
		return id
	}
	for _, ce := range svc.Clusters {
		if ce == nil || ce.Cluster == self || ce.Export == nil {
			continue
		}
		sans, ok := clusterSANs(ce, clusters[ce.Cluster], svc.Namespace, readyEndpoint)
		if !ok {
			id.Unknown = append(id.Unknown, ce.Cluster)
			continue
		}
		id.SANs = append(id.SANs, sans...)
	}
	id.SANs = sortedSet(id.SANs)
	sort.Strings(id.Unknown)
	return id
}

func readyEndpoint(ep records.Endpoint) bool { return ep.Ready }

func readyHBONEEndpoint(ep records.Endpoint) bool { return ep.Ready && ep.HBONEPort != 0 }

// clusterSANs is the SPIFFE IDs of ce's endpoints that include selects, and whether they
// are all known (every such endpoint names its account, and rec gives the trust domain).
// No such endpoint: none, and known.
func clusterSANs(ce *view.ClusterExport, rec *records.Cluster, ns string, include func(records.Endpoint) bool) ([]string, bool) {
	accounts, unknown := ce.Export.ServiceAccounts(include)
	if unknown > 0 || (len(accounts) > 0 && (rec == nil || rec.TrustDomain == "")) {
		return nil, false
	}
	out := make([]string, 0, len(accounts))
	for _, sa := range accounts {
		out = append(out, rec.WorkloadID(ns, sa))
	}
	return out, true
}

func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	sort.Strings(s)
	return slices.Compact(s)
}
