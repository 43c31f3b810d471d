package main

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/validate"
)

func TestFlagErr(t *testing.T) {
	var errs validate.Errors
	errs.Add("endpoints", "no endpoint")
	errs.Add("other", "left as it is")
	got := flagErr(errs.Err(), map[string]string{"endpoints": "--etcd-endpoints"})
	if s := got.Error(); !strings.Contains(s, "--etcd-endpoints: no endpoint") || !strings.Contains(s, "other: left as it is") {
		t.Fatalf("joined: %v", got)
	}
	plain := errors.New("plain")
	if flagErr(plain, map[string]string{"plain": "--x"}) != plain || flagErr(nil, nil) != nil {
		t.Fatal("an error without a field must pass unchanged")
	}
}

// TestEtcdErrorsNameFlags: keyspace/store describes the bad field; the commands name the
// flag (moved here from keyspace/store's TLS test, which now checks the field).
func TestEtcdErrorsNameFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.pem")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--etcd-endpoints", "no-port"}, "--etcd-endpoints:"},
		{[]string{"status", "--etcd-endpoints", "127.0.0.1:2379", "--etcd-cacert", missing}, "--etcd-cacert:"},
		{[]string{"status", "--etcd-endpoints", "127.0.0.1:2379", "--etcd-cert", missing}, "--etcd-cert/--etcd-key:"},
		{[]string{"status", "--etcd-endpoints", "127.0.0.1:2379", "--etcd-user", "u"}, "--etcd-user/--etcd-password:"},
		{[]string{"status", "--etcd-endpoints", "127.0.0.1:2379", "--prefix", "no-slash"}, "--prefix:"},
	} {
		_, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want an error naming %s, got %v", c.args, c.want, err)
		}
	}
}

// TestTrustErrorsNameFlags: trust/source and trust/federate describe the bad field; the
// federation command names the flag.
func TestTrustErrorsNameFlags(t *testing.T) {
	for _, c := range []struct {
		f    trustFlags
		want string
	}{
		{trustFlags{trustDomain: "east.example", bundleSource: "file:", poll: time.Second}, `--bundle-source: "file:": give file:PATH`},
		{trustFlags{trustDomain: "east.example", bundleSource: "nope", poll: time.Second}, "--bundle-source: "},
		{trustFlags{trustDomain: "east.example", bundleSource: "dev", poll: time.Second}, "--dev-ca-dir: "},
		{trustFlags{trustDomain: "east.example", bundleDir: t.TempDir(), configMap: "no-slash", poll: time.Second}, `--bundle-configmap: "no-slash": give NAMESPACE/NAME`},
	} {
		_, err := c.f.build("east", nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: want an error with %q, got %v", c.f, c.want, err)
		}
	}
}
