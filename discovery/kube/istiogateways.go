package kube

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/hashicorp/go-multierror"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// Istio ambient multi-network: istiod learns another network's east-west gateway from a
// Gateway API Gateway of class istio-remote labelled with that network. What the pinned
// istiod (istio.io/istio v0.0.0-20260827124520-eed52ebb66ad) reads from one, in
// pilot/pkg/serviceregistry/ambient/networks.go (localK8sGatewayToNetworkGateways):
//
//   - the label topology.istio.io/network (no label: ignored) and gatewayClassName
//     istio-remote;
//   - status.addresses (not spec!), each of type IPAddress or Hostname: one network
//     gateway per address. istiod's own Gateway status writer copies spec.addresses there
//     for istio-remote Gateways (reportUnmanagedGatewayStatus) when its Gateway controller
//     runs; the importer writes them itself so that the gateway does not depend on it;
//   - the first listener with protocol HBONE: its port is the gateway's HBONE port;
//   - the gateway's identity, which ztunnel checks on the outer mTLS: namespace = the
//     Gateway's namespace, service account = the gateway.istio.io/service-account
//     annotation, else "<name>-istio-remote" (pilot/pkg/serviceregistry/kube.GatewaySA),
//     trust domain = istiod's own mesh trust domain.
//
// The sidecar side (pilot/pkg/serviceregistry/kube/controller/network.go) reads
// spec.addresses and the same HBONE listener, so writing both serves both.
const (
	// GatewayClassIstioRemote is istiod's class for a gateway it does not program.
	GatewayClassIstioRemote = "istio-remote"
	// LabelIstioNetwork names the Istio network a Gateway (or namespace, pod) belongs to.
	LabelIstioNetwork = "topology.istio.io/network"
	// AnnotationGatewayServiceAccount sets the service account of the gateway's identity.
	AnnotationGatewayServiceAccount = "gateway.istio.io/service-account"
	// DefaultIstioGatewayNamespace is where the Gateways go unless configured otherwise.
	DefaultIstioGatewayNamespace = "istio-system"
	// hboneListenerName and the TLS option follow istio's own istio-remote examples
	// (ambientindex_test.go TestAmbientSync).
	hboneListenerName = "cross-network"
	hboneProtocol     = "HBONE"
	// istioGatewayPrefix + remote cluster name is each Gateway's name.
	istioGatewayPrefix = "meshfed-"
)

// GatewayGVR is the Gateway API's Gateway resource (v1).
var GatewayGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}

// IstioRemoteGateways configures the importer's Istio ambient Gateways.
type IstioRemoteGateways struct {
	// Namespace holds the Gateways (default istio-system); it must exist.
	Namespace string
	// ServiceAccount, when set, is written as the gateway.istio.io/service-account
	// annotation: the service account of the identity ztunnel expects from the remote
	// gateway's outer mTLS (docs/istio.md, "Ambient").
	ServiceAccount string
}

func (g *IstioRemoteGateways) validate() error {
	var errs validate.Errors
	errs.AddErr("namespace", validate.DNSLabel(g.Namespace))
	if g.ServiceAccount != "" {
		errs.AddErr("serviceAccount", validate.DNSSubdomain(g.ServiceAccount))
	}
	if err := errs.Err(); err != nil {
		return fmt.Errorf("istio remote gateways: %w", err)
	}
	return nil
}

// wantGateway is the wanted state of one istio-remote Gateway.
type wantGateway struct {
	cluster string
	obj     *unstructured.Unstructured // metadata and spec
	// addresses is status.addresses (the same list as spec.addresses).
	addresses []any
}

// gatewayPlan is what the importer keeps for one view.
type gatewayPlan struct {
	want map[string]*wantGateway // by name
	// sameNetwork lists remote clusters with HBONE gateways on this cluster's own network:
	// istiod sends no traffic through a network gateway of its own network, so none is
	// written.
	sameNetwork []string
}

// desiredGateways computes one Gateway per other cluster whose record has HBONE gateways
// and whose network differs from this cluster's (self). Pure: same view, same objects.
func desiredGateways(v *view.View, self string, cfg IstioRemoteGateways) *gatewayPlan {
	p := &gatewayPlan{want: map[string]*wantGateway{}}
	if v == nil {
		return p
	}
	selfNet := ""
	if rec := v.Clusters[self]; rec != nil {
		selfNet = rec.Network
	}
	names := make([]string, 0, len(v.Clusters))
	for n := range v.Clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		rec := v.Clusters[name]
		if name == self || rec == nil || len(rec.HBONEGateways) == 0 {
			continue
		}
		if rec.Network == selfNet {
			p.sameNetwork = append(p.sameNetwork, name)
			continue
		}
		if w := istioRemoteGateway(rec, cfg); w != nil {
			p.want[w.obj.GetName()] = w
		}
	}
	return p
}

