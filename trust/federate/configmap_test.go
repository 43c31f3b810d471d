package federate_test

import (
	"context"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/trust/federate"
	"github.com/meshfed/meshfed/trust/internal/trusttest"
)

func checkConfigMap(t *testing.T, client kubernetes.Interface) {
	env := trusttest.NewEnv(t)
	a := env.StartCluster("a", "a.example", trusttest.ClusterOptions{})
	waitfor.Cond(t, 20*time.Second, func() bool { return a.Has("a.example", 1) }, "bundle published")
	out := &federate.ConfigMapOutput{Client: client, Namespace: "default", Name: "meshfed-bundles"}
	svc, err := federate.New(federate.Config{Cluster: "b", Store: env.St, Log: trusttest.Quiet(), ConfigMap: out, RetryInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go svc.Run(ctx)
	var data map[string]string
	waitfor.Cond(t, 30*time.Second, func() bool {
		cm, err := client.CoreV1().ConfigMaps("default").Get(ctx, "meshfed-bundles", metav1.GetOptions{})
		if err != nil {
			return false
		}
		data = cm.Data
		return data["a.example.pem"] != "" && data[federate.BundleMapFile] != ""
	}, "ConfigMap written")
	// A consumer-only cluster acks what it wrote out (the ConfigMap included).
	waitfor.Cond(t, 10*time.Second, func() bool { return svc.Ready() == nil }, "ready")
}

// TestConfigMapOutputFake uses client-go's fake clientset (no apiserver needed).
func TestConfigMapOutputFake(t *testing.T) {
	checkConfigMap(t, fake.NewClientset())
}

// TestConfigMapOutputAPIServer writes the ConfigMap to a real kube-apiserver (skipped
// without $MESHFED_KUBE_APISERVER, see internal/kubetest).
func TestConfigMapOutputAPIServer(t *testing.T) {
	if os.Getenv(kubetest.EnvAPIServer) == "" {
		t.Skip(kubetest.SkipHint)
	}
	api := kubetest.Start(t)
	client, err := kubernetes.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	checkConfigMap(t, client)
}
