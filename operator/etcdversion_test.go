package operator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

func TestVersionSupported(t *testing.T) {
	for v, ok := range map[string]bool{"3.4.23": false, "3.5.17": false, "3.6.0": true, "3.7.3": true, "4.0.0": true, "v3.6.1": true} {
		err := versionSupported(v)
		if (err == nil) != ok {
			t.Errorf("%s: %v, want supported=%v", v, err, ok)
		}
		if err != nil && (!errors.Is(err, ErrEtcdTooOld) || !strings.Contains(err.Error(), "meshfed supports etcd 3.6 and 3.7")) {
			t.Errorf("%s: %q should name the supported versions", v, err)
		}
	}
}

// Debian's etcd-server package is etcd 3.4, which has no AuthStatus call: join must say
// the server is too old and which versions meshfed supports, not "unknown method".
func TestJoinRefusesEtcd34(t *testing.T) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("no etcd binary on PATH: `apt-get install etcd-server` (Debian ships 3.4) to run the test against an older server")
	}
	out, _ := exec.Command(bin, "--version").Output()
	if !strings.Contains(string(out), "etcd Version: 3.4.") {
		t.Skipf("%s is not etcd 3.4 (%q): this test needs an older server", bin, strings.SplitN(string(out), "\n", 2)[0])
	}
	port := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", port())
	peer := fmt.Sprintf("http://127.0.0.1:%d", port())
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--name", "old", "--data-dir", t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "old="+peer)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	var st *store.Store
	waitfor.Cond(t, 30*time.Second, func() bool {
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		defer dcancel()
		cli, err := store.Dial(dctx, store.Config{Endpoints: []string{client}, Prefix: records.DefaultPrefix})
		if err != nil {
			return false
		}
		if _, err := cli.Status(dctx, client); err != nil {
			cli.Close()
			return false
		}
		if st, err = store.New(cli, records.DefaultPrefix, nil); err != nil {
			cli.Close()
			return false
		}
		return true
	}, "etcd 3.4 at %s never answered", client)
	t.Cleanup(func() { st.Client().Close() })
	_, err = Join(tctx(t), st, joinReq(t, "east", "eu", "east.example.org"))
	t.Logf("join against etcd 3.4: %v", err)
	if !errors.Is(err, ErrEtcdTooOld) {
		t.Fatalf("join against etcd 3.4: %v, want ErrEtcdTooOld", err)
	}
	for _, want := range []string{"is etcd 3.4.23, too old", "meshfed supports etcd 3.6 and 3.7", strings.TrimPrefix(client, "http://")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
