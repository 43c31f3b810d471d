package drill

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator/drill/internal/loadgen"
)

// traffic runs the generator for the whole drill and collects results.
type traffic struct {
	r      *Request
	start  time.Time
	cancel context.CancelFunc
	done   chan struct{}
	router *planRouter

	mu      sync.Mutex
	results []loadgen.Result
	marks   []TimelineMark
	orders  []OrderChange
	phase   string
	newRes  chan struct{}
	route   string
}

func startTraffic(ctx context.Context, st *store.Store, r *Request, tgt *Target, cl *client, prog io.Writer) (*traffic, error) {
	t := &traffic{r: r, start: time.Now(), done: make(chan struct{}), phase: "warmup", newRes: make(chan struct{}, 1)}
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t.cancel = cancel
	var router loadgen.Router
	onPlan := func(order string) {
		at := time.Since(t.start)
		t.mu.Lock()
		t.orders = append(t.orders, OrderChange{AtMs: ms(at), Order: order})
		t.mu.Unlock()
		fmt.Fprintf(prog, "[%6.1fs] %s's order for %s/%s:%d is now %s\n", at.Seconds(), r.From, tgt.Namespace, tgt.Name, tgt.Port, order)
	}
	switch {
	case tgt.Direct:
		router = directRouter{addr: tgt.Addr, sni: r.TargetSNI}
		t.route = "direct " + tgt.Addr
	case r.XDS != "":
		xr := newXDSRouter(r.XDS, r.From, tgt.Namespace, tgt.Name, tgt.Port, onPlan)
		go xr.run(gctx)
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		err := xr.waitFirst(sctx)
		scancel()
		if err != nil {
			cancel()
			return nil, fmt.Errorf("drill: xDS server %s: %w", r.XDS, err)
		}
		router = xr
		t.route = "xDS " + r.XDS + " EDS " + names.ClusterName(tgt.Namespace, tgt.Name, tgt.Port) + ", SNI " + names.ServiceSNI(tgt.Namespace, tgt.Name, tgt.Port)
	default:
		pr, err := newPlanRouter(st, r.From, tgt.Namespace, tgt.Name, tgt.Port, r.MinReassign, onPlan)
		if err != nil {
			cancel()
			return nil, err
		}
		go pr.run(gctx)
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		err = pr.waitSynced(sctx)
		scancel()
		if err != nil {
			cancel()
			return nil, fmt.Errorf("drill: read the keyspace for the traffic from %s: %w", r.From, err)
		}
		router, t.router = pr, pr
		t.route = "plan of " + r.From + " (etcd + federation/planner), SNI " + names.ServiceSNI(tgt.Namespace, tgt.Name, tgt.Port)
	}
	gen := &loadgen.Generator{Router: router, Rate: r.Rate, Timeout: r.RequestTimeout, TLS: cl.tls, Identify: cl.identify, GRPC: cl.grpc}
	go func() {
		defer close(t.done)
		_ = gen.Run(gctx, func(res loadgen.Result) {
			t.mu.Lock()
			t.results = append(t.results, res)
			t.mu.Unlock()
			select {
			case t.newRes <- struct{}{}:
			default:
			}
		})
	}()
	go t.progress(gctx, prog)
	return t, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (t *traffic) mark(at time.Time, label string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.marks = append(t.marks, TimelineMark{AtMs: ms(at.Sub(t.start)), Label: label})
	switch {
	case strings.HasPrefix(label, "cordon"):
		t.phase = "cordoned"
	case label == "lift":
		t.phase = "lifted"
	default: // "<fault> <cluster>": a gateway fault began
		t.phase = "fault"
	}
}

// progress prints one line per interval: requests per serving cluster and errors.
func (t *traffic) progress(ctx context.Context, w io.Writer) {
	tick := time.NewTicker(t.r.ProgressInterval)
	defer tick.Stop()
	seen := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.mu.Lock()
		batch := t.results[seen:]
		seen = len(t.results)
		phase := t.phase
		t.mu.Unlock()
		by := map[string]int{}
		errs := 0
		for _, r := range batch {
			if r.Err != "" {
				errs++
			} else {
				by[r.Cluster]++
			}
		}
		var parts []string
		for _, c := range slices.Sorted(maps.Keys(by)) {
			parts = append(parts, fmt.Sprintf("%s %d", c, by[c]))
		}
		if len(parts) == 0 {
			parts = []string{"no answers"}
		}
		fmt.Fprintf(w, "[%6.1fs] %-9s %s  errors %d\n", time.Since(t.start).Seconds(), phase, strings.Join(parts, "  "), errs)
	}
}

