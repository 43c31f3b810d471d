package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
	mcslisters "sigs.k8s.io/mcs-api/pkg/client/listers/apis/v1alpha1"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/view"
)

// ImporterConfig configures an Importer.
type ImporterConfig struct {
	// Cluster is this cluster's name: its own exports are not imported.
	Cluster string
	Kube    kubernetes.Interface
	MCS     mcsclient.Interface
	// IstioRemoteGateways, when set, makes the importer also keep one Gateway API Gateway
	// of class istio-remote per other cluster that has HBONE gateways (Istio ambient
	// multi-network: istiod learns that network's east-west gateway from it), and delete
	// it when that cluster goes. It needs Dynamic and the Gateway API CRDs.
	IstioRemoteGateways *IstioRemoteGateways
	// IstioAmbientEntries, when set (with IstioRemoteGateways), makes the importer also keep
	// the ServiceEntries and WorkloadEntries that istiod's ambient index needs for ztunnel to
	// reach the imported services through those Gateways, and delete them when they are no
	// longer wanted. It needs Istio's CRDs.
	IstioAmbientEntries *IstioAmbientEntries
	// Dynamic writes the Gateways and entries (required with IstioRemoteGateways).
	Dynamic dynamic.Interface
	// Resync runs a full pass this often even without events (default 5 min): it repairs
	// what no event announces, e.g. a foreign ServiceImport that went away.
	Resync time.Duration
	Log    *slog.Logger
	// Registerer receives the importer's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Importer keeps ServiceImports and EndpointSlices in this cluster equal to the import view.
type Importer struct {
	cfg ImporterConfig
	log *slog.Logger
	m   *importerMetrics

	queue  workqueue.TypedRateLimitingInterface[string]
	synced atomic.Bool

	viewMu sync.Mutex
	view   *view.View

	siLister  mcslisters.ServiceImportLister
	epsLister discoverylisters.EndpointSliceLister
	nsLister  corelisters.NamespaceLister
	gwLister  cache.GenericLister // nil without IstioRemoteGateways
	// entryListers by type, with IstioAmbientEntries.
	entryListers map[string]cache.GenericLister

	// Owned by the Run goroutine: what was already reported, so each is logged once.
	missingNS map[string]bool
	foreign   map[string]bool
	noGW      map[string]bool
	// Istio Gateways: remote clusters on this cluster's own network, and whether the
	// Gateways' namespace was missing at the last pass.
	sameNetwork        map[string]bool
	gwNamespaceMissing bool
}

const passKey = "pass"

// NewImporter checks the config and builds an Importer; Run starts it.
func NewImporter(cfg ImporterConfig) (*Importer, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("kube importer: ImporterConfig.Cluster (the cluster name) is required")
	}
	if cfg.Kube == nil || cfg.MCS == nil {
		return nil, errors.New("kube importer: ImporterConfig.Kube and .MCS (the Kubernetes and MCS clients) are required")
	}
	if g := cfg.IstioRemoteGateways; g != nil {
		if cfg.Dynamic == nil {
			return nil, errors.New("kube importer: Istio remote Gateways need a dynamic client")
		}
		g2 := *g
		if g2.Namespace == "" {
			g2.Namespace = DefaultIstioGatewayNamespace
		}
		if err := g2.validate(); err != nil {
			return nil, fmt.Errorf("kube importer: %w", err)
		}
		cfg.IstioRemoteGateways = &g2
	}
	if e := cfg.IstioAmbientEntries; e != nil && (cfg.IstioRemoteGateways == nil || e.Build == nil) {
		return nil, errors.New("kube importer: Istio ambient entries need IstioRemoteGateways (their networks' gateways) and a Build func")
	}
	if cfg.Resync == 0 {
		cfg.Resync = 5 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m, err := newImporterMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Importer{
		cfg: cfg,
		log: cfg.Log.With("component", "kube-importer", "cluster", cfg.Cluster),
		m:   m,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "meshfed-kube-importer"},
		),
		missingNS:    map[string]bool{},
		foreign:      map[string]bool{},
		noGW:         map[string]bool{},
		sameNetwork:  map[string]bool{},
		entryListers: map[string]cache.GenericLister{},
	}, nil
}

