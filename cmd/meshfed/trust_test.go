package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

func TestTrustFlagsValidate(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f := addTrustFlags(fs)
	if err := fs.Parse([]string{"--bundle-source", "file:/x", "--bundle-endpoint", "127.0.0.1:8443", "--bundle-configmap", "nope"}); err != nil {
		t.Fatal(err)
	}
	err := f.validate()
	for _, want := range []string{"--trust-domain", "--bundle-endpoint-cert", "--bundle-configmap"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	empty := addTrustFlags(pflag.NewFlagSet("e", pflag.ContinueOnError))
	if svc, err := empty.build("a", nil, nil, nil); svc != nil || err != nil {
		t.Fatal("without trust flags there is no trust component")
	}
}

// TestTrustFlagsAndRotateCLI builds the trust component from flags as `meshfed federation`
// does, then rotates through the CLI entry point twice (the second run has nothing to do).
func TestTrustFlagsAndRotateCLI(t *testing.T) {
	e := testetcd.Start(t)
	st, err := store.New(testetcd.Client(t, e), records.DefaultPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caDir, bundleDir := filepath.Join(dir, "ca"), filepath.Join(dir, "bundles")
	if _, err := devca.Init(caDir, "a.example", devca.Options{SVIDTTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("federation", pflag.ContinueOnError)
	f := addTrustFlags(fs)
	if err := fs.Parse([]string{"--trust-domain", "a.example", "--bundle-source", "dev:" + caDir, "--bundle-dir", bundleDir,
		"--bundle-endpoint", "127.0.0.1:0", "--bundle-poll-interval", "20ms"}); err != nil {
		t.Fatal(err)
	}
	svc, err := f.build("a", st, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go svc.Run(ctx)
	hb := st.NewHeartbeat("a", "test", 2*time.Second)
	go hb.Run(ctx)
	waitfor.Cond(t, 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(bundleDir, "a.example.pem"))
		return err == nil && svc.EndpointAddr() != ""
	}, "bundle written out and endpoint up")

	nc, nk, _ := devca.NewRoot("a.example", 90*24*time.Hour)
	certPath, keyPath := filepath.Join(dir, "new.pem"), filepath.Join(dir, "new-key.pem")
	_ = os.WriteFile(certPath, trust.CertsPEM([]*x509.Certificate{nc}), 0o644)
	if err := devca.WriteKey(keyPath, nk); err != nil {
		t.Fatal(err)
	}
	rf := &rotateFlags{td: "a.example", newCA: certPath, newCAKey: keyPath, devCADir: caDir, poll: 10 * time.Millisecond,
		minValidity: time.Hour, gateTimeout: time.Minute}
	rf.etcd = etcdFlags{endpoints: strings.Join(e.Clients, ","), prefix: records.DefaultPrefix, dialTimeout: 5 * time.Second}
	var out bytes.Buffer
	if err := runRotate(ctx, &out, rf); err != nil {
		t.Fatalf("rotate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), ": done") {
		t.Fatalf("no done line:\n%s", out.String())
	}
	out.Reset()
	if err := runRotate(ctx, &out, rf); err != nil || !strings.Contains(out.String(), "nothing to do") {
		t.Fatalf("second run: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := writeTrustStatus(ctx, &out, st, 30*24*time.Hour, outputTable); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "a.example") || !strings.Contains(out.String(), "done") {
		t.Fatalf("status:\n%s", out.String())
	}
	t.Logf("meshfed trust status:\n%s", out.String())
	// -o json: the same facts, for machines.
	out.Reset()
	if err := writeTrustStatus(ctx, &out, st, 30*24*time.Hour, outputJSON); err != nil {
		t.Fatal(err)
	}
	var ts operator.TrustStatus
	if err := json.Unmarshal(out.Bytes(), &ts); err != nil {
		t.Fatalf("trust status -o json: %v\n%s", err, out.String())
	}
	if len(ts.Bundles) != 1 || ts.Bundles[0].TrustDomain != "a.example" || len(ts.Rotations) != 1 || ts.Rotations[0].Phase != records.PhaseDone {
		t.Fatalf("trust status -o json:\n%s", out.String())
	}
}

// TestDevCAIssueNamesSpiffeIDFlag: the dev CA describes an ID it cannot sign for; the
// command names the flag.
func TestDevCAIssueNamesSpiffeIDFlag(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCLI(t, "trust", "dev-ca", "init", "--dir", dir, "--trust-domain", "east.example"); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, "trust", "dev-ca", "issue", "--dir", dir, "--trust-domain", "east.example",
		"--spiffe-id", "spiffe://west.example/ns/a/sa/b", "--cert", filepath.Join(dir, "c.pem"), "--key", filepath.Join(dir, "k.pem"))
	if err == nil || !strings.Contains(err.Error(), "--spiffe-id") || !strings.Contains(err.Error(), "not in trust domain east.example") {
		t.Fatalf("issue for another trust domain: %v", err)
	}
}
