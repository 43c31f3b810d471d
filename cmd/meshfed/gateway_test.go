package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/healthprobe"
	"github.com/meshfed/meshfed/internal/waitfor"
)

func TestGatewayFlagsNameTheFieldAndFix(t *testing.T) {
	f := gatewayFlags{cluster: "East", listen: "nope", admin: "127.0.0.1:0", domain: "cluster.local",
		healthCert: "x.pem", maxHelloBytes: 100, helloTimeout: 0, connectTimeout: time.Second,
		pollInterval: time.Second, connectAttempts: 3, copyMode: "fast"}
	err := f.validate()
	if err == nil {
		t.Fatal("invalid flags accepted")
	}
	for _, want := range []string{"--cluster", "--exports: required", "--listen", "--health-cert", "--max-hello-bytes", "--hello-timeout", "--copy-mode"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestGatewayHBONEFlags(t *testing.T) {
	base := gatewayFlags{cluster: "east", listen: ":15443", admin: "127.0.0.1:0", domain: "cluster.local", exports: "x.yaml",
		maxHelloBytes: 16 << 10, helloTimeout: time.Second, connectTimeout: time.Second, pollInterval: time.Second,
		connectAttempts: 3, copyMode: "poll-splice"}
	for _, tc := range []struct {
		set  func(*gatewayFlags)
		want string // "" when valid
	}{
		{func(f *gatewayFlags) { f.bundleDir = "/b" }, "--hbone-listen: required by"},
		{func(f *gatewayFlags) { f.hboneListen = "15008" }, "--hbone-listen: \"15008\" is not HOST:PORT"},
		{func(f *gatewayFlags) { f.hboneListen, f.bundleDir = ":15008", "/b" }, "--hbone-cert: --hbone-listen needs this gateway's SVID"},
		{func(f *gatewayFlags) { f.hboneListen, f.hboneCert, f.bundleDir = ":15008", "c.pem", "/b" }, "--hbone-cert: give both"},
		{func(f *gatewayFlags) { f.hboneListen, f.hboneCert, f.hboneKey = ":15008", "c.pem", "k.pem" }, "--bundle-dir: --hbone-listen needs the federated bundles"},
		{func(f *gatewayFlags) {
			f.hboneListen, f.hboneCert, f.hboneKey, f.spiffeSocket = ":15008", "c.pem", "k.pem", "/s"
		}, "--spiffe-socket: the SVID comes from"},
		{func(f *gatewayFlags) {
			f.hboneListen, f.spiffeSocket, f.hboneAllowTD = ":15008", "/s", []string{"spiffe://east"}
		}, "--hbone-allow-trust-domain"},
		{func(f *gatewayFlags) {
			f.hboneListen, f.hboneCert, f.hboneKey, f.bundleDir = ":15008", "c.pem", "k.pem", "/b"
		}, ""},
		{func(f *gatewayFlags) { f.hboneListen, f.spiffeSocket = ":15008", "/run/spire/agent.sock" }, ""},
	} {
		f := base
		tc.set(&f)
		err := f.validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", f, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want %q", f, err, tc.want)
		}
	}
}

// The command wired end to end: flags to a running gateway, health on its listener, and
// a clean exit on cancellation (what SIGTERM does through main's signal context).
func TestGatewayCommandRunsAndDrains(t *testing.T) {
	dir := t.TempDir()
	exports := filepath.Join(dir, "exports.yaml")
	os.WriteFile(exports, []byte("services:\n  - {name: echo, namespace: demo, ports: [{port: 8443}], endpoints: [{address: 127.0.0.1}]}\n"), 0o644)
	addr := freeAddr(t)
	cmd := newGatewayCmd()
	cmd.SetArgs([]string{"--cluster", "east", "--listen", addr, "--admin", "127.0.0.1:0", "--exports", exports, "--drain-timeout", "2s"})
	stop := startCmd(t, cmd)
	var probeErr error
	waitfor.Cond(t, 10*time.Second, func() bool {
		r := healthprobe.Probe(context.Background(), "", addr, nil)
		probeErr = r.Err
		if r.OK && (r.Line.Fields["cluster"] != "east" || r.Line.Fields["service_ports"] != "1") {
			t.Fatalf("health: %q", r.Text)
		}
		return r.OK
	}, "gateway healthy (last: %v)", probeErr)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// A bad exports file stops the command at start with the field named.
	os.WriteFile(exports, []byte("services:\n  - {name: echo, namespace: demo, ports: [{port: 0}]}\n"), 0o644)
	cmd = newGatewayCmd()
	cmd.SetArgs([]string{"--cluster", "east", "--listen", addr, "--admin", "127.0.0.1:0", "--exports", exports})
	err := cmd.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "services[0].ports[0].port") {
		t.Fatalf("bad exports: %v", err)
	}
}
