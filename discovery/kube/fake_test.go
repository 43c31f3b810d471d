package kube

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubefake "k8s.io/client-go/kubernetes/fake"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsfake "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned/fake"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/keyspace/records"
)

// These run with client-go's fake clientsets, so that `make test-short` (no kube-apiserver)
// still drives the source and the importer end to end. The real-apiserver tier is
// TestKubernetesTier.

func TestSourceFake(t *testing.T) {
	svc := echoService("demo")
	se := &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo", CreationTimestamp: metav1.NewTime(t0)}}
	kc := kubefake.NewClientset(svc, echoSlice("demo", "echo-1", ep{addr: "10.1.0.1"}))
	mc := fakeMCS(se, &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "ghost"}})
	src, err := NewSource(SourceConfig{Cluster: "west", Kube: kc, MCS: mc, Log: testLog(t), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	snaps := make(chan discovery.Snapshot, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(s discovery.Snapshot) { snaps <- s })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case s := <-snaps:
		if len(s.Exports) != 1 || s.Exports[0].Name != "echo" || !s.Exports[0].ExportedAt.Equal(t0) || s.Exports[0].ReadyEndpoints() != 1 {
			t.Fatalf("first snapshot %s", js(s.Exports))
		}
	case <-time.After(wait):
		t.Fatal("no snapshot")
	}
	cond := func(name string, ty mcsv1a1.ServiceExportConditionType, want string) func() error {
		return func() error {
			se, err := mc.MulticlusterV1alpha1().ServiceExports("demo").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			c := findCondition(se.Status.Conditions, ty)
			if c == nil || string(c.Status)+"/"+c.Reason != want {
				return fmt.Errorf("%s %s = %+v, want %s", name, ty, c, want)
			}
			return nil
		}
	}
	kubetest.Eventually(t, wait, cond("echo", mcsv1a1.ServiceExportConditionValid, "True/Valid"))
	kubetest.Eventually(t, wait, cond("ghost", mcsv1a1.ServiceExportConditionValid, "False/NoService"))
	src.UpdateView(buildView(1, nil, []*records.Export{mustExport(t)}))
	kubetest.Eventually(t, wait, cond("echo", mcsv1a1.ServiceExportConditionReady, "True/Exported"))

	if err := mc.MulticlusterV1alpha1().ServiceExports("demo").Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, wait, func() error {
		for {
			select {
			case s := <-snaps:
				if len(s.Exports) == 0 {
					return nil
				}
			default:
				return errors.New("echo still in the snapshot")
			}
		}
	})
}

// fakeMCS is mcs-api's fake clientset, marked as not supporting streaming lists (its
// generated code predates them; client-go's own fake says the same of itself).
func fakeMCS(objs ...runtime.Object) *noWatchList {
	return &noWatchList{mcsfake.NewSimpleClientset(objs...)}
}

type noWatchList struct{ *mcsfake.Clientset }

func (*noWatchList) IsWatchListSemanticsUnSupported() bool { return true }

func mustExport(t *testing.T) *records.Export {
	t.Helper()
	svc := echoService("demo")
	e, inv, _ := buildExport("west", &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "echo", CreationTimestamp: metav1.NewTime(t0)}}, svc, nil, podPolicy{})
	if inv != nil {
		t.Fatal(inv)
	}
	e.Revision = 1
	return e
}

func TestImporterFake(t *testing.T) {
	kc := kubefake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}})
	mc := fakeMCS()
	im, err := NewImporter(ImporterConfig{Cluster: "east", Kube: kc, MCS: mc, Log: testLog(t), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- im.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	tls := records.Port{Name: "tls", Port: 8443, Protocol: "TCP"}
	clusters := []*records.Cluster{clusterRecord("west", "west-a", "192.0.2.10:15443")}
	im.Update(buildView(1, clusters, []*records.Export{remoteExport("west", "demo", "echo", 1, tls)}))
	kubetest.Eventually(t, wait, func() error {
		if _, err := mc.MulticlusterV1alpha1().ServiceImports("demo").Get(ctx, "echo", metav1.GetOptions{}); err != nil {
			return err
		}
		l, err := kc.DiscoveryV1().EndpointSlices("demo").List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 1 || l.Items[0].Labels[mcsv1a1.LabelSourceCluster] != "west" {
			return fmt.Errorf("slices %v (%v)", l, err)
		}
		return nil
	})
	im.Update(buildView(2, clusters))
	kubetest.Eventually(t, wait, func() error {
		if _, err := mc.MulticlusterV1alpha1().ServiceImports("demo").Get(ctx, "echo", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("ServiceImport not deleted (%v)", err)
		}
		l, _ := kc.DiscoveryV1().EndpointSlices("demo").List(ctx, metav1.ListOptions{})
		if len(l.Items) != 0 {
			return fmt.Errorf("%d slices left", len(l.Items))
		}
		return nil
	})
}

func TestOnlyConflicts(t *testing.T) {
	c := apierrors.NewConflict(schema.GroupResource{Resource: "serviceimports"}, "x", errors.New("changed"))
	if !onlyConflicts(errors.Join(fmt.Errorf("a: %w", c), c)) {
		t.Error("joined conflicts")
	}
	if onlyConflicts(errors.Join(c, errors.New("boom"))) {
		t.Error("a non-conflict among them")
	}
	// As the import pass collects them (a nested list, as passEntries returns, flattened).
	list := multierror.Append(validate.NewList(), c, multierror.Append(validate.NewList(), fmt.Errorf("b: %w", c)).ErrorOrNil())
	if !onlyConflicts(list.ErrorOrNil()) || onlyConflicts(multierror.Append(list, errors.New("boom"))) {
		t.Error("collected conflicts")
	}
}