// Update hands the importer the latest import view; the next pass makes the cluster match
// it. Until the first view arrives nothing is written or deleted (an importer that restarts
// must not wipe imports before it knows the clusterset). Safe from any goroutine.
func (im *Importer) Update(v *view.View) {
	im.viewMu.Lock()
	im.view = v
	im.viewMu.Unlock()
	im.queue.Add(passKey)
}

// Ready reports nil once the informers have synced.
func (im *Importer) Ready() error {
	if !im.synced.Load() {
		return errors.New("kube importer: informers not synced yet")
	}
	return nil
}

// Run watches the importer's own objects and namespaces and reconciles until ctx ends.
// Call it once.
func (im *Importer) Run(ctx context.Context) error {
	defer im.queue.ShutDown()
	kf := informers.NewSharedInformerFactoryWithOptions(im.cfg.Kube, im.cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = discoveryv1.LabelManagedBy + "=" + ManagedByValue
		}))
	nf := informers.NewSharedInformerFactory(im.cfg.Kube, im.cfg.Resync)
	siInf := serviceImportInformer(im.cfg.MCS, LabelImportManagedBy+"="+ImportManagedByValue, im.cfg.Resync)
	epsInf := kf.Discovery().V1().EndpointSlices()
	nsInf := nf.Core().V1().Namespaces()
	im.siLister, im.epsLister, im.nsLister = mcslisters.NewServiceImportLister(siInf.GetIndexer()), epsInf.Lister(), nsInf.Lister()
	watched := []cache.SharedIndexInformer{siInf, epsInf.Informer(), nsInf.Informer()}
	var gwInf cache.SharedIndexInformer
	if im.cfg.IstioRemoteGateways != nil {
		gi := im.gatewayInformer()
		gwInf, im.gwLister = gi.Informer(), gi.Lister()
		watched = append(watched, gwInf)
	}
	var entryInfs []cache.SharedIndexInformer
	if im.cfg.IstioAmbientEntries != nil {
		infs := im.entryInformers()
		for _, kind := range istioEntryKinds {
			entryInfs = append(entryInfs, infs[kind])
		}
		watched = append(watched, entryInfs...)
	}

	// Someone editing or deleting our objects, or a namespace coming or going, calls for a
	// pass; our own writes do too, and find nothing to do.
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { im.queue.Add(passKey) },
		UpdateFunc: func(_, _ any) { im.queue.Add(passKey) },
		DeleteFunc: func(any) { im.queue.Add(passKey) },
	}
	for _, inf := range watched {
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("kube importer: %w", err)
		}
	}
	kf.Start(ctx.Done())
	nf.Start(ctx.Done())
	ctx, cancel := context.WithCancel(ctx)
	var runs sync.WaitGroup
	for _, inf := range append([]cache.SharedIndexInformer{siInf, gwInf}, entryInfs...) {
		if inf != nil {
			runs.Go(func() { inf.Run(ctx.Done()) })
		}
	}
	defer func() {
		cancel()
		runs.Wait()
	}()
	defer kf.Shutdown()
	defer nf.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), siInf.HasSynced, epsInf.Informer().HasSynced, nsInf.Informer().HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("kube importer: informers did not sync (are the MCS CRDs installed? see deploy/crds)")
	}
	if gwInf != nil && !cache.WaitForCacheSync(ctx.Done(), gwInf.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("kube importer: Gateways in namespace %s did not sync (are the Gateway API CRDs installed? Istio ambient needs them)", im.cfg.IstioRemoteGateways.Namespace)
	}
	for _, inf := range entryInfs {
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			if ctx.Err() != nil {
				return nil
			}
			return errors.New("kube importer: ServiceEntries/WorkloadEntries did not sync (are Istio's CRDs installed? Istio ambient needs them)")
		}
	}
	im.synced.Store(true)
	im.log.Info("kube importer synced")
	go func() {
		t := time.NewTicker(im.cfg.Resync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				im.queue.ShutDown()
				return
			case <-t.C:
				im.queue.Add(passKey)
			}
		}
	}()
	for {
		k, shutdown := im.queue.Get()
		if shutdown {
			return nil
		}
		start := time.Now()
		rev, err := im.pass(ctx)
		im.m.duration.Observe(time.Since(start).Seconds())
		if err != nil && ctx.Err() == nil {
			im.m.passes.WithLabelValues("error").Inc()
			if onlyConflicts(err) {
				// Our informer cache lagged one of our own writes: normal, retried at once.
				im.log.Debug("import pass hit a write conflict; retrying", "err", err)
			} else {
				im.log.Warn("import pass incomplete; retrying", "err", err)
			}
			im.queue.AddRateLimited(k)
		} else {
			im.m.passes.WithLabelValues("ok").Inc()
			if rev > 0 {
				im.m.revision.Set(float64(rev))
			}
			im.queue.Forget(k)
		}
		im.queue.Done(k)
	}
}

