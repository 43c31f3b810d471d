package drill

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/operator/drill/internal/loadgen"
	"github.com/meshfed/meshfed/operator/internal/optest"
)

func joinReq(t *testing.T, name, region, td string) operator.JoinRequest {
	return operator.JoinRequest{Cluster: name, Region: region, Zone: region + "-a", Network: "net-" + name, TrustDomain: td,
		Gateways: []string{optest.ClosedAddr(t)}, ProbeTimeout: 300 * time.Millisecond, Actor: "test"}
}

// TestDrillDryRunShowsImpact: the dry run names every client cluster whose order changes
// and how, and writes nothing.
func TestDrillDryRunShowsImpact(t *testing.T) {
	t.Parallel()
	_, st := optest.EtcdNoAuth(t)
	ctx := optest.Ctx(t)
	for _, c := range [][2]string{{"east", "eu"}, {"west", "eu"}, {"north", "us"}} {
		if _, err := operator.Join(ctx, st, joinReq(t, c[0], c[1], c[0]+".example.org")); err != nil {
			t.Fatal(err)
		}
	}
	for key, rec := range map[string]records.Record{
		st.KS.Export("west", "demo", "echo"):  optest.Export("west", "demo", "echo"),
		st.KS.Export("north", "demo", "echo"): optest.Export("north", "demo", "echo"),
		st.KS.Export("west", "demo", "solo"):  optest.Export("west", "demo", "solo"),
	} {
		if err := optest.Put(t, st, key, rec); err != nil {
			t.Fatal(err)
		}
	}
	rev0 := optest.KeysUnder(t, st, "")
	rep, err := Run(ctx, st, Request{Fail: "west", DryRun: true, ID: "dry"})
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Plan
	if !p.DryRun || p.Service != "*" || len(p.Affected) != 2 {
		t.Fatalf("plan %+v", p)
	}
	impact := map[string]string{}
	for _, a := range p.Affected {
		for _, c := range a.Clients {
			impact[a.Service+" "+c.Cluster] = c.Impact + " " + strings.Join(c.Before, ">") + " -> " + strings.Join(c.After, ">")
		}
	}
	want := map[string]string{
		"demo/echo east":  "moves west>north -> north",  // same region first
		"demo/echo north": "backup north>west -> north", // local first
		"demo/solo east":  "outage west -> ",
		"demo/solo north": "outage west -> ",
	}
	for k, v := range want {
		if impact[k] != v {
			t.Errorf("%s: %q, want %q", k, impact[k], v)
		}
	}
	if !strings.Contains(strings.Join(p.Warnings, "\n"), "have no other cluster") {
		t.Errorf("warnings %v", p.Warnings)
	}
	if optest.KeysUnder(t, st, "") != rev0 || optest.KeysUnder(t, st, "drills/") != 0 {
		t.Fatal("dry run wrote")
	}
	var b strings.Builder
	_ = rep.WriteTable(&b)
	if !strings.Contains(b.String(), "DRY RUN") || !strings.Contains(b.String(), "outage") {
		t.Fatalf("table:\n%s", b.String())
	}

	// Validation reports every problem at once, each naming its Request field (and no
	// flag: cmd/meshfed maps fields to flags, tested there).
	_, err = Run(ctx, st, Request{Fail: "nosuch", Service: "echo", Namespace: "demo", From: "east", Rate: 5000, LeaseTTL: time.Hour, Fault: "melt"})
	checkFields(t, err, "From/Target", "Rate", "LeaseTTL", "Fault")
	_, err = Run(ctx, st, Request{Fail: "nosuch", Service: "echo", Namespace: "demo", DryRun: true})
	checkFields(t, err, "Fail", "Service")
}

// checkFields: err is an *InvalidError naming exactly fields (in any order), and no flag.
func checkFields(t *testing.T, err error, fields ...string) {
	t.Helper()
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("want an *InvalidError, got %T: %v", err, err)
	}
	var got []string
	for _, p := range ie.List() {
		got = append(got, p.Field)
		if strings.Contains(p.Msg, "--") {
			t.Errorf("%s: the message names a flag: %s", p.Field, p.Msg)
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(fields))
	if !slices.Equal(got, want) {
		t.Fatalf("problems with %v, want %v: %v", got, want, err)
	}
}

