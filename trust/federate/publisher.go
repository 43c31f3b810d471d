package federate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
)

// PublishStatus is the fate of the cluster's own bundle.
type PublishStatus struct {
	// Sequence and Digest are what bundles/<td> holds after the last successful check.
	Sequence uint64
	Digest   string
	// Refused says why the source's bundle is not published ("" when it is).
	Refused string
	// Owner is set when this cluster shares its trust domain with the member owning it
	// (clusters/<this>.sharesTrustDomainWith): the owner alone writes bundles/<td>; this
	// cluster only reads it. Sequence and Digest are then the owner's record (0 and ""
	// while the owner has published nothing), and SourceDiffers says that this cluster's
	// own bundle source has other content than that record (both should be the one root).
	Owner         string
	SourceDiffers bool
	// LastError is the last etcd or validation error.
	LastError error
	At        time.Time
}

// ErrLocked: a rotation job holds bundles/<td>.
var ErrLocked = errors.New("a rotation job holds the bundle")

// ErrUndoesRotation: the source's bundle lacks the root the last rotation put in.
var ErrUndoesRotation = errors.New("the source's bundle lacks the root of the last rotation")

// publisher keeps bundles/<td> equal to the source's bundle: sequence+1 on every change of
// content or refresh hint, never reused. It never overwrites a bundle held by a rotation
// job, nor one a finished rotation moved to a root the source does not have yet.
type publisher struct {
	s      *Service
	wake   chan struct{}
	holder string

	mu      sync.Mutex
	desired *trust.Bundle
	st      PublishStatus
}

func newPublisher(s *Service) *publisher {
	host, _ := os.Hostname()
	return &publisher{s: s, wake: make(chan struct{}, 1), holder: host + "/" + strconv.Itoa(os.Getpid())}
}

func (p *publisher) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *publisher) status() PublishStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

func (p *publisher) run(ctx context.Context) error {
	go func() {
		_ = p.s.cfg.Source.Run(ctx, func(b *trust.Bundle) {
			p.mu.Lock()
			p.desired = b
			p.mu.Unlock()
			p.kick()
		})
	}()
	// Re-check now and then even without news: a lock released or a record changed by
	// hand arrives through the mirror's kick, but an etcd error needs a retry.
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case <-tick.C:
		}
		p.mu.Lock()
		b := p.desired
		p.mu.Unlock()
		if b == nil {
			continue
		}
		if err := p.publish(ctx, b); err != nil && ctx.Err() == nil {
			p.s.m.publishes.WithLabelValues("error").Inc()
			p.setStatus(func(st *PublishStatus) { st.LastError = err })
			p.s.log.Error("publishing the cluster's bundle failed; retrying", "err", err)
			go func() {
				if ctxtime.Sleep(ctx, p.s.cfg.RetryInterval) {
					p.kick()
				}
			}()
		}
	}
}

func (p *publisher) setStatus(f func(*PublishStatus)) {
	p.mu.Lock()
	prev := p.st.Refused
	f(&p.st)
	p.st.At = time.Now()
	refused := p.st.Refused
	p.mu.Unlock()
	if refused != "" {
		p.s.m.publishBlock.Set(1)
		if refused != prev {
			p.s.log.Warn("the cluster's bundle source is refused", "trust_domain", p.s.cfg.TrustDomain, "reason", refused)
		}
	} else {
		p.s.m.publishBlock.Set(0)
		if prev != "" {
			p.s.log.Info("the cluster's bundle source is accepted again", "trust_domain", p.s.cfg.TrustDomain)
		}
	}
}

