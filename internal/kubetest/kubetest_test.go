package kubetest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
)

// The CRDs shipped in deploy/crds must be the pinned module's, byte for byte: the tests run
// against the embedded copy, operators apply the files.
func TestDeployCRDsMatchModule(t *testing.T) {
	for name, want := range MCSCRDs() {
		got, err := os.ReadFile(filepath.Join("..", "..", "deploy", "crds", name))
		if err != nil {
			t.Fatalf("deploy/crds/%s: %v (copy it from the sigs.k8s.io/mcs-api module's config/crd)", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deploy/crds/%s differs from sigs.k8s.io/mcs-api config/crd of go.mod's version: copy it again", name)
		}
	}
}

// Two apiservers are two clusters: an object made in one is not in the other, and each has
// the MCS CRDs served.
func TestTwoIndependentAPIServers(t *testing.T) {
	servers := StartN(t, 2, WithMCSCRDs())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := servers[0], servers[1]
	if a.Version != "v1.37.2" {
		t.Errorf("server version %q, want v1.37.2 (the ldflags of hack/testbins/ensure.sh)", a.Version)
	}
	ka := kubernetes.NewForConfigOrDie(a.Config)
	kb := kubernetes.NewForConfigOrDie(b.Config)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-a"}}
	if _, err := ka.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kb.CoreV1().Namespaces().Get(ctx, "only-in-a", metav1.GetOptions{}); err == nil {
		t.Fatal("namespace created in A is visible in B: the two apiservers share state")
	}
	for i, s := range servers {
		mc := mcsclient.NewForConfigOrDie(s.Config)
		se := &mcsv1a1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default"}}
		if _, err := mc.MulticlusterV1alpha1().ServiceExports("default").Create(ctx, se, metav1.CreateOptions{}); err != nil {
			t.Fatalf("server %d: create ServiceExport: %v", i, err)
		}
	}
}

func TestLaunchWithoutBinary(t *testing.T) {
	_, err := Launch(context.Background(), Config{Binary: filepath.Join(t.TempDir(), "nope")})
	if err == nil {
		t.Fatal("launch of a missing binary succeeded")
	}
}

// The embedded Istio CRDs are the pinned istio's, unchanged: each is one document of its
// crd-all.gen.yaml. Skipped when that module is not in the module cache.
func TestIstioEntryCRDsMatchModule(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join("..", "..", "hack", "testbins", "istiod", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var version string
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "require" && f[1] == "istio.io/istio" {
			version = f[2]
		}
	}
	if version == "" {
		t.Fatal("hack/testbins/istiod/go.mod requires no istio.io/istio")
	}
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Skipf("go env GOMODCACHE: %v", err)
	}
	all, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "istio.io", "istio@"+version, "manifests", "charts", "base", "files", "crd-all.gen.yaml"))
	if err != nil {
		t.Skipf("istio.io/istio@%s not in the module cache: %v", version, err)
	}
	for name, b := range IstioEntryCRDs() {
		if !bytes.Contains(all, append([]byte("---\n"), b...)) {
			t.Errorf("crds/%s is not a document of istio.io/istio@%s crd-all.gen.yaml: copy it again", name, version)
		}
	}
}