func (im *Importer) currentView() *view.View {
	im.viewMu.Lock()
	defer im.viewMu.Unlock()
	return im.view
}

// pass makes the cluster match the latest view. It returns the view's revision.
func (im *Importer) pass(ctx context.Context) (int64, error) {
	v := im.currentView()
	if v == nil {
		return 0, nil
	}
	want := desired(v, im.cfg.Cluster)
	im.reportNoGateways(want.noGateways)

	haveSI := map[string]*mcsv1a1.ServiceImport{}
	sis, err := im.siLister.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	for _, si := range sis {
		haveSI[si.Namespace+"/"+si.Name] = si
	}
	haveSl := map[string]*discoveryv1.EndpointSlice{}
	sls, err := im.epsLister.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	for _, sl := range sls {
		haveSl[sl.Namespace+"/"+sl.Name] = sl
	}

	keys := make([]string, 0, len(want.imports))
	for k := range want.imports {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	errs := validate.NewList()
	missing := map[string]bool{}
	keepSI := map[string]bool{}
	keepSl := map[string]bool{}
	nSlices := 0
	for _, key := range keys {
		w := want.imports[key]
		ns := w.si.Namespace
		if !im.namespaceUsable(ns) {
			missing[ns] = true
			continue
		}
		keepSI[key] = true
		si, err := im.applyImport(ctx, w.si, haveSI[key])
		if err != nil {
			errs = multierror.Append(errs, err)
		}
		if si == nil {
			// Not ours, or the write failed: leave its slices as they are this pass.
			for sk, sl := range haveSl {
				if sl.Namespace == ns && sl.Labels[mcsv1a1.LabelServiceName] == w.si.Name {
					keepSl[sk] = true
				}
			}
			continue
		}
		owner := metav1.OwnerReference{
			APIVersion: mcsv1a1.GroupVersion.String(),
			Kind:       mcsv1a1.ServiceImportKindName,
			Name:       si.Name,
			UID:        si.UID,
			Controller: ptr(true),
		}
		for _, sl := range w.slices {
			sk := sl.Namespace + "/" + sl.Name
			keepSl[sk] = true
			sl.OwnerReferences = []metav1.OwnerReference{owner}
			if err := im.applySlice(ctx, sl, haveSl[sk]); err != nil {
				errs = multierror.Append(errs, err)
			}
			nSlices++
		}
	}
	im.reportMissing(missing)

	// Deletions last, so an import moving between clusters never has a gap.
	for sk, sl := range haveSl {
		if keepSl[sk] {
			continue
		}
		err := im.cfg.Kube.DiscoveryV1().EndpointSlices(sl.Namespace).Delete(ctx, sl.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &sl.UID}})
		if err = im.wrote("EndpointSlice", "delete", err); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("delete EndpointSlice %s: %w", sk, err))
		} else {
			im.log.Debug("imported EndpointSlice deleted", "slice", sk)
		}
	}
	for key, si := range haveSI {
		if keepSI[key] {
			continue
		}
		err := im.cfg.MCS.MulticlusterV1alpha1().ServiceImports(si.Namespace).Delete(ctx, si.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &si.UID}})
		if err = im.wrote("ServiceImport", "delete", err); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("delete ServiceImport %s: %w", key, err))
		} else {
			im.log.Info("service import removed", "service", key)
		}
	}
	im.m.objects.WithLabelValues("ServiceImport").Set(float64(len(keepSI)))
	im.m.objects.WithLabelValues("EndpointSlice").Set(float64(nSlices))
	if g := im.cfg.IstioRemoteGateways; g != nil {
		plan := desiredGateways(v, im.cfg.Cluster, *g)
		if err := im.passGateways(ctx, plan); err != nil {
			errs = multierror.Append(errs, err)
		}
		if im.cfg.IstioAmbientEntries != nil {
			if err := im.passEntries(ctx, v, plan.networks()); err != nil {
				errs = multierror.Append(errs, err)
			}
		}
	}
	return v.Revision, errs.ErrorOrNil()
}

