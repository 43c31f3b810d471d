package store_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/keyspace/embedetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client certificate as PEM files.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func writePKI(t *testing.T, dir string) pki {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test etcd CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name string, blocks ...*pem.Block) string {
		p := filepath.Join(dir, name)
		var b []byte
		for _, blk := range blocks {
			b = append(b, pem.EncodeToMemory(blk)...)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage, ips []net.IP) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, IPAddresses: ips,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return write(name+".pem", &pem.Block{Type: "CERTIFICATE", Bytes: der}), write(name+"-key.pem", &pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	p := pki{ca: write("ca.pem", &pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth, nil)
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
	} else if !strings.Contains(err.Error(), "--etcd-endpoints") {
		t.Errorf("error does not say what to check: %v", err)
	}
	badPW := good
	badPW.Password = "nope"
	if c, err := store.Dial(ctx, badPW); err == nil {
		c.Close()
		t.Fatal("dialed with a wrong password")
	}
}
