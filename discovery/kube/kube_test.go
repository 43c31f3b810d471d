package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

const wait = 30 * time.Second

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

// cluster is one simulated Kubernetes cluster: a real kube-apiserver and clients.
type cluster struct {
	name string
	api  *kubetest.APIServer
	c    *Clients
}

func (c *cluster) ns(t *testing.T, name string) {
	t.Helper()
	_, err := c.c.Kube.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func (c *cluster) create(t *testing.T, objs ...any) {
	t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Service:
			_, err = c.c.Kube.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *discoveryv1.EndpointSlice:
			_, err = c.c.Kube.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *mcsv1a1.ServiceExport:
			_, err = c.c.MCS.MulticlusterV1alpha1().ServiceExports(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			_, err = c.c.Kube.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Pod:
			_, err = c.c.Kube.CoreV1().Pods(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("create %T: not handled", o)
		}
		if err != nil {
			t.Fatalf("%s: create %T: %v", c.name, o, err)
		}
	}
}

func (c *cluster) export(t *testing.T, ns, name string) *mcsv1a1.ServiceExport {
	t.Helper()
	se, err := c.c.MCS.MulticlusterV1alpha1().ServiceExports(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return se
}

// condition returns "Status/Reason" of a ServiceExport condition, or "-" when absent.
func (c *cluster) condition(ns, name string, ty mcsv1a1.ServiceExportConditionType) (string, string) {
	se, err := c.c.MCS.MulticlusterV1alpha1().ServiceExports(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return "error: " + err.Error(), ""
	}
	cond := findCondition(se.Status.Conditions, ty)
	if cond == nil {
		return "-", ""
	}
	return string(cond.Status) + "/" + cond.Reason, cond.Message
}

func wantCondition(ns, name string, c *cluster, ty mcsv1a1.ServiceExportConditionType, want string) func() error {
	return func() error {
		got, msg := c.condition(ns, name, ty)
		if got != want {
			return fmt.Errorf("%s: ServiceExport %s/%s %s = %s (%s), want %s", c.name, ns, name, ty, got, msg, want)
		}
		return nil
	}
}

// runningSource runs a Source and keeps its last snapshot.
type runningSource struct {
	*Source
	reg  *prometheus.Registry
	mu   sync.Mutex
	last *discovery.Snapshot
	n    int
}

func startSource(t *testing.T, c *cluster) *runningSource {
	t.Helper()
	rs := &runningSource{reg: prometheus.NewRegistry()}
	src, err := NewSource(SourceConfig{Cluster: c.name, Kube: c.c.Kube, MCS: c.c.MCS, Log: testLog(t).With("test", t.Name()), Registerer: rs.reg})
	if err != nil {
		t.Fatal(err)
	}
	rs.Source = src
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(s discovery.Snapshot) {
			rs.mu.Lock()
			rs.last, rs.n = &s, rs.n+1
			rs.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("source Run: %v", err)
		}
	})
	kubetest.Eventually(t, wait, src.Ready)
	return rs
}

func (rs *runningSource) exports() map[string]*records.Export {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := map[string]*records.Export{}
	if rs.last != nil {
		for _, e := range rs.last.Exports {
			out[e.ServiceKey()] = e
		}
	}
	return out
}

func (rs *runningSource) list() []*records.Export {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.last == nil {
		return nil
	}
	return rs.last.Exports
}

// buildView is what the federation service does through etcd, in memory: merge every
// cluster's exports into the import view.
func buildView(rev int64, clusters []*records.Cluster, exps ...[]*records.Export) *view.View {
	v := &view.View{Revision: rev, Services: map[string]*view.Service{}, Clusters: map[string]*records.Cluster{}, Alive: map[string]bool{}}
	by := map[string][]*view.ClusterExport{}
	for _, list := range exps {
		for _, e := range list {
			by[e.ServiceKey()] = append(by[e.ServiceKey()], &view.ClusterExport{Cluster: e.Cluster, Export: e})
			v.Alive[e.Cluster] = true
		}
	}
	for k, ces := range by {
		v.Services[k] = view.Merge(ces)
	}
	for _, c := range clusters {
		v.Clusters[c.Name] = c
	}
	return v
}

