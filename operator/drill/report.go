package drill

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/operator/drill/internal/timeline"
)

// Report is what a drill did and measured. Field names are the --report JSON contract.
type Report struct {
	Plan        *Plan     `json:"plan"`
	CordonAt    time.Time `json:"cordon_at,omitzero"`
	LiftAt      time.Time `json:"lift_at,omitzero"`
	Ended       time.Time `json:"ended,omitzero"`
	Interrupted bool      `json:"interrupted"`
	// Federations says when each federation service (each replica) marked the failed
	// cluster down after the fault began and up after the lift, from the health view it
	// publishes (acks/<cluster>/health/<instance>); with or without traffic.
	Federations []FederationMark `json:"federations,omitempty"`
	Traffic     *TrafficReport   `json:"traffic,omitempty"`
	Notes       []string         `json:"notes,omitempty"`
}

// addFederationMarks puts each federation's down and up on the traffic's timeline.
func (rep *Report) addFederationMarks() {
	t := rep.Traffic
	if t == nil || rep.CordonAt.IsZero() {
		return
	}
	fault, lift := ms(rep.CordonAt.Sub(t.Start)), ms(rep.LiftAt.Sub(t.Start))
	for _, f := range rep.Federations {
		if f.DownAfterMs != nil {
			t.Marks = append(t.Marks, TimelineMark{AtMs: fault + *f.DownAfterMs, Label: rep.Plan.Fail + " down at " + f.Federation})
		}
		if f.UpAfterMs != nil && !rep.LiftAt.IsZero() {
			t.Marks = append(t.Marks, TimelineMark{AtMs: lift + *f.UpAfterMs, Label: rep.Plan.Fail + " up at " + f.Federation})
		}
	}
	sort.SliceStable(t.Marks, func(i, j int) bool { return t.Marks[i].AtMs < t.Marks[j].AtMs })
}

// federationLines says, per federation service, when its health checks marked the failed
// cluster down and up.
func (rep *Report) federationLines() []string {
	p := rep.Plan
	var out []string
	for _, f := range rep.Federations {
		s := f.Federation + "'s federation (its health checks): "
		switch {
		case f.AlreadyDown:
			s += fmt.Sprintf("had %s down before the %s began", p.Fail, p.event())
		case f.DownAfterMs != nil:
			s += fmt.Sprintf("marked %s down %.0f ms after the %s began", p.Fail, *f.DownAfterMs, p.event())
			if f.Downs > 1 {
				s += fmt.Sprintf(" (down %d times: it flapped)", f.Downs)
			}
		case p.event() == "cordon":
			s += fmt.Sprintf("kept %s up (a cordon leaves the gateways alone: the planners drop %s because of the cordon itself)", p.Fail, p.Fail)
		default:
			s += fmt.Sprintf("never marked %s down during the fault", p.Fail)
		}
		switch {
		case f.UpAfterMs != nil && *f.UpAfterMs < 0:
			s += fmt.Sprintf(", up again %.0f ms before the drill's lift", -*f.UpAfterMs)
		case f.UpAfterMs != nil:
			s += fmt.Sprintf(", up again %.0f ms after the lift", *f.UpAfterMs)
		case (f.DownAfterMs != nil || f.AlreadyDown) && !rep.Interrupted:
			s += fmt.Sprintf(", and had not marked it up again when the drill ended")
		}
		if f.Gone {
			s += " (its record went away during the drill: the replica stopped or lost etcd)"
		}
		out = append(out, s+".")
	}
	if len(rep.Federations) == 0 && !rep.CordonAt.IsZero() && len(rep.Notes) == 0 {
		out = append(out, fmt.Sprintf("No federation service published its view of %s's gateways (acks/<cluster>/health/; older federation services do not): when each marked it down and up is unknown.", p.Fail))
	}
	return out
}

