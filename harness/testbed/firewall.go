package testbed

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// Ports inside the namespaces.
const (
	GatewayPort  = 15443
	EtcdPort     = 2379
	EtcdPeerPort = 2380
)

// The nftables table of every node: its own namespace, so nothing outside the testbed is
// touched. Policy drop both ways; loopback passes first; then the fault chains (empty
// until a fault is injected: they see established flows too, so a fault cuts live
// connections as a real network fault would); then established flows, the host (the test
// process reads admin endpoints and joins clusters), and each node's allowed paths.
const table = "inet meshfed"

func set(addrs []string) string {
	if len(addrs) == 0 {
		return "{ 0.0.0.0 }" // matches nothing a node sends or receives
	}
	return "{ " + strings.Join(addrs, ", ") + " }"
}

// clusterRules: a cluster accepts the other clusters on its gateway port only, and
// reaches the other clusters' gateways and the etcd members' client port.
func clusterRules(host string, peers, etcd []string) string {
	return rules(host,
		[]string{fmt.Sprintf("tcp dport %d ip saddr %s", GatewayPort, set(peers))},
		[]string{fmt.Sprintf("tcp dport %d ip daddr %s", GatewayPort, set(peers)), fmt.Sprintf("tcp dport %d ip daddr %s", EtcdPort, set(etcd))})
}

// etcdRules: a member serves the clusters on the client port and its peers on the peer
// port, and reaches its peers.
func etcdRules(host string, clusters, peers []string) string {
	return rules(host,
		[]string{fmt.Sprintf("tcp dport %d ip saddr %s", EtcdPort, set(clusters)), fmt.Sprintf("tcp dport %d ip saddr %s", EtcdPeerPort, set(peers))},
		[]string{fmt.Sprintf("tcp dport %d ip daddr %s", EtcdPeerPort, set(peers))})
}

// rules is a node's table: the common part, then the node's own allowed flows in (ins)
// and out (outs).
func rules(host string, ins, outs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s {\n\tchain faults_in { }\n\tchain faults_out { }\n", table)
	for _, ch := range []struct {
		hook, iface, addr, faults string
		allow                     []string
	}{{"input", "iifname", "saddr", "faults_in", ins}, {"output", "oifname", "daddr", "faults_out", outs}} {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority 0; policy drop;\n", ch.hook, ch.hook)
		fmt.Fprintf(&b, "\t\t%s \"lo\" accept\n\t\tjump %s\n", ch.iface, ch.faults)
		fmt.Fprintf(&b, "\t\tct state established,related accept\n\t\tip %s %s accept\n", ch.addr, host)
		for _, a := range ch.allow {
			fmt.Fprintf(&b, "\t\t%s accept\n", a)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// nft runs an nft script inside the node's namespace (atomically: all or nothing).
func (nd *Node) nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nd.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s\nscript:\n%s", nd.NS, err, strings.TrimSpace(string(out)), script)
	}
	return nil
}

// Rule is one nftables rule of a fault: an expression added to one node's fault chain.
type Rule struct {
	Node *Node
	Out  bool   // faults_out (what the node sends) instead of faults_in (what it receives)
	Expr string // e.g. "tcp dport 15443 drop"
}

// Fault is an injected network fault; Lift removes exactly its rules.
type Fault struct {
	Kind string    // blackhole, reset, loss, partition-etcd, partition
	Desc string    // in words, for logs and reports
	At   time.Time // when its rules were in place
	tag  string
	rs   []Rule
}

var faultSeq atomic.Int64

// Inject adds rules (each node's set atomically) and returns the fault.
func (n *Net) Inject(ctx context.Context, kind, desc string, rules []Rule) (*Fault, error) {
	f := &Fault{Kind: kind, Desc: desc, tag: fmt.Sprintf("fault-%d", faultSeq.Add(1)), rs: rules}
	for nd, script := range f.scripts("add") {
		if err := nd.nft(ctx, script); err != nil {
			_ = f.Lift(ctx)
			return nil, fmt.Errorf("inject %s (%s): %w", kind, desc, err)
		}
	}
	f.At = time.Now()
	return f, nil
}

func (f *Fault) scripts(verb string) map[*Node]string {
	out := map[*Node]string{}
	for _, r := range f.rs {
		chain := "faults_in"
		if r.Out {
			chain = "faults_out"
		}
		out[r.Node] += fmt.Sprintf("%s rule %s %s %s comment %q\n", verb, table, chain, r.Expr, f.tag)
	}
	return out
}

var handleRE = regexp.MustCompile(`comment "([^"]+)" # handle (\d+)`)

// Lift removes the fault's rules from every node it touched.
func (f *Fault) Lift(ctx context.Context) error {
	nodes := map[*Node]bool{}
	for _, r := range f.rs {
		nodes[r.Node] = true
	}
	var errs []string
	for nd := range nodes {
		var script strings.Builder
		for _, chain := range []string{"faults_in", "faults_out"} {
			out, err := nd.Exec(ctx, "nft", "-a", "list", "chain", "inet", "meshfed", chain)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			sc := bufio.NewScanner(strings.NewReader(out))
			for sc.Scan() {
				if m := handleRE.FindStringSubmatch(sc.Text()); m != nil && m[1] == f.tag {
					fmt.Fprintf(&script, "delete rule %s %s handle %s\n", table, chain, m[2])
				}
			}
		}
		if script.Len() > 0 {
			if err := nd.nft(ctx, script.String()); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	sort.Strings(errs)
	if len(errs) > 0 {
		return fmt.Errorf("lift %s: %s", f.Kind, strings.Join(errs, "; "))
	}
	return nil
}