func clusterRecord(name, zone string, gateways ...string) *records.Cluster {
	return &records.Cluster{Name: name, Network: "net-" + name, Region: "r1", Zone: zone, TrustDomain: name + ".example.org", Gateways: gateways, JoinedAt: t0}
}

// TestKubernetesTier runs the discovery source and the importer against two real
// kube-apiservers ("west" and "east"). Skipped without $MESHFED_KUBE_APISERVER (make test
// builds it).
func TestKubernetesTier(t *testing.T) {
	servers := kubetest.StartN(t, 2, kubetest.WithMCSCRDs())
	var cs []*cluster
	for i, name := range []string{"west", "east"} {
		c, err := ClientsFor(servers[i].Config)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, &cluster{name: name, api: servers[i], c: c})
	}
	west, east := cs[0], cs[1]

	t.Run("source", func(t *testing.T) { testSource(t, west) })
	t.Run("service-accounts", func(t *testing.T) { testSourceServiceAccounts(t, west) })
	t.Run("conflict", func(t *testing.T) { testConflict(t, west, east) })
	t.Run("importer", func(t *testing.T) { testImporter(t, east) })
	t.Run("end-to-end", func(t *testing.T) { testEndToEnd(t, west, east) })
	t.Run("leader-election", func(t *testing.T) { testLeaderElection(t, west) })
	t.Run("istio-remote-gateways", func(t *testing.T) { testIstioRemoteGateways(t, east) })
	t.Run("istio-ambient-entries", func(t *testing.T) { testIstioAmbientEntries(t, east) })
}

// testSourceServiceAccounts: the source exports each endpoint's pod's
// spec.serviceAccountName (EndpointSlice targetRef → Pod), as the real apiserver stores
// pods (admission fills serviceAccountName "default" when the pod names none); a pod that
// comes after its slice fills its endpoint's account in; a slice endpoint with no pod
// behind it has none.
func testSourceServiceAccounts(t *testing.T, west *cluster) {
	ctx := context.Background()
	ns := "sa"
	west.ns(t, ns)
	pod := func(name, sa string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{
			ServiceAccountName: sa, AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{Name: "echo", Image: "registry.example/echo:1"}},
		}}
	}
	sl := echoSlice(ns, "echo-1", ep{addr: "10.2.0.1"}, ep{addr: "10.2.0.2"}, ep{addr: "10.2.0.3"}, ep{addr: "10.2.0.4"})
	for i, name := range []string{"echo-a", "echo-b", "echo-c"} {
		sl.Endpoints[i].TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}
	}
	west.create(t,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}},
		pod("echo-a", "echo"), pod("echo-b", ""),
		echoService(ns), sl,
		&mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}},
	)
	src := startSource(t, west)
	accounts := func(want ...string) func() error {
		return func() error {
			e := src.exports()[ns+"/echo"]
			if e == nil {
				return fmt.Errorf("no %s/echo in the snapshot", ns)
			}
			var got []string
			for _, ep := range e.Endpoints {
				got = append(got, ep.ServiceAccount)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				return fmt.Errorf("endpoint accounts %q, want %q", got, want)
			}
			return nil
		}
	}
	// echo-c does not exist yet; 10.2.0.4 has no pod behind it.
	kubetest.Eventually(t, wait, accounts("echo", "default", "", ""))
	west.create(t, pod("echo-c", "echo"))
	kubetest.Eventually(t, wait, accounts("echo", "default", "echo", ""))
	if err := west.c.Kube.CoreV1().Pods(ns).Delete(ctx, "echo-a", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, accounts("", "default", "echo", ""))
}

