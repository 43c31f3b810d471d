package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-multierror"
	"google.golang.org/protobuf/encoding/protojson"
	mcp "istio.io/api/mcp/v1alpha1"
	_ "istio.io/api/networking/v1alpha3" // registers the spec types the resources carry
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/view"
)

// Istio ambient: istiod's ambient index, which is all ztunnel is told (WDS), reads
// ServiceEntries and WorkloadEntries from the Kubernetes API of its config cluster only,
// never from configSources (pilot/pkg/serviceregistry/ambient/ambientindex.go, New), so the
// MCP source's resources never reach ztunnel. With IstioAmbientEntries the importer writes
// what ambient needs into the Kubernetes API; what exactly, and how it stays out of the
// Envoy proxies' way, is the builder's business (federation/istio.BuildAmbient, one builder
// for the MCP and the Kubernetes forms).

// Istio config types the ambient entries may hold, as the builder names them (the MCP type
// URLs: group/version/Kind), with their resources.
var istioEntryGVRs = map[string]schema.GroupVersionResource{
	"networking.istio.io/v1/ServiceEntry":  {Group: "networking.istio.io", Version: "v1", Resource: "serviceentries"},
	"networking.istio.io/v1/WorkloadEntry": {Group: "networking.istio.io", Version: "v1", Resource: "workloadentries"},
}

// istioEntryKinds in the order they are written (a ServiceEntry before the entries it
// selects) and reported.
var istioEntryKinds = []string{"networking.istio.io/v1/ServiceEntry", "networking.istio.io/v1/WorkloadEntry"}

// IstioAmbientEntries configures the importer's Istio ambient ServiceEntries and
// WorkloadEntries. It needs IstioRemoteGateways (the entries name the networks of those
// Gateways) and Istio's CRDs.
type IstioAmbientEntries struct {
	// Build returns the wanted objects for view v in cluster self, by type
	// ("networking.istio.io/v1/ServiceEntry", ".../WorkloadEntry"), each named
	// namespace/name, with its labels and an istio.io/api spec. networks holds the remote
	// clusters that have an istio-remote Gateway here, by name, with the network label of
	// that Gateway. Pure. (federation/istio.BuildAmbient; the caller binds its options.)
	Build func(v *view.View, self string, networks map[string]string) (map[string][]*mcp.Resource, error)
}

// wantEntry is one wanted ServiceEntry or WorkloadEntry.
type wantEntry struct {
	kind string // type as in istioEntryGVRs
	gvr  schema.GroupVersionResource
	obj  *unstructured.Unstructured
}

// desiredEntries turns the builder's resources into objects, keyed by kind, then
// namespace/name.
func desiredEntries(res map[string][]*mcp.Resource) (map[string]map[string]*wantEntry, error) {
	out := map[string]map[string]*wantEntry{}
	for _, kind := range istioEntryKinds {
		out[kind] = map[string]*wantEntry{}
	}
	for typ, rs := range res {
		gvr, ok := istioEntryGVRs[typ]
		if !ok {
			return nil, fmt.Errorf("istio ambient entries: type %q is not one the importer writes", typ)
		}
		for _, r := range rs {
			key := r.GetMetadata().GetName()
			ns, name, ok := strings.Cut(key, "/")
			if !ok || ns == "" || name == "" {
				return nil, fmt.Errorf("istio ambient entries: %s name %q is not namespace/name", typ, key)
			}
			msg, err := r.GetBody().UnmarshalNew()
			if err != nil {
				return nil, fmt.Errorf("istio ambient entries: %s %s: %w", typ, key, err)
			}
			js, err := protojson.Marshal(msg)
			if err != nil {
				return nil, fmt.Errorf("istio ambient entries: %s %s: %w", typ, key, err)
			}
			// The apimachinery decoder keeps integers int64, as the informers hold them.
			var spec map[string]any
			if err := kjson.Unmarshal(js, &spec); err != nil {
				return nil, fmt.Errorf("istio ambient entries: %s %s: %w", typ, key, err)
			}
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": gvr.GroupVersion().String(),
				"kind":       kindOf(typ),
				"spec":       spec,
			}}
			u.SetNamespace(ns)
			u.SetName(name)
			lb := map[string]string{}
			for k, v := range r.GetMetadata().GetLabels() {
				lb[k] = v
			}
			lb[LabelImportManagedBy] = ImportManagedByValue
			u.SetLabels(lb)
			out[typ][key] = &wantEntry{kind: typ, gvr: gvr, obj: u}
		}
	}
	return out, nil
}

// entryInformers watches meshfed's ServiceEntries and WorkloadEntries in every namespace.
func (im *Importer) entryInformers() map[string]cache.SharedIndexInformer {
	f := dynamicinformer.NewFilteredDynamicSharedInformerFactory(im.cfg.Dynamic, im.cfg.Resync, metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.LabelSelector = LabelImportManagedBy + "=" + ImportManagedByValue })
	out := map[string]cache.SharedIndexInformer{}
	for _, kind := range istioEntryKinds {
		gi := f.ForResource(istioEntryGVRs[kind])
		out[kind] = gi.Informer()
		im.entryListers[kind] = gi.Lister()
	}
	return out
}

