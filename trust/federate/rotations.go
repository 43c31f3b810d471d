package federate

import (
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// rotationWatch is the store.Handler of rotations/: it exports, per trust domain with a job
// running, the phase the job is in and since when, so an alert can name a rotation that
// stopped moving (a gate waiting on a cluster that never acks, an external issuer never
// confirmed). It only reads: the job itself (trust/rotation) owns the record.
type rotationWatch struct {
	s *Service
	// shown is the phase each trust domain's series carries now, to delete it on change.
	shown map[string]records.RotationPhase
}

func newRotationWatch(s *Service) *rotationWatch {
	return &rotationWatch{s: s, shown: map[string]records.RotationPhase{}}
}

// Reset implements store.Handler.
func (w *rotationWatch) Reset(kvs []store.KV, _ int64) {
	seen := map[string]bool{}
	for _, kv := range kvs {
		if td := w.put(kv); td != "" {
			seen[td] = true
		}
	}
	for td := range w.shown {
		if !seen[td] {
			w.clear(td)
		}
	}
}

// Apply implements store.Handler.
func (w *rotationWatch) Apply(evs []store.Event, _ int64) {
	for _, ev := range evs {
		if ev.Delete {
			if k, err := w.s.cfg.Store.KS.Parse(ev.KV.Key); err == nil {
				w.clear(k.TrustDomain)
			}
			continue
		}
		w.put(ev.KV)
	}
}

func (w *rotationWatch) put(kv store.KV) string {
	k, err := w.s.cfg.Store.KS.Parse(kv.Key)
	if err != nil {
		return ""
	}
	td := k.TrustDomain
	rec, err := records.Decode[records.Rotation](kv.Value)
	if err != nil {
		// Not this component's record to judge beyond a log line: `meshfed trust rotate
		// status` reports a broken job in full.
		w.s.log.Warn("rotation record unreadable; not exported as a metric", "trust_domain", td, "err", err)
		w.clear(td)
		return td
	}
	if rec.Phase.Terminal() {
		w.clear(td)
		return td
	}
	if old, ok := w.shown[td]; ok && old != rec.Phase {
		w.s.m.rotationPhase.DeleteLabelValues(td, string(old))
	}
	w.s.m.rotationPhase.WithLabelValues(td, string(rec.Phase)).Set(float64(phaseEntered(rec).Unix()))
	w.shown[td] = rec.Phase
	return td
}

func (w *rotationWatch) clear(td string) {
	if old, ok := w.shown[td]; ok {
		w.s.m.rotationPhase.DeleteLabelValues(td, string(old))
		delete(w.shown, td)
	}
}

// phaseEntered is when the job entered its current phase: the last transition into it in
// the history, or the record's last update when the history was trimmed.
func phaseEntered(r *records.Rotation) time.Time {
	for i := len(r.History) - 1; i >= 0; i-- {
		if r.History[i].Phase == r.Phase {
			return r.History[i].At
		}
	}
	if !r.UpdatedAt.IsZero() {
		return r.UpdatedAt
	}
	return r.StartedAt
}
