package operator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
	"github.com/meshfed/meshfed/operator/internal/problems"
)

// ParseServiceRef parses NAMESPACE/NAME; flag names the argument in errors.
func ParseServiceRef(flag, s string) (namespace, name string, err error) {
	ns, n, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(n, "/") {
		return "", "", fmt.Errorf("%s %q: want NAMESPACE/NAME, e.g. demo/echo", flag, s)
	}
	var errs validate.Errors
	errs.AddErr(flag+" namespace", validate.DNSLabel(ns))
	errs.AddErr(flag+" name", validate.DNSLabel(n))
	if err := errs.Err(); err != nil {
		return "", "", err
	}
	return ns, n, nil
}

// PolicyRequest is `meshfed policy set`.
type PolicyRequest struct {
	Namespace, Name string
	// Order lists clusters in preference order.
	Order []string
	// NoLocalFirst lets the policy order outrank the client's own cluster.
	NoLocalFirst bool
	Actor        string
	Now          time.Time
}

// PolicyView is one policy as the CLI shows it.
type PolicyView struct {
	Service    string    `json:"service"`
	Key        string    `json:"key"`
	Order      []string  `json:"order"`
	LocalFirst bool      `json:"local_first"`
	UpdatedAt  time.Time `json:"updated_at"`
	UpdatedBy  string    `json:"updated_by,omitempty"`
	// Unknown lists clusters of Order that are not members (any more).
	Unknown []string `json:"unknown_clusters,omitempty"`
}

// PolicyResult is what set did.
type PolicyResult struct {
	Policy   PolicyView `json:"policy"`
	Change   string     `json:"change"` // created, updated, unchanged
	Warnings []string   `json:"warnings,omitempty"`
}

func policyView(ks records.Keyspace, p *records.Policy, known map[string]*store.Item[records.Cluster]) PolicyView {
	v := PolicyView{Service: view.Key(p.Namespace, p.Name), Key: ks.Policy(p.Namespace, p.Name),
		Order: append([]string{}, p.Order...), LocalFirst: p.IsLocalFirst(), UpdatedAt: p.UpdatedAt, UpdatedBy: p.UpdatedBy}
	if known != nil {
		for _, c := range p.Order {
			if _, ok := known[c]; !ok {
				v.Unknown = append(v.Unknown, c)
			}
		}
	}
	return v
}