// passEntries makes this cluster's ambient ServiceEntries and WorkloadEntries match the
// view. networks are the remote clusters whose istio-remote Gateway is wanted here.
func (im *Importer) passEntries(ctx context.Context, v *view.View, networks map[string]string) error {
	res, err := im.cfg.IstioAmbientEntries.Build(v, im.cfg.Cluster, networks)
	if err != nil {
		return err
	}
	want, err := desiredEntries(res)
	if err != nil {
		return err
	}
	errs := validate.NewList()
	for _, kind := range istioEntryKinds {
		wantKind := want[kind]
		have := map[string]*unstructured.Unstructured{}
		objs, err := im.entryListers[kind].List(labels.Everything())
		if err != nil {
			return err
		}
		for _, o := range objs {
			// The informer lists by meshfed's label; checked again so that nothing else is
			// ever updated or deleted, whatever the cache holds.
			if u, ok := o.(*unstructured.Unstructured); ok && u.GetLabels()[LabelImportManagedBy] == ImportManagedByValue {
				have[u.GetNamespace()+"/"+u.GetName()] = u
			}
		}
		keys := make([]string, 0, len(wantKind))
		for k := range wantKind {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		n := 0
		for _, k := range keys {
			we := wantKind[k]
			if !im.namespaceUsable(we.obj.GetNamespace()) {
				// Reported by the import pass (the services' namespaces are the same).
				continue
			}
			n++
			if err := im.applyEntry(ctx, we, have[k]); err != nil {
				errs = multierror.Append(errs, err)
			}
		}
		kindName := kindOf(kind)
		for k, u := range have {
			if wantKind[k] != nil && im.namespaceUsable(u.GetNamespace()) {
				continue
			}
			uid := u.GetUID()
			err := im.cfg.Dynamic.Resource(istioEntryGVRs[kind]).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			if err = im.wrote(kindName, "delete", err); err != nil {
				errs = multierror.Append(errs, fmt.Errorf("delete %s %s: %w", kindName, k, err))
			} else {
				im.log.Info("Istio ambient entry removed", "kind", kindName, "name", k)
			}
		}
		im.m.objects.WithLabelValues(kindName).Set(float64(n))
	}
	return errs.ErrorOrNil()
}

// kindOf is a type's Kind (the metric and log name).
func kindOf(typ string) string { return typ[strings.LastIndexByte(typ, '/')+1:] }

// applyEntry creates or updates one entry. Istio's CRDs default nothing, so the spec must
// equal the wanted one exactly (an added field is drift too); labels are merged; status
// (istiod writes the allocated addresses there) is never touched.
func (im *Importer) applyEntry(ctx context.Context, we *wantEntry, have *unstructured.Unstructured) error {
	kind := kindOf(we.kind)
	ns, name := we.obj.GetNamespace(), we.obj.GetName()
	key := kind + " " + ns + "/" + name
	cl := im.cfg.Dynamic.Resource(we.gvr).Namespace(ns)
	if have == nil {
		_, err := cl.Create(ctx, we.obj, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			if err = im.wrote(kind, "create", err); err != nil {
				return fmt.Errorf("create %s: %w", key, err)
			}
			im.log.Info("Istio ambient entry written", "kind", kind, "name", ns+"/"+name, "cluster", we.obj.GetLabels()[labelEntryCluster])
			delete(im.foreign, key)
			return nil
		}
		if have, err = cl.Get(ctx, name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("get %s: %w", key, err)
		}
		if have.GetLabels()[LabelImportManagedBy] != ImportManagedByValue {
			if !im.foreign[key] {
				im.foreign[key] = true
				im.log.Warn("Istio config object exists and is not meshfed's: leaving it alone (ztunnel gets no remote endpoints for this service until it is renamed or deleted)", "kind", kind, "name", ns+"/"+name)
			}
			return nil
		}
	}
	delete(im.foreign, key)
	spec := have.Object["spec"]
	if contains(spec, we.obj.Object["spec"]) && contains(we.obj.Object["spec"], spec) && hasLabels(have.GetLabels(), we.obj.GetLabels()) {
		return nil
	}
	upd := have.DeepCopy()
	upd.Object["spec"] = we.obj.Object["spec"]
	upd.SetLabels(mergeLabels(upd.GetLabels(), we.obj.GetLabels()))
	_, err := cl.Update(ctx, upd, metav1.UpdateOptions{})
	if err = im.wrote(kind, "update", err); err != nil {
		return fmt.Errorf("update %s: %w", key, err)
	}
	im.log.Info("Istio ambient entry updated", "kind", kind, "name", ns+"/"+name)
	return nil
}

// labelEntryCluster is the builder's label naming the remote cluster of a WorkloadEntry
// (federation/istio.LabelCluster), read for logs only.
const labelEntryCluster = "federation.meshfed.io/cluster"

// networks is the network of each remote cluster whose Gateway the plan wants, as the
// Gateway's label says.
func (p *gatewayPlan) networks() map[string]string {
	out := make(map[string]string, len(p.want))
	for _, g := range p.want {
		out[g.cluster] = g.obj.GetLabels()[LabelIstioNetwork]
	}
	return out
}