// waitBack waits until the failed cluster serves a request started after the lift (or
// timeout), then one more second of traffic for the picture.
func (t *traffic) waitBack(ctx context.Context, fail string, lift time.Time, timeout time.Duration, prog io.Writer) {
	if !t.servedBefore(fail) {
		fmt.Fprintf(prog, "%s served none of the traffic before the drill: not waiting for it to come back\n", fail)
		ctxtime.Sleep(ctx, 2*time.Second)
		return
	}
	fmt.Fprintf(prog, "waiting up to %v for traffic to come back to %s\n", timeout, fail)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		back := false
		for i := len(t.results) - 1; i >= 0; i-- {
			r := t.results[i]
			if r.Start.Before(lift) {
				break
			}
			if r.Cluster == fail {
				back = true
				break
			}
		}
		t.mu.Unlock()
		if back {
			ctxtime.Sleep(ctx, time.Second)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-t.newRes:
		}
	}
}

func (t *traffic) servedBefore(fail string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.results {
		if r.Cluster == fail {
			return true
		}
	}
	return false
}

func (t *traffic) stop() {
	t.cancel()
	<-t.done
}

// finish stops the traffic and computes the report.
func (t *traffic) finish(rep *Report, fail string, interrupted bool) *Report {
	t.stop()
	t.mu.Lock()
	defer t.mu.Unlock()
	res := append([]loadgen.Result(nil), t.results...)
	sort.Slice(res, func(i, j int) bool { return res[i].Start.Before(res[j].Start) })
	tr := &TrafficReport{From: t.r.From, Target: t.r.Target, Rate: t.r.Rate, Start: t.start.UTC(),
		ByCluster: map[string]int{}, ErrorKinds: map[string]int{}, Orders: t.orders, Marks: t.marks, Route: t.route,
		Samples: make([]TrafficSample, 0, len(res)), Timeline: []TimelineBucket{}}
	cordon, lift := rep.CordonAt, rep.LiftAt
	timeout := t.r.RequestTimeout
	var lastHit, lastRouted time.Time
	var firstBack time.Time
	beforeFail := 0
	for _, r := range res {
		end := r.Start.Add(r.Latency)
		s := TrafficSample{AtMs: ms(r.Start.Sub(t.start)), LatencyMs: ms(r.Latency), Cluster: r.Cluster, Error: r.Err}
		tr.Samples = append(tr.Samples, s)
		tr.Requests++
		if r.Err != "" {
			tr.Errors++
			tr.ErrorKinds[errorKind(r.Err)]++
		} else {
			tr.ByCluster[r.Cluster]++
		}
		switch {
		case cordon.IsZero() || r.Start.Before(cordon):
			if r.Err == "" {
				tr.BeforeRequests++
			}
			if r.Cluster == fail {
				beforeFail++
			}
		case lift.IsZero() || r.Start.Before(lift):
			if r.Err != "" {
				tr.ErrorsWhileCordoned++
			}
			if r.Expected == fail && r.Start.After(lastRouted) {
				lastRouted = r.Start
			}
			if r.Cluster == fail {
				tr.HitsWhileCordoned++
				if end.After(lastHit) {
					lastHit = end
				}
			}
		default:
			if r.Cluster == fail && (firstBack.IsZero() || end.Before(firstBack)) {
				firstBack = end
			}
		}
	}
	if tr.BeforeRequests > 0 {
		tr.BeforeShare = float64(beforeFail) / float64(tr.BeforeRequests)
	}
	if !cordon.IsZero() && beforeFail > 0 {
		d := 0.0
		if !lastHit.IsZero() {
			d = ms(lastHit.Sub(cordon))
		}
		tr.DrainedAfterMs = &d
		if rep.Plan != nil && rep.Plan.event() == "fault" {
			// Under a fault the failed cluster answers nothing: detection is when requests
			// stopped being sent to it, and the switch lasts until then.
			det := 0.0
			if !lastRouted.IsZero() {
				det = ms(lastRouted.Sub(cordon))
			}
			tr.DetectedAfterMs = &det
			d = max(d, det)
		}
		winEnd := cordon.Add(time.Duration(d*float64(time.Millisecond)) + timeout)
		for _, r := range res {
			if r.Err != "" && !r.Start.Before(cordon.Add(-timeout)) && r.Start.Before(winEnd) {
				tr.ErrorsDuringSwitch++
			}
		}
		if lastHit.IsZero() && tr.DetectedAfterMs == nil {
			tr.Notes = append(tr.Notes, fmt.Sprintf("no request reached %s after the cordon was written (resolution: one request every %v)", fail, time.Second/time.Duration(t.r.Rate)))
		}
		if !lift.IsZero() && !firstBack.IsZero() {
			b := ms(firstBack.Sub(lift))
			tr.BackAfterMs = &b
		} else if !lift.IsZero() && !interrupted {
			tr.Notes = append(tr.Notes, fmt.Sprintf("traffic did not come back to %s within %v after the lift", fail, t.r.RecoveryTimeout))
		}
	} else if !cordon.IsZero() {
		tr.Notes = append(tr.Notes, t.noSwitchNote(fail, cordon, tr))
	}
	t.federationMarks(tr, fail, cordon, lift)
	// Timeline buckets: about 200 over the run, at least 100 ms.
	total := time.Since(t.start)
	if n := len(res); n > 0 {
		total = max(total, res[n-1].Start.Sub(t.start)+time.Millisecond)
	}
	bucket := max(100*time.Millisecond, (total / 200).Round(100*time.Millisecond))
	tr.BucketMs = bucket.Milliseconds()
	nb := int(total/bucket) + 1
	for i := 0; i < nb; i++ {
		tr.Timeline = append(tr.Timeline, TimelineBucket{AtMs: int64(i) * tr.BucketMs, ByCluster: map[string]int{}})
	}
	for _, r := range res {
		i := int(r.Start.Sub(t.start) / bucket)
		if i < 0 || i >= nb {
			continue
		}
		if r.Err != "" {
			tr.Timeline[i].Errors++
		} else {
			tr.Timeline[i].ByCluster[r.Cluster]++
		}
	}
	rep.Traffic = tr
	return rep
}