// testLeaderElection: two replicas campaign for one Lease; exactly one leads, and when it
// stops the other takes over.
func testLeaderElection(t *testing.T, c *cluster) {
	c.ns(t, "meshfed-system")
	type replica struct {
		leading chan bool
		cancel  context.CancelFunc
		done    chan struct{}
	}
	start := func(id string) *replica {
		r := &replica{leading: make(chan bool, 4), done: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		r.cancel = cancel
		e := &LeaseElector{Client: c.c.Kube, Namespace: "meshfed-system", Name: "meshfed-federation-west", Identity: id,
			LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond, Log: testLog(t)}
		go func() {
			defer close(r.done)
			_ = e.Run(ctx, func(lctx context.Context) {
				r.leading <- true
				<-lctx.Done()
				r.leading <- false
			})
		}()
		return r
	}
	a := start("replica-a")
	select {
	case <-a.leading:
	case <-time.After(wait):
		t.Fatal("replica-a never led an empty election")
	}
	b := start("replica-b")
	select {
	case <-b.leading:
		t.Fatal("two replicas lead at once")
	case <-time.After(3 * time.Second): // more than a lease duration: b had every chance
	}
	a.cancel() // releases the lease (ReleaseOnCancel)
	<-a.done
	select {
	case <-b.leading:
	case <-time.After(wait):
		t.Fatal("replica-b did not take over after replica-a stopped")
	}
	b.cancel()
	<-b.done
}

func echoService(ns string) *corev1.Service {
	svc := service(ns, "echo", tcpPort("tls", 8443, intstr.FromString("https")), tcpPort("grpc", 9443, intstr.FromInt32(9000)))
	svc.Spec.ClusterIP = "" // allocated by the apiserver
	svc.Spec.Ports[1].AppProtocol = ptr("grpc")
	return svc
}

func echoSlice(ns, name string, eps ...ep) *discoveryv1.EndpointSlice {
	sl := slice(ns, "echo", name, discoveryv1.AddressTypeIPv4, map[string]int32{"tls": 443, "grpc": 9000}, eps...)
	sort.Slice(sl.Ports, func(i, j int) bool { return *sl.Ports[i].Name < *sl.Ports[j].Name })
	// As the built-in controller would label its slices; the source must not care.
	sl.Labels[discoveryv1.LabelManagedBy] = "endpointslice-controller.k8s.io"
	return sl
}

func testSource(t *testing.T, west *cluster) {
	ctx := context.Background()
	ns := "src"
	west.ns(t, ns)
	ext := service(ns, "ext")
	ext.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}
	west.create(t,
		echoService(ns),
		echoSlice(ns, "echo-1", ep{addr: "10.1.0.1", zone: "west-a"}, ep{addr: "10.1.0.2", ready: ptr(false), zone: "west-b"}),
		&mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}},
		ext,
		&mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ext"}},
		&mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ghost"}},
	)
	src := startSource(t, west)
	created := west.export(t, ns, "echo").CreationTimestamp.UTC()

	kubetest.Eventually(t, wait, func() error {
		e := src.exports()[ns+"/echo"]
		if e == nil {
			return fmt.Errorf("no %s/echo in the snapshot: %v", ns, src.exports())
		}
		want := &records.Export{
			Cluster: "west", Namespace: ns, Name: "echo", Type: records.TypeClusterSetIP, SessionAffinity: records.AffinityNone,
			Ports: []records.Port{
				{Name: "tls", Port: 8443, TargetPort: 443, Protocol: "TCP"},
				{Name: "grpc", Port: 9443, TargetPort: 9000, Protocol: "TCP", AppProtocol: "grpc"},
			},
			Endpoints:  []records.Endpoint{{Address: "10.1.0.1", Zone: "west-a", Ready: true}, {Address: "10.1.0.2", Zone: "west-b", Ready: false}},
			ExportedAt: created,
		}
		if js(e) != js(want) {
			return fmt.Errorf("export\n got %s\nwant %s", js(e), js(want))
		}
		return nil
	})
	if got := src.exports(); len(got) != 1 {
		t.Errorf("snapshot has %d exports, want only echo (ext and ghost are invalid)", len(got))
	}
	kubetest.Eventually(t, wait, wantCondition(ns, "echo", west, mcsv1a1.ServiceExportConditionValid, "True/Valid"))
	kubetest.Eventually(t, wait, wantCondition(ns, "echo", west, mcsv1a1.ServiceExportConditionReady, "False/Pending"))
	kubetest.Eventually(t, wait, wantCondition(ns, "ext", west, mcsv1a1.ServiceExportConditionValid, "False/InvalidServiceType"))
	kubetest.Eventually(t, wait, wantCondition(ns, "ghost", west, mcsv1a1.ServiceExportConditionValid, "False/NoService"))
	kubetest.Eventually(t, wait, wantCondition(ns, "ghost", west, mcsv1a1.ServiceExportConditionReady, "False/Failed"))

	// The federation service publishes and hands back the view: Ready and Conflict follow.
	src.UpdateView(buildView(1, nil, src.list()))
	kubetest.Eventually(t, wait, wantCondition(ns, "echo", west, mcsv1a1.ServiceExportConditionReady, "True/Exported"))
	kubetest.Eventually(t, wait, wantCondition(ns, "echo", west, mcsv1a1.ServiceExportConditionConflict, "False/NoConflicts"))

	// Readiness change in an EndpointSlice propagates.
	sl, err := west.c.Kube.DiscoveryV1().EndpointSlices(ns).Get(ctx, "echo-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl.Endpoints[0].Conditions.Ready = ptr(false)
	sl.Endpoints[1].Conditions.Ready = ptr(true)
	if _, err := west.c.Kube.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, func() error {
		e := src.exports()[ns+"/echo"]
		if e == nil || e.Endpoints[0].Ready || !e.Endpoints[1].Ready {
			return fmt.Errorf("readiness not propagated: %s", js(e))
		}
		return nil
	})

	// The missing Service appears: the export becomes valid.
	west.create(t, service(ns, "ghost", tcpPort("", 8080, intstr.FromInt32(8080))))
	kubetest.Eventually(t, wait, wantCondition(ns, "ghost", west, mcsv1a1.ServiceExportConditionValid, "True/Valid"))
	kubetest.Eventually(t, wait, func() error {
		if src.exports()[ns+"/ghost"] == nil {
			return errors.New("ghost not exported after its Service appeared")
		}
		return nil
	})

	// Unexport.
	if err := west.c.MCS.MulticlusterV1alpha1().ServiceExports(ns).Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, func() error {
		if src.exports()[ns+"/echo"] != nil {
			return errors.New("echo still exported after its ServiceExport was deleted")
		}
		return nil
	})
	if v := testutil.ToFloat64(src.m.exports.WithLabelValues("invalid")); v != 1 {
		t.Errorf("meshfed_kube_source_exports{state=invalid} = %v, want 1 (ext)", v)
	}
	if n, err := testutil.GatherAndCount(src.reg, "meshfed_kube_source_snapshots_total"); err != nil || n != 1 {
		t.Errorf("snapshots metric not registered: %d %v", n, err)
	}
}

