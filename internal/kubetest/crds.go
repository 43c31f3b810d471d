package kubetest

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/internal/ctxtime"
)

// MCSCRDs are the ServiceExport and ServiceImport CRDs of the pinned sigs.k8s.io/mcs-api
// (deploy/crds/ holds the same bytes for operators; a test keeps them equal).
func MCSCRDs() map[string][]byte {
	return map[string][]byte{
		"multicluster.x-k8s.io_serviceexports.yaml": mcscrd.ServiceExportCRD,
		"multicluster.x-k8s.io_serviceimports.yaml": mcscrd.ServiceImportCRD,
	}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallMCSCRDs creates (or updates) the MCS CRDs and waits until they are established and
// their resources answer a list, so that informers started next do not race the CRD.
func (s *APIServer) InstallMCSCRDs(ctx context.Context) error {
	return ApplyCRDs(ctx, s.Config, mcscrd.ServiceExportCRD, mcscrd.ServiceImportCRD)
}

// ApplyCRDs applies CRD YAML documents through the dynamic client (the project does not
// depend on the apiextensions clientset) and waits for each to be served.
func ApplyCRDs(ctx context.Context, cfg *rest.Config, docs ...[]byte) error {
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client for %s: %w", cfg.Host, err)
	}
	crds := dc.Resource(crdGVR)
	var served []schema.GroupVersionResource
	for _, doc := range docs {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			return fmt.Errorf("parse CRD: %w", err)
		}
		name := obj.GetName()
		_, err := crds.Create(ctx, obj, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			cur, gerr := crds.Get(ctx, name, metav1.GetOptions{})
			if gerr != nil {
				return fmt.Errorf("get CRD %s: %w", name, gerr)
			}
			obj.SetResourceVersion(cur.GetResourceVersion())
			_, err = crds.Update(ctx, obj, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("apply CRD %s: %w", name, err)
		}
		group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
		versions, _, _ := unstructured.NestedSlice(obj.Object, "spec", "versions")
		for _, v := range versions {
			vm, _ := v.(map[string]any)
			if vm["served"] == true {
				served = append(served, schema.GroupVersionResource{Group: group, Version: fmt.Sprint(vm["name"]), Resource: plural})
			}
		}
		if err := ctxtime.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
			cur, err := crds.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				if cm["type"] == "Established" && cm["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		}); err != nil {
			return fmt.Errorf("CRD %s not established: %w", name, err)
		}
	}
	// Established comes a moment before the REST handlers serve the new resources.
	for _, gvr := range served {
		if err := ctxtime.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
			_, err := dc.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
			return err == nil, nil
		}); err != nil {
			return fmt.Errorf("%s not served: %w", gvr, err)
		}
	}
	return nil
}

// GatewayCRD is the Gateway API's Gateway CRD, standard channel, of sigs.k8s.io/gateway-api
// v1.6.0 (the version the pinned istio.io/istio requires), copied unchanged from that
// module's config/crd/standard/: meshfed's own go.mod does not take the module. Its schema
// and CEL rules are what a cluster running Istio ambient validates Gateways with.
//
//go:embed crds/gateway.networking.k8s.io_gateways.yaml
var GatewayCRD []byte

// InstallGatewayCRD applies GatewayCRD and waits until Gateways are served.
func (s *APIServer) InstallGatewayCRD(ctx context.Context) error {
	return ApplyCRDs(ctx, s.Config, GatewayCRD)
}

// IstioEntryCRDs are Istio's ServiceEntry and WorkloadEntry CRDs of the pinned istio.io/istio
// (hack/testbins/istiod's go.mod), copied unchanged from its
// manifests/charts/base/files/crd-all.gen.yaml (TestIstioEntryCRDsMatchModule checks them
// when that module is in the module cache): meshfed's own go.mod does not take the module.
// Their schemas and CEL rules are what an Istio cluster validates the importer's ambient
// entries with.
//
//go:embed crds/networking.istio.io_serviceentries.yaml
var istioServiceEntryCRD []byte

//go:embed crds/networking.istio.io_workloadentries.yaml
var istioWorkloadEntryCRD []byte

// IstioEntryCRDs returns the two CRDs by file name.
func IstioEntryCRDs() map[string][]byte {
	return map[string][]byte{
		"networking.istio.io_serviceentries.yaml":  istioServiceEntryCRD,
		"networking.istio.io_workloadentries.yaml": istioWorkloadEntryCRD,
	}
}

// InstallIstioEntryCRDs applies IstioEntryCRDs and waits until both are served.
func (s *APIServer) InstallIstioEntryCRDs(ctx context.Context) error {
	return ApplyCRDs(ctx, s.Config, istioServiceEntryCRD, istioWorkloadEntryCRD)
}
