package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/meshfed/meshfed/discovery/kube"
	"github.com/meshfed/meshfed/federation/agent"
	"github.com/meshfed/meshfed/federation/service"
	"github.com/meshfed/meshfed/internal/admin"
	"github.com/meshfed/meshfed/keyspace/view"
)

// kubeWiring connects the Kubernetes source and importer to the federation service.
type kubeWiring struct {
	clients  *kube.Clients
	source   *kube.Source
	importer *kube.Importer
	elected  bool // the importer runs under the leader elector, not on its own
}

func newKubeWiring(cluster, kubeconfig string, gateways *kube.IstioRemoteGateways, entries *kube.IstioAmbientEntries, adm *admin.Server, log *slog.Logger) (*kubeWiring, error) {
	cl, err := kube.NewClients(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	src, err := kube.NewSource(kube.SourceConfig{Cluster: cluster, Kube: cl.Kube, MCS: cl.MCS, Log: log.With("part", "kube-source"), Registerer: adm.Registry})
	if err != nil {
		return nil, err
	}
	imp, err := kube.NewImporter(kube.ImporterConfig{Cluster: cluster, Kube: cl.Kube, MCS: cl.MCS, Dynamic: cl.Dynamic,
		IstioRemoteGateways: gateways, IstioAmbientEntries: entries, Log: log.With("part", "kube-importer"), Registerer: adm.Registry})
	if err != nil {
		return nil, err
	}
	adm.AddReadiness("kubernetes-source", src.Ready)
	adm.AddReadiness("kubernetes-importer", imp.Ready)
	return &kubeWiring{clients: cl, source: src, importer: imp}, nil
}

// attach feeds every import view to the source (for MCS conflict conditions) and the
// importer, and returns the importer's run func.
func (k *kubeWiring) attach(ag *agent.Agent) func(context.Context) error {
	ag.OnView(func(v *view.View) {
		k.source.UpdateView(v)
		k.importer.Update(v)
	})
	return k.importer.Run
}

// leaderElector makes the Lease elector of --leader-elect. The importer then runs only
// on the leader too, beside the service's writing half.
func (k *kubeWiring) leaderElector(namespace, lease, identity string, log *slog.Logger) *importerWhileLeading {
	k.elected = true
	return &importerWhileLeading{
		e:   &kube.LeaseElector{Client: k.clients.Kube, Namespace: namespace, Name: lease, Identity: identity, Log: log},
		run: k.importer.Run,
	}
}

// importerWhileLeading runs the importer for exactly as long as this replica leads.
type importerWhileLeading struct {
	e   service.Elector
	run func(context.Context) error
}

var _ service.Elector = (*importerWhileLeading)(nil)

func (w *importerWhileLeading) Run(ctx context.Context, lead func(context.Context)) error {
	return w.e.Run(ctx, func(lctx context.Context) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.run(lctx) }()
		lead(lctx)
		wg.Wait()
	})
}
