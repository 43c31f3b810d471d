package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	mcp "istio.io/api/mcp/v1alpha1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	meshdisc "github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/discovery/kube"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

const wait = 60 * time.Second

// warnings collects the apiserver's Warning headers (deprecated APIs, Pod Security
// violations, unknown fields under a lenient validation).
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// applier applies objects with server-side apply, for real or as a dry run.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	warn   *warnings
}

func newApplier(t *testing.T, cfg *rest.Config) *applier {
	t.Helper()
	w := &warnings{}
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = w
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), warn: w}
}

func (a *applier) apply(ctx context.Context, o obj, dryRun bool) error {
	gvk := schema.FromAPIVersionAndKind(o.apiVersion(), o.kind())
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		a.mapper.Reset() // a CRD applied a moment ago
		if m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return fmt.Errorf("the apiserver does not serve %s: %w", gvk, err)
		}
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.namespace() == "" {
			return fmt.Errorf("namespaced %s rendered without a namespace", o.kind())
		}
		ri = a.dyn.Resource(m.Resource).Namespace(o.namespace())
	}
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: "meshfed-deploy-test", Force: &force, FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Patch(ctx, o.name(), types.ApplyPatchType, data, opts)
	return err
}

// TestAPIServerDryRun applies every object of every render to a real kube-apiserver v1.37
// with a server-side dry run and strict field validation: the apiserver's own OpenAPI schema,
// defaulting, validation and admission (Pod Security "restricted" in the namespace, CRD
// schemas) judge each object. Any warning fails too. The MCS CRDs and the namespace are
// applied for real first, as an installation would.
func TestAPIServerDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no kube-apiserver")
	}
	api := sharedAPIServer(t)
	ctx := context.Background()
	a := newApplier(t, api.Config)

	var crdDocs [][]byte
	for _, n := range []string{"multicluster.x-k8s.io_serviceexports.yaml", "multicluster.x-k8s.io_serviceimports.yaml"} {
		b, err := os.ReadFile(repoPath("deploy", "crds", n))
		if err != nil {
			t.Fatal(err)
		}
		crdDocs = append(crdDocs, b)
	}
	if err := kubetest.ApplyCRDs(ctx, api.Config, crdDocs...); err != nil {
		t.Fatal(err)
	}
	ns := parseObjects(t, mustRead(t, repoPath("deploy", "kustomize", "base", "namespace.yaml")))[0]
	if err := a.apply(ctx, ns, false); err != nil {
		t.Fatalf("namespace: %v", err)
	}
	// Istio ambient's Role goes into the istio-remote Gateways' namespace, which Istio's
	// install creates (istio-system) or the operator does (helm-istio-ambient's
	// istio-gateways): meshfed never creates namespaces, and the apiserver refuses objects
	// in a namespace that does not exist, dry run or not.
	for _, n := range []string{"istio-system", "istio-gateways"} {
		if err := a.apply(ctx, obj{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": n}}, false); err != nil {
			t.Fatalf("namespace %s: %v", n, err)
		}
	}
	a.mapper.Reset()

	for _, r := range renders() {
		t.Run(r.name, func(t *testing.T) {
			n := 0
			for _, o := range r.objs(t) {
				if strings.HasPrefix(o.apiVersion(), "monitoring.coreos.com/") {
					t.Logf("%s: not applied (the Prometheus Operator CRDs are not installed here); its rules pass promtool in TestPromtool", o.id())
					continue
				}
				err := a.apply(ctx, o, true)
				w := a.warn.take()
				switch {
				case err != nil:
					t.Errorf("%s: %v", o.id(), err)
				case len(w) > 0:
					t.Errorf("%s: the apiserver warns: %s", o.id(), strings.Join(w, "; "))
				default:
					n++
				}
			}
			t.Logf("%d objects accepted by kube-apiserver %s (dry run, strict field validation)", n, api.Version)
		})
	}
}

// sharedAPIServer starts one kube-apiserver (MCS CRDs installed) for the package's tests,
// stopped by TestMain: the tests touch different objects, and one start is ~5-30 s.
func sharedAPIServer(t *testing.T) *kubetest.APIServer {
	t.Helper()
	if os.Getenv(kubetest.EnvAPIServer) == "" {
		t.Skip(kubetest.SkipHint)
	}
	apiOnce.Do(func() {
		apiSrv, apiErr = kubetest.Launch(context.Background(), kubetest.Config{MCSCRDs: true})
		if apiErr == nil {
			t.Logf("kube-apiserver %s %s ready in %v", apiSrv.URL, apiSrv.Version, apiSrv.StartDuration.Round(time.Millisecond))
		}
	})
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	return apiSrv
}