// namespaceUsable: the namespace exists and is not being deleted. meshfed never creates
// namespaces: which namespaces exist is the cluster owner's decision.
func (im *Importer) namespaceUsable(ns string) bool {
	n, err := im.nsLister.Get(ns)
	return err == nil && n.Status.Phase != corev1.NamespaceTerminating
}

// applyImport creates or updates one ServiceImport and returns the live object, or nil when
// the name belongs to someone else or the write failed.
func (im *Importer) applyImport(ctx context.Context, want, have *mcsv1a1.ServiceImport) (*mcsv1a1.ServiceImport, error) {
	key := want.Namespace + "/" + want.Name
	cl := im.cfg.MCS.MulticlusterV1alpha1().ServiceImports(want.Namespace)
	if have == nil {
		created, err := cl.Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Our cache lags our own write, or another MCS implementation owns the name.
			have, err = cl.Get(ctx, want.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("get ServiceImport %s: %w", key, err)
			}
			if have.Labels[LabelImportManagedBy] != ImportManagedByValue {
				if !im.foreign[key] {
					im.foreign[key] = true
					im.log.Warn("ServiceImport exists and is not meshfed's: leaving it alone", "service", key, "managedBy", have.Labels[LabelImportManagedBy])
				}
				return nil, nil
			}
		} else {
			if err = im.wrote("ServiceImport", "create", err); err != nil {
				return nil, fmt.Errorf("create ServiceImport %s: %w", key, err)
			}
			im.log.Info("service imported", "service", key, "type", want.Spec.Type, "ports", len(want.Spec.Ports), "clusters", len(want.Status.Clusters))
			have = created
		}
	}
	delete(im.foreign, key)
	cur := have
	if !equality.Semantic.DeepEqual(have.Spec, want.Spec) || !hasLabels(have.Labels, want.Labels) {
		upd := have.DeepCopy()
		upd.Spec = want.Spec
		upd.Labels = mergeLabels(upd.Labels, want.Labels)
		got, err := cl.Update(ctx, upd, metav1.UpdateOptions{})
		if err = im.wrote("ServiceImport", "update", err); err != nil {
			return nil, fmt.Errorf("update ServiceImport %s: %w", key, err)
		}
		im.log.Info("service import updated", "service", key, "type", want.Spec.Type, "ports", len(want.Spec.Ports))
		cur = got
	}
	if !equality.Semantic.DeepEqual(cur.Status.Clusters, want.Status.Clusters) {
		upd := cur.DeepCopy()
		upd.Status.Clusters = want.Status.Clusters
		got, err := cl.UpdateStatus(ctx, upd, metav1.UpdateOptions{})
		if err = im.wrote("ServiceImport", "update-status", err); err != nil {
			// The object itself is right; slices can still be owned by it.
			return cur, fmt.Errorf("update status of ServiceImport %s: %w", key, err)
		}
		cur = got
	}
	return cur, nil
}