// TestRequestValidate: the checks that need no etcd, one field each, all at once.
func TestRequestValidate(t *testing.T) {
	t.Parallel()
	if err := (Request{Fail: "west"}).Validate(); err != nil {
		t.Fatalf("a plain cordon: %v", err)
	}
	checkFields(t, Request{Fail: "West", ID: "Bad_ID", Duration: time.Millisecond, XDS: "nohost", CertFile: "c.pem",
		SPIFFESocket: "unix:///s", Target: "demo/echo:0", Fault: "error=2"}.Validate(),
		"Fail", "ID", "Duration", "From/Target", "XDS", "CertFile/KeyFile", "SPIFFESocket", "Fault", "Target")
}

// TestDrillCordonLiftsAtEnd: the cordon key lives on its own lease while the drill runs
// and is gone (lease revoked) when --duration ends.
func TestDrillCordonLiftsAtEnd(t *testing.T) {
	t.Parallel()
	_, st := optest.EtcdNoAuth(t)
	ctx := optest.Ctx(t)
	if _, err := operator.Join(ctx, st, joinReq(t, "west", "eu", "west.example.org")); err != nil {
		t.Fatal(err)
	}
	done := make(chan *Report, 1)
	go func() {
		rep, err := Run(ctx, st, Request{Fail: "west", ID: "short", Duration: 1500 * time.Millisecond, Actor: "test"})
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	key := st.KS.Drill("short")
	var lease int64
	waitfor.Cond(t, 10*time.Second, func() bool {
		r, err := st.Client().Get(ctx, key)
		if err != nil || len(r.Kvs) == 0 {
			return false
		}
		lease = r.Kvs[0].Lease
		return true
	}, "cordon key written")
	if lease == 0 {
		t.Fatal("cordon key has no lease")
	}
	ttl, err := st.Client().TimeToLive(ctx, clientv3.LeaseID(lease))
	if err != nil || ttl.GrantedTTL != 10 {
		t.Fatalf("lease TTL %+v %v, want 10s granted", ttl, err)
	}
	rep := <-done
	if rep == nil || rep.CordonAt.IsZero() || rep.LiftAt.Sub(rep.CordonAt) < 1500*time.Millisecond {
		t.Fatalf("report %+v", rep)
	}
	if optest.KeysUnder(t, st, "drills/") != 0 {
		t.Fatal("cordon key still there after the drill")
	}
	if ttl, _ := st.Client().TimeToLive(ctx, clientv3.LeaseID(lease)); ttl != nil && ttl.TTL > 0 {
		t.Fatalf("lease not revoked: %+v", ttl)
	}
}

const drillChildEnv = "MESHFED_OPERATOR_TEST_DRILL_CHILD"

// TestDrillChildProcess is the drill process of TestDrillCordonExpiresWhenKilled (it only
// runs as that test's child).
func TestDrillChildProcess(t *testing.T) {
	ep := os.Getenv(drillChildEnv)
	if ep == "" {
		t.Skip("runs only as the child of TestDrillCordonExpiresWhenKilled")
	}
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := optest.NewStore(cli)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(ctx, st, Request{Fail: "west", ID: "killed", Duration: 10 * time.Minute, Progress: os.Stdout, Actor: "child"})
	t.Fatalf("the drill returned (%v): it should have been killed", err)
}

// TestDrillCordonExpiresWhenKilled: a real drill process is killed with SIGKILL while
// the cordon holds; nobody revokes its lease, and the cordon disappears by itself within
// the lease TTL (10 s) plus etcd's expiry check.
func TestDrillCordonExpiresWhenKilled(t *testing.T) {
	t.Parallel()
	srv := testetcd.Start(t)
	st := optest.OpenStore(t, srv, "", "")
	ctx := optest.Ctx(t)
	if _, err := operator.Join(ctx, st, joinReq(t, "west", "eu", "west.example.org")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDrillChildProcess$", "-test.v")
	cmd.Env = append(os.Environ(), drillChildEnv+"="+srv.Clients[0])
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for cordoned := false; !cordoned; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("child exited before cordoning")
			}
			cordoned = strings.HasPrefix(l, "cordoned west")
		case <-deadline:
			t.Fatal("child did not cordon within 30s")
		}
	}
	key := st.KS.Drill("killed")
	if optest.KeysUnder(t, st, "drills/killed") != 1 {
		t.Fatal("cordon key missing while the drill runs")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	// Right after the kill the cordon is still there: only the lease can end it.
	if r, err := st.Client().Get(ctx, key); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("cordon gone at once after SIGKILL (%v): something revoked it", err)
	}
	waitfor.Cond(t, 10*time.Second+5*time.Second, func() bool {
		r, err := st.Client().Get(ctx, key, clientv3.WithCountOnly())
		return err == nil && r.Count == 0
	}, "cordon %s to expire after the drill process was killed", key)
	t.Logf("cordon expired %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
}