// federationMarks finds, in the order changes the traffic's router saw, when the --from
// cluster's federation service (with --xds: its EDS; else the drill's own planner and
// health checks) dropped the failed cluster from the order after the fault began, and
// when it put it back after the lift, and marks both on the timeline.
func (t *traffic) federationMarks(tr *TrafficReport, fail string, start, lift time.Time) {
	if start.IsZero() || len(t.orders) == 0 {
		return
	}
	who := t.r.From + "'s federation (EDS)"
	if t.r.XDS == "" {
		who = "the drill's planner (health checks from this machine)"
	}
	fm := FederationMark{Federation: who}
	in := func(order string) bool {
		head, _, _ := strings.Cut(order, " (")
		for _, level := range strings.Split(head, " > ") {
			for _, c := range strings.Split(level, "+") {
				if c == fail {
					return true
				}
			}
		}
		return false
	}
	s0, l0 := ms(start.Sub(t.start)), ms(lift.Sub(t.start))
	for _, o := range t.orders {
		switch {
		case fm.DownAfterMs == nil && o.AtMs >= s0 && (lift.IsZero() || o.AtMs < l0) && !in(o.Order):
			d := o.AtMs - s0
			fm.DownAfterMs = &d
			tr.Marks = append(tr.Marks, TimelineMark{AtMs: o.AtMs, Label: fail + " down at " + t.r.From})
		case fm.DownAfterMs != nil && fm.UpAfterMs == nil && !lift.IsZero() && o.AtMs >= l0 && in(o.Order):
			u := o.AtMs - l0
			fm.UpAfterMs = &u
			tr.Marks = append(tr.Marks, TimelineMark{AtMs: o.AtMs, Label: fail + " up at " + t.r.From})
		}
	}
	tr.Federations = append(tr.Federations, fm)
}

