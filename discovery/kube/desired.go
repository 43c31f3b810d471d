package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// Labels meshfed puts on what it imports. Only objects carrying them are ever changed or
// deleted by the importer.
const (
	// ManagedByValue is our endpointslice.kubernetes.io/managed-by value: not the built-in
	// controller's (endpointslice-controller.k8s.io), so it leaves our slices alone.
	ManagedByValue = "federation.meshfed.io"
	// LabelImportManagedBy marks meshfed's ServiceImports (the API has no managed-by field).
	LabelImportManagedBy = "app.kubernetes.io/managed-by"
	ImportManagedByValue = "meshfed"
)

// wantImport is the wanted state of one imported service.
type wantImport struct {
	si     *mcsv1a1.ServiceImport
	slices []*discoveryv1.EndpointSlice // owner references are added at apply time
}

// wantState is the importer's wanted state for one view.
type wantState struct {
	imports map[string]*wantImport // by namespace/name
	// noGateways lists exporting clusters without a cluster record (so no gateway address).
	noGateways []string
}

// desired computes what this cluster (self) should hold for view v: a ServiceImport for every
// service that another cluster exports, and per other exporting cluster one EndpointSlice per
// (address family, gateway port) with one endpoint per gateway address. A gateway endpoint
// is ready when that cluster has ready endpoints for the service and no live drill cordons
// it; a stale cluster stays ready (static stability: stale exports keep serving until the
// grace period removes them from the view). It is pure: same view, same objects.
func desired(v *view.View, self string) *wantState {
	st := &wantState{imports: map[string]*wantImport{}}
	if v == nil {
		return st
	}
	noGW := map[string]bool{}
	for key, svc := range v.Services {
		var remote []*view.ClusterExport
		for _, ce := range svc.Clusters {
			if ce.Cluster != self && ce.Export != nil {
				remote = append(remote, ce)
			}
		}
		if len(remote) == 0 || len(svc.Ports) == 0 {
			continue
		}
		w := &wantImport{si: serviceImport(svc)}
		for _, ce := range remote {
			rec := v.Clusters[ce.Cluster]
			if rec == nil || len(rec.Gateways) == 0 {
				noGW[ce.Cluster] = true
				continue
			}
			ready := ce.ReadyEndpoints() > 0 && !v.Cordoned(ce.Cluster, svc.Namespace, svc.Name)
			w.slices = append(w.slices, clusterSlices(svc, ce, rec, ready)...)
		}
		st.imports[key] = w
	}
	for c := range noGW {
		st.noGateways = append(st.noGateways, c)
	}
	sort.Strings(st.noGateways)
	return st
}

func serviceImport(svc *view.Service) *mcsv1a1.ServiceImport {
	si := &mcsv1a1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace,
			Name:      svc.Name,
			Labels:    map[string]string{LabelImportManagedBy: ImportManagedByValue},
		},
		Spec: mcsv1a1.ServiceImportSpec{
			Type:            mcsv1a1.ClusterSetIP,
			Ports:           make([]mcsv1a1.ServicePort, 0, len(svc.Ports)),
			SessionAffinity: corev1.ServiceAffinityNone,
		},
	}
	if svc.Type == records.TypeHeadless {
		si.Spec.Type = mcsv1a1.Headless
	}
	if svc.SessionAffinity == records.AffinityClientIP {
		si.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	}
	for _, p := range svc.Ports {
		sp := mcsv1a1.ServicePort{Name: p.Name, Protocol: corev1.Protocol(p.Protocol), Port: p.Port}
		if sp.Protocol == "" {
			sp.Protocol = corev1.ProtocolTCP
		}
		if p.AppProtocol != "" {
			ap := p.AppProtocol
			sp.AppProtocol = &ap
		}
		si.Spec.Ports = append(si.Spec.Ports, sp)
	}
	for _, ce := range svc.Clusters {
		si.Status.Clusters = append(si.Status.Clusters, mcsv1a1.ClusterStatus{Cluster: ce.Cluster})
	}
	return si
}

