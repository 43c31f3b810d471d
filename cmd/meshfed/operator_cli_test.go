package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/internal/testetcd"
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