// TrafficReport is the load generator's measurements. Times in milliseconds are relative
// to the moment named in the field (cordon or lift), *_at_ms to the traffic's start.
type TrafficReport struct {
	From   string    `json:"from"`
	Target string    `json:"target"`
	Rate   int       `json:"rate"`
	Start  time.Time `json:"start"`
	// Requests and Errors in total; ByCluster counts requests by serving cluster.
	Requests  int            `json:"requests"`
	Errors    int            `json:"errors"`
	ByCluster map[string]int `json:"by_cluster"`
	// BeforeShare is the failed cluster's share of the answered requests before the cordon.
	BeforeRequests int     `json:"before_requests"`
	BeforeShare    float64 `json:"before_share_failed"`
	// DrainedAfterMs: from the cordon until the end of the last request the failed
	// cluster served while cordoned (0: none did). Nil when it never served --from.
	DrainedAfterMs *float64 `json:"drained_after_ms"`
	// DetectedAfterMs (gateway faults): from the fault's start until the start of the last
	// request the router still sent to the failed cluster during it (0: none).
	DetectedAfterMs *float64 `json:"detected_after_ms,omitempty"`
	// HitsWhileCordoned counts requests the failed cluster served while cordoned.
	HitsWhileCordoned int `json:"hits_while_cordoned"`
	// ErrorsDuringSwitch counts failed requests started from one request timeout before
	// the cordon until one request timeout after DrainedAfterMs.
	ErrorsDuringSwitch  int `json:"errors_during_switch"`
	ErrorsWhileCordoned int `json:"errors_while_cordoned"`
	// BackAfterMs: from the lift until the end of the first request the failed cluster
	// served again. Nil when it did not come back within the recovery timeout.
	BackAfterMs *float64         `json:"back_after_ms"`
	Notes       []string         `json:"notes,omitempty"`
	ErrorKinds  map[string]int   `json:"error_kinds,omitempty"`
	Orders      []OrderChange    `json:"order_changes,omitempty"`
	Marks       []TimelineMark   `json:"marks"`
	BucketMs    int64            `json:"bucket_ms"`
	Timeline    []TimelineBucket `json:"timeline"`
	Samples     []TrafficSample  `json:"samples"`
	Route       string           `json:"route"`
	// Federations says when each observed federation service marked the failed cluster
	// down (after the fault began) and up (after the lift).
	Federations []FederationMark `json:"federations,omitempty"`
}

// FederationMark is one federation service's view of the failed cluster: how long after
// the fault began it marked it down (detection), how long after the lift up again. Nil:
// not seen within the drill.
type FederationMark struct {
	// Federation is the cluster whose federation service this is ("east"; with several
	// replicas "east/<instance>"), or for the traffic's router a description of it.
	Federation string `json:"federation"`
	// Instance is the replica (health records only).
	Instance string `json:"instance,omitempty"`
	// Source is where the marks come from: "health <key>" (the replica's published health
	// view, acks/<cluster>/health/<instance>: times by that replica's clock), or the
	// traffic's router's order changes (Report.Traffic.Federations).
	Source      string   `json:"source,omitempty"`
	DownAfterMs *float64 `json:"down_after_ms"`
	UpAfterMs   *float64 `json:"up_after_ms"`
	// Downs counts the times it marked the cluster down during the drill (more than one:
	// it flapped); AlreadyDown: it was down before the fault began.
	Downs       int  `json:"downs,omitempty"`
	AlreadyDown bool `json:"already_down,omitempty"`
	// Gone: the replica's record disappeared during the drill (it stopped, or lost etcd).
	Gone bool `json:"gone,omitempty"`
}

// OrderChange is the router's failover order changing (plan mode).
type OrderChange struct {
	AtMs  float64 `json:"at_ms"`
	Order string  `json:"order"`
}

// TimelineMark is a moment of the drill.
type TimelineMark struct {
	AtMs  float64 `json:"at_ms"`
	Label string  `json:"label"`
}

// TimelineBucket counts requests (by start time) per serving cluster in one bucket.
type TimelineBucket struct {
	AtMs      int64          `json:"at_ms"`
	ByCluster map[string]int `json:"by_cluster"`
	Errors    int            `json:"errors"`
}

