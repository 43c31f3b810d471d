package main

import (
	"context"
	"sync"

	"github.com/meshfed/meshfed/federation/imports"
	"github.com/meshfed/meshfed/federation/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/expiry"
)

// startTrust builds the trust component when trust flags are set, and connects its
// outputs: SDS validation contexts on the xDS server, and each remote cluster's roots to
// the gateway health checker (so health checks authenticate the gateway).
func startTrust(d *federationDeps, xp *xdsPart, st *store.Store) (func(context.Context) error, error) {
	if d.flags.etcd.cert != "" {
		d.adm.Registry.MustRegister(expiry.NewCertCollector(nil, expiry.CertFile{Name: "etcd-client", Path: d.flags.etcd.cert}))
	}
	tsvc, err := d.flags.trust.build(d.flags.cluster, st, d.log, d.adm.Registry)
	if err != nil || tsvc == nil {
		return nil, err
	}
	d.adm.AddReadiness("trust", tsvc.Ready)
	// The health checker needs cluster -> trust domain, from the clusters/ records of the
	// import view; recompute the pools when either the bundles or the records change.
	var mu sync.Mutex
	var clusterTD map[string]string
	var set *trust.Set
	apply := func() {
		if set == nil || clusterTD == nil {
			return
		}
		pools := set.PoolsByCluster(clusterTD)
		for c := range clusterTD {
			if c == d.flags.cluster {
				continue
			}
			xp.checker.SetRoots(c, pools[c]) // nil (no bundle yet): unauthenticated
		}
	}
	d.svc.OnView(func(v *imports.View) {
		m := make(map[string]string, len(v.Clusters))
		for name, c := range v.Clusters {
			m[name] = c.TrustDomain
		}
		mu.Lock()
		defer mu.Unlock()
		clusterTD = m
		apply()
	})
	tsvc.Subscribe(func(s *trust.Set) error {
		if err := xp.server.SetTrustBundles(s.X509Roots()); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		set = s
		apply()
		return nil
	})
	return tsvc.Run, nil
}
