package federate

import (
	"context"
	"fmt"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
)

// mirror is the store.Handler of bundles/: it validates every record and keeps, per trust
// domain, the last good bundle. A record that fails validation, or whose sequence goes
// backwards (or stays with other content), is rejected and the last good bundle stays in
// force: one broken writer must not make every cluster stop trusting a domain.
type mirror struct {
	s    *Service
	good map[string]*entry
}

type entry struct {
	b   *trust.Bundle
	rec *records.Bundle
}

func newMirror(s *Service) *mirror { return &mirror{s: s, good: map[string]*entry{}} }

// Reset implements store.Handler.
func (m *mirror) Reset(kvs []store.KV, _ int64) {
	seen := map[string]bool{}
	for _, kv := range kvs {
		if td := m.put(kv); td != "" {
			seen[td] = true
		}
	}
	for td := range m.good {
		if !seen[td] {
			m.s.log.Warn("bundle record gone after a re-list; no longer trusting its trust domain", "trust_domain", td)
			delete(m.good, td)
		}
	}
	m.publish()
}

// Apply implements store.Handler.
func (m *mirror) Apply(evs []store.Event, _ int64) {
	for _, ev := range evs {
		if ev.Delete {
			k, err := m.s.cfg.Store.KS.Parse(ev.KV.Key)
			if err != nil {
				continue
			}
			if _, ok := m.good[k.TrustDomain]; ok {
				// A bundle record is deleted when its cluster leaves: trust follows.
				m.s.log.Warn("bundle record deleted; no longer trusting its trust domain", "trust_domain", k.TrustDomain)
				delete(m.good, k.TrustDomain)
			}
			continue
		}
		m.put(ev.KV)
	}
	m.publish()
}

// put validates one record and installs it if it is good; it returns its trust domain.
func (m *mirror) put(kv store.KV) string {
	k, err := m.s.cfg.Store.KS.Parse(kv.Key)
	if err != nil {
		m.reject("", "bad-key", err)
		return ""
	}
	td := k.TrustDomain
	rec, err := records.Decode[records.Bundle](kv.Value)
	if err != nil {
		m.reject(td, "invalid-record", err)
		return td
	}
	if rec.TrustDomain != td {
		m.reject(td, "invalid-record", fmt.Errorf("record names trust domain %q under key %s", rec.TrustDomain, kv.Key))
		return td
	}
	b, dropped, err := trust.FromRecordKeepValid(rec, time.Now())
	if err != nil {
		m.reject(td, "invalid-bundle", err)
		return td
	}
	for _, d := range dropped {
		m.s.log.Warn("expired root left out of a federated bundle; rotate it", "trust_domain", td, "sequence", rec.Sequence, "root", d)
	}
	if last, ok := m.good[td]; ok {
		switch {
		case rec.Sequence < last.rec.Sequence:
			m.reject(td, "sequence-regression", fmt.Errorf("sequence %d after %d: a bundle sequence never goes back (publish a new sequence to roll back)", rec.Sequence, last.rec.Sequence))
			return td
		case rec.Sequence == last.rec.Sequence && rec.Digest != last.rec.Digest:
			m.reject(td, "sequence-reused", fmt.Errorf("sequence %d reused with other content", rec.Sequence))
			return td
		}
	}
	m.good[td] = &entry{b: b, rec: rec}
	m.s.m.sequence.WithLabelValues(td).Set(float64(rec.Sequence))
	return td
}

func (m *mirror) reject(td, reason string, err error) {
	m.s.m.rejected.WithLabelValues(td, reason).Inc()
	m.s.log.Error("bundle record rejected; keeping the last good bundle", "trust_domain", td, "reason", reason, "err", err)
}

// publish hands an immutable set of the good bundles to the outputs.
func (m *mirror) publish() {
	bs := make([]*trust.Bundle, 0, len(m.good))
	recs := make(map[string]*records.Bundle, len(m.good))
	for td, e := range m.good {
		bs = append(bs, e.b)
		recs[td] = e.rec
	}
	set := trust.NewSet(bs...)
	m.s.mu.Lock()
	prev := m.s.current
	m.s.records = recs
	m.s.mu.Unlock()
	if prev != nil && sameSet(prev, set) {
		return
	}
	m.s.m.bundles.Set(float64(set.Len()))
	m.s.setCurrent(set)
}

func sameSet(a, b *trust.Set) bool {
	if a.Len() != b.Len() {
		return false
	}
	for _, x := range a.Bundles() {
		y, ok := b.Get(x.TrustDomain.Name())
		if !ok || x.Sequence != y.Sequence || x.Digest() != y.Digest() || x.RefreshHint != y.RefreshHint {
			return false
		}
	}
	return true
}

// ack writes acks/<cluster>/bundles/<td> for every bundle of set not acked yet: the
// sequence and digest this cluster has written out (exactly what it applied, even if that
// is a lower sequence than an earlier ack after a bundle record was re-created).
func (s *Service) ack(ctx context.Context, set *trust.Set, acked map[string]ackKey) error {
	s.mu.Lock()
	recs, istiod := s.records, s.istiod
	s.mu.Unlock()
	for _, b := range set.Bundles() {
		td := b.TrustDomain.Name()
		// The ack names the record as published (its digest), even when an expired root
		// was left out of what is written out.
		want := ackKey{b.Sequence, b.Digest()}
		if r, ok := recs[td]; ok && r.Sequence == b.Sequence {
			want.digest = r.Digest
		}
		if acked[td] == want {
			continue
		}
		key := s.cfg.Store.KS.Ack(s.cfg.Cluster, td)
		_, err := store.Modify[records.Ack](ctx, s.cfg.Store, key, func(cur *records.Ack) (*records.Ack, error) {
			if cur != nil && cur.Sequence == want.seq && cur.Digest == want.digest && cur.Istiod == istiod {
				return nil, nil
			}
			return &records.Ack{Cluster: s.cfg.Cluster, TrustDomain: td, Sequence: want.seq, Digest: want.digest, AppliedAt: time.Now().UTC(), Istiod: istiod}, nil
		})
		if err != nil {
			return fmt.Errorf("ack %s sequence %d: %w", td, want.seq, err)
		}
		acked[td] = want
		s.m.acks.Inc()
		s.log.Info("trust bundle written out and acked", "trust_domain", td, "sequence", want.seq, "digest", want.digest)
	}
	return nil
}
