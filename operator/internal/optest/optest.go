// Package optest holds the test helpers of operator/ and its subpackages (the drill): a
// real embedded etcd and a store on it, records written as a cluster writes them, and a
// three-cluster federation of the harness with demo workloads. It does not import
// operator, so that operator's own tests can use it.
package optest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// Ctx is a context that ends 60s into the test or with it.
func Ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// OpenStore dials srv as user (empty: no auth) and returns the store.
func OpenStore(t *testing.T, srv *embedetcd.Server, user, password string) *store.Store {
	t.Helper()
	st, err := DialStore(srv, user, password)
	if err != nil {
		t.Fatalf("dial etcd as %q: %v", user, err)
	}
	t.Cleanup(func() { st.Client().Close() })
	return st
}

// DialStore dials srv as user (empty: no auth) under the default prefix.
func DialStore(srv *embedetcd.Server, user, password string) (*store.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := store.Dial(ctx, store.Config{Endpoints: srv.Clients, Username: user, Password: password, Prefix: records.DefaultPrefix})
	if err != nil {
		return nil, err
	}
	st, err := store.New(cli, records.DefaultPrefix, nil)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return st, nil
}

// NewStore is a store on cli under the default prefix.
func NewStore(cli *clientv3.Client) (*store.Store, error) {
	return store.New(cli, records.DefaultPrefix, nil)
}

// EtcdNoAuth starts a real embedded etcd without auth and returns it with a store on it.
func EtcdNoAuth(t *testing.T) (*embedetcd.Server, *store.Store) {
	t.Helper()
	srv := testetcd.Start(t)
	return srv, OpenStore(t, srv, "", "")
}

// ClosedAddr is a loopback address nothing listens on (connection refused).
func ClosedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// KeysUnder counts keys under the store's prefix + sub.
func KeysUnder(t *testing.T, st *store.Store, sub string) int {
	t.Helper()
	r, err := st.Client().Get(Ctx(t), st.KS.Prefix()+sub, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(r.Count)
}

// Export is cluster's export of ns/name with port 8443 and the ready endpoints (default
// one, 10.0.0.1).
func Export(cluster, ns, name string, ready ...string) *records.Export {
	now := time.Now().UTC()
	e := &records.Export{Cluster: cluster, Namespace: ns, Name: name, Type: records.TypeClusterSetIP, Revision: 1,
		ExportedAt: now, UpdatedAt: now, Ports: []records.Port{{Name: "tls", Port: 8443, Protocol: "TCP"}}}
	for _, a := range ready {
		e.Endpoints = append(e.Endpoints, records.Endpoint{Address: a, Ready: true})
	}
	if len(e.Endpoints) == 0 {
		e.Endpoints = []records.Endpoint{{Address: "10.0.0.1", Ready: true}}
	}
	return e
}

// Put writes rec at key with st's credentials (a plain put, as a federation service does
// for its own keys).
func Put(t *testing.T, st *store.Store, key string, rec records.Record) error {
	t.Helper()
	b, err := records.Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Client().Put(Ctx(t), key, string(b))
	return err
}

// SyncWriter collects progress written from several goroutines.
type SyncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *SyncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *SyncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// EchoExports is an exports file with demo/echo (port 8443) served at addrs.
func EchoExports(addrs ...string) string {
	var eps []string
	port := ""
	for _, a := range addrs {
		h, p, _ := net.SplitHostPort(a)
		eps = append(eps, "{address: "+h+"}")
		port = p
	}
	return fmt.Sprintf(`services:
  - name: echo
    namespace: demo
    ports: [{name: tls, port: 8443, targetPort: %s}]
    endpoints: [%s]
`, port, strings.Join(eps, ", "))
}

// StartFederation runs east (region-1, no exports), west (region-1) and north (region-2)
// with demo workloads in west and north exporting demo/echo. Harness workloads of one
// service share a port number, so each cluster's workload listens on its own loopback
// address with the same port.
func StartFederation(t *testing.T, ctx context.Context) (*harness.Federation, map[string]*harness.Workload) {
	t.Helper()
	wls := map[string]*harness.Workload{}
	west, err := harness.StartWorkload("west", "echo-0", harness.WorkloadIP(1, 0)+":0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(west.Close)
	_, port, _ := net.SplitHostPort(west.Addr)
	north, err := harness.StartWorkload("north", "echo-0", harness.WorkloadIP(2, 0)+":"+port, nil)
	if err != nil {
		t.Skipf("port %s taken on %s: %v", port, harness.WorkloadIP(2, 0), err)
	}
	t.Cleanup(north.Close)
	wls["west"], wls["north"] = west, north
	// The xDS planners damp reassignments for 1s (as the drills' own planner does in these
	// tests), so traffic routed by a federation's xDS comes back within a drill's recovery.
	f, err := harness.Start(ctx, harness.Options{Log: slog.New(slog.DiscardHandler), MinReassign: time.Second, Clusters: []harness.ClusterSpec{
		{Name: "east"},
		{Name: "west", Exports: EchoExports(west.Addr)},
		{Name: "north", Region: "region-2", Exports: EchoExports(north.Addr)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f, wls
}

// HarnessStore is a store on the federation's etcd.
func HarnessStore(t *testing.T, f *harness.Federation) *store.Store {
	t.Helper()
	return OpenStore(t, f.Etcd, "", "")
}