// TestDrillMeasuresTrafficSwitch: three simulated clusters; east's clients call
// demo/echo exported by west (same region: priority 0) and north. The drill cordons west
// while driving traffic as east's clients: traffic leaves west, goes to north, and
// returns after the lift; the report and its HTML timeline are written. The traffic is
// routed twice: by the drill's own plan from etcd, and by the EDS of east's real xDS
// server (the one east's federation agent runs, as meshfed federation does).
func TestDrillMeasuresTrafficSwitch(t *testing.T) {
	t.Parallel()
	ctx := optest.Ctx(t)
	f, _ := optest.StartFederation(t, ctx)
	st := optest.HarnessStore(t, f)
	waitfor.Cond(t, 15*time.Second, func() bool {
		s, err := operator.ReadSnapshot(ctx, st)
		return err == nil && len(s.Exports["west"]) == 1 && len(s.Exports["north"]) == 1 && len(s.Clusters) == 3
	}, "west and north export demo/echo")
	t.Run("etcd-plan", func(t *testing.T) { checkDrillTraffic(t, st, "") })
	t.Run("xds", func(t *testing.T) { checkDrillTraffic(t, st, f.Cluster("east").XDSAddr) })
}

func checkDrillTraffic(t *testing.T, st *store.Store, xdsAddr string) {
	ctx := optest.Ctx(t)
	prog := &optest.SyncWriter{}
	rep, err := Run(ctx, st, Request{Fail: "west", From: "east", Target: "demo/echo:8443", Rate: 10, RequestTimeout: 2 * time.Second,
		Duration: 2 * time.Second, Warmup: time.Second, MinReassign: time.Second, RecoveryTimeout: 10 * time.Second, XDS: xdsAddr,
		Progress: prog, ProgressInterval: 500 * time.Millisecond, Actor: "test"})
	if err != nil {
		t.Fatalf("drill: %v\n%s", err, prog.String())
	}
	tr := rep.Traffic
	if tr == nil {
		t.Fatal("no traffic report")
	}
	t.Logf("progress:\n%s", prog.String())
	var sum strings.Builder
	_ = rep.WriteTable(&sum)
	t.Logf("summary:\n%s", sum.String())
	if tr.BeforeRequests == 0 || tr.BeforeShare < 0.9 {
		t.Fatalf("before the cordon west served %.2f of %d requests, want all", tr.BeforeShare, tr.BeforeRequests)
	}
	if tr.DrainedAfterMs == nil || *tr.DrainedAfterMs > 1500 {
		t.Fatalf("drained after %v ms", ptrStr(tr.DrainedAfterMs))
	}
	if tr.ByCluster["north"] == 0 {
		t.Fatalf("north served nothing: %v", tr.ByCluster)
	}
	if tr.BackAfterMs == nil {
		t.Fatalf("traffic did not come back to west: notes %v", tr.Notes)
	}
	// A cordon moves new requests and breaks none; errors here can only be timeouts of
	// an overloaded test machine (-race, parallel tests), never "no route".
	if tr.ErrorKinds["no route"] != 0 || tr.Errors*5 > tr.Requests {
		t.Fatalf("%d errors of %d requests (%v)", tr.Errors, tr.Requests, tr.ErrorKinds)
	}
	// Every request after the drain and before the lift went to north.
	for _, s := range tr.Samples {
		at := tr.Start.Add(time.Duration(s.AtMs * float64(time.Millisecond)))
		if at.After(rep.CordonAt.Add(time.Duration(*tr.DrainedAfterMs*float64(time.Millisecond)))) && at.Before(rep.LiftAt) && s.Cluster != "north" && s.Error == "" {
			t.Fatalf("request at %.0f ms went to %q while west was cordoned and drained", s.AtMs, s.Cluster)
		}
	}
	if !strings.Contains(prog.String(), "east's order for demo/echo:8443 is now north") || !strings.Contains(prog.String(), "cordoned west") {
		t.Fatalf("progress:\n%s", prog.String())
	}
	if xdsAddr != "" && !strings.Contains(tr.Route, "xDS "+xdsAddr) {
		t.Fatalf("route %q", tr.Route)
	}
	dir := t.TempDir()
	jp, hp, err := rep.WriteReport(filepath.Join(dir, "drill.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	b, _ := os.ReadFile(jp)
	if err := json.Unmarshal(b, &back); err != nil || back.Traffic == nil || len(back.Traffic.Timeline) == 0 {
		t.Fatalf("report JSON: %v", err)
	}
	h, _ := os.ReadFile(hp)
	for _, want := range []string{"<svg", "polyline", "north", "west", "cordon west", "lift"} {
		if !strings.Contains(string(h), want) {
			t.Errorf("HTML timeline lacks %q", want)
		}
	}
	if optest.KeysUnder(t, st, "drills/") != 0 {
		t.Fatal("cordon left behind")
	}
}

func TestParseTarget(t *testing.T) {
	t.Parallel()
	cases := map[string]Target{
		"demo/echo:8443":                                {Namespace: "demo", Name: "echo", Port: 8443},
		"echo.demo.svc.clusterset.local:8443":           {Namespace: "demo", Name: "echo", Port: 8443},
		"outbound|8443||echo.demo.svc.clusterset.local": {Namespace: "demo", Name: "echo", Port: 8443},
		"127.0.0.1:15001":                               {Direct: true, Addr: "127.0.0.1:15001"},
		"envoy.local:9000":                              {Direct: true, Addr: "envoy.local:9000"},
	}
	for in, want := range cases {
		got, err := ParseTarget(in)
		if err != nil || got != want {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"demo/echo", "demo/echo:0", "demo/echo:x", "nope", "echo.demo.svc.clusterset.local:0", "outbound|x||y"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) accepted", bad)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"demo/echo:8443", "echo.demo.svc.clusterset.local:8443", "outbound|8443||echo.demo.svc.clusterset.local", "127.0.0.1:1", "[::1]:80", "a/b:", ":", "outbound|"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err != nil {
			return
		}
		if tg.Direct && tg.Addr != s {
			t.Fatalf("direct %q became %q", s, tg.Addr)
		}
		if !tg.Direct && (tg.Port == 0 || tg.Namespace == "" || tg.Name == "") {
			t.Fatalf("%q parsed as %+v", s, tg)
		}
	})
}

