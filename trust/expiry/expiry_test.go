package expiry_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshfed/meshfed/internal/certexpiry"
	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/expiry"
)

func TestCollectorsAndWarnings(t *testing.T) {
	soon, _, _ := devca.NewRoot("a.example", 10*24*time.Hour)
	later, _, _ := devca.NewRoot("b.example", 400*24*time.Hour)
	a, _ := trust.Parse("a.example", trust.CertsPEM([]*x509.Certificate{soon}), trust.ParseOptions{})
	b, _ := trust.Parse("b.example", trust.CertsPEM([]*x509.Certificate{later}), trust.ParseOptions{})
	set := trust.NewSet(a, b)
	reg := prometheus.NewRegistry()
	path := filepath.Join(t.TempDir(), "gw.pem")
	_ = os.WriteFile(path, trust.CertsPEM([]*x509.Certificate{soon}), 0o644)
	reg.MustRegister(expiry.NewRootCollector(func() *trust.Set { return set }),
		certexpiry.NewCertCollector(nil, certexpiry.CertFile{Name: "gateway", Path: path}, certexpiry.CertFile{Name: "etcd-client", Path: "/nonexistent"}))
	if n := testutil.CollectAndCount(reg, "meshfed_trust_root_expiry_seconds"); n != 2 {
		t.Fatalf("%d root series", n)
	}
	if n := testutil.CollectAndCount(reg, "meshfed_cert_expiry_seconds"); n != 2 {
		t.Fatalf("%d cert series", n)
	}
	ws := expiry.CheckFiles(time.Now(), expiry.WarnBefore, certexpiry.CertFile{Name: "gateway", Path: path}, certexpiry.CertFile{Name: "etcd-client", Path: "/nonexistent"})
	if len(ws) != 2 || !strings.Contains(ws[0].String()+ws[1].String(), "unreadable") {
		t.Fatalf("warnings %v", ws)
	}

	e := testetcd.Start(t)
	st, _ := store.New(testetcd.Client(t, e), records.DefaultPrefix, nil)
	for _, x := range []*trust.Bundle{a, b} {
		rec, _ := x.WithMeta(1, 0).Record("c", time.Now())
		if _, err := st.Create(context.Background(), st.KS.Bundle(x.TrustDomain.Name()), rec); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := expiry.CheckBundles(context.Background(), st, time.Now(), expiry.WarnBefore)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || !strings.Contains(ws[0].String(), "root of a.example") || !strings.Contains(ws[0].String(), "days") {
		t.Fatalf("want one warning for a.example's root, got %v", ws)
	}
}
