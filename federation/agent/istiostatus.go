package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/keyspace/records"
)

// publishIstioStatus keeps acks/<cluster>/istio/<instance> (records.IstioStatus) on its own
// lease while the MCP server runs: the istiods it feeds, their ACK/NACK state and last
// push, unknown types and NACK counts, rewritten after every change (at most once a
// second). `meshfed status` reads it.
func (a *Agent) publishIstioStatus(ctx context.Context) error {
	key := a.cfg.Store.KS.IstioAck(a.cfg.Cluster, a.instance)
	l := a.cfg.Store.NewLeased(key, a.cfg.HeartbeatTTL)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var last []byte
	for {
		ch := a.Istio.StatusChanged()
		rec := istioStatusRecord(a.cfg.Cluster, a.instance, a.Istio)
		cmp, _ := json.Marshal(rec) // UpdatedAt is still zero: compares the content
		if !bytes.Equal(cmp, last) {
			rec.UpdatedAt = time.Now().UTC()
			if err := l.Set(rec); err != nil {
				a.log.Error("cannot publish the istiod status (a bug: please report)", "key", key, "err", err)
			}
			last = cmp
		}
		select {
		case <-ctx.Done():
			return <-done
		case <-ch:
		}
	}
}

func istioStatusRecord(cluster, instance string, s *istio.Server) *records.IstioStatus {
	rep := s.Report()
	at, disk := s.StateInfo()
	rec := &records.IstioStatus{Cluster: cluster, Instance: instance, StateAt: at.UTC(), FromDisk: disk,
		Istiods: []records.IstiodStatus{}, Sources: rep.Sources, UnknownTypes: rep.UnknownTypes}
	if at.IsZero() {
		rec.StateAt = time.Time{}
	}
	for _, c := range rep.Istiods {
		node := c.Node
		if node == "" {
			node = "(no node id) " + c.Peer
		}
		is := records.IstiodStatus{Node: node, Via: c.Via, Connected: c.Connected.UTC(), Synced: c.Synced,
			LastPush: utc(c.LastPush), LastAck: utc(c.LastAck)}
		if r := c.Roots; r != nil {
			is.Roots = &records.IstiodRoots{Addr: r.Addr, Fingerprints: r.Fingerprints, Since: utc(r.Since), Error: r.Error}
		}
		for _, t := range c.Types {
			if t.NACK != "" {
				is.NACKs = append(is.NACKs, records.IstioTypeNACK{Type: t.Type, Error: t.NACK})
			}
		}
		rec.Istiods = append(rec.Istiods, is)
	}
	for _, n := range rep.NACKs {
		rec.NACKs = append(rec.NACKs, records.IstioNACKCount{Type: n.Type, Reason: n.Reason, Count: n.Count})
	}
	return rec
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// instanceLabel names this process as a DNS label (host-pid, e.g. the pod name and 1):
// the last element of acks/<cluster>/istio/<instance>.
func instanceLabel() string {
	h, _ := os.Hostname()
	return sanitizeLabel(fmt.Sprintf("%s-%d", h, os.Getpid()))
}

func sanitizeLabel(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 63 {
		out = strings.Trim(out[len(out)-63:], "-")
	}
	if out == "" {
		out = "federation"
	}
	return out
}
