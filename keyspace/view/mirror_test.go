package view

import (
	"testing"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

func kv(t *testing.T, key string, r records.Record) store.KV {
	t.Helper()
	b, err := records.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	return store.KV{Key: key, Value: b}
}

// TestMirrorIncrementalEqualsWhole: the view Next builds from a mirror's changes, event by
// event, is the one View builds from the whole mirror; a cluster without heartbeat is
// stale, with a zero StaleSince without a Staleness, dropped once its grace ends with one;
// a record that does not match its key is reported and ignored.
func TestMirrorIncrementalEqualsWhole(t *testing.T) {
	ks, err := records.NewKeyspace(records.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	export := func(c string) *records.Export {
		return &records.Export{Cluster: c, Namespace: "demo", Name: "echo", Type: records.TypeClusterSetIP, Revision: 1,
			ExportedAt: time.Unix(1000, 0), UpdatedAt: time.Unix(1000, 0), Ports: []records.Port{{Name: "tls", Port: 8443, Protocol: "TCP"}},
			Endpoints: []records.Endpoint{{Address: "10.0.0.1", Ready: true}}}
	}
	var bad []string
	m := NewMirror(ks, "", MirrorHooks{Bad: func(key string, _ int64, _ error) { bad = append(bad, key) }})
	m.Reset([]store.KV{
		kv(t, ks.Cluster("west"), &records.Cluster{Name: "west", Region: "eu", Zone: "eu-a", Network: "net-west", TrustDomain: "west.example.org",
			JoinedAt: time.Unix(1000, 0), Gateways: []string{"127.0.0.1:1"}}),
		{Key: ks.Alive("west"), Value: []byte("{}")}, // only its presence counts
		kv(t, ks.Export("west", "demo", "echo"), export("west")),
	}, 1)
	v, _, _ := Next(nil, m.Take(nil))
	if s := v.Services["demo/echo"]; s == nil || len(s.Clusters) != 1 || s.Clusters[0].Stale {
		t.Fatalf("after reset: %+v", v.Services)
	}
	m.Apply([]store.Event{
		{KV: kv(t, ks.Export("north", "demo", "echo"), export("north"))},
		{KV: kv(t, ks.Export("east", "demo", "echo"), export("west"))}, // does not match its key
	}, 2)
	v, changes, changed := Next(v, m.Take(nil))
	if !changed || len(changes) != 1 || changes[0].Key != "demo/echo" || len(v.Changed) != 1 {
		t.Fatalf("changed %v, changes %+v, view.Changed %v", changed, changes, v.Changed)
	}
	if len(bad) != 1 || bad[0] != ks.Export("east", "demo", "echo") {
		t.Fatalf("bad records %v", bad)
	}
	whole := m.View(nil)
	s, ws := v.Services["demo/echo"], whole.Services["demo/echo"]
	if len(s.Clusters) != 2 || len(ws.Clusters) != 2 || v.Revision != 2 || whole.Revision != 2 {
		t.Fatalf("incremental %+v, whole %+v", s, ws)
	}
	for i := range s.Clusters {
		a, b := s.Clusters[i], ws.Clusters[i]
		if a.Cluster != b.Cluster || a.Export != b.Export || a.Stale != b.Stale || !a.StaleSince.IsZero() || !b.StaleSince.IsZero() {
			t.Fatalf("cluster %d: %+v vs %+v", i, a, b)
		}
	}
	if !s.Clusters[0].Stale || s.Clusters[0].Cluster != "north" || s.Clusters[1].Stale {
		t.Fatalf("north has no heartbeat: %+v %+v", s.Clusters[0], s.Clusters[1])
	}
	now := time.Unix(5000, 0)
	gone := m.View(&Staleness{Since: map[string]time.Time{"north": now.Add(-time.Minute)}, Now: now, Grace: time.Minute})
	if c := gone.Services["demo/echo"].Clusters; len(c) != 1 || c[0].Cluster != "west" {
		t.Fatalf("north's grace is over, yet: %+v", c)
	}
	kept := m.View(&Staleness{Now: now, Grace: time.Minute})
	if c := kept.Services["demo/echo"].Clusters; len(c) != 2 || !c[0].StaleSince.Equal(now) {
		t.Fatalf("north just went stale: %+v", c)
	}
}
