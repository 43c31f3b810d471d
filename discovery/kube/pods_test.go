package kube

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kubefake "k8s.io/client-go/kubernetes/fake"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/keyspace/records"
)

func TestEndpointServiceAccount(t *testing.T) {
	vm := discoveryv1.Endpoint{Addresses: []string{"10.0.0.9"}} // a hand-made slice: no pod
	node := discoveryv1.Endpoint{Addresses: []string{"10.0.0.8"}, TargetRef: &corev1.ObjectReference{Kind: "Node", Name: "a"}}
	pods := podPolicy{pods: map[string]podFacts{"a": {serviceAccount: "echo"}, "b": {mode: DataplaneModeNone}}}
	for _, tc := range []struct {
		name string
		ep   discoveryv1.Endpoint
		want string
	}{
		{"pod with an account", podEndpoint("10.0.0.1", "a"), "echo"},
		{"pod without one (as the informer holds it)", podEndpoint("10.0.0.2", "b"), ""},
		{"pod not known yet", podEndpoint("10.0.0.3", "c"), ""},
		{"no pod behind it", vm, ""},
		{"a node of the pod's name", node, ""},
	} {
		if got := pods.serviceAccount(tc.ep); got != tc.want {
			t.Errorf("%s: serviceAccount = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// buildExport carries each pod's service account into the record, per endpoint.
func TestBuildExportServiceAccounts(t *testing.T) {
	svc := service("demo", "echo", tcpPort("tls", 8443, intstr.FromInt32(8443)))
	sl := slice("demo", "echo", "echo-a", discoveryv1.AddressTypeIPv4, map[string]int32{"tls": 8443})
	sl.Endpoints = []discoveryv1.Endpoint{podEndpoint("10.0.0.1", "a"), podEndpoint("10.0.0.2", "b"), podEndpoint("10.0.0.3", "c"), {Addresses: []string{"10.0.0.4"}}}
	exp, inv, _ := buildExport("west", svcExport("demo", "echo", t0), svc, []*discoveryv1.EndpointSlice{sl},
		podPolicy{namespace: true, pods: map[string]podFacts{"a": {serviceAccount: "echo"}, "b": {serviceAccount: "echo-canary", mode: DataplaneModeNone}}})
	if inv != nil {
		t.Fatalf("invalid: %+v", inv)
	}
	want := []records.Endpoint{
		{Address: "10.0.0.1", Ready: true, HBONEPort: 15008, ServiceAccount: "echo"},
		{Address: "10.0.0.2", Ready: true, ServiceAccount: "echo-canary"},
		{Address: "10.0.0.3", Ready: true, HBONEPort: 15008}, // pod not known yet
		{Address: "10.0.0.4", Ready: true},                   // no pod behind it
	}
	if js(exp.Endpoints) != js(want) {
		t.Fatalf("endpoints\n got %s\nwant %s", js(exp.Endpoints), js(want))
	}
	exp.Revision = 1 // the publisher's
	if err := exp.Validate(); err != nil {
		t.Fatal(err)
	}
}

// The informer keeps only what the source reads of a pod.
func TestStripPod(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo-a", UID: "u1", ResourceVersion: "7",
			Labels: map[string]string{"app": "echo", LabelDataplaneMode: DataplaneModeNone}, Annotations: map[string]string{"big": "x"}},
		Spec:   corev1.PodSpec{ServiceAccountName: "echo", NodeName: "n1", Containers: []corev1.Container{{Name: "echo", Image: "echo"}}},
		Status: corev1.PodStatus{PodIP: "10.0.0.1"},
	}
	got, err := stripPod(p)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo-a", UID: "u1", ResourceVersion: "7", Labels: map[string]string{LabelDataplaneMode: DataplaneModeNone}},
		Spec:       corev1.PodSpec{ServiceAccountName: "echo"},
	}
	if js(got) != js(want) {
		t.Fatalf("stripped\n got %s\nwant %s", js(got), js(want))
	}
	if x, _ := stripPod("not a pod"); x != "not a pod" {
		t.Fatalf("a non-pod changed: %v", x)
	}
}

// The source follows the pods behind the endpoints with client-go's fake clients: an
// endpoint's account appears when its pod does (the pod may come after the slice), and
// goes when the pod goes.
func TestSourceServiceAccountsFake(t *testing.T) {
	sl := echoSlice("demo", "echo-1")
	sl.Endpoints = []discoveryv1.Endpoint{podEndpoint("10.1.0.1", "echo-a"), podEndpoint("10.1.0.2", "echo-b"), {Addresses: []string{"10.1.0.3"}}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}
	podA := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo-a"}, Spec: corev1.PodSpec{ServiceAccountName: "echo"}}
	kc := kubefake.NewClientset(ns, echoService("demo"), sl, podA)
	endpoints := runFakeEchoSource(t, kc)
	ctx := context.Background()
	accounts := func(want ...string) func() error {
		return func() error {
			last := endpoints()
			if len(last) != len(want) {
				return fmt.Errorf("endpoints %+v", last)
			}
			for i, w := range want {
				if last[i].ServiceAccount != w {
					return fmt.Errorf("endpoints %+v, want accounts %q", last, want)
				}
			}
			return nil
		}
	}
	kubetest.Eventually(t, wait, accounts("echo", "", ""))
	podB := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo-b"}, Spec: corev1.PodSpec{ServiceAccountName: "echo-canary"}}
	if _, err := kc.CoreV1().Pods("demo").Create(ctx, podB, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, accounts("echo", "echo-canary", ""))
	if err := kc.CoreV1().Pods("demo").Delete(ctx, "echo-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, accounts("", "echo-canary", ""))
}

// runFakeEchoSource runs the source on kc with the ServiceExport demo/echo until the test
// ends, and returns a func giving the endpoints of the last snapshot's export.
func runFakeEchoSource(t *testing.T, kc *kubefake.Clientset) func() []records.Endpoint {
	t.Helper()
	se := &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo", CreationTimestamp: metav1.NewTime(t0)}}
	src, err := NewSource(SourceConfig{Cluster: "west", Kube: kc, MCS: fakeMCS(se), Log: testLog(t), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last []records.Endpoint
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(s discovery.Snapshot) {
			mu.Lock()
			defer mu.Unlock()
			if len(s.Exports) == 1 {
				last = s.Exports[0].Endpoints
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return func() []records.Endpoint {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}
