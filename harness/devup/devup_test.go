package devup

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain doubles as the demo client: `meshfed dev up` starts the client as a separate
// process, and in this test that process is this test binary, told by MESHFED_DEVUP_CHILD
// to run RunClient instead of the tests (as `meshfed dev call` does).
func TestMain(m *testing.M) {
	if os.Getenv("MESHFED_DEVUP_CHILD") == "1" {
		fs := flag.NewFlagSet("call", flag.ExitOnError)
		target := fs.String("target", "", "")
		interval := fs.Duration("interval", 100*time.Millisecond, "")
		_ = fs.Parse(os.Args[1:])
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := RunClient(ctx, *target, *interval, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevUpSmoke: the local federation starts, a cross-cluster call from east reaches
// west with mTLS through the federated bundles, the drill moves calls to north, and
// everything stops cleanly.
func TestDevUpSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three clusters and a client process")
	}
	t.Setenv("MESHFED_DEVUP_CHILD", "1") // inherited by the client process only
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out syncBuf
	err := Run(ctx, Options{Dir: t.TempDir(), EtcdAddr: "127.0.0.1:0", ClientCommand: []string{os.Args[0]},
		DrillFor: 3 * time.Second, MinReassign: time.Second, Out: &out})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Calls are served by west",
		"identity spiffe://west.meshfed.local/ns/demo/sa/echo",
		"calls this second: north",
		"Drill result: traffic left west",
		"Outage result: traffic left west",
		"Stopped cleanly.",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// The call's path names the workload that answered, not the gateway it went through.
	gw := regexp.MustCompile(`west's gateway (\S+) `).FindStringSubmatch(out.String())
	wl := regexp.MustCompile(`west's workload (\S+), identity`).FindStringSubmatch(out.String())
	if gw == nil || wl == nil || wl[1] == gw[1] || !strings.Contains(wl[1], ":") {
		t.Errorf("the call's path should name west's workload address apart from its gateway's: gateway %v, workload %v", gw, wl)
	}
	if strings.Contains(out.String(), "not within") {
		t.Errorf("traffic did not come back to west in time")
	}
}