// istioRemoteGateway is the Gateway for one remote cluster, or nil when none of its HBONE
// addresses is usable (records are validated; nothing is guessed at).
func istioRemoteGateway(rec *records.Cluster, cfg IstioRemoteGateways) *wantGateway {
	port := rec.HBONEPort()
	if port == 0 {
		return nil
	}
	var addrs []any
	seen := map[string]bool{}
	for _, gw := range rec.HBONEGateways {
		if validate.HostPort(gw) != nil {
			continue
		}
		host := gw[:strings.LastIndexByte(gw, ':')]
		typ := "Hostname"
		if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			if a.Zone() != "" {
				continue // a link-local zone means nothing in another cluster
			}
			typ, host = "IPAddress", a.Unmap().String()
		} else {
			host = strings.ToLower(host)
		}
		if seen[host] {
			continue
		}
		seen[host] = true
		addrs = append(addrs, map[string]any{"type": typ, "value": host})
	}
	if len(addrs) == 0 {
		return nil
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": GatewayGVR.GroupVersion().String(),
		"kind":       "Gateway",
		"metadata": map[string]any{
			"name":      istioGatewayPrefix + rec.Name,
			"namespace": cfg.Namespace,
		},
		"spec": map[string]any{
			"gatewayClassName": GatewayClassIstioRemote,
			"addresses":        addrs,
			"listeners": []any{map[string]any{
				"name":     hboneListenerName,
				"port":     int64(port),
				"protocol": hboneProtocol,
				"tls": map[string]any{
					"mode":    "Passthrough",
					"options": map[string]any{"gateway.istio.io/listener-protocol": "auto-passthrough"},
				},
			}},
		},
	}}
	u.SetLabels(map[string]string{
		LabelImportManagedBy:       ImportManagedByValue,
		LabelIstioNetwork:          rec.Network,
		mcsv1a1.LabelSourceCluster: rec.Name,
	})
	if cfg.ServiceAccount != "" {
		u.SetAnnotations(map[string]string{AnnotationGatewayServiceAccount: cfg.ServiceAccount})
	}
	return &wantGateway{cluster: rec.Name, obj: u, addresses: addrs}
}

// gatewayInformer watches meshfed's Gateways in the configured namespace.
func (im *Importer) gatewayInformer() informers.GenericInformer {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(im.cfg.Dynamic, im.cfg.Resync, im.cfg.IstioRemoteGateways.Namespace,
		func(o *metav1.ListOptions) { o.LabelSelector = LabelImportManagedBy + "=" + ImportManagedByValue })
	return f.ForResource(GatewayGVR)
}

// passGateways makes this cluster's istio-remote Gateways match the view. Errors are
// joined; the caller retries the whole pass.
func (im *Importer) passGateways(ctx context.Context, plan *gatewayPlan) error {
	g := im.cfg.IstioRemoteGateways
	im.reportSameNetwork(plan.sameNetwork)
	if !im.namespaceUsable(g.Namespace) {
		if !im.gwNamespaceMissing {
			im.gwNamespaceMissing = true
			im.log.Warn("namespace for Istio's istio-remote Gateways does not exist here: none are written until it is created (meshfed does not create namespaces)", "namespace", g.Namespace)
		}
		return nil
	}
	im.gwNamespaceMissing = false
	have := map[string]*unstructured.Unstructured{}
	objs, err := im.gwLister.ByNamespace(g.Namespace).List(labels.Everything())
	if err != nil {
		return err
	}
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			have[u.GetName()] = u
		}
	}
	names := make([]string, 0, len(plan.want))
	for n := range plan.want {
		names = append(names, n)
	}
	sort.Strings(names)
	errs := validate.NewList()
	for _, n := range names {
		if err := im.applyGateway(ctx, plan.want[n], have[n]); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	for n, u := range have {
		if plan.want[n] != nil {
			continue
		}
		uid := u.GetUID()
		err := im.cfg.Dynamic.Resource(GatewayGVR).Namespace(g.Namespace).Delete(ctx, n, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err = im.wrote("Gateway", "delete", err); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("delete Gateway %s/%s: %w", g.Namespace, n, err))
		} else {
			im.log.Info("istio-remote Gateway removed", "gateway", g.Namespace+"/"+n, "cluster", u.GetLabels()[mcsv1a1.LabelSourceCluster])
		}
	}
	im.m.objects.WithLabelValues("Gateway").Set(float64(len(plan.want)))
	return errs.ErrorOrNil()
}

