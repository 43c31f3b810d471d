package main

import (
	"context"
	"log/slog"

	"github.com/meshfed/meshfed/discovery/kube"
	"github.com/meshfed/meshfed/federation/agent"
	"github.com/meshfed/meshfed/federation/imports"
	"github.com/meshfed/meshfed/internal/admin"
)

// kubeWiring connects the Kubernetes source and importer to the federation service.
type kubeWiring struct {
	source   *kube.Source
	importer *kube.Importer
}

func newKubeWiring(cluster, kubeconfig string, adm *admin.Server, log *slog.Logger) (*kubeWiring, error) {
	if kubeconfig == "in-cluster" {
		kubeconfig = ""
	}
	cl, err := kube.NewClients(kubeconfig)
	if err != nil {
		return nil, err
	}
	src, err := kube.NewSource(kube.SourceConfig{Cluster: cluster, Kube: cl.Kube, MCS: cl.MCS, Log: log.With("part", "kube-source"), Registerer: adm.Registry})
	if err != nil {
		return nil, err
	}
	imp, err := kube.NewImporter(kube.ImporterConfig{Cluster: cluster, Kube: cl.Kube, MCS: cl.MCS, Log: log.With("part", "kube-importer"), Registerer: adm.Registry})
	if err != nil {
		return nil, err
	}
	adm.AddReadiness("kubernetes-source", src.Ready)
	adm.AddReadiness("kubernetes-importer", imp.Ready)
	return &kubeWiring{source: src, importer: imp}, nil
}

// attach feeds every import view to the source (for MCS conflict conditions) and the
// importer, and returns the importer's run func.
func (k *kubeWiring) attach(ag *agent.Agent) func(context.Context) error {
	ag.OnView(func(v *imports.View) {
		k.source.UpdateView(v)
		k.importer.Update(v)
	})
	return k.importer.Run
}