var (
	apiOnce sync.Once
	apiSrv  *kubetest.APIServer
	apiErr  error
)

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func sa(name string) (string, []string) {
	return "system:serviceaccount:meshfed-system:" + name,
		[]string{"system:serviceaccounts", "system:serviceaccounts:meshfed-system", "system:authenticated"}
}

// TestFederationRBACSuffices installs the chart's ServiceAccounts and RBAC for real and runs
// meshfed's real Kubernetes source and importer as the meshfed-federation ServiceAccount
// (impersonated): exporting a Service (including ServiceExport status) and importing a
// remote one (create, then delete) must work under the rules, and a set of things the
// federation service and the gateway must never do are denied by the apiserver.
var rbacRuns atomic.Int64

func TestFederationRBACSuffices(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no kube-apiserver")
	}
	api := sharedAPIServer(t)
	ctx := context.Background()
	// The apiserver outlives a run (-count=N) and has no namespace controller to finish a
	// deletion: each run uses a namespace of its own.
	ns := fmt.Sprintf("demo-%d", rbacRuns.Add(1))
	a := newApplier(t, api.Config)
	objs, err := helmTemplate(t, minimalValues)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.apply(ctx, parseObjects(t, mustRead(t, repoPath("deploy", "kustomize", "base", "namespace.yaml")))[0], false); err != nil {
		t.Fatal(err)
	}
	installRBAC(t, a, objs)

	admin, err := kube.ClientsFor(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	user, groups, fed := asFederation(t, api)

	// What the federation service reads: a Service with a ready endpoint, exported.
	if _, err := admin.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tls", Port: 8443, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9443)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready, name, port, proto := true, "tls", int32(9443), corev1.ProtocolTCP
	if _, err := admin.Kube.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "echo-1", Labels: map[string]string{discoveryv1.LabelServiceName: "echo"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.MCS.MulticlusterV1alpha1().ServiceExports(ns).Create(ctx, &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	src, err := kube.NewSource(kube.SourceConfig{Cluster: "east", Kube: fed.Kube, MCS: fed.MCS, Log: testLog(t).With("part", "source"), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last *meshdisc.Snapshot
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := src.Run(runCtx, func(s meshdisc.Snapshot) { mu.Lock(); last = &s; mu.Unlock() }); err != nil {
			t.Errorf("source as meshfed-federation: %v", err)
		}
	}()
	kubetest.Eventually(t, wait, func() error {
		mu.Lock()
		defer mu.Unlock()
		if last != nil {
			for _, e := range last.Exports {
				if e.ServiceKey() == ns+"/echo" {
					return nil
				}
			}
		}
		return fmt.Errorf("source snapshot %+v, want %s/echo (informers as meshfed-federation: %v)", last, ns, src.Ready())
	})
	kubetest.Eventually(t, wait, func() error {
		se, err := admin.MCS.MulticlusterV1alpha1().ServiceExports(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range se.Status.Conditions {
			if string(c.Type) == mcsv1a1.ServiceExportValid && c.Status == metav1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("ServiceExport %s/echo conditions %+v: no Valid=True written as meshfed-federation", ns, se.Status.Conditions)
	})

	im := startImporter(t, kube.ImporterConfig{Cluster: "east", Kube: fed.Kube, MCS: fed.MCS})
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	west := &records.Cluster{Name: "west", Network: "net-west", Region: "r1", Zone: "z1", TrustDomain: "west.example.org", Gateways: []string{"192.0.2.10:15443"}, JoinedAt: t0}
	exp := &records.Export{Cluster: "west", Namespace: ns, Name: "web", Type: records.TypeClusterSetIP, SessionAffinity: records.AffinityNone,
		Ports: []records.Port{{Name: "https", Port: 443, Protocol: "TCP"}}, ExportedAt: t0, Revision: 1,
		Endpoints: []records.Endpoint{{Address: "10.9.0.1", Ready: true}}}
	iv := &view.View{Revision: 10, Services: map[string]*view.Service{
		ns + "/web": view.Merge([]*view.ClusterExport{{Cluster: "west", Export: exp}}),
	}, Clusters: map[string]*records.Cluster{"west": west}, Alive: map[string]bool{"west": true}}
	im.Update(iv)
	sliceSel := metav1.ListOptions{LabelSelector: mcsv1a1.LabelServiceName + "=web"}
	kubetest.Eventually(t, wait, func() error {
		if _, err := admin.MCS.MulticlusterV1alpha1().ServiceImports(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("ServiceImport demo/web not created as meshfed-federation: %w", err)
		}
		l, err := admin.Kube.DiscoveryV1().EndpointSlices(ns).List(ctx, sliceSel)
		if err != nil || len(l.Items) == 0 {
			return fmt.Errorf("imported EndpointSlice for demo/web not created as meshfed-federation (%v)", err)
		}
		return nil
	})
	im.Update(&view.View{Revision: 11, Services: map[string]*view.Service{}, Clusters: map[string]*records.Cluster{"west": west}, Alive: map[string]bool{"west": true}})
	kubetest.Eventually(t, wait, func() error {
		_, err := admin.MCS.MulticlusterV1alpha1().ServiceImports(ns).Get(ctx, "web", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("ServiceImport demo/web still there after its export went away (%v)", err)
		}
		l, err := admin.Kube.DiscoveryV1().EndpointSlices(ns).List(ctx, sliceSel)
		if err != nil || len(l.Items) > 0 {
			return fmt.Errorf("imported EndpointSlices of demo/web still there (%d, %v)", len(l.Items), err)
		}
		return nil
	})

	// What must stay denied.
	gwUser, gwGroups := sa("meshfed-gateway")
	checks := []access{
		{user, groups, authzv1.ResourceAttributes{Verb: "list", Resource: "services"}, true},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "secrets"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: "meshfed-system", Verb: "list", Resource: "secrets"}, false},
		{user, groups, authzv1.ResourceAttributes{Verb: "create", Resource: "namespaces"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: "pods"}, true}, // istio.io/dataplane-mode
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "delete", Resource: "pods"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods/exec"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "update", Resource: "services"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "delete", Group: "multicluster.x-k8s.io", Resource: "serviceexports"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: "multicluster.x-k8s.io", Resource: "serviceexports"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "configmaps"}, false},
		{user, groups, authzv1.ResourceAttributes{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"}, false},
		// Leader election (on by default): its Lease in meshfed's namespace, nowhere else.
		{user, groups, authzv1.ResourceAttributes{Namespace: "meshfed-system", Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Name: "meshfed-federation-east"}, true},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leases"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: "kube-system", Verb: "update", Group: "coordination.k8s.io", Resource: "leases"}, false},
		{gwUser, gwGroups, authzv1.ResourceAttributes{Verb: "list", Resource: "services"}, false},
		{gwUser, gwGroups, authzv1.ResourceAttributes{Namespace: ns, Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices"}, false},
		{gwUser, gwGroups, authzv1.ResourceAttributes{Namespace: "meshfed-system", Verb: "get", Resource: "secrets"}, false},
	}
	checkAccess(t, admin, checks)
}

// TestFederationRBACSufficesIstioAmbient installs the chart's RBAC with istio.ambient on
// (helm-istio-ambient's values: the Gateways in a namespace of their own) for real, with
// the Gateway API CRD and Istio's ServiceEntry/WorkloadEntry CRDs, and runs meshfed's real
// importer as the meshfed-federation ServiceAccount (impersonated) with the settings the
// rendered --istio-ambient* flags give it: a remote cluster with an HBONE gateway and an
// export with ready HBONE endpoints must get its istio-remote Gateway (with
// status.addresses), ServiceEntry and WorkloadEntry, and lose all three when it leaves.
// SubjectAccessReviews then prove the limits: Gateways in no other namespace, no patch, no
// status of the entries, no other Istio config, nothing for the gateway.
func TestFederationRBACSufficesIstioAmbient(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no kube-apiserver")
	}
	api := sharedAPIServer(t)
	ctx := context.Background()
	if err := api.InstallGatewayCRD(ctx); err != nil {
		t.Fatal(err)
	}
	if err := api.InstallIstioEntryCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	run := rbacRuns.Add(1)
	ns, gwNS := fmt.Sprintf("demo-%d", run), fmt.Sprintf("istio-gateways-%d", run)
	a := newApplier(t, api.Config)
	vals := map[string]any{}
	for k, v := range istioAmbientValues {
		vals[k] = v
	}
	vals["istio"] = map[string]any{"ambient": map[string]any{"enabled": true, "namespace": gwNS, "gatewayServiceAccount": "meshfed-gateway"}}
	objs, err := helmTemplate(t, vals)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := kube.ClientsFor(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.apply(ctx, parseObjects(t, mustRead(t, repoPath("deploy", "kustomize", "base", "namespace.yaml")))[0], false); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{ns, gwNS} {
		if _, err := admin.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	installRBAC(t, a, objs)
	// The importer's settings as meshfed federation derives them from the rendered flags
	// (cmd/meshfed federation_ambient.go).
	var gws kube.IstioRemoteGateways
	for _, arg := range strs(dig(podSpec(find(objs, "Deployment", "meshfed-federation")), "containers", 0, "args")) {
		if v, ok := strings.CutPrefix(arg, "--istio-ambient-namespace="); ok {
			gws.Namespace = v
		}
		if v, ok := strings.CutPrefix(arg, "--istio-ambient-gateway-service-account="); ok {
			gws.ServiceAccount = v
		}
	}
	if gws.Namespace != gwNS || gws.ServiceAccount != "meshfed-gateway" {
		t.Fatalf("rendered --istio-ambient-namespace=%q --istio-ambient-gateway-service-account=%q, want %s and meshfed-gateway", gws.Namespace, gws.ServiceAccount, gwNS)
	}

	user, groups, fed := asFederation(t, api)
	im := startImporter(t, kube.ImporterConfig{Cluster: "east", Kube: fed.Kube, MCS: fed.MCS, Dynamic: fed.Dynamic,
		IstioRemoteGateways: &gws,
		IstioAmbientEntries: &kube.IstioAmbientEntries{Build: func(v *view.View, self string, networks map[string]string) (map[string][]*mcp.Resource, error) {
			return istio.BuildAmbient(v, self, networks, istio.BuildOptions{})
		}}})

	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	east := &records.Cluster{Name: "east", Network: "net-east", Region: "r1", Zone: "z1", TrustDomain: "mesh.example.org", Gateways: []string{"192.0.2.20:15443"}, JoinedAt: t0}
	west := &records.Cluster{Name: "west", Network: "net-west", Region: "r1", Zone: "z2", TrustDomain: "mesh.example.org", SharesTrustDomainWith: "east",
		Gateways: []string{"192.0.2.10:15443"}, HBONEGateways: []string{"192.0.2.10:15008"}, JoinedAt: t0}
	exp := &records.Export{Cluster: "west", Namespace: ns, Name: "web", Type: records.TypeClusterSetIP, SessionAffinity: records.AffinityNone,
		Ports: []records.Port{{Name: "https", Port: 443, Protocol: "TCP"}}, ExportedAt: t0, Revision: 1,
		// A service account: without one ztunnel would refuse the endpoint, and the builder
		// leaves the cluster out (federation/istio.SkipNoServiceAccount).
		Endpoints: []records.Endpoint{{Address: "10.9.0.1", Ready: true, HBONEPort: 15008, ServiceAccount: "web"}}}
	im.Update(&view.View{Revision: 10, Services: map[string]*view.Service{
		ns + "/web": view.Merge([]*view.ClusterExport{{Cluster: "west", Export: exp}}),
	}, Clusters: map[string]*records.Cluster{"east": east, "west": west}, Alive: map[string]bool{"east": true, "west": true}})

	gwc := admin.Dynamic.Resource(kube.GatewayGVR).Namespace(gwNS)
	seGVR := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "serviceentries"}
	weGVR := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "workloadentries"}
	count := func(gvr schema.GroupVersionResource) (int, error) {
		l, err := admin.Dynamic.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return 0, err
		}
		return len(l.Items), nil
	}
	kubetest.Eventually(t, wait, func() error {
		gw, err := gwc.Get(ctx, "meshfed-west", metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("Gateway %s/meshfed-west not written as meshfed-federation: %w", gwNS, err)
		}
		if st, _, _ := unstructured.NestedSlice(gw.Object, "status", "addresses"); len(st) != 1 {
			return fmt.Errorf("Gateway %s/meshfed-west: status.addresses %v not written as meshfed-federation", gwNS, st)
		}
		if got := gw.GetAnnotations()["gateway.istio.io/service-account"]; got != "meshfed-gateway" {
			return fmt.Errorf("Gateway %s/meshfed-west: service account annotation %q", gwNS, got)
		}
		for _, gvr := range []schema.GroupVersionResource{seGVR, weGVR} {
			if n, err := count(gvr); err != nil || n != 1 {
				return fmt.Errorf("%s in %s: %d (%v), want 1 written as meshfed-federation", gvr.Resource, ns, n, err)
			}
		}
		return nil
	})
	// West leaves: its Gateway and entries are deleted.
	im.Update(&view.View{Revision: 11, Services: map[string]*view.Service{}, Clusters: map[string]*records.Cluster{"east": east}, Alive: map[string]bool{"east": true}})
	kubetest.Eventually(t, wait, func() error {
		if _, err := gwc.Get(ctx, "meshfed-west", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("Gateway %s/meshfed-west still there after west left (%v)", gwNS, err)
		}
		for _, gvr := range []schema.GroupVersionResource{seGVR, weGVR} {
			if n, err := count(gvr); err != nil || n != 0 {
				return fmt.Errorf("%s in %s: %d (%v) after west left, want 0", gvr.Resource, ns, n, err)
			}
		}
		return nil
	})

	gwUser, gwGroups := sa("meshfed-gateway")
	const gwAPI, istioAPI = "gateway.networking.k8s.io", "networking.istio.io"
	checks := []access{
		{user, groups, authzv1.ResourceAttributes{Namespace: gwNS, Verb: "create", Group: gwAPI, Resource: "gateways"}, true},
		{user, groups, authzv1.ResourceAttributes{Namespace: gwNS, Verb: "update", Group: gwAPI, Resource: "gateways", Subresource: "status"}, true},
		{user, groups, authzv1.ResourceAttributes{Namespace: gwNS, Verb: "patch", Group: gwAPI, Resource: "gateways"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: gwNS, Verb: "patch", Group: gwAPI, Resource: "gateways", Subresource: "status"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: gwAPI, Resource: "gateways"}, false},
		{user, groups, authzv1.ResourceAttributes{Verb: "list", Group: gwAPI, Resource: "gateways"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: gwNS, Verb: "create", Group: gwAPI, Resource: "httproutes"}, false},
		{user, groups, authzv1.ResourceAttributes{Verb: "update", Group: gwAPI, Resource: "gatewayclasses"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: istioAPI, Resource: "serviceentries"}, true},
		{user, groups, authzv1.ResourceAttributes{Verb: "watch", Group: istioAPI, Resource: "workloadentries"}, true},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "patch", Group: istioAPI, Resource: "workloadentries"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "update", Group: istioAPI, Resource: "serviceentries", Subresource: "status"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: istioAPI, Resource: "destinationrules"}, false},
		{user, groups, authzv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: istioAPI, Resource: "gateways"}, false},
		{gwUser, gwGroups, authzv1.ResourceAttributes{Namespace: gwNS, Verb: "list", Group: gwAPI, Resource: "gateways"}, false},
		{gwUser, gwGroups, authzv1.ResourceAttributes{Namespace: ns, Verb: "list", Group: istioAPI, Resource: "serviceentries"}, false},
	}
	checkAccess(t, admin, checks)
}

// installRBAC applies a render's ServiceAccounts and RBAC for real.
func installRBAC(t *testing.T, a *applier, objs []obj) {
	t.Helper()
	for _, o := range objs {
		switch o.kind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := a.apply(context.Background(), o, false); err != nil {
				t.Fatalf("%s: %v", o.id(), err)
			}
		}
	}
}

// asFederation is the meshfed-federation ServiceAccount (user, groups) and clients that
// impersonate it.
func asFederation(t *testing.T, api *kubetest.APIServer) (string, []string, *kube.Clients) {
	t.Helper()
	user, groups := sa("meshfed-federation")
	imp := rest.CopyConfig(api.Config)
	imp.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	fed, err := kube.ClientsFor(imp)
	if err != nil {
		t.Fatal(err)
	}
	return user, groups, fed
}

// startImporter runs meshfed's real importer with cfg (its log and registry filled in) until
// the test ends, and waits until its informers have synced.
func startImporter(t *testing.T, cfg kube.ImporterConfig) *kube.Importer {
	t.Helper()
	cfg.Log, cfg.Registerer = testLog(t).With("part", "importer"), prometheus.NewRegistry()
	im, err := kube.NewImporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		if err := im.Run(ctx); err != nil {
			t.Errorf("importer as meshfed-federation: %v", err)
		}
	}()
	kubetest.Eventually(t, wait, im.Ready)
	return im
}

// access is one SubjectAccessReview and its wanted answer.
type access struct {
	who    string
	groups []string
	attr   authzv1.ResourceAttributes
	allow  bool
}

// checkAccess asks the apiserver each review.
func checkAccess(t *testing.T, admin *kube.Clients, checks []access) {
	t.Helper()
	for _, c := range checks {
		attr := c.attr
		r, err := admin.Kube.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authzv1.SubjectAccessReview{
			Spec: authzv1.SubjectAccessReviewSpec{User: c.who, Groups: c.groups, ResourceAttributes: &attr}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != c.allow {
			res := attr.Resource
			if attr.Subresource != "" {
				res += "/" + attr.Subresource
			}
			t.Errorf("%s %s %s/%s in %q: allowed=%v, want %v (%s)", c.who, attr.Verb, attr.Group, res, attr.Namespace, r.Status.Allowed, c.allow, r.Status.Reason)
		}
	}
}
