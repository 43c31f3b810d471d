package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
)

// Snapshot is the whole keyspace read at one etcd revision, decoded. Records that do not
// decode are listed in Bad (one broken writer must not hide the rest).
type Snapshot struct {
	Revision int64
	Clusters map[string]*store.Item[records.Cluster]
	Alive    map[string]*store.Item[records.Alive]
	Exports  map[string][]*store.Item[records.Export]      // by cluster, sorted by key
	Bundles  map[string]*store.Item[records.Bundle]        // by trust domain
	Acks     map[string][]*store.Item[records.Ack]         // by cluster
	Istio    map[string][]*store.Item[records.IstioStatus] // by cluster, one per federation replica
	// Health is what each federation replica's health checker sees of the other clusters'
	// gateways (acks/<cluster>/health/<instance>), by cluster.
	Health    map[string][]*store.Item[records.GatewayHealth]
	Drills    []*store.Item[records.Drill]
	Rotations map[string]*RotationEntry              // by trust domain
	Policies  map[string]*store.Item[records.Policy] // by namespace/name
	Audits    int
	Bad       []error

	// mirror holds the records the import view is built from (View).
	mirror *view.Mirror
	kvs    []store.KV
}

// RotationEntry is one rotations/<td> record: decoded when this binary knows the type,
// and always as generic JSON (so that status shows a newer writer's record too).
type RotationEntry struct {
	Rotation    *records.Rotation
	Raw         map[string]any
	ModRevision int64
}

// scanPage bounds one range request.
const scanPage = 1000

// ReadSnapshot reads every key under the store's prefix at one revision.
func ReadSnapshot(ctx context.Context, st *store.Store) (*Snapshot, error) {
	s := newSnapshot(st.KS)
	cli := st.Client()
	prefix := st.KS.Prefix()
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(scanPage)}
		if s.Revision != 0 {
			opts = append(opts, clientv3.WithRev(s.Revision))
		}
		r, err := cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", prefix, err)
		}
		if s.Revision == 0 {
			s.Revision = r.Header.Revision
		}
		for _, kv := range r.Kvs {
			s.add(st.KS, kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Lease)
		}
		if !r.More || len(r.Kvs) == 0 {
			break
		}
		from = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
	s.finish()
	return s, nil
}

func newSnapshot(ks records.Keyspace) *Snapshot {
	return &Snapshot{
		mirror:    view.NewMirror(ks, "", view.MirrorHooks{}),
		Clusters:  map[string]*store.Item[records.Cluster]{},
		Alive:     map[string]*store.Item[records.Alive]{},
		Exports:   map[string][]*store.Item[records.Export]{},
		Bundles:   map[string]*store.Item[records.Bundle]{},
		Acks:      map[string][]*store.Item[records.Ack]{},
		Istio:     map[string][]*store.Item[records.IstioStatus]{},
		Health:    map[string][]*store.Item[records.GatewayHealth]{},
		Rotations: map[string]*RotationEntry{},
		Policies:  map[string]*store.Item[records.Policy]{},
	}
}

// finish sorts what add appended and hands the records to the view's mirror.
func (s *Snapshot) finish() {
	s.mirror.Reset(s.kvs, s.Revision)
	s.kvs = nil
	for c := range s.Exports {
		sort.Slice(s.Exports[c], func(i, j int) bool { return s.Exports[c][i].Key < s.Exports[c][j].Key })
	}
	for c := range s.Acks {
		sort.Slice(s.Acks[c], func(i, j int) bool { return s.Acks[c][i].Key < s.Acks[c][j].Key })
	}
	for c := range s.Istio {
		sort.Slice(s.Istio[c], func(i, j int) bool { return s.Istio[c][i].Key < s.Istio[c][j].Key })
	}
	for c := range s.Health {
		sort.Slice(s.Health[c], func(i, j int) bool { return s.Health[c][i].Key < s.Health[c][j].Key })
	}
	sort.Slice(s.Drills, func(i, j int) bool { return s.Drills[i].Key < s.Drills[j].Key })
}

func item[T any, PT interface {
	*T
	records.Record
}](s *Snapshot, key string, value []byte, create, mod, lease int64) *store.Item[T] {
	v, err := records.Decode[T, PT](value)
	if err != nil {
		s.Bad = append(s.Bad, fmt.Errorf("%s: %w", key, err))
		return nil
	}
	return &store.Item[T]{Key: key, Value: v, CreateRevision: create, ModRevision: mod, Lease: lease}
}

