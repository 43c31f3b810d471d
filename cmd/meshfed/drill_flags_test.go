package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"

	"github.com/meshfed/meshfed/operator/drill"
)

// TestDrillErrorsNameFlags: the drill library names drill.Request fields in its
// validation errors; the command says which flag each is, before connecting to etcd.
func TestDrillErrorsNameFlags(t *testing.T) {
	t.Parallel()
	_, err := runCLI(t, "drill", "--etcd-endpoints=192.0.2.1:2379", "--fail", "West", "--rate", "5000", "--tls-cert", "c.pem",
		"--fault", "melt", "--from", "east", "--lease-ttl", "1h", "--xds", "nohost", "--spiffe-socket", "unix:///s", "--duration", "1ms", "--id", "Bad_ID")
	if err == nil {
		t.Fatal("a bad drill was accepted")
	}
	msg := err.Error()
	for _, want := range []string{"--fail: ", "--rate: ", "--tls-cert/--tls-key: ", "--fault: ", "--from/--target: ", "--lease-ttl: ",
		"--xds: ", "--spiffe-socket: ", "--duration: ", "--id: "} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	for _, field := range []string{"Fail:", "Rate:", "CertFile", "LeaseTTL", "SPIFFESocket", "XDS:"} {
		if strings.Contains(msg, field) {
			t.Errorf("error names the Request field %s instead of its flag:\n%s", field, msg)
		}
	}
	if strings.Contains(msg, "192.0.2.1") {
		t.Errorf("validation waited for etcd:\n%s", msg)
	}
	_, err = runCLI(t, "drill", "--etcd-endpoints=192.0.2.1:2379", "--fail", "west", "--target", "demo/echo:99999")
	if err == nil || !strings.Contains(err.Error(), "--target: ") || !strings.Contains(err.Error(), "--from/--target: ") {
		t.Fatalf("target problems: %v", err)
	}
}

// TestDrillFlagOfFields: every field the mapping knows is a drill.Request field (a renamed
// field would otherwise reach the user under its Go name).
func TestDrillFlagOfFields(t *testing.T) {
	t.Parallel()
	rt := reflect.TypeOf(drill.Request{})
	cmd := newDrillCmd()
	for field, flag := range drillFlagOf {
		if _, ok := rt.FieldByName(field); !ok {
			t.Errorf("drill.Request has no field %s", field)
		}
		if cmd.Flags().Lookup(strings.TrimPrefix(flag, "--")) == nil {
			t.Errorf("meshfed drill has no flag %s", flag)
		}
	}
	if got := flagErr(&drill.InvalidError{What: "drill", Problems: multierror.Append(nil, drill.Problem{Field: "From/Target", Msg: "x"})}, drillFlagOf).Error(); got != "drill: --from/--target: x" {
		t.Errorf("mapped: %q", got)
	}
}
