package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
	mcslisters "sigs.k8s.io/mcs-api/pkg/client/listers/apis/v1alpha1"

	"github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// SourceConfig configures a Source.
type SourceConfig struct {
	// Cluster is this cluster's name, stamped on every export.
	Cluster string
	Kube    kubernetes.Interface
	MCS     mcsclient.Interface
	// Namespace limits the watch to one namespace; empty watches all.
	Namespace string
	// Resync re-delivers every cached object this often (default 10 min), a safety net that
	// re-checks every ServiceExport's status.
	Resync time.Duration
	Log    *slog.Logger
	// Registerer receives the source's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Source is the Kubernetes discovery source: ServiceExport + Service + EndpointSlice
// informers in, export snapshots and ServiceExport conditions out.
type Source struct {
	cfg SourceConfig
	log *slog.Logger
	m   *sourceMetrics

	queue  workqueue.TypedRateLimitingInterface[item]
	synced atomic.Bool

	seLister  mcslisters.ServiceExportLister
	svcLister corelisters.ServiceLister
	epsLister discoverylisters.EndpointSliceLister
	pods      *podWatch

	viewMu sync.Mutex
	view   *view.View

	// verdicts by ServiceExport namespace/name; owned by the Run goroutine.
	verdicts map[string]*verdict
}

// verdict is the last judgement of one ServiceExport.
type verdict struct {
	exp     *records.Export // nil when invalid
	inv     *invalid
	notes   []string
	applied statusInput // the view's verdict last written to the status
}

var _ discovery.Source = (*Source)(nil)

// item is one unit of work: a ServiceExport key, full (re-read the Service and slices) or
// status only (the view changed).
type item struct {
	key  string
	full bool
}

// NewSource checks the config and builds a Source; Run starts it.
func NewSource(cfg SourceConfig) (*Source, error) {
	if cfg.Cluster == "" {
		return nil, errors.New("kube source: SourceConfig.Cluster (the cluster name) is required")
	}
	if cfg.Kube == nil || cfg.MCS == nil {
		return nil, errors.New("kube source: SourceConfig.Kube and .MCS (the Kubernetes and MCS clients) are required")
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m, err := newSourceMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Source{
		cfg:      cfg,
		log:      cfg.Log.With("component", "kube-source", "cluster", cfg.Cluster),
		m:        m,
		verdicts: map[string]*verdict{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[item](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[item]{Name: "meshfed-kube-source"},
		),
	}, nil
}

// Ready reports nil once the informers have synced and the first snapshot went out.
func (s *Source) Ready() error {
	if !s.synced.Load() {
		return errors.New("kube source: informers not synced yet")
	}
	return nil
}

// UpdateView hands the source the latest import view. The source only reads from it the
// merge's verdict on this cluster's own exports: Ready once the export is in the view, and
// Conflict from Service.Conflicts. Safe to call from any goroutine, before or during Run.
func (s *Source) UpdateView(v *view.View) {
	s.viewMu.Lock()
	s.view = v
	s.viewMu.Unlock()
	// The worker compares each export's verdict with the last one applied and writes
	// status only where it changed.
	s.queue.Add(item{key: viewItem})
}

// viewItem asks the worker to re-check every export's verdict against the latest view.
const viewItem = "\x00view"

func (s *Source) currentView() *view.View {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	return s.view
}

// Run implements discovery.Source. Call it once.
func (s *Source) Run(ctx context.Context, emit func(discovery.Snapshot)) error {
	defer s.queue.ShutDown()

	ns := s.cfg.Namespace
	if ns == "" {
		ns = metav1.NamespaceAll
	}
	kf := informers.NewSharedInformerFactoryWithOptions(s.cfg.Kube, s.cfg.Resync, informers.WithNamespace(ns))
	// Only slices that belong to a Service: imported slices (ours or another MCS
	// implementation's) carry multicluster labels instead and must not be re-exported.
	sf := informers.NewSharedInformerFactoryWithOptions(s.cfg.Kube, s.cfg.Resync, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName }))
	seInf := serviceExportInformer(s.cfg.MCS, ns, s.cfg.Resync)
	svcInf := kf.Core().V1().Services()
	epsInf := sf.Discovery().V1().EndpointSlices()
	s.seLister, s.svcLister, s.epsLister = mcslisters.NewServiceExportLister(seInf.GetIndexer()), svcInf.Lister(), epsInf.Lister()

	full := func(key string) { s.queue.Add(item{key: key, full: true}) }
	for _, inf := range []cache.SharedIndexInformer{seInf, svcInf.Informer()} {
		if _, err := inf.AddEventHandler(keyHandler(full)); err != nil {
			return fmt.Errorf("kube source: %w", err)
		}
	}
	if _, err := epsInf.Informer().AddEventHandler(sliceHandler(full)); err != nil {
		return fmt.Errorf("kube source: %w", err)
	}
	// The pods behind the endpoints (pods.go): Istio ambient capture (hbonePort: namespace
	// labels, pod labels) and each pod's service account (serviceAccount).
	nf := informers.NewSharedInformerFactory(s.cfg.Kube, s.cfg.Resync)
	pf := informers.NewSharedInformerFactoryWithOptions(s.cfg.Kube, s.cfg.Resync, informers.WithNamespace(ns))
	pw, err := newPodWatch(nf, pf)
	if err != nil {
		return fmt.Errorf("kube source: %w", err)
	}
	s.pods = pw
	requeueNS := func(namespace string) {
		ses, err := s.seLister.ServiceExports(namespace).List(labels.Everything())
		if err != nil {
			return
		}
		for _, se := range ses {
			full(se.Namespace + "/" + se.Name)
		}
	}
	for _, inf := range []cache.SharedIndexInformer{s.pods.nsInf, s.pods.podInf} {
		if _, err := inf.AddEventHandler(namespaceHandler(requeueNS)); err != nil {
			return fmt.Errorf("kube source: %w", err)
		}
	}
	kf.Start(ctx.Done())
	sf.Start(ctx.Done())
	nf.Start(ctx.Done())
	pf.Start(ctx.Done())
	ctx, cancel := context.WithCancel(ctx)
	seDone := make(chan struct{})
	go func() {
		defer close(seDone)
		seInf.Run(ctx.Done())
	}()
	defer func() {
		cancel()
		<-seDone
	}()
	defer kf.Shutdown()
	defer sf.Shutdown()
	defer nf.Shutdown()
	defer pf.Shutdown()

	s.log.Info("kube source starting", "namespace", s.cfg.Namespace)
	for _, ok := range []bool{
		cache.WaitForCacheSync(ctx.Done(), seInf.HasSynced),
		cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, epsInf.Informer().HasSynced),
		cache.WaitForCacheSync(ctx.Done(), s.pods.nsInf.HasSynced, s.pods.podInf.HasSynced),
	} {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return errors.New("kube source: informers did not sync (are the MCS CRDs installed? see deploy/crds)")
		}
	}

	// Informer handlers queued every existing object during sync: work them all off, then
	// emit the first snapshot even if there is nothing to export.
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	s.drain(ctx)
	s.emit(emit)
	s.synced.Store(true)
	s.log.Info("kube source synced", "exports", len(snapshotOf(s.verdicts)))

	dirty := false
	for {
		it, shutdown := s.queue.Get()
		if shutdown {
			return nil
		}
		if s.process(ctx, it) {
			dirty = true
		}
		s.queue.Done(it)
		// Emit once per burst: a thousand slice events make one snapshot, not a thousand.
		if dirty && s.queue.Len() == 0 {
			s.emit(emit)
			dirty = false
		}
	}
}

