package operator

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

const rootPassword = "root-secret"

func tctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openStore dials srv as user (empty: no auth) and returns the store.
func openStore(t *testing.T, srv *embedetcd.Server, user, password string) *store.Store {
	t.Helper()
	st, err := dialStore(srv, user, password)
	if err != nil {
		t.Fatalf("dial etcd as %q: %v", user, err)
	}
	t.Cleanup(func() { st.Client().Close() })
	return st
}

func dialStore(srv *embedetcd.Server, user, password string) (*store.Store, error) {
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

// etcdWithAuth starts a real embedded etcd and turns etcd auth on the way an operator
// does: a root user with the root role, then AuthEnable. It returns the server and a
// store dialled as root.
func etcdWithAuth(t *testing.T) (*embedetcd.Server, *store.Store) {
	t.Helper()
	ctx := tctx(t)
	srv, err := embedetcd.Start(ctx, embedetcd.Config{ClientAddr: "127.0.0.1:0", NoFsync: true, LogLevel: "fatal", BcryptCost: 4})
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	cli := testetcd.Client(t, srv)
	if _, err := cli.UserAdd(ctx, "root", rootPassword); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.RoleAdd(ctx, "root"); err != nil && !isEtcdErr(err, rpctypes.ErrRoleAlreadyExist) {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	return srv, openStore(t, srv, "root", rootPassword)
}

// etcdNoAuth starts etcd without auth.
func etcdNoAuth(t *testing.T) (*embedetcd.Server, *store.Store) {
	t.Helper()
	srv := testetcd.Start(t)
	return srv, openStore(t, srv, "", "")
}

// closedAddr is a loopback address nothing listens on (connection refused).
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

func joinReq(t *testing.T, name, region, td string, gws ...string) JoinRequest {
	t.Helper()
	if len(gws) == 0 {
		gws = []string{closedAddr(t)}
	}
	return JoinRequest{Cluster: name, Region: region, Zone: region + "-a", Network: "net-" + name, TrustDomain: td,
		Gateways: gws, ProbeTimeout: 300 * time.Millisecond, Actor: "test"}
}

func credsPath(t *testing.T, name string) string {
	return filepath.Join(t.TempDir(), name+"-etcd.json")
}

// keysUnder counts keys under the store's prefix.
func keysUnder(t *testing.T, st *store.Store, sub string) int {
	t.Helper()
	r, err := st.Client().Get(tctx(t), st.KS.Prefix()+sub, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(r.Count)
}

func audits(t *testing.T, st *store.Store) []*records.Audit {
	t.Helper()
	items, _, bad, err := store.List[records.Audit](tctx(t), st, st.KS.Family(records.KindAudit))
	if err != nil || len(bad) > 0 {
		t.Fatalf("list audit: %v %v", err, bad)
	}
	var out []*records.Audit
	for _, it := range items {
		out = append(out, it.Value)
	}
	return out
}

func newStoreFor(cli *clientv3.Client) (*store.Store, error) {
	return store.New(cli, records.DefaultPrefix, nil)
}

// syncWriter collects progress written from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
