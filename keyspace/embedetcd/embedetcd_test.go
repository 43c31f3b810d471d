package embedetcd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestStartServesClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, Config{ClientAddr: "127.0.0.1:0", NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.Clients, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	r, err := cli.Get(ctx, "/k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("get = %v, %v", r, err)
	}
}

// TestThreeMembers: three members started with one --initial-cluster form one etcd
// cluster; with one member stopped the other two still serve writes (quorum), and the
// stopped member rejoins from its data dir and catches up.
func TestThreeMembers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var peers, clients [3]string
	var initial []string
	for i := range peers {
		peers[i] = "127.0.0.1:" + fmt.Sprint(mustFreePort(t))
		clients[i] = "127.0.0.1:" + fmt.Sprint(mustFreePort(t))
		initial = append(initial, fmt.Sprintf("m%d=http://%s", i, peers[i]))
	}
	dirs := [3]string{t.TempDir(), t.TempDir(), t.TempDir()}
	start := func(i int) (*Server, error) {
		return Start(ctx, Config{Name: fmt.Sprintf("m%d", i), ClientAddr: clients[i], PeerAddr: peers[i], DataDir: dirs[i],
			InitialCluster: strings.Join(initial, ","), ClusterToken: "three", NoFsync: true})
	}
	var srv [3]*Server
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range srv {
		wg.Add(1)
		go func() { defer wg.Done(); srv[i], errs[i] = start(i) }() // each waits for quorum
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	defer func() {
		for _, s := range srv {
			if s != nil {
				s.Close()
			}
		}
	}()
	cli, err := clientv3.New(clientv3.Config{Endpoints: clients[:], DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ml, err := cli.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("member list: %v, %v", ml, err)
	}
	srv[0].Close()
	srv[0] = nil
	if _, err := cli.Put(ctx, "/k", "with two"); err != nil {
		t.Fatalf("put with one member down: %v", err)
	}
	if srv[0], err = start(0); err != nil {
		t.Fatalf("restart member 0 from its data dir: %v", err)
	}
	one, err := clientv3.New(clientv3.Config{Endpoints: clients[:1], DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	r, err := one.Get(ctx, "/k") // linearizable: served by the restarted member once it caught up
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "with two" {
		t.Fatalf("restarted member: %v, %v", r, err)
	}
	for _, bad := range []string{"m9=http://127.0.0.1:1", "m0", "m0=127.0.0.1:1", "m0=http://127.0.0.1:1,m0=http://127.0.0.1:2"} {
		if err := CheckInitialCluster(bad, "m0", "http://127.0.0.1:1"); err == nil {
			t.Errorf("CheckInitialCluster(%q) accepted", bad)
		}
	}
}

func mustFreePort(t *testing.T) int {
	t.Helper()
	p, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return p
}
