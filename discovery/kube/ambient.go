package kube

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Istio ambient: a pod is captured by its node's ztunnel, which takes HBONE for it on
// port 15008, when its namespace is labelled istio.io/dataplane-mode=ambient and the pod
// does not opt out (istio.io/dataplane-mode=none on the pod); a pod labelled ambient is
// captured in any namespace. Such endpoints are exported with hbonePort 15008.
const (
	LabelDataplaneMode   = "istio.io/dataplane-mode"
	DataplaneModeAmbient = "ambient"
	DataplaneModeNone    = "none"
	// AmbientHBONEPort is where ztunnel accepts HBONE for the pods it captures.
	AmbientHBONEPort = 15008
)

// ambientPolicy says which endpoints of one namespace Istio ambient captures.
type ambientPolicy struct {
	// namespace is true when the namespace is labelled for ambient.
	namespace bool
	// pods holds the dataplane-mode label of the namespace's pods that carry one.
	pods map[string]string
}

// hbonePort is ep's HBONE port: 15008 when ep is a pod that ambient captures, else 0.
// Endpoints that are not pods (hand-made slices) are never captured.
func (a ambientPolicy) hbonePort(ep discoveryv1.Endpoint) int32 {
	if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
		return 0
	}
	switch a.pods[ep.TargetRef.Name] {
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

// ambientWatch is what the source reads to know the ambient policy: namespaces (their
// label) and the pods that carry a dataplane-mode label (few: opt-outs and opt-ins).
type ambientWatch struct {
	ns            corelisters.NamespaceLister
	pods          corelisters.PodLister
	nsInf, podInf cache.SharedIndexInformer
}

// newAmbientWatch sets up the informers on the factories nf (cluster-wide, namespaces) and
// a pod factory limited to namespace ns and to pods with the label.
func newAmbientWatch(nf informers.SharedInformerFactory, pf informers.SharedInformerFactory) *ambientWatch {
	nsInf, podInf := nf.Core().V1().Namespaces(), pf.Core().V1().Pods()
	return &ambientWatch{ns: nsInf.Lister(), pods: podInf.Lister(), nsInf: nsInf.Informer(), podInf: podInf.Informer()}
}

// podLabelSelector limits the pod informer to pods that name a dataplane mode.
func podLabelSelector(o *metav1.ListOptions) { o.LabelSelector = LabelDataplaneMode }

// policy is the ambient policy of namespace ns now (nothing captured when unknown).
func (w *ambientWatch) policy(ns string) ambientPolicy {
	var a ambientPolicy
	if w == nil {
		return a
	}
	if n, err := w.ns.Get(ns); err == nil {
		a.namespace = n.Labels[LabelDataplaneMode] == DataplaneModeAmbient
	}
	pods, err := w.pods.Pods(ns).List(labels.Everything())
	if err == nil && len(pods) > 0 {
		a.pods = make(map[string]string, len(pods))
		for _, p := range pods {
			a.pods[p.Name] = p.Labels[LabelDataplaneMode]
		}
	}
	return a
}

// namespaceHandler calls add with the namespace an object (a Namespace, or a Pod) is
// about, when it changes: its exports are judged again.
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
