package testbed

import (
	"context"
	"fmt"
)

// Fault kinds the testbed injects from the network.
const (
	FaultBlackhole     = "blackhole"      // the gateway's packets vanish, both ways
	FaultReset         = "reset"          // every packet to the gateway is answered with a TCP reset
	FaultLoss          = "loss"           // a fraction of every packet between nodes is dropped
	FaultPartitionEtcd = "partition-etcd" // a cluster cannot reach etcd (its peers still can)
	FaultPartition     = "partition"      // two clusters cannot reach each other (others can)
)

// Blackhole drops every packet to and from cluster's gateway port (nftables drop in the
// cluster's namespace): connections hang, new ones never answer, the health name included.
func (tb *Testbed) Blackhole(ctx context.Context, cluster string) (*Fault, error) {
	c, err := tb.must(cluster)
	if err != nil {
		return nil, err
	}
	return tb.Net.Inject(ctx, FaultBlackhole, cluster+"'s gateway drops every packet", []Rule{
		{Node: c.Node, Expr: fmt.Sprintf("tcp dport %d drop", GatewayPort)},
		{Node: c.Node, Out: true, Expr: fmt.Sprintf("tcp sport %d drop", GatewayPort)},
	})
}

// Reset answers every packet to cluster's gateway port with a TCP reset (nftables
// `reject with tcp reset`): new connections are refused, live ones reset on their next
// packet.
func (tb *Testbed) Reset(ctx context.Context, cluster string) (*Fault, error) {
	c, err := tb.must(cluster)
	if err != nil {
		return nil, err
	}
	return tb.Net.Inject(ctx, FaultReset, cluster+"'s gateway resets every connection", []Rule{
		{Node: c.Node, Expr: fmt.Sprintf("tcp dport %d reject with tcp reset", GatewayPort)},
	})
}

// Loss drops fraction of the TCP packets every node receives from another node (the
// nftables equivalent of iptables' `statistic --mode random`; this kernel has no netem):
// every path between clusters and to etcd loses that fraction in each direction. The
// host's own traffic (admin reads) is spared.
func (tb *Testbed) Loss(ctx context.Context, fraction float64) (*Fault, error) {
	if fraction <= 0 || fraction >= 1 {
		return nil, fmt.Errorf("loss fraction %v: want more than 0 and less than 1", fraction)
	}
	var rules []Rule
	for _, nd := range tb.Net.Nodes() {
		rules = append(rules, Rule{Node: nd, Expr: fmt.Sprintf(`meta l4proto tcp ip saddr != %s numgen random mod 1000000 < %d drop`,
			tb.Net.HostIP, int(fraction*1e6))})
	}
	return tb.Net.Inject(ctx, FaultLoss, fmt.Sprintf("%.1f%% of the packets on every path are lost", fraction*100), rules)
}

// CutFromEtcd drops everything between cluster and every etcd member; its peers still
// reach it and it reaches them.
func (tb *Testbed) CutFromEtcd(ctx context.Context, cluster string) (*Fault, error) {
	c, err := tb.must(cluster)
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, m := range tb.Etcd {
		ips = append(ips, m.Node.IP)
	}
	return tb.Net.Inject(ctx, FaultPartitionEtcd, cluster+" is cut from etcd", []Rule{
		{Node: c.Node, Expr: "ip saddr " + set(ips) + " drop"},
		{Node: c.Node, Out: true, Expr: "ip daddr " + set(ips) + " drop"},
	})
}

// Cut drops everything between clusters a and b (in a's namespace, both directions); every
// other path stays.
func (tb *Testbed) Cut(ctx context.Context, a, b string) (*Fault, error) {
	ca, err := tb.must(a)
	if err != nil {
		return nil, err
	}
	cb, err := tb.must(b)
	if err != nil {
		return nil, err
	}
	return tb.Net.Inject(ctx, FaultPartition, a+" and "+b+" cannot reach each other", []Rule{
		{Node: ca.Node, Expr: "ip saddr " + cb.Node.IP + " drop"},
		{Node: ca.Node, Out: true, Expr: "ip daddr " + cb.Node.IP + " drop"},
	})
}

func (tb *Testbed) must(cluster string) (*Cluster, error) {
	c := tb.Cluster(cluster)
	if c == nil {
		return nil, fmt.Errorf("no cluster %q in the testbed", cluster)
	}
	return c, nil
}