// testConflict: the same service exported by two clusters with different type and port
// definitions. The older export (west) wins, the newer (east) gets Conflict=True.
func testConflict(t *testing.T, west, east *cluster) {
	ns := "conflict"
	west.ns(t, ns)
	east.ns(t, ns)
	west.create(t, echoService(ns), echoSlice(ns, "echo-1", ep{addr: "10.1.0.1"}),
		&mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}})
	westCreated := west.export(t, ns, "echo").CreationTimestamp
	// creationTimestamp has one-second resolution: east's export must be created in a later
	// second to be strictly newer (otherwise the tie goes to the name, and "east" < "west"
	// would make east win).
	kubetest.Eventually(t, 3*time.Second, func() error {
		if !time.Now().Truncate(time.Second).After(westCreated.Time) {
			return errors.New("still in the second of west's export")
		}
		return nil
	})
	// east: headless, and port 9443 named differently.
	esvc := service(ns, "echo", tcpPort("tls", 8443, intstr.FromInt32(8443)), tcpPort("rpc", 9443, intstr.FromInt32(9443)))
	esvc.Spec.ClusterIP = corev1.ClusterIPNone
	east.create(t, esvc, &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}})
	if ec := east.export(t, ns, "echo").CreationTimestamp; !ec.After(westCreated.Time) {
		t.Fatalf("east's export (%v) is not newer than west's (%v)", ec, westCreated)
	}

	ws, es := startSource(t, west), startSource(t, east)
	kubetest.Eventually(t, wait, func() error {
		if ws.exports()[ns+"/echo"] == nil || es.exports()[ns+"/echo"] == nil {
			return errors.New("both clusters must export echo")
		}
		return nil
	})
	v := buildView(2, nil, ws.list(), es.list())
	ws.UpdateView(v)
	es.UpdateView(v)
	merged := v.Services[ns+"/echo"]
	if merged.Type != records.TypeClusterSetIP {
		t.Errorf("merged type %s: the oldest export (west, ClusterSetIP) must win", merged.Type)
	}
	kubetest.Eventually(t, wait, wantCondition(ns, "echo", west, mcsv1a1.ServiceExportConditionConflict, "False/NoConflicts"))
	kubetest.Eventually(t, wait, wantCondition(ns, "echo", east, mcsv1a1.ServiceExportConditionConflict, "True/TypeConflict,PortConflict"))
	_, msg := east.condition(ns, "echo", mcsv1a1.ServiceExportConditionConflict)
	if !strings.Contains(msg, "west") || !strings.Contains(msg, "9443") {
		t.Errorf("conflict message %q should name the winner and the port", msg)
	}
	kubetest.Eventually(t, wait, wantCondition(ns, "echo", east, mcsv1a1.ServiceExportConditionReady, "True/Exported"))

	// east aligns its Service: the conflict clears.
	// (Delete and re-create: clusterIP None cannot be changed in place.)
	if err := east.c.Kube.CoreV1().Services(ns).Delete(context.Background(), "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	east.create(t, echoService(ns))
	kubetest.Eventually(t, wait, func() error {
		e := es.exports()[ns+"/echo"]
		if e == nil || e.Type != records.TypeClusterSetIP || e.Ports[1].Name != "grpc" {
			return fmt.Errorf("east's export not updated: %s", js(e))
		}
		return nil
	})
	v = buildView(3, nil, ws.list(), es.list())
	ws.UpdateView(v)
	es.UpdateView(v)
	kubetest.Eventually(t, wait, wantCondition(ns, "echo", east, mcsv1a1.ServiceExportConditionConflict, "False/NoConflicts"))
}