// gatewayGroup is the gateways of one cluster that share an address family and a port: they
// fit in one EndpointSlice (ports are per slice).
type gatewayGroup struct {
	addrType discoveryv1.AddressType
	port     int32
	hosts    []string
}

func clusterSlices(svc *view.Service, ce *view.ClusterExport, rec *records.Cluster, ready bool) []*discoveryv1.EndpointSlice {
	groups := map[[2]string]*gatewayGroup{}
	for _, gw := range rec.Gateways {
		// Records validate HOST:PORT; anything else is skipped, never guessed at.
		if validate.HostPort(gw) != nil {
			continue
		}
		host, ps, err := net.SplitHostPort(gw)
		if err != nil {
			continue
		}
		port, err := strconv.ParseInt(ps, 10, 32)
		if err != nil || port < 1 || port > 65535 {
			continue
		}
		at := discoveryv1.AddressTypeFQDN
		if a, err := netip.ParseAddr(host); err == nil {
			if a.Zone() != "" {
				continue // a link-local zone means nothing in another cluster
			}
			a = a.Unmap()
			at = discoveryv1.AddressTypeIPv6
			if a.Is4() {
				at = discoveryv1.AddressTypeIPv4
			}
			host = a.String()
		} else {
			host = strings.ToLower(host)
		}
		ps = strconv.Itoa(int(port))
		k := [2]string{string(at), ps}
		g := groups[k]
		if g == nil {
			g = &gatewayGroup{addrType: at, port: int32(port)}
			groups[k] = g
		}
		g.hosts = append(g.hosts, host)
	}
	// The ports this cluster offers, as the merged service defines them: a port whose
	// number lost a conflict is still served by this cluster's gateway under that number.
	var ports []records.Port
	for _, p := range ce.Export.Ports {
		for _, mp := range svc.Ports {
			if mp.Port == p.Port {
				ports = append(ports, mp)
			}
		}
	}
	if len(ports) == 0 {
		return nil
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].Port < ports[j].Port })

	keys := make([][2]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	var out []*discoveryv1.EndpointSlice
	for _, k := range keys {
		g := groups[k]
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: svc.Namespace,
				Name:      sliceName(svc.Namespace, svc.Name, ce.Cluster, g),
				Labels: map[string]string{
					mcsv1a1.LabelServiceName:   svc.Name,
					mcsv1a1.LabelSourceCluster: ce.Cluster,
					discoveryv1.LabelManagedBy: ManagedByValue,
				},
			},
			AddressType: g.addrType,
			Endpoints:   []discoveryv1.Endpoint{},
		}
		sort.Strings(g.hosts)
		for _, h := range g.hosts {
			r, serving, term := ready, ready, false
			ep := discoveryv1.Endpoint{
				Addresses:  []string{h},
				Conditions: discoveryv1.EndpointConditions{Ready: &r, Serving: &serving, Terminating: &term},
			}
			if rec.Zone != "" {
				z := rec.Zone
				ep.Zone = &z
			}
			sl.Endpoints = append(sl.Endpoints, ep)
		}
		for _, p := range ports {
			name, proto, port := p.Name, corev1.ProtocolTCP, g.port
			ep := discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &port}
			if p.AppProtocol != "" {
				ap := p.AppProtocol
				ep.AppProtocol = &ap
			}
			sl.Ports = append(sl.Ports, ep)
		}
		out = append(out, sl)
	}
	return out
}

// sliceName is readable (service and cluster) and unique: "a-b"+"c" and "a"+"b-c" read the
// same, so a hash of the parts follows.
func sliceName(ns, svc, cluster string, g *gatewayGroup) string {
	h := sha256.Sum256([]byte(ns + "/" + svc + "/" + cluster + "/" + string(g.addrType) + "/" + strconv.Itoa(int(g.port))))
	prefix := svc + "-" + cluster
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	return prefix + "-" + hex.EncodeToString(h[:5])
}
