package store_test

import (
	"context"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client certificate as PEM files.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func writePKI(t *testing.T, dir string) pki {
	t.Helper()
	ca := testpki.New(t, testpki.Spec{CN: "test etcd CA", CA: true, Serial: 1})
	p := pki{ca: filepath.Join(dir, "ca.pem")}
	testpki.Write(t, p.ca, ca.CertPEM())
	p.serverCert, p.serverKey = ca.Issue(t, testpki.Spec{CN: "server", Serial: 2, IPs: []net.IP{net.ParseIP("127.0.0.1")},
		EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}).WriteFiles(t, dir, "server")
	p.clientCert, p.clientKey = ca.Issue(t, testpki.Spec{CN: "client", Serial: 3,
		EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}).WriteFiles(t, dir, "client")
	return p
}

// TestExternalEtcdWithMTLSAndAuth: the store against an etcd that requires client
// certificates and has auth enabled, as production etcd clusters do.
func TestExternalEtcdWithMTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	p := writePKI(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{ClientAddr: "127.0.0.1:0", NoFsync: true, LogLevel: "fatal", BcryptCost: 4,
		TLS: &embedetcd.TLSFiles{CertFile: p.serverCert, KeyFile: p.serverKey, TrustedCAFile: p.ca, ClientCertAuth: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ep := "https://" + srv.Clients[0]
	base := store.Config{Endpoints: []string{ep}, CACert: p.ca, Cert: p.clientCert, Key: p.clientKey, Prefix: records.DefaultPrefix, DialTimeout: 5 * time.Second}

	// Enable auth with a root user and a user for the test.
	root, err := store.Dial(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { _, err := root.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := root.UserAdd(ctx, "meshfed", "pw"); return err },
		func() error { _, err := root.RoleAdd(ctx, "meshfed"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "meshfed", records.DefaultPrefix, clientv3.GetPrefixRangeEnd(records.DefaultPrefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := root.UserGrantRole(ctx, "meshfed", "meshfed"); return err },
		func() error { _, err := root.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	root.Close()

	good := base
	good.Username, good.Password = "meshfed", "pw"
	cli, err := store.Dial(ctx, good)
	if err != nil {
		t.Fatalf("dial with mTLS and auth: %v", err)
	}
	defer cli.Close()
	s, _ := store.New(cli, records.DefaultPrefix, nil)
	if _, err := s.Create(ctx, s.KS.Cluster("west"), cluster("west")); err != nil {
		t.Fatalf("write with mTLS and auth: %v", err)
	}

	// Without a client certificate the TLS handshake fails; with a wrong password auth
	// fails; both at Dial, with a message that says what to check.
	noCert := good
	noCert.Cert, noCert.Key = "", ""
	noCert.DialTimeout = 2 * time.Second
	if c, err := store.Dial(ctx, noCert); err == nil {
		c.Close()
		t.Fatal("dialed an mTLS etcd without a client certificate")
	} else if !strings.Contains(err.Error(), "check the endpoints") {
		t.Errorf("error does not say what to check: %v", err)
	}
	badPW := good
	badPW.Password = "nope"
	if c, err := store.Dial(ctx, badPW); err == nil {
		c.Close()
		t.Fatal("dialed with a wrong password")
	}
}