// applySlice creates or updates one EndpointSlice.
func (im *Importer) applySlice(ctx context.Context, want, have *discoveryv1.EndpointSlice) error {
	key := want.Namespace + "/" + want.Name
	cl := im.cfg.Kube.DiscoveryV1().EndpointSlices(want.Namespace)
	if have == nil {
		_, err := cl.Create(ctx, want, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			if err = im.wrote("EndpointSlice", "create", err); err != nil {
				return fmt.Errorf("create EndpointSlice %s: %w", key, err)
			}
			return nil
		}
		if have, err = cl.Get(ctx, want.Name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("get EndpointSlice %s: %w", key, err)
		}
		if have.Labels[discoveryv1.LabelManagedBy] != ManagedByValue {
			return fmt.Errorf("EndpointSlice %s exists and is managed by %q, not meshfed: delete it or rename the service", key, have.Labels[discoveryv1.LabelManagedBy])
		}
	}
	if have.AddressType == want.AddressType &&
		hasLabels(have.Labels, want.Labels) &&
		equality.Semantic.DeepEqual(have.Endpoints, want.Endpoints) &&
		equality.Semantic.DeepEqual(have.Ports, want.Ports) &&
		equality.Semantic.DeepEqual(have.OwnerReferences, want.OwnerReferences) {
		return nil
	}
	upd := have.DeepCopy()
	upd.Labels = mergeLabels(upd.Labels, want.Labels)
	upd.Endpoints, upd.Ports, upd.OwnerReferences = want.Endpoints, want.Ports, want.OwnerReferences
	if have.AddressType != want.AddressType {
		// addressType is immutable; names include it, so this only happens to a slice
		// someone edited by hand: replace it.
		if err := cl.Delete(ctx, have.Name, metav1.DeleteOptions{}); im.wrote("EndpointSlice", "delete", err) != nil {
			return fmt.Errorf("replace EndpointSlice %s: %w", key, err)
		}
		_, err := cl.Create(ctx, want, metav1.CreateOptions{})
		return im.wrote("EndpointSlice", "create", err)
	}
	_, err := cl.Update(ctx, upd, metav1.UpdateOptions{})
	if err = im.wrote("EndpointSlice", "update", err); err != nil {
		return fmt.Errorf("update EndpointSlice %s: %w", key, err)
	}
	return nil
}

// wrote counts a write and turns "already gone" on delete into success.
func (im *Importer) wrote(kind, verb string, err error) error {
	if err != nil && verb == "delete" && apierrors.IsNotFound(err) {
		err = nil
	}
	result := "ok"
	switch {
	case err == nil:
	case apierrors.IsConflict(err):
		result = "conflict"
	default:
		result = "error"
	}
	im.m.writes.WithLabelValues(kind, verb, result).Inc()
	return err
}

func (im *Importer) reportMissing(missing map[string]bool) {
	for ns := range missing {
		if !im.missingNS[ns] {
			im.log.Warn("namespace does not exist here: services exported into it are not imported until it is created (meshfed does not create namespaces)", "namespace", ns)
		}
	}
	for ns := range im.missingNS {
		if !missing[ns] {
			im.log.Info("namespace for imported services is back", "namespace", ns)
		}
	}
	im.missingNS = missing
	im.m.missingNS.Set(float64(len(missing)))
}

func (im *Importer) reportNoGateways(cs []string) {
	now := map[string]bool{}
	for _, c := range cs {
		now[c] = true
		if !im.noGW[c] {
			im.log.Warn("cluster exports services but has no cluster record (no gateway address yet): its endpoints are not imported until `meshfed join` writes it", "exporter", c)
		}
	}
	im.noGW = now
	im.m.noGateways.Set(float64(len(now)))
}

// onlyConflicts reports whether every error joined in err is an optimistic-concurrency
// conflict (HTTP 409 on update).
func onlyConflicts(err error) bool {
	var list []error
	switch e := err.(type) {
	case *multierror.Error:
		list = e.WrappedErrors()
	case interface{ Unwrap() []error }:
		list = e.Unwrap()
	default:
		list = []error{err}
	}
	for _, e := range list {
		if !apierrors.IsConflict(e) {
			return false
		}
	}
	return len(list) > 0
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func mergeLabels(have, want map[string]string) map[string]string {
	out := make(map[string]string, len(have)+len(want))
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}

func ptr[T any](v T) *T { return &v }
