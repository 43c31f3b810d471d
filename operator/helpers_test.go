package operator

import (
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator/internal/optest"
)

const rootPassword = "root-secret"

// The helpers operator/drill's tests share (operator/internal/optest).
var (
	tctx       = optest.Ctx
	openStore  = optest.OpenStore
	dialStore  = optest.DialStore
	etcdNoAuth = optest.EtcdNoAuth
	closedAddr = optest.ClosedAddr
	keysUnder  = optest.KeysUnder
	testExport = optest.Export
	put        = optest.Put
	// startFederation runs east, west and north with demo/echo in west and north.
	startFederation = optest.StartFederation
	harnessStore    = optest.HarnessStore
	echoExports     = optest.EchoExports
)

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
