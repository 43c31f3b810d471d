package rotation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
)

// DefaultIstiodSettle is how long a gate waits, after every istiod of a cluster gives its
// proxies a bundle's roots, before it counts the cluster (Config.IstiodSettle).
const DefaultIstiodSettle = 30 * time.Second

// istiodHint is what an operator does when an istiod lacks roots (docs/istio.md, "Trust").
const istiodHint = "istiod takes federated roots from its mesh config: with PEM caCertificates re-run `meshfed istio config` and merge it (istiod reloads its mesh config); with spiffeBundleUrl istiod re-fetches every 30 minutes"

// probeHint is what an operator does when the probe of an istiod's PCDS fails.
const probeHint = "the prober (the federation replica, or the `meshfed istio source` beside istiod) must reach istiod's plaintext xDS (istiod's --grpcAddr, 15010 in an Istio install) at its --istiod-xds"

// rootSets are the fingerprints the bundle at the gate's sequence holds (want) and the
// job's other roots (gone: an istiod still giving them to its proxies has not applied it).
type rootSets struct {
	want, gone map[string]bool
}

func (j *Job) rootSets(r *records.Rotation, b *records.Bundle) (rootSets, error) {
	cur, err := trust.FromRecord(b, j.cfg.Now())
	if err != nil {
		return rootSets{}, fmt.Errorf("gate: bundles/%s: %w", j.td, err)
	}
	rs := rootSets{want: map[string]bool{}, gone: map[string]bool{}}
	for _, c := range cur.X509Roots {
		rs.want[trust.Fingerprint(c)] = true
	}
	all := j.oldRoots(r)
	if nr, err := j.newRoot(r); err == nil {
		all = append(all, nr)
	}
	for _, c := range all {
		if fp := trust.Fingerprint(c); !rs.want[fp] {
			rs.gone[fp] = true
		}
	}
	return rs, nil
}

// istiodWaiting says what keeps cluster c's istiods from counting as having the bundle
// ("" when nothing does; then the cluster is acked). It applies to a cluster whose ack says
// it feeds istiod (records.Ack.Istiod), or that lists istiods under acks/<c>/istio/, for
// every trust domain but the cluster's own (istiod's proxies get their own trust domain's
// roots from their CA, not from meshfed). Every istiod listed must give its proxies every
// root of the bundle and none of the job's roots the bundle left out, as the federation's
// probe of its PCDS reports (records.IstiodRoots), and then Config.IstiodSettle must pass
// (measured by this job's clock from the moment it first saw that, per sequence).
func (j *Job) istiodWaiting(ctx context.Context, c string, ack *records.Ack, seq uint64, rs rootSets) (string, error) {
	items, _, _, err := store.List[records.IstioStatus](ctx, j.st, j.st.KS.IstioAcksOf(c))
	if err != nil {
		return "", err
	}
	if !ack.Istiod && len(items) == 0 {
		return "", nil
	}
	cl, err := store.Get[records.Cluster](ctx, j.st, j.st.KS.Cluster(c))
	switch {
	case err == nil && cl.Value.TrustDomain == j.td:
		return "", nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return "", err
	}
	var why []string
	n := 0
	mismatch, probeFailed := false, false
	for _, it := range items {
		for _, is := range it.Value.Istiods {
			n++
			name := "istiod " + is.Node
			if is.Via != "" {
				name += " (via " + is.Via + ")"
			}
			r := is.Roots
			switch {
			case r == nil && is.Via != "":
				why = append(why, name+": its roots are not observed (`meshfed istio source` "+is.Via+" runs without --istiod-xds)")
				continue
			case r == nil:
				why = append(why, name+": its roots are not observed (federation replica "+it.Value.Instance+" runs without --istiod-xds)")
				continue
			case r.Error != "":
				why = append(why, name+": roots probe at "+r.Addr+": "+r.Error)
				probeFailed = true
				continue
			}
			has := map[string]bool{}
			for _, fp := range r.Fingerprints {
				has[fp] = true
			}
			var missing, stale []string
			for fp := range rs.want {
				if !has[fp] {
					missing = append(missing, short(fp))
				}
			}
			for fp := range rs.gone {
				if has[fp] {
					stale = append(stale, short(fp))
				}
			}
			sort.Strings(missing)
			sort.Strings(stale)
			mismatch = mismatch || len(missing) > 0 || len(stale) > 0
			if len(missing) > 0 {
				why = append(why, fmt.Sprintf("%s does not give its proxies root(s) %s", name, strings.Join(missing, ", ")))
			}
			if len(stale) > 0 {
				why = append(why, fmt.Sprintf("%s still gives its proxies root(s) %s the bundle no longer holds", name, strings.Join(stale, ", ")))
			}
		}
	}
	key := fmt.Sprintf("%s/%d", c, seq)
	if n == 0 {
		delete(j.istiodOK, key)
		return "no istiod is connected to its MCP source (--istio-mcp-listen); the gate needs at least one to report the roots", nil
	}
	if len(why) > 0 {
		delete(j.istiodOK, key)
		// Each hint only where it applies: a failed probe is not fixed in istiod's mesh config.
		var hints []string
		if mismatch {
			hints = append(hints, istiodHint)
		}
		if probeFailed {
			hints = append(hints, probeHint)
		}
		msg := strings.Join(why, "; ")
		if len(hints) > 0 {
			msg += " (" + strings.Join(hints, "; ") + ")"
		}
		return msg, nil
	}
	first, ok := j.istiodOK[key]
	if !ok {
		first = j.cfg.Now()
		j.istiodOK[key] = first
	}
	if until := first.Add(j.cfg.IstiodSettle); j.cfg.Now().Before(until) {
		return fmt.Sprintf("all %d istiod(s) give their proxies the roots of sequence %d; settling until %s (--istiod-settle %s) while istiod pushes them to its proxies",
			n, seq, until.UTC().Format(time.RFC3339), j.cfg.IstiodSettle), nil
	}
	return "", nil
}

// short names a fingerprint in messages (sha256: and 16 hex digits).
func short(fp string) string {
	if len(fp) > len("sha256:")+16 {
		return fp[:len("sha256:")+16]
	}
	return fp
}
