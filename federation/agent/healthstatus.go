package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/keyspace/records"
)

// publishGatewayHealth keeps acks/<cluster>/health/<instance> (records.GatewayHealth) on
// its own lease while the agent runs: every remote cluster's gateway states as this
// replica's checker sees them, rewritten after every change (at most once a second; each
// state carries the time of its change, so a late write still tells when it happened).
// `meshfed drill` reads it to report when each federation marked a cluster down and up.
func (a *Agent) publishGatewayHealth(ctx context.Context) error {
	key := a.cfg.Store.KS.HealthAck(a.cfg.Cluster, a.instance)
	l := a.cfg.Store.NewLeased(key, a.cfg.HeartbeatTTL)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	changes := a.Health.Subscribe()
	var last []byte
	for {
		rec := gatewayHealthRecord(a.cfg.Cluster, a.instance, a.Health.Statuses())
		cmp, _ := json.Marshal(rec) // UpdatedAt is still zero: compares the content
		if !bytes.Equal(cmp, last) {
			rec.UpdatedAt = time.Now().UTC()
			if err := l.Set(rec); err != nil {
				a.log.Error("cannot publish the gateway health (a bug: please report)", "key", key, "err", err)
			}
			last = cmp
		}
		select {
		case <-ctx.Done():
			return <-done
		case <-changes:
		}
	}
}

// gatewayHealthRecord summarizes the checker's statuses (sorted by cluster, then address)
// per cluster: down when no address is usable, since the last address went down; up since
// the first usable address became so.
func gatewayHealthRecord(cluster, instance string, sts []health.Status) *records.GatewayHealth {
	rec := &records.GatewayHealth{Cluster: cluster, Instance: instance, Peers: []records.PeerHealth{}}
	var p *records.PeerHealth
	var usableSince time.Time
	finish := func() {
		if p == nil {
			return
		}
		if !p.Down {
			p.Since = usableSince
		}
		rec.Peers = append(rec.Peers, *p)
	}
	for _, s := range sts {
		if p == nil || p.Cluster != s.Cluster {
			finish()
			p = &records.PeerHealth{Cluster: s.Cluster, Down: true}
			usableSince = time.Time{}
		}
		since := s.Since.UTC()
		p.Gateways = append(p.Gateways, records.GatewayHealthState{Addr: s.Addr, State: s.State.String(), Since: since})
		if s.State.Usable() {
			p.Down = false
			if usableSince.IsZero() || since.Before(usableSince) {
				usableSince = since
			}
		} else if since.After(p.Since) {
			p.Since = since // the last address to go down, while all are down
		}
	}
	finish()
	return rec
}
