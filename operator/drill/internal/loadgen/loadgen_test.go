package loadgen

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/harness"
)

type fixed struct{ rt Route }

func (f fixed) Route() (Route, error) { return f.rt, nil }

// TestGeneratorAgainstTLSWorkload: real TLS connections to a demo workload; every answer
// names the workload's cluster; a dead address gives errors, not hangs.
func TestGeneratorAgainstTLSWorkload(t *testing.T) {
	wl, err := harness.StartWorkload("west", "echo-0", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Close()
	g := &Generator{Router: fixed{Route{Cluster: "west", Addr: wl.Addr, SNI: "x"}}, Rate: 50, Timeout: 2 * time.Second,
		TLS: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // self-signed demo workload
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var res []Result
	done := make(chan struct{})
	go func() {
		_ = g.Run(ctx, func(r Result) {
			mu.Lock()
			res = append(res, r)
			n := len(res)
			mu.Unlock()
			if n == 10 {
				cancel()
			}
		})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("generator did not finish")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(res) < 10 {
		t.Fatalf("%d results", len(res))
	}
	for _, r := range res {
		if r.Err != "" || r.Cluster != "west" || r.Expected != "west" || r.Latency <= 0 {
			t.Fatalf("result %+v", r)
		}
	}

	l := &Generator{Router: fixed{Route{Addr: "127.0.0.1:1"}}, Rate: 10, Timeout: time.Second}
	_, err = l.Request(context.Background(), Route{Addr: "127.0.0.1:1"}, 1)
	if err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("dead address: %v", err)
	}
}

func TestParseServer(t *testing.T) {
	for in, want := range map[string]string{"west echo-0: hi\n": "west", "a-1 w: x": "a-1"} {
		if got, err := ParseServer(in); err != nil || got != want {
			t.Errorf("ParseServer(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "west", "West echo: x", "west echo x", "-a b: c"} {
		if _, err := ParseServer(bad); err == nil {
			t.Errorf("ParseServer(%q) accepted", bad)
		}
	}
}
