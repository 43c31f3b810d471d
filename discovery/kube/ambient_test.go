package kube

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/meshfed/meshfed/internal/kubetest"
)

func podEndpoint(addr, pod string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{addr}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "demo", Name: pod}}
}

func TestAmbientHBONEPort(t *testing.T) {
	vm := discoveryv1.Endpoint{Addresses: []string{"10.0.0.9"}} // a hand-made slice: no pod
	node := discoveryv1.Endpoint{Addresses: []string{"10.0.0.8"}, TargetRef: &corev1.ObjectReference{Kind: "Node", Name: "n1"}}
	for _, tc := range []struct {
		name string
		amb  podPolicy
		ep   discoveryv1.Endpoint
		want int32
	}{
		{"ambient namespace", podPolicy{namespace: true}, podEndpoint("10.0.0.1", "a"), 15008},
		{"pod opts out", podPolicy{namespace: true, pods: map[string]podFacts{"a": {mode: DataplaneModeNone}}}, podEndpoint("10.0.0.1", "a"), 0},
		{"another pod opts out", podPolicy{namespace: true, pods: map[string]podFacts{"b": {mode: DataplaneModeNone}}}, podEndpoint("10.0.0.1", "a"), 15008},
		{"pod opts in", podPolicy{pods: map[string]podFacts{"a": {mode: DataplaneModeAmbient}}}, podEndpoint("10.0.0.1", "a"), 15008},
		{"plain namespace", podPolicy{}, podEndpoint("10.0.0.1", "a"), 0},
		{"a known pod without the label", podPolicy{namespace: true, pods: map[string]podFacts{"a": {serviceAccount: "echo"}}}, podEndpoint("10.0.0.1", "a"), 15008},
		{"no pod behind it", podPolicy{namespace: true}, vm, 0},
		{"not a pod", podPolicy{namespace: true}, node, 0},
	} {
		if got := tc.amb.hbonePort(tc.ep); got != tc.want {
			t.Errorf("%s: hbonePort = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// buildExport carries the policy into the record: captured pods get hbonePort 15008.
func TestBuildExportAmbient(t *testing.T) {
	svc := service("demo", "echo", tcpPort("tls", 8443, intstr.FromInt32(8443)))
	sl := slice("demo", "echo", "echo-a", discoveryv1.AddressTypeIPv4, map[string]int32{"tls": 8443})
	sl.Endpoints = []discoveryv1.Endpoint{podEndpoint("10.0.0.1", "a"), podEndpoint("10.0.0.2", "b")}
	exp, inv, _ := buildExport("west", svcExport("demo", "echo", t0), svc, []*discoveryv1.EndpointSlice{sl},
		podPolicy{namespace: true, pods: map[string]podFacts{"b": {mode: DataplaneModeNone}}})
	if inv != nil {
		t.Fatalf("invalid: %+v", inv)
	}
	if exp.Endpoints[0].HBONEPort != 15008 || exp.Endpoints[1].HBONEPort != 0 {
		t.Fatalf("endpoints %+v: a is captured by ambient, b opted out", exp.Endpoints)
	}
}

// The source follows Istio ambient labels live: labelling the namespace exports its pods
// with hbonePort 15008, a pod's opt-out takes it back.
func TestSourceAmbientFake(t *testing.T) {
	sl := echoSlice("demo", "echo-1")
	sl.Endpoints = []discoveryv1.Endpoint{podEndpoint("10.1.0.1", "echo-a"), podEndpoint("10.1.0.2", "echo-b")}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}
	kc := kubefake.NewClientset(ns, echoService("demo"), sl)
	endpoints := runFakeEchoSource(t, kc)
	ctx := context.Background()
	hbone := func(want ...int32) func() error {
		return func() error {
			last := endpoints()
			if len(last) != len(want) {
				return fmt.Errorf("endpoints %+v", last)
			}
			for i, w := range want {
				if last[i].HBONEPort != w {
					return fmt.Errorf("endpoints %+v, want hbonePorts %v", last, want)
				}
			}
			return nil
		}
	}
	kubetest.Eventually(t, wait, hbone(0, 0))
	ns.Labels = map[string]string{LabelDataplaneMode: DataplaneModeAmbient}
	if _, err := kc.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, hbone(15008, 15008))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo-b", Labels: map[string]string{LabelDataplaneMode: DataplaneModeNone}}}
	if _, err := kc.CoreV1().Pods("demo").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, hbone(15008, 0))
}