// drain processes what is queued now (initial sync) without emitting.
func (s *Source) drain(ctx context.Context) {
	for s.queue.Len() > 0 {
		it, shutdown := s.queue.Get()
		if shutdown {
			return
		}
		s.process(ctx, it)
		s.queue.Done(it)
	}
}

func (s *Source) emit(emit func(discovery.Snapshot)) {
	snap := discovery.Snapshot{Exports: snapshotOf(s.verdicts)}
	s.m.snapshots.Inc()
	s.log.Debug("snapshot", "exports", len(snap.Exports))
	emit(snap)
}

func snapshotOf(vs map[string]*verdict) []*records.Export {
	out := make([]*records.Export, 0, len(vs))
	for _, v := range vs {
		if v.exp != nil {
			out = append(out, v.exp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ServiceKey() < out[j].ServiceKey() })
	return out
}

// process handles one item and reports whether the set of exports changed.
func (s *Source) process(ctx context.Context, it item) bool {
	if it.key == viewItem {
		v := s.currentView()
		for key, vd := range s.verdicts {
			if vd.exp != nil && !statusFromView(v, s.cfg.Cluster, key).equal(vd.applied) {
				s.queue.Add(item{key: key})
			}
		}
		return false
	}
	changed, err := s.reconcile(ctx, it)
	if err != nil {
		if apierrors.IsConflict(err) {
			// Our cached copy lagged a newer one (often our own last status write).
			s.log.Debug("ServiceExport status write conflict; retrying", "export", it.key)
		} else {
			s.log.Warn("ServiceExport not reconciled; retrying", "export", it.key, "err", err)
		}
		s.queue.AddRateLimited(it)
	} else {
		s.queue.Forget(it)
	}
	return changed
}

// reconcile recomputes one export (it.full, or when never computed) and writes its
// ServiceExport conditions when they differ.
func (s *Source) reconcile(ctx context.Context, it item) (changed bool, err error) {
	ns, name, err := cache.SplitMetaNamespaceKey(it.key)
	if err != nil {
		return false, nil
	}
	se, err := s.seLister.ServiceExports(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// Unexported (or never was: a Service or slice event without a ServiceExport).
		old := s.verdicts[it.key]
		delete(s.verdicts, it.key)
		if old != nil && old.exp != nil {
			s.log.Info("service unexported", "service", it.key)
			s.countMetrics()
			return true, nil
		}
		s.countMetrics()
		return false, nil
	}
	if err != nil {
		return false, err
	}
	vd := s.verdicts[it.key]
	if it.full || vd == nil {
		nv, err := s.build(se)
		if err != nil {
			return false, err
		}
		changed = s.store(it.key, vd, nv)
		vd = nv
	}
	st := statusInput{}
	if vd.inv == nil {
		st = statusFromView(s.currentView(), s.cfg.Cluster, it.key)
	}
	conds, differ := conditions(se.Status.Conditions, se.Generation, vd.inv, vd.notes, st)
	if differ {
		upd := se.DeepCopy()
		upd.Status.Conditions = conds
		_, err := s.cfg.MCS.MulticlusterV1alpha1().ServiceExports(ns).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
		switch {
		case err == nil:
			s.m.statusWrites.WithLabelValues("ok").Inc()
		case apierrors.IsConflict(err):
			// Our cached copy is old; the informer brings the new one and the retry uses it.
			s.m.statusWrites.WithLabelValues("conflict").Inc()
			return changed, err
		case apierrors.IsNotFound(err):
			return changed, nil // deleted meanwhile; the delete event follows
		default:
			s.m.statusWrites.WithLabelValues("error").Inc()
			return changed, fmt.Errorf("update status of ServiceExport %s: %w", it.key, err)
		}
	}
	vd.applied = st
	return changed, nil
}

// build reads the Service and its slices from the caches and judges the export.
func (s *Source) build(se *mcsv1a1.ServiceExport) (*verdict, error) {
	svc, err := s.svcLister.Services(se.Namespace).Get(se.Name)
	if apierrors.IsNotFound(err) {
		svc = nil
	} else if err != nil {
		return nil, err
	}
	var slices []*discoveryv1.EndpointSlice
	if svc != nil {
		sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: se.Name})
		slices, err = s.epsLister.EndpointSlices(se.Namespace).List(sel)
		if err != nil {
			return nil, err
		}
	}
	exp, inv, notes := buildExport(s.cfg.Cluster, se, svc, slices, s.pods.policy(se.Namespace, slices))
	return &verdict{exp: exp, inv: inv, notes: notes}, nil
}

