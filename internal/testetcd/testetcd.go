package testetcd

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/meshfed/meshfed/keyspace/embedetcd"
)

// Start runs an etcd server for t (no fsync: test data is disposable).
func Start(t testing.TB) *embedetcd.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := embedetcd.Start(ctx, embedetcd.Config{ClientAddr: "127.0.0.1:0", NoFsync: true, LogLevel: "fatal"})
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Client opens a plain client to s, closed when the test ends.
func Client(t testing.TB, s *embedetcd.Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.Clients, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// WaitKey waits up to 10 s for an event on key in wch and returns when it was seen: the
// baseline of the propagation benchmarks (a plain etcd watch).
func WaitKey(tb testing.TB, wch clientv3.WatchChan, key string) time.Time {
	tb.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-wch:
			for _, e := range r.Events {
				if string(e.Kv.Key) == key {
					return time.Now()
				}
			}
		case <-timeout:
			tb.Fatalf("etcd watch: no event for %s within 10s", key)
		}
	}
}