// applyGateway creates or updates one Gateway, then its status.addresses.
func (im *Importer) applyGateway(ctx context.Context, w *wantGateway, have *unstructured.Unstructured) error {
	ns, name := w.obj.GetNamespace(), w.obj.GetName()
	key := ns + "/" + name
	cl := im.cfg.Dynamic.Resource(GatewayGVR).Namespace(ns)
	if have == nil {
		created, err := cl.Create(ctx, w.obj, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			if have, err = cl.Get(ctx, name, metav1.GetOptions{}); err != nil {
				return fmt.Errorf("get Gateway %s: %w", key, err)
			}
			if have.GetLabels()[LabelImportManagedBy] != ImportManagedByValue {
				if !im.foreign["Gateway/"+key] {
					im.foreign["Gateway/"+key] = true
					im.log.Warn("Gateway exists and is not meshfed's: leaving it alone (rename or delete it to let meshfed write the remote cluster's gateway)", "gateway", key, "cluster", w.cluster)
				}
				return nil
			}
		} else {
			if err = im.wrote("Gateway", "create", err); err != nil {
				return fmt.Errorf("create Gateway %s: %w", key, err)
			}
			im.log.Info("istio-remote Gateway written", "gateway", key, "cluster", w.cluster, "network", w.obj.GetLabels()[LabelIstioNetwork])
			have = created
		}
	}
	delete(im.foreign, "Gateway/"+key)
	cur := have
	if !contains(have.Object["spec"], w.obj.Object["spec"]) || !hasLabels(have.GetLabels(), w.obj.GetLabels()) ||
		!hasLabels(have.GetAnnotations(), w.obj.GetAnnotations()) {
		upd := have.DeepCopy()
		upd.Object["spec"] = w.obj.Object["spec"]
		upd.SetLabels(mergeLabels(upd.GetLabels(), w.obj.GetLabels()))
		ann := upd.GetAnnotations()
		if w.obj.GetAnnotations() == nil {
			delete(ann, AnnotationGatewayServiceAccount)
		}
		upd.SetAnnotations(mergeLabels(ann, w.obj.GetAnnotations()))
		got, err := cl.Update(ctx, upd, metav1.UpdateOptions{})
		if err = im.wrote("Gateway", "update", err); err != nil {
			return fmt.Errorf("update Gateway %s: %w", key, err)
		}
		im.log.Info("istio-remote Gateway updated", "gateway", key, "cluster", w.cluster)
		cur = got
	}
	// status.addresses is what ambient istiod reads; other status fields (conditions that
	// istiod's status writer sets) are kept.
	st, _, _ := unstructured.NestedSlice(cur.Object, "status", "addresses")
	if !contains(st, w.addresses) || len(st) != len(w.addresses) {
		upd := cur.DeepCopy()
		if err := unstructured.SetNestedSlice(upd.Object, w.addresses, "status", "addresses"); err != nil {
			return fmt.Errorf("Gateway %s: status.addresses: %w", key, err)
		}
		_, err := cl.UpdateStatus(ctx, upd, metav1.UpdateOptions{})
		if err = im.wrote("Gateway", "update-status", err); err != nil {
			return fmt.Errorf("update status of Gateway %s: %w", key, err)
		}
	}
	return nil
}

func (im *Importer) reportSameNetwork(cs []string) {
	now := map[string]bool{}
	for _, c := range cs {
		now[c] = true
		if !im.sameNetwork[c] {
			im.log.Warn("remote cluster has HBONE gateways but is on this cluster's own Istio network: no istio-remote Gateway is written for it (give each cluster its own network at join)", "remote", c)
		}
	}
	im.sameNetwork = now
}

// contains reports whether have holds everything want has: maps key by key (have may have
// more, e.g. fields the API server defaults), lists element by element with equal length,
// scalars equal (JSON numbers compared as int64 or float64 alike).
func contains(have, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			if !contains(h[k], wv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return false
		}
		for i := range w {
			if !contains(h[i], w[i]) {
				return false
			}
		}
		return true
	case int64:
		switch h := have.(type) {
		case int64:
			return h == w
		case float64:
			return h == float64(w)
		}
		return false
	default:
		return have == want
	}
}