func remoteExport(cluster, ns, name string, ready int, ports ...records.Port) *records.Export {
	e := &records.Export{Cluster: cluster, Namespace: ns, Name: name, Type: records.TypeClusterSetIP, SessionAffinity: records.AffinityNone,
		Ports: ports, ExportedAt: t0, Revision: 1, Endpoints: []records.Endpoint{}}
	for i := range ready {
		e.Endpoints = append(e.Endpoints, records.Endpoint{Address: fmt.Sprintf("10.9.0.%d", i+1), Ready: true})
	}
	e.Endpoints = append(e.Endpoints, records.Endpoint{Address: "10.9.1.1", Ready: false})
	return e
}

type runningImporter struct {
	*Importer
	reg *prometheus.Registry
}

func startImporter(t *testing.T, c *cluster, opts ...func(*ImporterConfig)) *runningImporter {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := ImporterConfig{Cluster: c.name, Kube: c.c.Kube, MCS: c.c.MCS, Log: testLog(t).With("test", t.Name()), Registerer: reg}
	for _, o := range opts {
		o(&cfg)
	}
	im, err := NewImporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- im.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("importer Run: %v", err)
		}
	})
	kubetest.Eventually(t, wait, im.Ready)
	return &runningImporter{Importer: im, reg: reg}
}

