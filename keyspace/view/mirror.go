package view

import (
	"sort"
	"sync"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// Mirror is the raw state of the keyspace families the import view is built from
// (clusters, heartbeats, exports, drills, policies), fed by one store.Syncer: it is the
// one builder of the view, used by the federation service, status and the drill. It
// records which services changed so that Take and Next re-merge only those.
type Mirror struct {
	ks      records.Keyspace
	self    string
	hooks   MirrorHooks
	changed chan struct{}

	mu       sync.Mutex
	rev      int64
	clusters map[string]*records.Cluster
	alive    map[string]bool
	exports  map[string]map[string]*records.Export // service key -> cluster -> export
	byClus   map[string]map[string]bool            // cluster -> service keys it exports
	drills   map[string]*records.Drill             // by id
	policies map[string]*records.Policy            // by service key
	local    map[string]*records.Export            // own exports from the local source
	hasLocal bool                                  // a local source overrides etcd for self
	dirty    map[string]bool
	dirtyAll bool
	meta     bool // clusters, alive, drills or policies changed
}

// MirrorHooks are called under the mirror's lock: they must not call the mirror.
type MirrorHooks struct {
	// Bad is called for a record that does not parse or decode, or whose value does not
	// match its key. The last good value (if any) stays: a bad write must not take a
	// service away.
	Bad func(key string, modRev int64, err error)
	// LiveExport is called for every put of another cluster's export that arrives as an
	// event (not in a full list), after it is applied.
	LiveExport func(e *records.Export)
}

// NewMirror is an empty mirror of keyspace ks. self is the cluster whose exports
// SetLocal may overlay ("" for a reader that publishes nothing).
func NewMirror(ks records.Keyspace, self string, hooks MirrorHooks) *Mirror {
	mr := &Mirror{ks: ks, self: self, hooks: hooks, changed: make(chan struct{}, 1)}
	mr.resetLocked()
	return mr
}

// Changed receives a value (coalesced) after every change.
func (mr *Mirror) Changed() <-chan struct{} { return mr.changed }

func (mr *Mirror) resetLocked() {
	mr.clusters = map[string]*records.Cluster{}
	mr.alive = map[string]bool{}
	mr.exports = map[string]map[string]*records.Export{}
	mr.byClus = map[string]map[string]bool{}
	mr.drills = map[string]*records.Drill{}
	mr.policies = map[string]*records.Policy{}
	mr.dirty = map[string]bool{}
	mr.dirtyAll, mr.meta = true, true
}

func (mr *Mirror) signal() {
	select {
	case mr.changed <- struct{}{}:
	default:
	}
}

// Reset implements store.Handler.
func (mr *Mirror) Reset(kvs []store.KV, rev int64) {
	mr.mu.Lock()
	mr.resetLocked()
	for _, kv := range kvs {
		mr.applyLocked(store.Event{KV: kv})
	}
	mr.rev = rev
	mr.mu.Unlock()
	mr.signal()
}

// Apply implements store.Handler.
func (mr *Mirror) Apply(evs []store.Event, rev int64) {
	mr.mu.Lock()
	for _, e := range evs {
		mr.applyLocked(e)
		// Only live events measure propagation: a full list brings old records too.
		if !e.Delete && mr.hooks.LiveExport != nil {
			if k, err := mr.ks.Parse(e.KV.Key); err == nil && k.Kind == records.KindExport && k.Cluster != mr.self {
				if byC := mr.exports[Key(k.Namespace, k.Name)]; byC != nil {
					if v := byC[k.Cluster]; v != nil {
						mr.hooks.LiveExport(v)
					}
				}
			}
		}
	}
	mr.rev = rev
	mr.mu.Unlock()
	mr.signal()
}

// SetLocal installs the local source's newest snapshot as the own cluster's exports.
func (mr *Mirror) SetLocal(desired map[string]*records.Export) {
	mr.mu.Lock()
	next := make(map[string]*records.Export, len(desired))
	for k, e := range desired {
		// Keep the old record where nothing changed, so consumers see the same pointer
		// and re-plan only what a source really changed.
		if old, ok := mr.local[k]; ok && old.SameContent(e) && old.ExportedAt.Equal(e.ExportedAt) && old.Revision == e.Revision {
			next[k] = old
			continue
		}
		next[k] = e
		mr.dirty[k] = true
	}
	for k := range mr.local {
		if _, ok := next[k]; !ok {
			mr.dirty[k] = true
		}
	}
	mr.local, mr.hasLocal = next, true
	mr.mu.Unlock()
	mr.signal()
}

// ClearLocal stops overlaying the local source: the own cluster's exports come from etcd
// again (a replica that stopped leading no longer runs the source).
func (mr *Mirror) ClearLocal() {
	mr.mu.Lock()
	for k := range mr.local {
		mr.dirty[k] = true
	}
	for sk := range mr.byClus[mr.self] {
		mr.dirty[sk] = true
	}
	mr.local, mr.hasLocal = nil, false
	mr.mu.Unlock()
	mr.signal()
}

func (mr *Mirror) bad(key string, modRev int64, err error) {
	// The last good value (if any) stays: a bad write must not take a service away.
	if mr.hooks.Bad != nil {
		mr.hooks.Bad(key, modRev, err)
	}
}

func (mr *Mirror) applyLocked(e store.Event) {
	k, err := mr.ks.Parse(e.KV.Key)
	if err != nil {
		if !e.Delete {
			mr.bad(e.KV.Key, e.KV.ModRevision, err)
		}
		return
	}
	switch k.Kind {
	case records.KindCluster:
		mr.meta = true
		if e.Delete {
			delete(mr.clusters, k.Cluster)
			mr.dirtyCluster(k.Cluster)
			return
		}
		v, err := records.Decode[records.Cluster](e.KV.Value)
		if err != nil || v.Name != k.Cluster {
			mr.bad(e.KV.Key, e.KV.ModRevision, orMismatch(err, "name", v != nil))
			return
		}
		mr.clusters[k.Cluster] = v
		mr.dirtyCluster(k.Cluster)
	case records.KindAlive:
		mr.meta = true
		was := mr.alive[k.Cluster]
		if e.Delete {
			delete(mr.alive, k.Cluster)
		} else {
			mr.alive[k.Cluster] = true
		}
		if was != mr.alive[k.Cluster] {
			mr.dirtyCluster(k.Cluster)
		}
	case records.KindExport:
		sk := Key(k.Namespace, k.Name)
		if e.Delete {
			if byC := mr.exports[sk]; byC != nil {
				delete(byC, k.Cluster)
				if len(byC) == 0 {
					delete(mr.exports, sk)
				}
			}
			delete(mr.byClus[k.Cluster], sk)
			mr.dirty[sk] = true
			return
		}
		v, err := records.Decode[records.Export](e.KV.Value)
		if err != nil || v.Cluster != k.Cluster || v.Namespace != k.Namespace || v.Name != k.Name {
			mr.bad(e.KV.Key, e.KV.ModRevision, orMismatch(err, "cluster/namespace/name", v != nil))
			return
		}
		byC := mr.exports[sk]
		if byC == nil {
			byC = map[string]*records.Export{}
			mr.exports[sk] = byC
		}
		byC[k.Cluster] = v
		if mr.byClus[k.Cluster] == nil {
			mr.byClus[k.Cluster] = map[string]bool{}
		}
		mr.byClus[k.Cluster][sk] = true
		mr.dirty[sk] = true
	case records.KindDrill:
		mr.meta = true
		if e.Delete {
			delete(mr.drills, k.Name)
			return
		}
		v, err := records.Decode[records.Drill](e.KV.Value)
		if err != nil || v.ID != k.Name {
			mr.bad(e.KV.Key, e.KV.ModRevision, orMismatch(err, "id", v != nil))
			return
		}
		mr.drills[k.Name] = v
	case records.KindPolicy:
		mr.meta = true
		sk := Key(k.Namespace, k.Name)
		if e.Delete {
			delete(mr.policies, sk)
			return
		}
		v, err := records.Decode[records.Policy](e.KV.Value)
		if err != nil || v.Namespace != k.Namespace || v.Name != k.Name {
			mr.bad(e.KV.Key, e.KV.ModRevision, orMismatch(err, "namespace/name", v != nil))
			return
		}
		mr.policies[sk] = v
	}
}

func (mr *Mirror) dirtyCluster(c string) {
	for sk := range mr.byClus[c] {
		mr.dirty[sk] = true
	}
	if c == mr.self {
		for sk := range mr.local {
			mr.dirty[sk] = true
		}
	}
}

// Changes is what Take hands the view builder: the services changed since the last Take
// (every service when All), merged-ready, and the small families whole.
type Changes struct {
	Revision int64
	// All: Exports holds every service (after a Reset); else only the Dirty ones.
	All bool
	// Meta: clusters, heartbeats, drills or policies changed.
	Meta bool
	// Dirty lists the services Exports holds, sorted.
	Dirty []string
	// Exports is each dirty service's exporters (none: the service is gone).
	Exports  map[string][]*ClusterExport
	Clusters map[string]*records.Cluster
	Alive    map[string]bool
	Drills   []*records.Drill
	Policies map[string]*records.Policy
	// Exporters are the other clusters with at least one export (for stale tracking).
	Exporters map[string]bool
}

// Staleness says how exports of a cluster without heartbeat enter the view: stale since
// Since[cluster] (Now when not there), and dropped once that is Grace old. A nil
// *Staleness is a reader that cannot know since when (etcd keeps no time for a
// deletion): such exports stay, stale with a zero StaleSince.
type Staleness struct {
	Since map[string]time.Time
	Now   time.Time
	Grace time.Duration
}

// Take hands the builder everything changed since the last Take.
func (mr *Mirror) Take(st *Staleness) *Changes {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	keys := mr.dirty
	if mr.dirtyAll {
		keys = mr.allKeysLocked()
	}
	c := mr.changesLocked(keys, st)
	c.All, c.Meta = mr.dirtyAll, mr.meta
	mr.dirty = map[string]bool{}
	mr.dirtyAll, mr.meta = false, false
	return c
}

// View builds the whole view now, leaving what Take hands out alone.
func (mr *Mirror) View(st *Staleness) *View {
	mr.mu.Lock()
	c := mr.changesLocked(mr.allKeysLocked(), st)
	mr.mu.Unlock()
	c.All, c.Meta = true, true
	v, _, _ := Next(nil, c)
	return v
}

func (mr *Mirror) allKeysLocked() map[string]bool {
	keys := map[string]bool{}
	for sk := range mr.exports {
		keys[sk] = true
	}
	for sk := range mr.local {
		keys[sk] = true
	}
	return keys
}

func (mr *Mirror) changesLocked(keys map[string]bool, st *Staleness) *Changes {
	s := &Changes{Revision: mr.rev}
	s.Exports = make(map[string][]*ClusterExport, len(keys))
	for sk := range keys {
		s.Dirty = append(s.Dirty, sk)
		var list []*ClusterExport
		for c, e := range mr.exports[sk] {
			if c == mr.self && mr.hasLocal {
				continue
			}
			ce := &ClusterExport{Cluster: c, Export: e}
			if !mr.alive[c] {
				ce.Stale = true
				if st != nil {
					since, ok := st.Since[c]
					if !ok {
						since = st.Now
					}
					if st.Now.Sub(since) >= st.Grace {
						continue // grace over: dropped from the view
					}
					ce.StaleSince = since
				}
			}
			list = append(list, ce)
		}
		if mr.hasLocal {
			if e, ok := mr.local[sk]; ok {
				list = append(list, &ClusterExport{Cluster: mr.self, Export: e})
			}
		}
		s.Exports[sk] = list
	}
	sort.Strings(s.Dirty)
	s.Clusters = make(map[string]*records.Cluster, len(mr.clusters))
	for k, v := range mr.clusters {
		s.Clusters[k] = v
	}
	s.Alive = make(map[string]bool, len(mr.alive))
	for k, v := range mr.alive {
		s.Alive[k] = v
	}
	for _, d := range mr.drills {
		s.Drills = append(s.Drills, d)
	}
	sort.Slice(s.Drills, func(i, j int) bool { return s.Drills[i].ID < s.Drills[j].ID })
	s.Policies = make(map[string]*records.Policy, len(mr.policies))
	for k, v := range mr.policies {
		s.Policies[k] = v
	}
	s.Exporters = make(map[string]bool, len(mr.byClus))
	for c, set := range mr.byClus {
		if len(set) > 0 && !(c == mr.self && mr.hasLocal) {
			s.Exporters[c] = true
		}
	}
	return s
}

// ServiceChange is one service of a Next: its merge before and after (nil: absent).
type ServiceChange struct {
	Key       string
	Prev, Cur *Service
}

// Next builds the view that follows old (nil: none yet) with c: the dirty services are
// merged again, the others are old's. It lists every dirty or removed service with its
// merge before and after, and says whether anything a consumer sees changed. Unless
// c.All, the new view's Changed lists the services whose exports changed.
func Next(old *View, c *Changes) (nv *View, services []ServiceChange, changed bool) {
	if old == nil {
		old = &View{}
	}
	nv = &View{Revision: c.Revision, Clusters: c.Clusters, Alive: c.Alive, Drills: c.Drills, Policies: c.Policies}
	if c.All {
		nv.Services = make(map[string]*Service, len(c.Exports))
	} else {
		nv.Services = make(map[string]*Service, len(old.Services)+len(c.Dirty))
		for k, v := range old.Services {
			nv.Services[k] = v
		}
	}
	changed = c.Meta
	var changedKeys []string
	for _, sk := range c.Dirty {
		prev := old.Services[sk]
		var cur *Service
		if list := c.Exports[sk]; len(list) > 0 {
			cur = Merge(list)
			nv.Services[sk] = cur
		} else {
			delete(nv.Services, sk)
		}
		if !SameExports(prev, cur) {
			changed = true
			changedKeys = append(changedKeys, sk)
		}
		services = append(services, ServiceChange{Key: sk, Prev: prev, Cur: cur})
	}
	if c.All && len(old.Services) > 0 {
		for sk, prev := range old.Services {
			if _, ok := nv.Services[sk]; !ok {
				changed = true
				services = append(services, ServiceChange{Key: sk, Prev: prev})
			}
		}
	}
	if !c.All {
		// Consumers (the xDS planner) re-plan only these services.
		nv.Changed = changedKeys
	}
	return nv, services, changed
}

// SameExports reports whether two merges of a service rest on the very same export
// records with the same staleness (the mirror keeps a record's pointer until it changes),
// so nothing a consumer sees can differ.
func SameExports(a, b *Service) bool {
	if a == nil || b == nil {
		return a == b
	}
	if len(a.Clusters) != len(b.Clusters) {
		return false
	}
	for i := range a.Clusters {
		x, y := a.Clusters[i], b.Clusters[i]
		if x.Cluster != y.Cluster || x.Export != y.Export || x.Stale != y.Stale || !x.StaleSince.Equal(y.StaleSince) {
			return false
		}
	}
	return true
}

// MarkDirty re-queues services (a stale cluster's grace ended).
func (mr *Mirror) MarkDirty(keys []string) {
	mr.mu.Lock()
	for _, k := range keys {
		mr.dirty[k] = true
	}
	mr.mu.Unlock()
	mr.signal()
}

func orMismatch(err error, field string, decoded bool) error {
	if err != nil || !decoded {
		return err
	}
	return &mismatchError{field: field}
}

type mismatchError struct{ field string }

func (e *mismatchError) Error() string {
	return "the record's " + e.field + " does not match its key"
}

// ServicesOf lists the services cluster exports.
func (mr *Mirror) ServicesOf(cluster string) []string {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	out := make([]string, 0, len(mr.byClus[cluster]))
	for sk := range mr.byClus[cluster] {
		out = append(out, sk)
	}
	return out
}
