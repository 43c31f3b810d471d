package xds_test

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	grpcxds "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

func examplePath(t *testing.T, name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "examples", "xds", name)
}

// TestExampleBootstraps keeps the shipped bootstraps true: grpc-go accepts the gRPC one
// (it parses the certificate provider config without reading the files), and the Envoy
// one is a valid envoy.config.bootstrap.v3.Bootstrap (Envoy itself is not packaged in
// Debian, so its own parser cannot be run here).
func TestExampleBootstraps(t *testing.T) {
	b, err := os.ReadFile(examplePath(t, "grpc-bootstrap.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := grpcxds.NewXDSResolverWithConfigForTesting(b); err != nil {
		t.Fatalf("grpc-go rejects deploy/examples/xds/grpc-bootstrap.json: %v", err)
	}

	y, err := os.ReadFile(examplePath(t, "envoy-bootstrap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("envoy bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("envoy bootstrap does not validate: %v", err)
	}
	if n := bs.GetStaticResources().GetSecrets(); len(n) != 1 || n[0].GetName() != "meshfed-identity" {
		t.Fatalf("the Envoy example must define the identity secret the CDS refers to: %v", n)
	}
}
