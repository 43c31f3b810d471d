package service

import (
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
)

// mirror is the raw state of the keyspace families the view needs, fed by one Syncer.
// It records which services changed so the view builder re-merges only those.
type mirror struct {
	ks      records.Keyspace
	self    string
	log     *slog.Logger
	m       *metrics
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
	badSeen  map[string]int64
}

func newMirror(ks records.Keyspace, self string, log *slog.Logger, m *metrics) *mirror {
	mr := &mirror{ks: ks, self: self, log: log, m: m, changed: make(chan struct{}, 1), badSeen: map[string]int64{}}
	mr.resetLocked()
	return mr
}

func (mr *mirror) resetLocked() {
	mr.clusters = map[string]*records.Cluster{}
	mr.alive = map[string]bool{}
	mr.exports = map[string]map[string]*records.Export{}
	mr.byClus = map[string]map[string]bool{}
	mr.drills = map[string]*records.Drill{}
	mr.policies = map[string]*records.Policy{}
	mr.dirty = map[string]bool{}
	mr.dirtyAll, mr.meta = true, true
}

func (mr *mirror) signal() {
	select {
	case mr.changed <- struct{}{}:
	default:
	}
}

// Reset implements store.Handler.
func (mr *mirror) Reset(kvs []store.KV, rev int64) {
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
func (mr *mirror) Apply(evs []store.Event, rev int64) {
	mr.mu.Lock()
	now := time.Now()
	for _, e := range evs {
		mr.applyLocked(e)
		// Only live events measure propagation: a full list brings old records too.
		if !e.Delete {
			if k, err := mr.ks.Parse(e.KV.Key); err == nil && k.Kind == records.KindExport && k.Cluster != mr.self {
				if byC := mr.exports[view.Key(k.Namespace, k.Name)]; byC != nil {
					if v := byC[k.Cluster]; v != nil && v.UpdatedAt.After(now.Add(-time.Hour)) {
						mr.m.propagation.Observe(now.Sub(v.UpdatedAt).Seconds())
					}
				}
			}
		}
	}
	mr.rev = rev
	mr.mu.Unlock()
	mr.signal()
}

// setLocal installs the local source's newest snapshot as the own cluster's exports.
func (mr *mirror) setLocal(desired map[string]*records.Export) {
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

// clearLocal stops overlaying the local source: the own cluster's exports come from etcd
// again (a replica that stopped leading no longer runs the source).
func (mr *mirror) clearLocal() {
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

func (mr *mirror) bad(key string, modRev int64, err error) {
	mr.m.invalidRecords.Inc()
	if mr.badSeen[key] == modRev {
		return
	}
	mr.badSeen[key] = modRev
	// The last good value (if any) stays: a bad write must not take a service away.
	mr.log.Error("ignoring invalid record in etcd; the last good value stays in use", "key", key, "err", err)
}

func (mr *mirror) applyLocked(e store.Event) {
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
		sk := view.Key(k.Namespace, k.Name)
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
		sk := view.Key(k.Namespace, k.Name)
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

func (mr *mirror) dirtyCluster(c string) {
	for sk := range mr.byClus[c] {
		mr.dirty[sk] = true
	}
	if c == mr.self {
		for sk := range mr.local {
			mr.dirty[sk] = true
		}
	}
}

// snapshot is what the builder takes from the mirror under its lock.
type snapshot struct {
	rev      int64
	all      bool
	meta     bool
	dirty    []string
	exports  map[string][]*view.ClusterExport // only dirty services (all when all)
	clusters map[string]*records.Cluster
	alive    map[string]bool
	drills   []*records.Drill
	policies map[string]*records.Policy
	// exporters are the other clusters with at least one export (for stale tracking).
	exporters map[string]bool
}

// take hands the builder everything changed since the last take.
func (mr *mirror) take(stale map[string]time.Time, now time.Time, grace time.Duration) *snapshot {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	s := &snapshot{rev: mr.rev, all: mr.dirtyAll, meta: mr.meta}
	keys := mr.dirty
	if mr.dirtyAll {
		keys = map[string]bool{}
		for sk := range mr.exports {
			keys[sk] = true
		}
		for sk := range mr.local {
			keys[sk] = true
		}
	}
	s.exports = make(map[string][]*view.ClusterExport, len(keys))
	for sk := range keys {
		s.dirty = append(s.dirty, sk)
		var list []*view.ClusterExport
		for c, e := range mr.exports[sk] {
			if c == mr.self && mr.hasLocal {
				continue
			}
			ce := &view.ClusterExport{Cluster: c, Export: e}
			if !mr.alive[c] {
				since, ok := stale[c]
				if !ok {
					since = now
				}
				if now.Sub(since) >= grace {
					continue // grace over: dropped from the view
				}
				ce.Stale, ce.StaleSince = true, since
			}
			list = append(list, ce)
		}
		if mr.hasLocal {
			if e, ok := mr.local[sk]; ok {
				list = append(list, &view.ClusterExport{Cluster: mr.self, Export: e})
			}
		}
		s.exports[sk] = list
	}
	sort.Strings(s.dirty)
	s.clusters = make(map[string]*records.Cluster, len(mr.clusters))
	for k, v := range mr.clusters {
		s.clusters[k] = v
	}
	s.alive = make(map[string]bool, len(mr.alive))
	for k, v := range mr.alive {
		s.alive[k] = v
	}
	for _, d := range mr.drills {
		s.drills = append(s.drills, d)
	}
	sort.Slice(s.drills, func(i, j int) bool { return s.drills[i].ID < s.drills[j].ID })
	s.policies = make(map[string]*records.Policy, len(mr.policies))
	for k, v := range mr.policies {
		s.policies[k] = v
	}
	s.exporters = make(map[string]bool, len(mr.byClus))
	for c, set := range mr.byClus {
		if len(set) > 0 && !(c == mr.self && mr.hasLocal) {
			s.exporters[c] = true
		}
	}
	mr.dirty = map[string]bool{}
	mr.dirtyAll, mr.meta = false, false
	return s
}

// markDirty re-queues services (stale expiry).
func (mr *mirror) markDirty(keys []string) {
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

// servicesOf lists the services cluster exports.
func (mr *mirror) servicesOf(cluster string) []string {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	out := make([]string, 0, len(mr.byClus[cluster]))
	for sk := range mr.byClus[cluster] {
		out = append(out, sk)
	}
	return out
}
