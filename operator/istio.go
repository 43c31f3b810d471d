package operator

import (
	"context"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/internal/bundlemap"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
)

// IstioConfigOptions say for which cluster, and how istiod reaches meshfed's MCP listener.
type IstioConfigOptions struct {
	Cluster    string
	MCPAddress string
	// ClusterID and Network override the cluster name and its record's network.
	ClusterID, Network string
	// MCPTLS: the listener serves TLS; MCPCAPEM is the PEM of the CA istiod verifies it
	// against (embedded in the mesh config: istiod takes PEM, not a path).
	MCPTLS   bool
	MCPCAPEM string
	// BundleDir, when set, is a directory a federation service writes the federated
	// bundles into (--bundle-dir): the roots come from its bundle-map.json instead of from
	// etcd's bundles/.
	BundleDir string
	// BundleURL, when set, gives istiod each other trust domain as spiffeBundleUrl
	// <BundleURL>/<td> (a bundle endpoint, https) instead of PEM.
	BundleURL string
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
	if o.BundleDir != "" {
		set, err := bundlemap.Load(filepath.Join(o.BundleDir, bundlemap.FileName))
		if err != nil {
			return nil, nil, &validate.FieldError{Msg: fmt.Sprintf("bundle dir %s: %v (the directory `meshfed federation %s` writes)", o.BundleDir, err, Ref("BundleDir")), Err: err}
		}
		for _, b := range set.Bundles() {
			roots[b.TrustDomain().Name()] = b.X509Authorities()
		}
		return istioSettings(c.Value, o, roots, warnings)
	}
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
	return istioSettings(c.Value, o, roots, warnings)
}

func istioSettings(c *records.Cluster, o IstioConfigOptions, roots map[string][]*x509.Certificate, warnings []string) (*istio.Settings, []string, error) {
	if _, ok := roots[c.TrustDomain]; !ok && len(roots) > 0 {
		warnings = append(warnings, fmt.Sprintf("no bundle of this cluster's own trust domain %s among %d: is it the clusterset's bundle set?", c.TrustDomain, len(roots)))
	}
	netw := o.Network
	if netw == "" {
		netw = c.Network
	}
	s, err := istio.BuildSettings(istio.SettingsInput{
		Cluster: o.Cluster, ClusterID: o.ClusterID, Network: netw, MCPAddress: o.MCPAddress,
		MCPTLS: o.MCPTLS, MCPCAPEM: o.MCPCAPEM, TrustDomain: c.TrustDomain, Roots: roots, BundleURL: o.BundleURL,
	})
	if err != nil {
		return nil, warnings, err
	}
	return s, warnings, nil
}