func (c *cluster) importedSlices(ns, svc string) (map[string]*discoveryv1.EndpointSlice, error) {
	l, err := c.c.Kube.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: mcsv1a1.LabelServiceName + "=" + svc + "," + discoveryv1.LabelManagedBy + "=" + ManagedByValue,
	})
	if err != nil {
		return nil, err
	}
	out := map[string]*discoveryv1.EndpointSlice{}
	for i := range l.Items {
		sl := &l.Items[i]
		out[sl.Labels[mcsv1a1.LabelSourceCluster]+"/"+string(sl.AddressType)] = sl
	}
	return out, nil
}

func testImporter(t *testing.T, east *cluster) {
	ctx := context.Background()
	ns := "imp"
	east.ns(t, ns)
	tls := records.Port{Name: "tls", Port: 8443, Protocol: "TCP"}
	grpc := records.Port{Name: "grpc", Port: 9443, Protocol: "TCP", AppProtocol: "grpc"}
	clusters := []*records.Cluster{
		clusterRecord("west", "west-a", "192.0.2.10:15443", "192.0.2.11:15443"),
		clusterRecord("north", "north-a", "[2001:db8::1]:15443"),
		clusterRecord("east", "east-a", "192.0.2.30:15443"),
	}
	westEcho := remoteExport("west", ns, "echo", 2, tls, grpc)
	northEcho := remoteExport("north", ns, "echo", 0, tls) // exported, nothing ready
	northEcho.ExportedAt = t0.Add(time.Minute)
	eastOnly := remoteExport("east", ns, "local", 1, tls) // our own: not imported
	inMissingNS := remoteExport("west", "nope", "echo", 1, tls)
	noRecord := remoteExport("south", ns, "lonely", 1, tls) // no cluster record: no gateways

	im := startImporter(t, east)
	// Before any view the importer does nothing (a restart must not wipe imports).
	v := buildView(10, clusters, []*records.Export{westEcho, eastOnly, inMissingNS}, []*records.Export{northEcho}, []*records.Export{noRecord})
	im.Update(v)

	var si *mcsv1a1.ServiceImport
	kubetest.Eventually(t, wait, func() error {
		var err error
		si, err = east.c.MCS.MulticlusterV1alpha1().ServiceImports(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(si.Status.Clusters) != 2 {
			return fmt.Errorf("status.clusters = %+v", si.Status.Clusters)
		}
		return nil
	})
	if si.Spec.Type != mcsv1a1.ClusterSetIP || len(si.Spec.Ports) != 2 || si.Spec.Ports[1].Name != "grpc" || *si.Spec.Ports[1].AppProtocol != "grpc" {
		t.Errorf("ServiceImport spec = %+v", si.Spec)
	}
	if si.Labels[LabelImportManagedBy] != ImportManagedByValue {
		t.Errorf("ServiceImport labels = %v", si.Labels)
	}
	kubetest.Eventually(t, wait, func() error {
		sls, err := east.importedSlices(ns, "echo")
		if err != nil {
			return err
		}
		w, n := sls["west/IPv4"], sls["north/IPv6"]
		if len(sls) != 2 || w == nil || n == nil {
			return fmt.Errorf("slices %v, want west/IPv4 and north/IPv6", keys(sls))
		}
		if len(w.Endpoints) != 2 || w.Endpoints[0].Addresses[0] != "192.0.2.10" || !*w.Endpoints[0].Conditions.Ready || *w.Endpoints[0].Zone != "west-a" {
			return fmt.Errorf("west slice endpoints %s", js(w.Endpoints))
		}
		if len(w.Ports) != 2 || *w.Ports[0].Port != 15443 || *w.Ports[0].Name != "tls" {
			return fmt.Errorf("west slice ports %s (want the gateway port under each service port name)", js(w.Ports))
		}
		if len(n.Endpoints) != 1 || *n.Endpoints[0].Conditions.Ready || n.Endpoints[0].Addresses[0] != "2001:db8::1" || len(n.Ports) != 1 {
			return fmt.Errorf("north slice (no ready endpoints: not ready) %s %s", js(n.Endpoints), js(n.Ports))
		}
		for _, sl := range sls {
			if len(sl.OwnerReferences) != 1 || sl.OwnerReferences[0].UID != si.UID || sl.OwnerReferences[0].Kind != "ServiceImport" {
				return fmt.Errorf("slice %s owner %+v, want the ServiceImport", sl.Name, sl.OwnerReferences)
			}
			if sl.Labels[discoveryv1.LabelServiceName] != "" {
				return fmt.Errorf("slice %s has kubernetes.io/service-name: it would join a local Service's endpoints", sl.Name)
			}
		}
		return nil
	})
	if _, err := east.c.MCS.MulticlusterV1alpha1().ServiceImports(ns).Get(ctx, "local", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ServiceImport local: %v; a service only this cluster exports is not imported", err)
	}
	// An exporter without a cluster record: the service is imported, with no endpoints
	// until the record (and so the gateway address) appears.
	if _, err := east.c.MCS.MulticlusterV1alpha1().ServiceImports(ns).Get(ctx, "lonely", metav1.GetOptions{}); err != nil {
		t.Errorf("ServiceImport lonely: %v", err)
	}
	if sls, _ := east.importedSlices(ns, "lonely"); len(sls) != 0 {
		t.Errorf("slices for a cluster without gateways: %v", keys(sls))
	}
	if n := testutil.ToFloat64(im.m.missingNS); n != 1 {
		t.Errorf("missing namespaces = %v, want 1 (nope)", n)
	}
	if n := testutil.ToFloat64(im.m.noGateways); n != 1 {
		t.Errorf("clusters without gateways = %v, want 1 (south)", n)
	}
	if _, err := east.c.Kube.CoreV1().Namespaces().Get(ctx, "nope", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the importer must not create namespaces: %v", err)
	}

	// Level-triggered and converged: the same view again writes nothing.
	writes := testutil.ToFloat64(im.m.writes.WithLabelValues("EndpointSlice", "update", "ok")) +
		testutil.ToFloat64(im.m.writes.WithLabelValues("ServiceImport", "update", "ok")) +
		testutil.ToFloat64(im.m.writes.WithLabelValues("ServiceImport", "update-status", "ok"))
	passes := testutil.ToFloat64(im.m.passes.WithLabelValues("ok"))
	im.Update(v)
	kubetest.Eventually(t, wait, func() error {
		if testutil.ToFloat64(im.m.passes.WithLabelValues("ok")) <= passes {
			return errors.New("no pass yet")
		}
		return nil
	})
	after := testutil.ToFloat64(im.m.writes.WithLabelValues("EndpointSlice", "update", "ok")) +
		testutil.ToFloat64(im.m.writes.WithLabelValues("ServiceImport", "update", "ok")) +
		testutil.ToFloat64(im.m.writes.WithLabelValues("ServiceImport", "update-status", "ok"))
	if after != writes {
		t.Errorf("a pass over an unchanged view wrote %v updates: some field never compares equal", after-writes)
	}

	// Someone deletes an imported slice by hand: it comes back.
	sls, _ := east.importedSlices(ns, "echo")
	if err := east.c.Kube.DiscoveryV1().EndpointSlices(ns).Delete(ctx, sls["west/IPv4"].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, func() error {
		sls, err := east.importedSlices(ns, "echo")
		if err != nil || sls["west/IPv4"] == nil {
			return fmt.Errorf("deleted slice not restored (%v)", err)
		}
		return nil
	})

	// The namespace appears: its import follows.
	east.ns(t, "nope")
	kubetest.Eventually(t, wait, func() error {
		_, err := east.c.MCS.MulticlusterV1alpha1().ServiceImports("nope").Get(ctx, "echo", metav1.GetOptions{})
		return err
	})

	// north's endpoints become ready, and west unexports: west's slice goes, north's is ready.
	north2 := remoteExport("north", ns, "echo", 1, tls)
	north2.ExportedAt = northEcho.ExportedAt
	im.Update(buildView(11, clusters, []*records.Export{eastOnly, inMissingNS}, []*records.Export{north2}))
	kubetest.Eventually(t, wait, func() error {
		sls, err := east.importedSlices(ns, "echo")
		if err != nil {
			return err
		}
		n := sls["north/IPv6"]
		if len(sls) != 1 || n == nil || !*n.Endpoints[0].Conditions.Ready {
			return fmt.Errorf("want only north's slice, ready: %v", keys(sls))
		}
		si, err := east.c.MCS.MulticlusterV1alpha1().ServiceImports(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil || len(si.Spec.Ports) != 1 {
			return fmt.Errorf("ServiceImport ports not narrowed to north's: %v %v", si, err)
		}
		return nil
	})

	// A drill cordons north: its endpoint is not ready.
	v = buildView(12, clusters, []*records.Export{eastOnly, inMissingNS}, []*records.Export{north2})
	v.Drills = []*records.Drill{{ID: "d1", Cluster: "north", Until: t0.Add(time.Hour)}}
	im.Update(v)
	kubetest.Eventually(t, wait, func() error {
		sls, err := east.importedSlices(ns, "echo")
		if err != nil || sls["north/IPv6"] == nil || *sls["north/IPv6"].Endpoints[0].Conditions.Ready {
			return fmt.Errorf("cordoned cluster's endpoint still ready (%v)", err)
		}
		return nil
	})

	// Every remote export goes away: ServiceImports and slices are deleted.
	im.Update(buildView(13, clusters, []*records.Export{eastOnly}))
	kubetest.Eventually(t, wait, func() error {
		for _, n := range []string{ns, "nope"} {
			l, err := east.c.MCS.MulticlusterV1alpha1().ServiceImports(n).List(ctx, metav1.ListOptions{})
			if err != nil || len(l.Items) != 0 {
				return fmt.Errorf("ServiceImports left in %s: %d (%v)", n, len(l.Items), err)
			}
			sls, err := east.importedSlices(n, "echo")
			if err != nil || len(sls) != 0 {
				return fmt.Errorf("EndpointSlices left in %s: %v (%v)", n, keys(sls), err)
			}
		}
		return nil
	})
	if v := testutil.ToFloat64(im.m.revision); v != 13 {
		t.Errorf("view revision metric = %v, want 13", v)
	}
}

// testEndToEnd: a Service with a ServiceExport in west shows up as a ServiceImport and a
// gateway EndpointSlice in east, and goes away when unexported.
func testEndToEnd(t *testing.T, west, east *cluster) {
	ctx := context.Background()
	ns := "e2e"
	west.ns(t, ns)
	east.ns(t, ns)
	west.create(t, echoService(ns), echoSlice(ns, "echo-1", ep{addr: "10.1.0.1"}, ep{addr: "10.1.0.2"}),
		&mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "echo"}})
	ws := startSource(t, west)
	im := startImporter(t, east)
	clusters := []*records.Cluster{clusterRecord("west", "west-a", "192.0.2.10:15443"), clusterRecord("east", "east-a", "192.0.2.30:15443")}
	rev := int64(100)
	// The federation service's job, in memory: on every snapshot, merge and hand out the view.
	federate := func() {
		rev++
		v := buildView(rev, clusters, ws.list())
		ws.UpdateView(v)
		im.Update(v)
	}
	kubetest.Eventually(t, wait, func() error {
		federate()
		sls, err := east.importedSlices(ns, "echo")
		if err != nil {
			return err
		}
		if sl := sls["west/IPv4"]; sl == nil || !*sl.Endpoints[0].Conditions.Ready {
			return fmt.Errorf("no ready west slice in east: %v", keys(sls))
		}
		return nil
	})
	kubetest.Eventually(t, wait, wantCondition(ns, "echo", west, mcsv1a1.ServiceExportConditionReady, "True/Exported"))

	if err := west.c.MCS.MulticlusterV1alpha1().ServiceExports(ns).Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, func() error {
		federate()
		_, err := east.c.MCS.MulticlusterV1alpha1().ServiceImports(ns).Get(ctx, "echo", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("ServiceImport still in east after unexport (%v)", err)
		}
		return nil
	})
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
