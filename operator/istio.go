package operator

import (
	"context"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
)

// IstioConfigOptions say for which cluster, and how istiod reaches meshfed's MCP listener.
type IstioConfigOptions struct {
	Cluster    string
	MCPAddress string
	// ClusterID and Network override the cluster name and its record's network.
	ClusterID, Network string
	MCPTLS             bool
	MCPCACert          string
}

// IstioConfig reads the cluster's record and every trust bundle at one revision and makes
// istiod's settings for that cluster (federation/istio.BuildSettings). Bundles that do not
// decode are skipped and returned as warnings.
func IstioConfig(ctx context.Context, st *store.Store, o IstioConfigOptions) (*istio.Settings, []string, error) {
	snap, err := ReadSnapshot(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	c := snap.Clusters[o.Cluster]
	if c == nil {
		names := snap.ClusterNames()
		return nil, nil, fmt.Errorf("cluster %q has not joined (joined: %s); run 'meshfed join' first", o.Cluster, strings.Join(names, ", "))
	}
	var warnings []string
	roots := map[string][]*x509.Certificate{}
	tds := make([]string, 0, len(snap.Bundles))
	for td := range snap.Bundles {
		tds = append(tds, td)
	}
	sort.Strings(tds)
	for _, td := range tds {
		b, dropped, err := trust.FromRecordKeepValid(snap.Bundles[td].Value, time.Now())
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("bundle of %s skipped: %v", td, err))
			continue
		}
		for _, d := range dropped {
			warnings = append(warnings, fmt.Sprintf("bundle of %s: expired root left out: %s", td, d))
		}
		roots[td] = b.X509Roots
	}
	netw := o.Network
	if netw == "" {
		netw = c.Value.Network
	}
	s, err := istio.BuildSettings(istio.SettingsInput{
		Cluster: o.Cluster, ClusterID: o.ClusterID, Network: netw, MCPAddress: o.MCPAddress,
		MCPTLS: o.MCPTLS, MCPCACert: o.MCPCACert, TrustDomain: c.Value.TrustDomain, Roots: roots,
	})
	if err != nil {
		return nil, warnings, err
	}
	return s, warnings, nil
}