func FuzzParseServer(f *testing.F) {
	for _, s := range []string{"west echo-0: hello\n", "x y: z", "", "west", "West echo: x", "a b:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := loadgen.ParseServer(s)
		if err == nil && (c == "" || !strings.HasPrefix(strings.TrimLeft(s, " \t\r\n\v\f"), c)) {
			t.Fatalf("%q -> %q", s, c)
		}
	})
}

func ptrStr(p *float64) string {
	if p == nil {
		return "nil"
	}
	return strconv.FormatFloat(*p, 'f', 0, 64)
}

// FuzzXDSApply: whatever ClusterLoadAssignment an xDS server sends, the router neither
// panics nor routes to an endpoint that is not in it.
func FuzzXDSApply(f *testing.F) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		Locality: &corev3.Locality{SubZone: "west"}, Priority: 0,
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 1}}}}}}}},
	}}}
	b, _ := proto.Marshal(cla)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var c endpointv3.ClusterLoadAssignment
		if proto.Unmarshal(data, &c) != nil {
			return
		}
		x := newXDSRouter("127.0.0.1:1", "east", "demo", "echo", 8443, nil)
		x.apply(&c)
		rt, err := x.Route()
		if err != nil {
			return
		}
		found := false
		for _, l := range c.Endpoints {
			for _, e := range l.LbEndpoints {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				if sa != nil && net.JoinHostPort(sa.Address, strconv.FormatUint(uint64(sa.GetPortValue()), 10)) == rt.Addr {
					found = true
				}
			}
		}
		if !found {
			t.Fatalf("routed to %s, not in the assignment", rt.Addr)
		}
	})
}

// A trust domain shared by several clusters names none of them (the workload's answer
// then says which one served); one of its own names its cluster.
func TestTrustDomainClustersShared(t *testing.T) {
	snap := &operator.Snapshot{Clusters: map[string]*store.Item[records.Cluster]{}}
	for name, td := range map[string]string{"east": "mesh.example", "west": "mesh.example", "north": "north.example"} {
		snap.Clusters[name] = &store.Item[records.Cluster]{Value: &records.Cluster{Name: name, TrustDomain: td}}
	}
	got := trustDomainClusters(snap)
	if len(got) != 2 || got["mesh.example"] != "" || got["north.example"] != "north" {
		t.Fatalf("trustDomainClusters = %v", got)
	}
	if _, ok := got["mesh.example"]; !ok {
		t.Fatal("the shared trust domain is missing: its workloads would be refused as of no member")
	}
}
