package drill

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// fedWatch follows, for the whole drill, what every federation replica publishes about
// the other clusters' gateways (acks/<cluster>/health/<instance>, records.GatewayHealth):
// for each replica, the successive states of the failed cluster there (down or not, and
// since when by that replica's clock). It is how the report says when each federation
// service marked the failed cluster down and up, whatever traffic the drill drives.
type fedWatch struct {
	st   *store.Store
	fail string
	prog io.Writer

	synced  chan struct{}
	once    sync.Once
	changed chan struct{}

	mu   sync.Mutex
	feds map[string]*fedSeen // by key
	// fault and lift are the drill's moments, for the progress lines (zero until then);
	// at stamps a moment as the traffic's progress lines do ("[   3.2s]"; nil: none).
	fault, lift time.Time
	at          func(time.Time) string
}

// fedSeen is one replica's record, as seen during the drill.
type fedSeen struct {
	cluster, instance string
	// states are the failed cluster's successive states (consecutive duplicates dropped);
	// the first is the one found when the watch began (or the record appeared).
	states []peerState
	gone   bool // the record was deleted (the replica stopped, or lost its lease)
}

type peerState struct {
	down  bool
	since time.Time // the replica's clock
}

var _ store.Handler = (*fedWatch)(nil)

func newFedWatch(st *store.Store, fail string, prog io.Writer) *fedWatch {
	return &fedWatch{st: st, fail: fail, prog: prog, feds: map[string]*fedSeen{},
		synced: make(chan struct{}), changed: make(chan struct{}, 1)}
}

// run follows the acks/ family until ctx ends.
func (w *fedWatch) run(ctx context.Context) {
	_ = w.st.NewSyncer(w.st.KS.Family(records.KindAck), w).Run(ctx)
}

// waitSynced waits for the first full list (false if ctx ends first).
func (w *fedWatch) waitSynced(ctx context.Context) bool {
	select {
	case <-w.synced:
		return true
	case <-ctx.Done():
		return false
	}
}

// Reset implements store.Handler.
func (w *fedWatch) Reset(kvs []store.KV, _ int64) {
	w.mu.Lock()
	seen := map[string]bool{}
	for _, kv := range kvs {
		if w.put(kv) {
			seen[kv.Key] = true
		}
	}
	for k, f := range w.feds {
		if !seen[k] {
			f.gone = true
		}
	}
	w.mu.Unlock()
	w.once.Do(func() { close(w.synced) })
	w.notify()
}

// Apply implements store.Handler.
func (w *fedWatch) Apply(evs []store.Event, _ int64) {
	w.mu.Lock()
	for _, e := range evs {
		if e.Delete {
			if f := w.feds[e.KV.Key]; f != nil {
				f.gone = true
			}
			continue
		}
		w.put(e.KV)
	}
	w.mu.Unlock()
	w.notify()
}

func (w *fedWatch) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// put takes one acks/ key (w.mu held); it reports whether it is a health record.
func (w *fedWatch) put(kv store.KV) bool {
	k, err := w.st.KS.Parse(kv.Key)
	if err != nil || k.Acks != records.AckHealth || k.Cluster == w.fail {
		return false
	}
	rec, err := records.Decode[records.GatewayHealth](kv.Value)
	if err != nil {
		return false
	}
	p := rec.Peer(w.fail)
	if p == nil {
		return true // this replica does not check the failed cluster (yet)
	}
	f := w.feds[kv.Key]
	if f == nil {
		f = &fedSeen{cluster: k.Cluster, instance: k.Name}
		w.feds[kv.Key] = f
	}
	f.gone = false
	s := peerState{down: p.Down, since: p.Since}
	if n := len(f.states); n > 0 && f.states[n-1] == s {
		return true
	}
	f.states = append(f.states, s)
	if len(f.states) > 1 && w.prog != nil && !w.fault.IsZero() {
		what, ref, moment := "up", w.lift, "the lift"
		if s.down {
			what, ref, moment = "down", w.fault, "the fault began"
		}
		if ref.IsZero() {
			ref, moment = w.fault, "the fault began"
		}
		fmt.Fprintf(w.prog, "%s%s's federation marked %s %s %.0f ms after %s (its health checks)\n",
			w.prefix(s.since), f.name(len(w.instancesOf(f.cluster)) > 1), w.fail, what, ms(s.since.Sub(ref)), moment)
	}
	return true
}

func (w *fedWatch) prefix(t time.Time) string {
	if w.at == nil {
		return ""
	}
	return w.at(t) + " "
}

// instancesOf lists the replicas of cluster seen (w.mu held).
func (w *fedWatch) instancesOf(cluster string) []string {
	var out []string
	for _, f := range w.feds {
		if f.cluster == cluster {
			out = append(out, f.instance)
		}
	}
	return out
}

func (f *fedSeen) name(withInstance bool) string {
	if withInstance {
		return f.cluster + "/" + f.instance
	}
	return f.cluster
}

// setMoments records the fault's start and the lift, and how to stamp a moment (nil:
// no stamp), for the progress lines.
func (w *fedWatch) setMoments(fault, lift time.Time, at func(time.Time) string) {
	w.mu.Lock()
	w.fault, w.lift, w.at = fault, lift, at
	w.mu.Unlock()
}

// marks computes each replica's down and up after the fault began at start and was
// lifted at lift (zero: not lifted).
func (w *fedWatch) marks(start, lift time.Time) []FederationMark {
	w.mu.Lock()
	defer w.mu.Unlock()
	keys := make([]string, 0, len(w.feds))
	for k := range w.feds {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := []FederationMark{}
	for _, k := range keys {
		f := w.feds[k]
		m := FederationMark{Federation: f.cluster, Instance: f.instance, Source: "health " + k}
		if len(w.instancesOf(f.cluster)) > 1 {
			m.Federation = f.cluster + "/" + f.instance
		}
		var downAt time.Time
		for i, s := range f.states {
			switch {
			case i == 0 && s.down && s.since.Before(start):
				// Down before the fault began: not this drill's doing.
				m.AlreadyDown = true
				downAt = s.since
			case s.down:
				m.Downs++
				if downAt.IsZero() {
					downAt = s.since
					d := ms(s.since.Sub(start))
					m.DownAfterMs = &d
				}
			case !downAt.IsZero() && m.UpAfterMs == nil && !lift.IsZero():
				// The first up after the first down (negative: before the lift, e.g. a
				// gateway lifting the fault at its deadline a moment before the drill's
				// own lift, or a cluster that came back while the fault held).
				u := ms(s.since.Sub(lift))
				m.UpAfterMs = &u
			}
		}
		m.Gone = f.gone
		out = append(out, m)
	}
	return out
}

// waitUp waits until every replica that marked the failed cluster down during the drill
// has marked it up again (or its record went away), or until deadline or ctx ends.
func (w *fedWatch) waitUp(ctx context.Context, deadline time.Time, prog io.Writer) {
	pending := func() []string {
		w.mu.Lock()
		defer w.mu.Unlock()
		var out []string
		for _, f := range w.feds {
			if n := len(f.states); n > 1 && f.states[n-1].down && !f.gone {
				out = append(out, f.name(len(w.instancesOf(f.cluster)) > 1))
			}
		}
		slices.Sort(out)
		return out
	}
	p := pending()
	if len(p) == 0 {
		return
	}
	fmt.Fprintf(prog, "waiting up to %v for %s to mark %s up again\n", time.Until(deadline).Round(time.Second), strings.Join(p, ", "), w.fail)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for len(pending()) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		case <-w.changed:
		}
	}
}