// store keeps the new verdict for key, logs transitions, and reports whether the export
// itself changed (what the snapshot carries).
func (s *Source) store(key string, old, nv *verdict) bool {
	s.verdicts[key] = nv
	defer s.countMetrics()
	wasValid := old != nil && old.exp != nil
	switch {
	case nv.inv != nil:
		if old == nil || old.inv == nil || old.inv.Reason != nv.inv.Reason {
			s.log.Warn("ServiceExport is not valid", "service", key, "reason", nv.inv.Reason, "message", nv.inv.Message)
		}
		return wasValid
	case !wasValid:
		s.log.Info("service exported", "service", key, "ports", len(nv.exp.Ports), "endpoints", len(nv.exp.Endpoints), "ready", nv.exp.ReadyEndpoints(), "notes", nv.notes)
		return true
	}
	if reflect.DeepEqual(old.exp, nv.exp) {
		nv.exp = old.exp // keep the pointer the last snapshot carried
		return false
	}
	return true
}

func (s *Source) countMetrics() {
	valid, bad := 0, 0
	for _, v := range s.verdicts {
		if v.exp != nil {
			valid++
		} else {
			bad++
		}
	}
	s.m.exports.WithLabelValues("valid").Set(float64(valid))
	s.m.exports.WithLabelValues("invalid").Set(float64(bad))
}

// keyHandler queues the namespace/name of ServiceExports and Services.
func keyHandler(add func(string)) cache.ResourceEventHandler {
	f := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			add(key)
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: f, UpdateFunc: func(_, n any) { f(n) }, DeleteFunc: f}
}

// sliceHandler queues the Service an EndpointSlice belongs to.
func sliceHandler(add func(string)) cache.ResourceEventHandler {
	f := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		sl, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return
		}
		if svc := sl.Labels[discoveryv1.LabelServiceName]; svc != "" {
			add(sl.Namespace + "/" + svc)
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: f, UpdateFunc: func(_, n any) { f(n) }, DeleteFunc: f}
}
