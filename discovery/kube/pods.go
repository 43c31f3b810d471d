package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// What the source reads from the pods behind an export's endpoints (EndpointSlice
// targetRef → Pod): whether Istio ambient captures them (hbonePort, ambient.go), and the
// service account they run as (serviceAccount: importing Istio clusters put the SPIFFE ID
// it makes into their ServiceEntries' subjectAltNames, docs/istio.md).

// podFacts is what the source keeps of one pod.
type podFacts struct {
	// mode is the pod's istio.io/dataplane-mode label ("" when none).
	mode string
	// serviceAccount is spec.serviceAccountName (immutable once the pod exists).
	serviceAccount string
}

// podPolicy says, for the endpoints of one namespace, which pods Istio ambient captures
// and which service account each pod runs as.
type podPolicy struct {
	// namespace is true when the namespace is labelled for ambient.
	namespace bool
	// pods holds the pods behind the endpoints, by name (a pod not in it is not known yet:
	// no opt-out label, account unknown).
	pods map[string]podFacts
}

// pod is the facts of the pod behind ep, and whether ep is a known pod. Endpoints that are
// not pods (hand-made slices) are never known.
func (a podPolicy) pod(ep discoveryv1.Endpoint) (podFacts, bool) {
	if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
		return podFacts{}, false
	}
	p, ok := a.pods[ep.TargetRef.Name]
	return p, ok
}

// hbonePort is ep's HBONE port: 15008 when ep is a pod that ambient captures, else 0.
// Endpoints that are not pods are never captured.
func (a podPolicy) hbonePort(ep discoveryv1.Endpoint) int32 {
	if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
		return 0
	}
	p, _ := a.pod(ep)
	switch p.mode {
	case DataplaneModeNone:
		return 0
	case DataplaneModeAmbient:
		return AmbientHBONEPort
	}
	if a.namespace {
		return AmbientHBONEPort
	}
	return 0
}

// serviceAccount is the service account of the pod behind ep ("" when ep is no pod, or
// one the informer does not hold yet: the pod's own event re-judges the export).
func (a podPolicy) serviceAccount(ep discoveryv1.Endpoint) string {
	p, _ := a.pod(ep)
	return p.serviceAccount
}

// podWatch is what the source reads to know the pod policy: namespaces (their ambient
// label) and the pods, stripped to what podFacts needs.
type podWatch struct {
	ns            corelisters.NamespaceLister
	pods          corelisters.PodLister
	nsInf, podInf cache.SharedIndexInformer
}

// newPodWatch sets up the informers on the factories nf (cluster-wide, namespaces) and pf
// (pods, in the source's namespace scope). Every pod is watched (its service account is
// needed, not only the ambient opt-outs), so the pod informer keeps only name, namespace,
// the dataplane-mode label and spec.serviceAccountName of each (stripPod): a few hundred
// bytes per pod instead of the whole object.
func newPodWatch(nf informers.SharedInformerFactory, pf informers.SharedInformerFactory) (*podWatch, error) {
	nsInf, podInf := nf.Core().V1().Namespaces(), pf.Core().V1().Pods()
	w := &podWatch{ns: nsInf.Lister(), pods: podInf.Lister(), nsInf: nsInf.Informer(), podInf: podInf.Informer()}
	if err := w.podInf.SetTransform(stripPod); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	return w, nil
}

// stripPod keeps what the source reads of a pod (informer transform).
func stripPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone, or not a pod: as it is
	}
	out := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
	}}
	if m, ok := p.Labels[LabelDataplaneMode]; ok {
		out.Labels = map[string]string{LabelDataplaneMode: m}
	}
	out.Spec.ServiceAccountName = p.Spec.ServiceAccountName
	return out, nil
}

// policy is the pod policy of namespace ns for the endpoints of slices now (nothing
// captured and no account known when the informers do not know).
func (w *podWatch) policy(ns string, slices []*discoveryv1.EndpointSlice) podPolicy {
	var a podPolicy
	if w == nil {
		return a
	}
	if n, err := w.ns.Get(ns); err == nil {
		a.namespace = n.Labels[LabelDataplaneMode] == DataplaneModeAmbient
	}
	lister := w.pods.Pods(ns)
	for _, sl := range slices {
		for _, ep := range sl.Endpoints {
			if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" || (ep.TargetRef.Namespace != "" && ep.TargetRef.Namespace != ns) {
				continue
			}
			if _, seen := a.pods[ep.TargetRef.Name]; seen {
				continue
			}
			p, err := lister.Get(ep.TargetRef.Name)
			if err != nil {
				continue
			}
			if a.pods == nil {
				a.pods = map[string]podFacts{}
			}
			a.pods[p.Name] = podFacts{mode: p.Labels[LabelDataplaneMode], serviceAccount: p.Spec.ServiceAccountName}
		}
	}
	return a
}

// namespaceHandler calls add with the namespace an object (a Namespace, or a Pod) is
// about, when it changes: its exports are judged again. A pod matters when it comes or
// goes (an endpoint's service account, and its ambient label, become known or go) and
// when its dataplane-mode label changes (its service account never does).
func namespaceHandler(add func(ns string)) cache.ResourceEventHandler {
	f := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			add(o.Name)
		case *corev1.Pod:
			add(o.Namespace)
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: f, DeleteFunc: f, UpdateFunc: func(o, n any) {
		// Only a label change matters (pods change status all the time).
		if om, ok := o.(metav1.Object); ok {
			if nm, ok := n.(metav1.Object); ok && om.GetLabels()[LabelDataplaneMode] == nm.GetLabels()[LabelDataplaneMode] {
				return
			}
		}
		f(n)
	}}
}
