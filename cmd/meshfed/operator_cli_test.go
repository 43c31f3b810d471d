package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	meshconfig "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/internal/testpki"
)

// runCLI runs the meshfed command line with args and returns stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(args, "--log-level", "error"))
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// TestOperatorCommands drives join, status, policy, drill and leave through the command
// line against a real embedded etcd: flags reach the operator package, outputs parse.
func TestOperatorCommands(t *testing.T) {
	srv := testetcd.Start(t)
	ep := "--etcd-endpoints=" + srv.Clients[0]
	join := func(name, region string, extra ...string) (string, error) {
		return runCLI(t, append([]string{"join", ep, "--cluster", name, "--region", region, "--zone", region + "-a",
			"--network", "net-" + name, "--trust-domain", name + ".example.org", "--gateway", freeAddr(t), "--probe-timeout", "200ms"}, extra...)...)
	}
	out, err := join("east", "eu", "--dry-run", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var plan map[string]any
	if err := json.Unmarshal([]byte(out), &plan); err != nil || plan["dry_run"] != true || plan["action"] != "create" {
		t.Fatalf("join --dry-run -o json: %v\n%s", err, out)
	}
	if _, err := join("east", "eu"); err != nil {
		t.Fatal(err)
	}
	if _, err := join("west", "eu"); err != nil {
		t.Fatal(err)
	}
	// An --hbone-gateway that is no HBONE listener yet: a warning naming the flag, not an error.
	hb := freeAddr(t)
	if out, err = join("north", "us", "--hbone-gateway", hb, "--dry-run"); err != nil ||
		!strings.Contains(out, "hbone gateway    "+hb+": NOT ANSWERING (refused)") || !strings.Contains(out, "warning: --hbone-gateway "+hb+": not an HBONE listener") {
		t.Fatalf("join --hbone-gateway (nothing there): %v\n%s", err, out)
	}
	_, err = runCLI(t, "join", ep, "--cluster", "Bad", "--gateway", "x")
	if err == nil || !strings.Contains(err.Error(), "--cluster") || !strings.Contains(err.Error(), "--region") || !strings.Contains(err.Error(), "--trust-domain") {
		t.Fatalf("bad join flags: %v", err)
	}

	out, err = runCLI(t, "policy", "set", "demo/echo", "--order", "west,east", ep, "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := yaml.Unmarshal([]byte(out), &res); err != nil || res["change"] != "created" {
		t.Fatalf("policy set -o yaml: %v\n%s", err, out)
	}
	if out, err = runCLI(t, "policy", "get", "demo/echo", ep); err != nil || !strings.Contains(out, "west,east") {
		t.Fatalf("policy get: %v\n%s", err, out)
	}
	if _, err = runCLI(t, "policy", "set", "demo", ep); err == nil || !strings.Contains(err.Error(), "NAMESPACE/NAME") {
		t.Fatalf("policy set demo: %v", err)
	}

	out, err = runCLI(t, "status", ep, "--from", "east", "-o", "json", "--probe-timeout", "200ms")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Clusters []struct {
			Name string `json:"name"`
		} `json:"clusters"`
		Policies []any `json:"policies"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Clusters) != 2 || len(st.Policies) != 1 {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	if _, err = runCLI(t, "status", ep, "-o", "xml"); err == nil || !strings.Contains(err.Error(), "-o/--output") {
		t.Fatalf("-o xml: %v", err)
	}

	if out, err = runCLI(t, "drill", ep, "--fail", "west", "--dry-run"); err != nil || !strings.Contains(out, "DRY RUN") {
		t.Fatalf("drill --dry-run: %v\n%s", err, out)
	}
	report := filepath.Join(t.TempDir(), "d.json")
	if out, err = runCLI(t, "drill", ep, "--fail", "west", "--duration", "1s", "--lease-ttl", "2s", "--report", report); err != nil || !strings.Contains(out, "cordon lifted") || !strings.Contains(out, "timeline: ") {
		t.Fatalf("drill: %v\n%s", err, out)
	}

	if out, err = runCLI(t, "leave", ep, "--cluster", "west", "-o", "json"); err != nil || !strings.Contains(out, `"audit_key"`) {
		t.Fatalf("leave: %v\n%s", err, out)
	}
}

// TestIstioConfigCommand: `meshfed istio config` against a real etcd: the YAML (with
// comments) and -o json carry the same keys; the meshConfig value is a MeshConfig as istiod's
// --meshConfig file takes it (strict proto JSON, unknown fields refused); --mcp-ca-cert
// embeds the file's PEM (istiod takes PEM there, not a path); bad CA flags name the flag.
func TestIstioConfigCommand(t *testing.T) {
	srv := testetcd.Start(t)
	ep := "--etcd-endpoints=" + srv.Clients[0]
	if _, err := runCLI(t, "join", ep, "--cluster", "east", "--region", "eu", "--zone", "eu-a", "--network", "net-east",
		"--trust-domain", "east.example.org", "--gateway", freeAddr(t), "--probe-timeout", "200ms"); err != nil {
		t.Fatal(err)
	}
	ca := testCAPEM(t)
	caFile := filepath.Join(t.TempDir(), "mcp-ca.pem")
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"istio", "config", ep, "--cluster", "east", "--mcp-address", "meshfed-istio.meshfed-system.svc:15020", "--mcp-tls", "--mcp-ca-cert", caFile}
	yout, err := runCLI(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	jout, err := runCLI(t, append(args, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var fromYAML, fromJSON map[string]any
	if err := yaml.Unmarshal([]byte(yout), &fromYAML); err != nil {
		t.Fatalf("yaml: %v\n%s", err, yout)
	}
	if err := json.Unmarshal([]byte(jout), &fromJSON); err != nil {
		t.Fatalf("json: %v\n%s", err, jout)
	}
	if !strings.HasPrefix(yout, "#") || fmt.Sprint(fromYAML) != fmt.Sprint(fromJSON) {
		t.Fatalf("yaml (commented) and json differ:\n%s\n%s", yout, jout)
	}
	mcJSON, _ := json.Marshal(fromJSON["meshConfig"])
	var mc meshconfig.MeshConfig
	if err := protojson.Unmarshal(mcJSON, &mc); err != nil {
		t.Fatalf("meshConfig is not a MeshConfig: %v\n%s", err, mcJSON)
	}
	src := mc.GetConfigSources()
	if len(src) != 2 || src[0].GetAddress() != "xds://meshfed-istio.meshfed-system.svc:15020" || src[1].GetAddress() != "k8s://" ||
		src[0].GetTlsSettings().GetMode().String() != "SIMPLE" || src[0].GetTlsSettings().GetCaCertificates() != string(ca) {
		t.Fatalf("configSources %v: want the MCP address over SIMPLE TLS with the CA's PEM, then k8s://", src)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--mcp-ca-cert", caFile}, "only with --mcp-tls"},
		{[]string{"--mcp-tls", "--mcp-ca-cert", filepath.Join(t.TempDir(), "missing.pem")}, "--mcp-ca-cert"},
		{[]string{"--mcp-tls", "--mcp-ca-cert", filepath.Join(t.TempDir())}, "--mcp-ca-cert"},
	} {
		_, err := runCLI(t, append([]string{"istio", "config", ep, "--cluster", "east", "--mcp-address", "127.0.0.1:15021"}, bad.args...)...)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want an error with %q", bad.args, err, bad.want)
		}
	}
}

// testCAPEM is a self-signed CA certificate in PEM.
func testCAPEM(t *testing.T) []byte {
	t.Helper()
	return testpki.New(t, testpki.Spec{CN: "mcp test CA", CA: true, Serial: 1, NotAfter: time.Now().Add(time.Hour)}).CertPEM()
}