func (s *Snapshot) add(ks records.Keyspace, rawKey, value []byte, create, mod, lease int64) {
	key := string(rawKey)
	s.kvs = append(s.kvs, store.KV{Key: key, Value: value, CreateRevision: create, ModRevision: mod, Lease: lease})
	k, err := ks.Parse(key)
	if err != nil {
		s.Bad = append(s.Bad, err)
		return
	}
	switch k.Kind {
	case records.KindCluster:
		if it := item[records.Cluster](s, key, value, create, mod, lease); it != nil {
			s.Clusters[k.Cluster] = it
		}
	case records.KindAlive:
		if it := item[records.Alive](s, key, value, create, mod, lease); it != nil {
			s.Alive[k.Cluster] = it
		}
	case records.KindExport:
		if it := item[records.Export](s, key, value, create, mod, lease); it != nil {
			s.Exports[k.Cluster] = append(s.Exports[k.Cluster], it)
		}
	case records.KindBundle:
		if it := item[records.Bundle](s, key, value, create, mod, lease); it != nil {
			s.Bundles[k.TrustDomain] = it
		}
	case records.KindAck:
		if k.Acks == records.AckIstio {
			if it := item[records.IstioStatus](s, key, value, create, mod, lease); it != nil {
				s.Istio[k.Cluster] = append(s.Istio[k.Cluster], it)
			}
			return
		}
		if k.Acks == records.AckHealth {
			if it := item[records.GatewayHealth](s, key, value, create, mod, lease); it != nil {
				s.Health[k.Cluster] = append(s.Health[k.Cluster], it)
			}
			return
		}
		if it := item[records.Ack](s, key, value, create, mod, lease); it != nil {
			s.Acks[k.Cluster] = append(s.Acks[k.Cluster], it)
		}
	case records.KindDrill:
		if it := item[records.Drill](s, key, value, create, mod, lease); it != nil {
			s.Drills = append(s.Drills, it)
		}
	case records.KindRotation:
		e := &RotationEntry{ModRevision: mod}
		if err := json.Unmarshal(value, &e.Raw); err != nil {
			s.Bad = append(s.Bad, fmt.Errorf("%s: not JSON: %w", key, err))
			return
		}
		if r, err := records.Decode[records.Rotation](value); err == nil {
			e.Rotation = r
		} else {
			s.Bad = append(s.Bad, fmt.Errorf("%s: %w (shown as raw JSON)", key, err))
		}
		s.Rotations[k.TrustDomain] = e
	case records.KindPolicy:
		if it := item[records.Policy](s, key, value, create, mod, lease); it != nil {
			s.Policies[view.Key(k.Namespace, k.Name)] = it
		}
	case records.KindAudit:
		s.Audits++
	}
}

// ClusterNames lists the clusters with a clusters/ record, sorted.
func (s *Snapshot) ClusterNames() []string {
	out := make([]string, 0, len(s.Clusters))
	for n := range s.Clusters {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// View builds the import view from this snapshot with the federation services' builder
// (view.Mirror): a cluster without heartbeat is stale (since when is unknown: etcd keeps
// no time for a deletion, so StaleSince stays zero and the grace never runs out here).
func (s *Snapshot) View() *view.View { return s.mirror.View(nil) }

// ServiceKeys lists the services exported by any cluster, sorted.
func (s *Snapshot) ServiceKeys() []string {
	seen := map[string]bool{}
	for _, exps := range s.Exports {
		for _, e := range exps {
			seen[e.Value.ServiceKey()] = true
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// lastActivity is the latest time a cluster's own records say it did something (export
// updates, acks): a hint of when a stale cluster was last seen.
func (s *Snapshot) lastActivity(cluster string) time.Time {
	var t time.Time
	for _, e := range s.Exports[cluster] {
		if e.Value.UpdatedAt.After(t) {
			t = e.Value.UpdatedAt
		}
	}
	for _, a := range s.Acks[cluster] {
		if a.Value.AppliedAt.After(t) {
			t = a.Value.AppliedAt
		}
	}
	return t
}
