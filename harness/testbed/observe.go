package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshfed/meshfed/harness/devup"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// Call is one call of a testbed client: devup's JSON line plus the serving cluster, from
// the workload's SPIFFE ID (empty for a failed call).
type Call struct {
	devup.Call
	Cluster string
}

// End is when the call finished.
func (c Call) End() time.Time { return c.At.Add(time.Duration(c.Millis * float64(time.Millisecond))) }

// Calls records a client's calls.
type Calls struct {
	tdCluster map[string]string
	mu        sync.Mutex
	calls     []Call
}

func newCalls(tdCluster map[string]string) *Calls { return &Calls{tdCluster: tdCluster} }

func (cs *Calls) add(line string) {
	var c Call
	if json.Unmarshal([]byte(line), &c.Call) != nil {
		return
	}
	if c.Error == "" {
		if u, err := url.Parse(c.SPIFFEID); err == nil {
			c.Cluster = cs.tdCluster[u.Host]
		}
		if c.Cluster == "" {
			c.Error = "served by an unknown identity " + c.SPIFFEID
		}
	}
	cs.mu.Lock()
	cs.calls = append(cs.calls, c)
	cs.mu.Unlock()
}

// Since lists the calls that started at or after t, by start time.
func (cs *Calls) Since(t time.Time) []Call {
	cs.mu.Lock()
	var out []Call
	for _, c := range cs.calls {
		if !c.At.Before(t) {
			out = append(out, c)
		}
	}
	cs.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// Between lists the calls that started in [from, to).
func (cs *Calls) Between(from, to time.Time) []Call {
	var out []Call
	for _, c := range cs.Since(from) {
		if c.At.Before(to) {
			out = append(out, c)
		}
	}
	return out
}

// WaitServedBy waits until a call that started after t was served by cluster.
func (cs *Calls) WaitServedBy(ctx context.Context, cluster string, t time.Time, d time.Duration) error {
	if waitfor.Poll(d, func() bool {
		for _, c := range cs.Since(t) {
			if c.Cluster == cluster {
				return true
			}
		}
		return ctx.Err() != nil
	}) && ctx.Err() == nil {
		return nil
	}
	return fmt.Errorf("no call served by %s within %v; last calls: %s", cluster, d, Summary(lastN(cs.Since(t), 5)))
}

func lastN(cs []Call, n int) []Call { return cs[max(0, len(cs)-n):] }

// Summary counts calls per serving cluster and errors per kind, e.g.
// "west 97, north 3, error(DeadlineExceeded) 2".
func Summary(cs []Call) string {
	counts := map[string]int{}
	for _, c := range cs {
		k := c.Cluster
		if c.Error != "" {
			k = "error(" + ErrorKind(c.Error) + ")"
		}
		counts[k]++
	}
	if len(counts) == 0 {
		return "no calls"
	}
	return devup.FormatCounts(counts)
}

// ErrorKind is the gRPC code of a call error ("code = Unavailable desc = ..."), or the
// error's first words.
func ErrorKind(e string) string {
	if _, rest, ok := strings.Cut(e, "code = "); ok {
		code, _, _ := strings.Cut(rest, " ")
		return code
	}
	if len(e) > 40 {
		e = e[:40]
	}
	return e
}

// Errors are the failed calls among cs.
func Errors(cs []Call) []Call {
	var out []Call
	for _, c := range cs {
		if c.Error != "" {
			out = append(out, c)
		}
	}
	return out
}

// Failover is how one client's traffic left a cluster after a fault at At.
type Failover struct {
	Client string // the cluster whose client this is
	From   string // the cluster it was served by
	To     string // the cluster that served it afterwards
	// After: from the fault to the end of the first call served by To after which no call
	// was served by From.
	After time.Duration
	// Failed calls that started between the fault and that call's end.
	Failed int
	Errors string // their kinds
}

// WaitFailover waits until the client of c is served by a cluster other than from, with
// every later call (for settle) not served by from, and measures it.
func (c *Cluster) WaitFailover(ctx context.Context, from string, at time.Time, timeout, settle time.Duration) (Failover, error) {
	f := Failover{Client: c.Spec.Name, From: from}
	var first *Call
	ok := waitfor.Poll(timeout+settle, func() bool {
		first = nil
		calls := c.Calls.Since(at)
		for i := range calls {
			x := calls[i]
			switch {
			case x.Cluster == from:
				first = nil // still served by from after this
			case x.Cluster != "" && first == nil:
				first = &calls[i]
			}
		}
		if first == nil || ctx.Err() != nil {
			return ctx.Err() != nil
		}
		return time.Since(first.End()) >= settle
	})
	if !ok || first == nil {
		return f, fmt.Errorf("%s's client did not leave %s within %v: %s", c.Spec.Name, from, timeout, Summary(c.Calls.Since(at)))
	}
	f.To, f.After = first.Cluster, first.End().Sub(at)
	errs := Errors(c.Calls.Between(at, first.End()))
	f.Failed, f.Errors = len(errs), Summary(errs)
	return f, nil
}

// GatewayState is one row of a federation's /debug/xds gateway table.
type GatewayState struct {
	Cluster   string `json:"cluster"`
	Gateway   string `json:"gateway"`
	State     string `json:"state"`
	Since     string `json:"since"`
	LastError string `json:"last_error,omitempty"`
}

// SinceTime parses Since.
func (g GatewayState) SinceTime() time.Time {
	t, _ := time.Parse("2006-01-02T15:04:05.000Z", g.Since)
	return t
}

// Priority is one priority level of a served plan.
type Priority struct {
	Priority  int      `json:"priority"`
	Cluster   string   `json:"cluster"`
	Endpoints []string `json:"endpoints"`
	Stale     bool     `json:"stale,omitempty"`
}

// DebugXDS is a federation's /debug/xds.
type DebugXDS struct {
	Services []struct {
		Service string `json:"service"`
		Ports   []struct {
			Port       uint32     `json:"port"`
			Priorities []Priority `json:"priorities"`
		} `json:"ports"`
	} `json:"services"`
	Gateways []GatewayState `json:"gateways"`
}

// Order is the served order of namespace/name (first port), cluster names by priority.
func (d *DebugXDS) Order(service string) []string {
	for _, s := range d.Services {
		if s.Service == service && len(s.Ports) > 0 {
			var out []string
			for _, p := range s.Ports[0].Priorities {
				out = append(out, p.Cluster)
			}
			return out
		}
	}
	return nil
}

// Gateway is the health row of cluster's gateway (zero if not checked).
func (d *DebugXDS) Gateway(cluster string) GatewayState {
	for _, g := range d.Gateways {
		if g.Cluster == cluster {
			return g
		}
	}
	return GatewayState{}
}

// Import is one service of a federation's /debug/imports.
type Import struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Clusters  []struct {
		Cluster        string     `json:"cluster"`
		ReadyEndpoints int        `json:"ready_endpoints"`
		Stale          bool       `json:"stale"`
		StaleSince     *time.Time `json:"stale_since,omitempty"`
		Revision       int64      `json:"revision"`
	} `json:"clusters"`
}

// XDS reads the federation's /debug/xds.
func (c *Cluster) XDS(ctx context.Context) (*DebugXDS, error) {
	var d DebugXDS
	if code, err := httpGet(ctx, c.AdminAddr, "/debug/xds", &d); err != nil || code != 200 {
		return nil, fmt.Errorf("%s /debug/xds: %d %v", c.Spec.Name, code, err)
	}
	return &d, nil
}

// Imports reads the federation's /debug/imports.
func (c *Cluster) Imports(ctx context.Context) ([]Import, error) {
	var v []Import
	if code, err := httpGet(ctx, c.AdminAddr, "/debug/imports", &v); err != nil || code != 200 {
		return nil, fmt.Errorf("%s /debug/imports: %d %v", c.Spec.Name, code, err)
	}
	return v, nil
}

var httpClient = &http.Client{Timeout: 3 * time.Second}

// httpGet GETs http://addr/path; with into, it decodes the JSON body.
func httpGet(ctx context.Context, addr, path string, into any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if into == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(into)
}