// noSwitchNote says why the switch could not be measured, claiming only what was seen:
// no answers at all, or answers from other clusters while the order (when known) put the
// failed cluster first, or not.
func (t *traffic) noSwitchNote(fail string, cordon time.Time, tr *TrafficReport) string {
	if tr.BeforeRequests == 0 {
		sent := 0
		for _, s := range tr.Samples {
			if s.AtMs < ms(cordon.Sub(t.start)) {
				sent++
			}
		}
		return fmt.Sprintf("none of the %d requests sent before the drill began was answered (see the errors): the switch away from %s could not be measured", sent, fail)
	}
	order := ""
	for _, o := range t.orders {
		if o.AtMs <= ms(cordon.Sub(t.start)) {
			order = o.Order
		}
	}
	switch {
	case order == "":
		return fmt.Sprintf("%s served none of the %d requests answered before the drill began: nothing to switch", fail, tr.BeforeRequests)
	case strings.HasPrefix(order, fail+" ") || order == fail:
		return fmt.Sprintf("%s's order put %s first before the drill (%s), yet none of the %d answered requests was served by it", t.r.From, fail, order, tr.BeforeRequests)
	default:
		return fmt.Sprintf("%s was not first in %s's order before the drill (%s): nothing to switch", fail, t.r.From, order)
	}
}

// errorKind names an error's cause in plain words for counting (addresses and numbers
// vary; the first match wins, the most specific first).
func errorKind(e string) string {
	for _, c := range errorCauses {
		if strings.Contains(e, c.match) {
			return c.cause
		}
	}
	if len(e) > 80 {
		return e[:80]
	}
	return e
}

var errorCauses = []struct{ match, cause string }{
	{"certificate required", "the workload demands a client certificate (mTLS) and the drill presented none"},
	{"bad certificate", "the workload refused the drill's client certificate"},
	{"unknown certificate authority", "the workload does not trust the drill's client certificate"},
	{"certificate expired", "a certificate has expired"},
	{"of no member's trust domain", "the workload's SPIFFE ID is of no member's trust domain"},
	{"no trust bundle of", "the workload's trust domain has no bundle in etcd"},
	{"not signed by the bundle", "the workload's certificate does not chain to its trust domain's bundle"},
	{"names no cluster", "the workload's certificate has no SPIFFE ID"},
	{"the workload answered", "the workload answered its health check, but not SERVING"},
	{"Unimplemented", "the workload has no gRPC health service"},
	{"connection refused", "connection refused (nothing listening)"},
	{"connection reset", "connection reset (RST)"},
	{"broken pipe", "connection reset (RST)"},
	{"i/o timeout", "no answer within the request timeout"},
	{"deadline exceeded", "no answer within the request timeout"},
	{"DeadlineExceeded", "no answer within the request timeout"},
	{"no route", "no route: no healthy endpoint in the failover order"},
	{"unrecognized name", "the gateway does not route this service (TLS alert unrecognized_name)"},
	{"internal error", "the gateway could not reach a workload (TLS alert internal_error)"},
	{"EOF", "the connection closed without an answer"},
	{"does not name its cluster", "the answer did not name its cluster"},
	{"in flight", "too many requests in flight: the drill skipped one"},
	{"tls", "TLS handshake failed"},
}
