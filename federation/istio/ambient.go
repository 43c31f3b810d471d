package istio

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"

	mcp "istio.io/api/mcp/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshfed/meshfed/keyspace/view"
)

// LabelAmbientService selects a service's ambient WorkloadEntries (the Kubernetes
// ServiceEntry's workloadSelector). It differs from LabelService on purpose: the MCP
// ServiceEntry selects by LabelService in the same namespace, and must never pick up the
// ambient entries (they carry a network, docs/istio.md "Ambient").
const LabelAmbientService = "federation.meshfed.io/ambient-service"

// ExportToNone is Istio's exportTo "~": the ServiceEntry is visible to no Envoy proxy
// (istiod's PushContext drops it from every sidecar's and gateway's service index). istiod's
// ambient index, which feeds ztunnel, does not read exportTo.
const ExportToNone = "~"

// BuildAmbient returns what an Istio ambient cluster's Kubernetes API must hold for ztunnel
// to reach the services cluster self imports (istiod's ambient index reads ServiceEntries
// and WorkloadEntries from the Kubernetes API only, never from the MCP source). networks
// holds the remote clusters that have an istio-remote Gateway in this cluster, by name, with
// the network that Gateway is labelled with; a remote cluster outside it is left out
// (ztunnel could not reach it: no network gateway).
//
// Per imported service with at least one such remote cluster that has ready endpoints with
// an HBONE port, all with a known service account, and no cordon drill on it:
//
//   - a ServiceEntry named and hosted like BuildService's (meshfed-<svc>, the host
//     <svc>.<ns>.svc.<domain>, the same ports, no addresses: istiod allocates the VIP into the
//     object's status), with exportTo "~", a workloadSelector on LabelAmbientService, and
//     subjectAltNames = the SPIFFE IDs of those clusters' ready HBONE endpoints;
//   - per such remote cluster one WorkloadEntry with no address, network = the remote
//     cluster's network (istiod gives it that network's gateway as networkGateway, and
//     ztunnel then speaks double HBONE to it with the service host as authority), locality
//     region/zone/cluster, weight = the cluster's ready HBONE endpoints.
//
// Why the same name and exportTo "~": istiod's config store for Envoy proxies joins its
// sources in configSources order and keeps the first object of a kind/namespace/name
// (pilot/pkg/config/aggregate, krt join), so with meshfed's xds:// source first the MCP
// ServiceEntry hides this one; when the MCP source has none for the service, exportTo "~"
// still keeps it from every proxy. Its WorkloadEntries are selected by no MCP ServiceEntry.
// Envoy proxies therefore see exactly the MCP resources, ztunnel exactly these.
//
// The result is keyed by type (TypeServiceEntry, TypeWorkloadEntry) like BuildService's, each
// resource named namespace/name with its labels; pure: same input, same resources.
func BuildAmbient(v *view.View, self string, networks map[string]string, opts BuildOptions) (map[string][]*mcp.Resource, error) {
	out, _, err := BuildAmbientSkips(v, self, networks, opts)
	return out, err
}

// BuildAmbientSkips is BuildAmbient, and says what it left out that the caller must
// report (once, SkipReporter): a remote cluster whose ready HBONE endpoints do not all
// name their service account (SkipNoServiceAccount). ztunnel accepts a destination only
// when its SPIFFE ID is in the ServiceEntry's subjectAltNames (an empty list refuses
// every one), so such a cluster gets no WorkloadEntry: ztunnel sends the service's
// traffic to the clusters whose identities it can check, rather than to one it would
// refuse. The ServiceEntry's subjectAltNames are the SPIFFE IDs
// (records.Cluster.WorkloadID) of every ready HBONE endpoint of the clusters that have
// a WorkloadEntry, sorted, each once.
func BuildAmbientSkips(v *view.View, self string, networks map[string]string, opts BuildOptions) (map[string][]*mcp.Resource, []Skip, error) {
	out := map[string][]*mcp.Resource{}
	var skips []Skip
	if v == nil || len(networks) == 0 {
		return out, nil, nil
	}
	keys := make([]string, 0, len(v.Services))
	for k := range v.Services {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		svc := v.Services[key]
		ports := servicePorts(svc.Ports)
		if len(ports) == 0 {
			continue
		}
		var wes []*mcp.Resource
		var sans []string
		for _, ce := range svc.Clusters {
			nw, ok := networks[ce.Cluster]
			if ce.Cluster == self || ce.Export == nil || !ok || v.Cordoned(ce.Cluster, svc.Namespace, svc.Name) {
				continue
			}
			var ready uint32
			for _, ep := range ce.Export.Endpoints {
				if ep.Ready && ep.HBONEPort != 0 {
					ready++
				}
			}
			if ready == 0 {
				continue
			}
			rec := v.Clusters[ce.Cluster]
			ids, known := clusterSANs(ce, rec, svc.Namespace, readyHBONEEndpoint)
			if !known {
				skips = append(skips, Skip{Service: key, Cluster: ce.Cluster, Reason: SkipNoServiceAccount})
				continue
			}
			sans = append(sans, ids...)
			region, zone := "", ""
			if rec != nil {
				region, zone = rec.Region, rec.Zone
			}
			labels := map[string]string{LabelAmbientService: svc.Name, LabelCluster: ce.Cluster}
			we := &networking.WorkloadEntry{
				Network:  nw,
				Locality: locality(region, zone, ce.Cluster),
				Weight:   ready,
				Labels:   labels,
			}
			r, err := resource(svc.Namespace, ambientEntryName(svc.Namespace, svc.Name, ce.Cluster), we, labels)
			if err != nil {
				return nil, nil, err
			}
			wes = append(wes, r)
		}
		if len(wes) == 0 {
			continue
		}
		se := serviceEntry(opts.host(svc.Namespace, svc.Name), ports, map[string]string{LabelAmbientService: svc.Name})
		se.ExportTo = []string{ExportToNone}
		se.SubjectAltNames = sortedSet(sans)
		r, err := resource(svc.Namespace, NamePrefix+svc.Name, se, map[string]string{LabelAmbientService: svc.Name})
		if err != nil {
			return nil, nil, err
		}
		out[TypeServiceEntry] = append(out[TypeServiceEntry], r)
		out[TypeWorkloadEntry] = append(out[TypeWorkloadEntry], wes...)
	}
	return out, skips, nil
}

// ambientEntryName is meshfed-<svc>-<cluster>-<hash>: readable, and unique where the plain
// join is not ("a-b"+"c" and "a"+"b-c"), and not an MCP WorkloadEntry's name
// (meshfed-<svc>-<cluster>-<index>) unless a cluster had millions of gateways.
func ambientEntryName(ns, svc, cluster string) string {
	h := sha256.Sum256([]byte(ns + "/" + svc + "/" + cluster))
	prefix := NamePrefix + svc + "-" + cluster
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	return prefix + "-" + hex.EncodeToString(h[:4])
}