// SetPolicy validates and writes policy/<ns>/<svc> (compare-and-swap on its revision).
// Every problem is reported at once; clusters must be members and listed once.
func SetPolicy(ctx context.Context, st *store.Store, r PolicyRequest) (*PolicyResult, error) {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	p := problems.New(fmt.Sprintf("policy set %s/%s", r.Namespace, r.Name))
	if err := validate.DNSLabel(r.Namespace); err != nil {
		p.Add("NAMESPACE/NAME", "namespace: %v", err)
	}
	if err := validate.DNSLabel(r.Name); err != nil {
		p.Add("NAMESPACE/NAME", "name: %v", err)
	}
	if len(r.Order) == 0 && !r.NoLocalFirst {
		p.Add("Order", "nothing to set: give the cluster order (e.g. %s west,north) and/or %s; `meshfed policy delete` goes back to the default order", problems.Ref("Order"), problems.Ref("NoLocalFirst"))
	}
	snap, err := ReadSnapshot(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("policy set: %w", err)
	}
	seen := map[string]int{}
	for i, c := range r.Order {
		if err := validate.DNSLabel(c); err != nil {
			p.Add("Order", "entry %d %q: %v", i+1, c, err)
			continue
		}
		if j, dup := seen[c]; dup {
			p.Add("Order", "%s is listed twice (entries %d and %d): list each cluster once", c, j+1, i+1)
		}
		seen[c] = i
		if _, ok := snap.Clusters[c]; !ok {
			p.Add("Order", "%s is not a member of the clusterset (members: %s): check the name, or join it first", c, strings.Join(orNone(snap.ClusterNames()), ", "))
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	res := &PolicyResult{}
	svc := view.Key(r.Namespace, r.Name)
	found := false
	for _, k := range snap.ServiceKeys() {
		if k == svc {
			found = true
		}
	}
	if !found {
		res.Warnings = append(res.Warnings, fmt.Sprintf("no cluster exports %s yet: the policy applies once one does", svc))
	}
	want := &records.Policy{Namespace: r.Namespace, Name: r.Name, Order: append([]string(nil), r.Order...), UpdatedAt: r.Now.UTC(), UpdatedBy: actorOr(r.Actor)}
	if r.NoLocalFirst {
		f := false
		want.LocalFirst = &f
	}
	key := st.KS.Policy(r.Namespace, r.Name)
	var written *records.Policy
	_, err = store.Modify[records.Policy](ctx, st, key, func(cur *records.Policy) (*records.Policy, error) {
		res.Change = "created"
		if cur != nil {
			res.Change = "updated"
			if samePolicy(cur, want) {
				res.Change = "unchanged"
				written = cur
				return nil, nil
			}
		}
		written = want
		return want, nil
	})
	if err != nil {
		if store.IsPermissionDenied(err) {
			return nil, fmt.Errorf("policy set %s: %w", svc, needsOperator(err, "policies are written", true))
		}
		return nil, fmt.Errorf("policy set %s: %w", svc, err)
	}
	res.Policy = policyView(st.KS, written, snap.Clusters)
	return res, nil
}

func samePolicy(a, b *records.Policy) bool {
	if a.IsLocalFirst() != b.IsLocalFirst() || len(a.Order) != len(b.Order) {
		return false
	}
	for i := range a.Order {
		if a.Order[i] != b.Order[i] {
			return false
		}
	}
	return true
}

func orNone(s []string) []string {
	if len(s) == 0 {
		return []string{"none yet"}
	}
	return s
}

// ErrNoPolicy: the service has no policy (it uses the default order).
var ErrNoPolicy = errors.New("no policy")

// GetPolicy reads one policy; ErrNoPolicy when there is none.
func GetPolicy(ctx context.Context, st *store.Store, namespace, name string) (*PolicyView, error) {
	it, err := store.Get[records.Policy](ctx, st, st.KS.Policy(namespace, name))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%s/%s: %w (it follows the default order: local, same region, others, ties by name)", namespace, name, ErrNoPolicy)
	}
	if err != nil {
		return nil, err
	}
	snap, err := ReadSnapshot(ctx, st)
	if err != nil {
		return nil, err
	}
	v := policyView(st.KS, it.Value, snap.Clusters)
	return &v, nil
}

// PolicyList is `policy list`.
type PolicyList struct {
	Policies []PolicyView `json:"policies"`
}

// ListPolicies lists every policy, by service.
func ListPolicies(ctx context.Context, st *store.Store) (*PolicyList, error) {
	snap, err := ReadSnapshot(ctx, st)
	if err != nil {
		return nil, err
	}
	out := &PolicyList{Policies: []PolicyView{}}
	for _, k := range sortedKeys(snap.Policies) {
		out.Policies = append(out.Policies, policyView(st.KS, snap.Policies[k].Value, snap.Clusters))
	}
	return out, nil
}

// DeletePolicy removes a policy (compare on the revision read); ErrNoPolicy when absent.
func DeletePolicy(ctx context.Context, st *store.Store, namespace, name string) error {
	key := st.KS.Policy(namespace, name)
	it, err := store.Get[records.Policy](ctx, st, key)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("policy delete %s/%s: %w", namespace, name, ErrNoPolicy)
	}
	if err != nil {
		return fmt.Errorf("policy delete %s/%s: %w", namespace, name, err)
	}
	if err := st.Delete(ctx, key, it.ModRevision); err != nil {
		return fmt.Errorf("policy delete %s/%s: %w", namespace, name, err)
	}
	return nil
}

// WriteTable renders one policy.
func (v *PolicyView) WriteTable(w io.Writer) error {
	return (&PolicyList{Policies: []PolicyView{*v}}).WriteTable(w)
}

// WriteTable renders the list.
func (l *PolicyList) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tORDER\tLOCAL-FIRST\tUPDATED\tBY")
	for _, p := range l.Policies {
		order := strings.Join(p.Order, ",")
		if order == "" {
			order = "(default)"
		}
		if len(p.Unknown) > 0 {
			order += " (not members: " + strings.Join(p.Unknown, ",") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", p.Service, order, p.LocalFirst, p.UpdatedAt.UTC().Format(time.RFC3339), p.UpdatedBy)
	}
	if len(l.Policies) == 0 {
		fmt.Fprintln(tw, "(no policies: every service uses the default order)\t\t\t\t")
	}
	return tw.Flush()
}

// WriteTable renders set's result.
func (r *PolicyResult) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "policy %s %s\n", r.Policy.Service, r.Change)
	for _, x := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", x)
	}
	return r.Policy.WriteTable(w)
}