// publish writes b as the next sequence of bundles/<td> unless refused. The write compares
// the record's mod revision, so a rotation job taking the lock at the same moment makes
// this attempt fail and re-read (and then see the lock).
func (p *publisher) publish(ctx context.Context, b *trust.Bundle) error {
	td := p.s.cfg.TrustDomain
	st := p.s.cfg.Store
	// A cluster that shares another member's trust domain never writes its bundle: not
	// even to create it before the owner does (the first writer would own it).
	if it, err := store.Get[records.Cluster](ctx, st, st.KS.Cluster(p.s.cfg.Cluster)); err == nil {
		if owner := it.Value.SharesTrustDomainWith; owner != "" && it.Value.TrustDomain == td {
			return p.followOwner(ctx, b, owner)
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	// The last finished rotation, if any: its new root must stay.
	var rot *records.Rotation
	if it, err := store.Get[records.Rotation](ctx, st, st.KS.Rotation(td)); err == nil {
		rot = it.Value
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	var refused string
	var result *records.Bundle
	var wrote bool
	_, err := store.Modify[records.Bundle](ctx, st, st.KS.Bundle(td), func(cur *records.Bundle) (*records.Bundle, error) {
		refused, result, wrote = "", cur, false
		if cur != nil {
			switch {
			case cur.Owner != p.s.cfg.Cluster:
				refused = fmt.Sprintf("bundles/%s is owned by cluster %q: a trust domain has one owner (trust domains are never merged)", td, cur.Owner)
				return nil, nil
			case cur.Lock != nil:
				refused = fmt.Sprintf("%v: job %s (held by %s since %s); the source cannot overwrite it until the job ends", ErrLocked, cur.Lock.Job, cur.Lock.Holder, cur.Lock.Since.Format(time.RFC3339))
				return nil, nil
			}
		}
		if rot != nil && !rot.Phase.Terminal() {
			refused = fmt.Sprintf("%v: rotation %s is in phase %s", ErrLocked, rot.ID, rot.Phase)
			return nil, nil
		}
		if rot != nil && rot.Phase == records.PhaseDone && !b.HasRoot(rot.NewRootFingerprint) {
			refused = fmt.Sprintf("%v (rotation %s put in %s): publishing it would undo the rotation; give the source the new root", ErrUndoesRotation, rot.ID, rot.NewRootFingerprint)
			return nil, nil
		}
		if cur != nil && cur.Digest == b.Digest() && cur.RefreshHint == int64(b.RefreshHint/time.Second) {
			return nil, nil // unchanged
		}
		seq := uint64(1)
		if cur != nil {
			seq = cur.Sequence + 1
		}
		rec, err := b.WithMeta(seq, b.RefreshHint).Record(p.s.cfg.Cluster, time.Now())
		if err != nil {
			return nil, err
		}
		result, wrote = rec, true
		return rec, nil
	})
	if err != nil {
		return err
	}
	p.setStatus(func(s *PublishStatus) {
		s.Refused, s.LastError = refused, nil
		if result != nil {
			s.Sequence, s.Digest = result.Sequence, result.Digest
		}
	})
	switch {
	case refused != "":
		p.s.m.publishes.WithLabelValues("refused").Inc()
	case wrote:
		p.s.m.publishes.WithLabelValues("published").Inc()
		p.s.log.Info("published the cluster's bundle", "trust_domain", td, "sequence", result.Sequence, "digest", result.Digest, "source", p.s.cfg.Source.String())
	default:
		p.s.m.publishes.WithLabelValues("unchanged").Inc()
	}
	return nil
}

// followOwner is publish for a cluster sharing the trust domain of owner: it reads
// bundles/<td> and compares it with the source, and writes nothing.
func (p *publisher) followOwner(ctx context.Context, b *trust.Bundle, owner string) error {
	td := p.s.cfg.TrustDomain
	st := p.s.cfg.Store
	var cur *records.Bundle
	if it, err := store.Get[records.Bundle](ctx, st, st.KS.Bundle(td)); err == nil {
		cur = it.Value
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	differs := cur != nil && cur.Digest != b.Digest()
	prev := p.status()
	p.setStatus(func(s *PublishStatus) {
		s.Refused, s.LastError, s.Owner, s.SourceDiffers = "", nil, owner, differs
		s.Sequence, s.Digest = 0, ""
		if cur != nil {
			s.Sequence, s.Digest = cur.Sequence, cur.Digest
		}
	})
	p.s.m.publishes.WithLabelValues("shared").Inc()
	if prev.Owner != owner {
		p.s.log.Info("this cluster shares its trust domain: the owner publishes and rotates the bundle, this cluster only reads it", "trust_domain", td, "owner", owner)
	}
	if differs && (!prev.SourceDiffers || prev.Digest != cur.Digest) {
		p.s.log.Warn("this cluster's bundle source differs from the shared trust domain's bundle that its owner publishes: workloads of the two clusters may not verify each other (one trust domain needs one root; during a rotation of the owner's root this is expected for a while)",
			"trust_domain", td, "owner", owner, "published_digest", cur.Digest, "source_digest", b.Digest(), "source", p.s.cfg.Source.String())
	}
	return nil
}
