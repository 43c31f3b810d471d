package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	mcp "istio.io/api/mcp/v1alpha1"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/discovery/kube"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/keyspace/view"
)

// ambientFlags are the federation service's flags for Istio ambient clusters.
type ambientFlags struct {
	enabled        bool
	namespace      string
	serviceAccount string
}

const ambientFlagsHelp = `Istio ambient (docs/istio.md, "Ambient"):
  --istio-ambient          with --kubeconfig: keep one Gateway of class istio-remote per other
                           cluster that joined with --hbone-gateway (its network's east-west
                           gateway for istiod and ztunnel), and remove it when that cluster goes;
                           and, per imported service with ready HBONE endpoints in such a
                           cluster, a ServiceEntry and WorkloadEntries (network = that cluster's)
                           for istiod's ambient index, which reads only the Kubernetes API
  --istio-ambient-namespace           where those Gateways go (default istio-system; must exist)
  --istio-ambient-gateway-service-account   service account of the identity ztunnel expects from
                           the remote gateways (gateway.istio.io/service-account annotation)`

func addAmbientFlags(fl *pflag.FlagSet, f *ambientFlags) {
	fl.BoolVar(&f.enabled, "istio-ambient", false, "with --kubeconfig: write an istio-remote Gateway for each other cluster with HBONE gateways (Istio ambient multi-network)")
	fl.StringVar(&f.namespace, "istio-ambient-namespace", kube.DefaultIstioGatewayNamespace, "with --istio-ambient: namespace of the istio-remote Gateways")
	fl.StringVar(&f.serviceAccount, "istio-ambient-gateway-service-account", "", "with --istio-ambient: service account ztunnel expects of the remote gateways' identity (default: istiod's <gateway name>-istio-remote)")
}

func (f *ambientFlags) validate(kubeconfig string) error {
	var errs validate.Errors
	if !f.enabled {
		if f.namespace != kube.DefaultIstioGatewayNamespace || f.serviceAccount != "" {
			errs.Add("--istio-ambient", "the --istio-ambient-* options need --istio-ambient")
		}
		return errs.Err()
	}
	if kubeconfig == "" {
		errs.Add("--istio-ambient", "needs --kubeconfig (the Gateways are written to this cluster's Kubernetes API)")
	}
	errs.AddErr("--istio-ambient-namespace", validate.DNSLabel(f.namespace))
	if f.serviceAccount != "" {
		errs.AddErr("--istio-ambient-gateway-service-account", validate.DNSSubdomain(f.serviceAccount))
	}
	return errs.Err()
}

// gateways is the importer's setting (nil: off).
func (f *ambientFlags) gateways() *kube.IstioRemoteGateways {
	if !f.enabled {
		return nil
	}
	return &kube.IstioRemoteGateways{Namespace: f.namespace, ServiceAccount: f.serviceAccount}
}

// entries is the importer's ambient ServiceEntries and WorkloadEntries (nil: off), built
// with the options the MCP source uses, so that hosts and ports are the same in both;
// what the builder leaves out (a remote cluster without service accounts) is logged once
// and counted (meshfed_istio_ambient_skipped_total) on reg.
func (f *ambientFlags) entries(opts istio.BuildOptions, log *slog.Logger, reg prometheus.Registerer) (*kube.IstioAmbientEntries, error) {
	if !f.enabled {
		return nil, nil
	}
	rep, err := istio.NewAmbientSkipReporter(log, reg)
	if err != nil {
		return nil, err
	}
	return &kube.IstioAmbientEntries{Build: func(v *view.View, self string, networks map[string]string) (map[string][]*mcp.Resource, error) {
		res, skips, err := istio.BuildAmbientSkips(v, self, networks, opts)
		if err == nil {
			rep.Report(skips)
		}
		return res, err
	}}, nil
}
