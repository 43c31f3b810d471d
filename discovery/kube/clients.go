package kube

import (
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
)

// InCluster, given as the kubeconfig path, means the in-cluster service account (or
// $KUBECONFIG and ~/.kube/config outside a pod, as kubectl does).
const InCluster = "in-cluster"

// Clients are the clientsets the source and the importer use.
type Clients struct {
	Config *rest.Config
	Kube   kubernetes.Interface
	MCS    mcsclient.Interface
	// Dynamic writes what has no typed client here (Gateway API Gateways for Istio ambient).
	Dynamic dynamic.Interface
}

// NewClients builds clients from a kubeconfig file, or, when path is empty or
// "in-cluster", as kubectl would: $KUBECONFIG, ~/.kube/config, else the in-cluster service
// account. It is the one way meshfed loads a kubeconfig.
func NewClients(path string) (*Clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" && path != InCluster {
		rules.ExplicitPath = path
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		where := path
		if where == "" || where == InCluster {
			where = "in-cluster config, $KUBECONFIG or ~/.kube/config"
		}
		return nil, fmt.Errorf("load %s: %w", where, err)
	}
	return ClientsFor(cfg)
}

// ClientsFor builds clients from a rest.Config (tests pass kubetest's).
func ClientsFor(cfg *rest.Config) (*Clients, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "meshfed"
	}
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	m, err := mcsclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("MCS client for %s: %w", cfg.Host, err)
	}
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client for %s: %w", cfg.Host, err)
	}
	return &Clients{Config: cfg, Kube: k, MCS: m, Dynamic: d}, nil
}
