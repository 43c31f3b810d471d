package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestXDSFlagsValidate: the xDS flags are checked together, and each message names the
// flag and the fix.
func TestXDSFlagsValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string // "" = valid
	}{
		"defaults":           {nil, ""},
		"tls":                {[]string{"--xds-tls-cert", "c.pem", "--xds-tls-key", "k.pem"}, ""},
		"mtls":               {[]string{"--xds-tls-cert", "c.pem", "--xds-tls-key", "k.pem", "--xds-tls-client-ca", "ca.pem"}, ""},
		"cert without key":   {[]string{"--xds-tls-cert", "c.pem"}, "--xds-tls-cert: give --xds-tls-cert and --xds-tls-key together"},
		"key without cert":   {[]string{"--xds-tls-key", "k.pem"}, "--xds-tls-cert: give --xds-tls-cert and --xds-tls-key together"},
		"client CA alone":    {[]string{"--xds-tls-client-ca", "ca.pem"}, "--xds-tls-client-ca: mTLS needs the server side too"},
		"bad listen":         {[]string{"--xds-listen", "15010"}, "--xds-listen"},
		"timeout > interval": {[]string{"--health-interval", "1s", "--health-timeout", "2s"}, "--health-timeout"},
	} {
		fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
		var f xdsFlags
		addXDSFlags(fs, &f)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := f.validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	// Files that do not exist fail at start, naming the flags.
	f := xdsFlags{tlsCert: "/nonexistent/c.pem", tlsKey: "/nonexistent/k.pem"}
	if _, err := f.serverTLS(); err == nil || !strings.Contains(err.Error(), "--xds-tls-cert") {
		t.Errorf("missing files: %v", err)
	}
}

func TestLoopbackListen(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:15010": true, "localhost:15010": true, "[::1]:15010": true, "127.0.0.5:1": true,
		":15010": false, "0.0.0.0:15010": false, "10.0.0.1:15010": false, "bad": false,
	} {
		if got := loopbackListen(addr); got != want {
			t.Errorf("%s: %v", addr, got)
		}
	}
}