// TrafficSample is one request.
type TrafficSample struct {
	AtMs      float64 `json:"at_ms"`
	LatencyMs float64 `json:"latency_ms"`
	Cluster   string  `json:"cluster,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// WriteTable renders the drill plan (dry run) or the human summary of a finished drill.
func (rep *Report) WriteTable(w io.Writer) error {
	p := rep.Plan
	if p == nil {
		return nil
	}
	if p.DryRun {
		fmt.Fprintln(w, "DRY RUN: nothing is changed.")
	}
	kind := p.kind()
	fmt.Fprintf(w, "drill %s: %s %s for %s, %v (key %s, lease TTL %v)\n", p.ID, kind, p.Fail, p.Service, p.Duration, p.Key, p.LeaseTTL)
	if p.DryRun || rep.CordonAt.IsZero() {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tCLIENTS IN\tPORT\tNOW\tDURING THE DRILL\tIMPACT")
		for _, a := range p.Affected {
			if len(a.Clients) == 0 {
				fmt.Fprintf(tw, "%s\t(none)\t\t\t\tno cluster routes to %s for it\n", a.Service, p.Fail)
			}
			for _, c := range a.Clients {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", a.Service, c.Cluster, c.Port, planner.JoinOrder(c.Before), planner.JoinOrder(c.After), c.Impact)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if p.Traffic != nil {
			fmt.Fprintf(w, "traffic: %d req/s from %s to %s: %s\n", p.Traffic.Rate, p.Traffic.From, p.Traffic.Target, p.Traffic.Route)
		}
	}
	for _, x := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", x)
	}
	if p.DryRun {
		return nil
	}
	for _, l := range rep.SummaryLines() {
		fmt.Fprintln(w, l)
	}
	return nil
}

// kind is the fault kind ("cordon" for drills from before faults).
func (p *Plan) kind() string {
	if p.Fault == "" {
		return "cordon"
	}
	return p.Fault
}

// event is what the summary calls the drill's action: the cordon or the fault.
func (p *Plan) event() string {
	if p.kind() == "cordon" {
		return "cordon"
	}
	return "fault"
}

// SummaryLines says in plain words what happened.
func (rep *Report) SummaryLines() []string {
	var out []string
	p := rep.Plan
	if !rep.CordonAt.IsZero() {
		held := rep.LiftAt.Sub(rep.CordonAt).Round(10e6)
		s := fmt.Sprintf("The cordon of %s held for %v.", p.Fail, held)
		if p.Fault != "" && p.Fault != "cordon" {
			s = fmt.Sprintf("The fault %s at %s's gateways held for %v (no cordon: the other clusters had to detect it).", p.Fault, p.Fail, held)
		}
		if rep.Interrupted {
			s += " (interrupted)"
		}
		out = append(out, s)
	}
	out = append(out, rep.federationLines()...)
	for _, n := range rep.Notes {
		out = append(out, "Note: "+n+".")
	}
	t := rep.Traffic
	if t == nil {
		return out
	}
	var by []string
	for _, c := range slices.Sorted(maps.Keys(t.ByCluster)) {
		by = append(by, fmt.Sprintf("%s %d", c, t.ByCluster[c]))
	}
	out = append(out, fmt.Sprintf("Traffic: %d requests from %s's point of view to %s (%s), %d errors.", t.Requests, t.From, t.Target, strings.Join(by, ", "), t.Errors))
	if t.BeforeRequests > 0 {
		out = append(out, fmt.Sprintf("Before the %s %s served %.0f%% of %d answered requests.", p.event(), p.Fail, 100*t.BeforeShare, t.BeforeRequests))
	}
	for _, f := range t.Federations {
		s := "The traffic's router, " + f.Federation + ": "
		if f.DownAfterMs != nil {
			s += fmt.Sprintf("marked %s down %.0f ms after the drill began", p.Fail, *f.DownAfterMs)
		} else {
			s += fmt.Sprintf("never marked %s down during the drill", p.Fail)
		}
		if f.UpAfterMs != nil {
			s += fmt.Sprintf(", up again %.0f ms after the lift", *f.UpAfterMs)
		}
		out = append(out, s+".")
	}
	if t.DetectedAfterMs != nil {
		out = append(out, fmt.Sprintf("Detection: requests stopped going to %s %.0f ms after the fault began; %d of them failed during the switch (from one request timeout before the fault until one after that).",
			p.Fail, *t.DetectedAfterMs, t.ErrorsDuringSwitch))
	}
	if t.DrainedAfterMs != nil && t.DetectedAfterMs == nil {
		out = append(out, fmt.Sprintf("No request reached %s from %.0f ms after the %s began (%d requests still reached it during the %s); %d errors during the switch, %d during the %s.",
			p.Fail, *t.DrainedAfterMs, p.event(), t.HitsWhileCordoned, p.event(), t.ErrorsDuringSwitch, t.ErrorsWhileCordoned, p.event()))
	}
	if t.BackAfterMs != nil {
		s := fmt.Sprintf("Traffic was back on %s %.0f ms after the %s lifted.", p.Fail, *t.BackAfterMs, p.event())
		if strings.HasPrefix(t.Route, "plan of") {
			// The drill's own planner: its damping is known here (a federation's is not).
			s = strings.TrimSuffix(s, ".") + fmt.Sprintf(" (this drill's planner damps re-additions: at most one reassignment per %v).", p.MinReassign)
		}
		out = append(out, s)
	}
	if len(t.ErrorKinds) > 0 {
		var ks []string
		for _, k := range slices.Sorted(maps.Keys(t.ErrorKinds)) {
			ks = append(ks, fmt.Sprintf("%s ×%d", k, t.ErrorKinds[k]))
		}
		out = append(out, "Errors: "+strings.Join(ks, ", ")+".")
	}
	for _, n := range t.Notes {
		out = append(out, "Note: "+n+".")
	}
	return out
}

// ReportPaths are the files WriteReport writes for --report FILE: FILE (JSON) and the
// timeline page beside it (FILE with .html instead of its extension).
func ReportPaths(file string) (jsonPath, htmlPath string) {
	ext := filepath.Ext(file)
	base := strings.TrimSuffix(file, ext)
	if ext == ".html" {
		return base + ".json", file
	}
	return file, base + ".html"
}

// WriteReport writes the JSON report and the HTML timeline.
func (rep *Report) WriteReport(file string) (jsonPath, htmlPath string, err error) {
	jsonPath, htmlPath = ReportPaths(file)
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return "", "", fmt.Errorf("drill report: %w", err)
	}
	var buf bytes.Buffer
	if err := timeline.WriteHTML(&buf, rep.chart()); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(htmlPath, buf.Bytes(), 0o644); err != nil {
		return "", "", fmt.Errorf("drill report: %w", err)
	}
	return jsonPath, htmlPath, nil
}

func (rep *Report) chart() timeline.Chart {
	p := rep.Plan
	c := timeline.Chart{Title: fmt.Sprintf("meshfed drill %s: %s of %s (%s)", p.ID, p.kind(), p.Fail, p.Service), Summary: rep.SummaryLines()}
	c.Facts = append(c.Facts, [2]string{"drill key", p.Key}, [2]string{"fault", p.kind()}, [2]string{"lease TTL", p.LeaseTTL.String()}, [2]string{"duration", p.Duration.String()})
	for _, f := range rep.Federations {
		v := "not marked down"
		if f.DownAfterMs != nil {
			v = fmt.Sprintf("down %.0f ms after the %s began", *f.DownAfterMs, p.event())
		}
		if f.UpAfterMs != nil {
			v += fmt.Sprintf(", up %.0f ms after the lift", *f.UpAfterMs)
		}
		c.Facts = append(c.Facts, [2]string{f.Federation + "'s federation", v})
	}
	t := rep.Traffic
	if t == nil {
		c.Summary = append(c.Summary, "No traffic was driven (the drill had no traffic source and target): no timeline.")
		return c
	}
	c.BucketMs = t.BucketMs
	c.Facts = append(c.Facts, [2]string{"from", t.From}, [2]string{"target", t.Target}, [2]string{"route", t.Route}, [2]string{"rate", fmt.Sprintf("%d req/s", t.Rate)})
	for _, o := range t.Orders {
		c.Facts = append(c.Facts, [2]string{fmt.Sprintf("order at %.1fs", o.AtMs/1000), o.Order})
	}
	clusters := map[string]bool{}
	for _, b := range t.Timeline {
		for k := range b.ByCluster {
			clusters[k] = true
		}
	}
	names := slices.Sorted(maps.Keys(clusters))
	sort.Strings(names)
	for _, n := range names {
		s := timeline.Series{Name: n}
		for _, b := range t.Timeline {
			s.Values = append(s.Values, b.ByCluster[n])
		}
		c.Series = append(c.Series, s)
	}
	for _, b := range t.Timeline {
		c.Errors = append(c.Errors, b.Errors)
	}
	for _, m := range t.Marks {
		c.Marks = append(c.Marks, timeline.Mark{AtMs: int64(m.AtMs), Label: m.Label})
	}
	return c
}
