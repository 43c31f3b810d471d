package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/healthprobe"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// TestMain lets a test run this package's main() in a child process (the test binary
// re-executed with MESHFED_AS_MAIN=1 and meshfed's arguments), so that real signals reach
// the real signal handling.
func TestMain(m *testing.M) {
	if os.Getenv("MESHFED_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestGatewaySIGTERM: a real SIGTERM to a running `meshfed gateway` process makes its
// health name say "draining" at once (remote clusters move away), keeps a live connection
// working through the drain, and the process exits 0 once that connection ends.
func TestGatewaySIGTERM(t *testing.T) {
	wl, err := harness.StartWorkload("east", "echo-0", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wl.Close)
	host, port, _ := net.SplitHostPort(wl.Addr)
	dir := t.TempDir()
	exports := filepath.Join(dir, "exports.yaml")
	if err := os.WriteFile(exports, []byte(fmt.Sprintf("services:\n  - {name: echo, namespace: demo, ports: [{port: 8443, targetPort: %s}], endpoints: [{address: %s}]}\n", port, host)), 0o644); err != nil {
		t.Fatal(err)
	}
	addr, adminAddr := freeAddr(t), freeAddr(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "gateway", "--cluster", "east", "--listen", addr, "--admin", adminAddr, "--exports", exports,
		"--drain-accept-period", "500ms", "--drain-timeout", "20s", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "MESHFED_AS_MAIN=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{}) // closed when the process has exited; waitErr is then set
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	waitfor.Cond(t, 20*time.Second, func() bool {
		r := healthprobe.Probe(context.Background(), "", addr, nil)
		return r.OK && r.Line.Word == "ok"
	}, "gateway healthy (stderr: %s)", &stderr)

	// A live connection through the gateway, TLS end to end to the workload.
	live, err := tls.Dial("tcp", addr, &tls.Config{ServerName: names.ServiceSNI("demo", "echo", 8443), InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	rd := bufio.NewReader(live)
	echo := func(msg string) string {
		_ = live.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(live, "%s\n", msg)
		line, err := rd.ReadString('\n')
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(line)
	}
	if got := echo("before"); got != "east echo-0: before" {
		t.Fatalf("echo before SIGTERM: %q", got)
	}
	// --steady-sysmon (default): the same process re-executed itself with the setting (and
	// the SIGTERM below reaches the re-executed gateway).
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid)); err == nil &&
		!strings.Contains(string(env), steadySchedtrace) {
		t.Errorf("the gateway's environment has no GODEBUG %s: %q", steadySchedtrace, env)
	}
	// --adaptive-procs (default): the controller runs and exports what it holds.
	if resp, err := http.Get("http://" + adminAddr + "/metrics"); err != nil {
		t.Errorf("metrics: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "meshfed_gateway_gomaxprocs ") {
			t.Errorf("metrics have no meshfed_gateway_gomaxprocs (--adaptive-procs is on by default)")
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The health name fails at once: the first probe after the signal may still race it,
	// the answer must be "draining" well before the accept period ends.
	waitfor.Cond(t, 2*time.Second, func() bool {
		r := healthprobe.Probe(context.Background(), "", addr, nil)
		return r.Result == healthprobe.ResultStatus && r.Line.Word == "draining"
	}, "health says draining after SIGTERM")
	if got := echo("during drain"); got != "east echo-0: during drain" {
		t.Fatalf("live connection during the drain: %q", got)
	}
	select {
	case <-exited:
		t.Fatalf("the gateway exited with a live connection open (drain timeout 20s): %v", waitErr)
	default:
	}
	live.Close()
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("exit after the drain: %v\n%s", waitErr, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the gateway did not exit after its last connection closed")
	}
}
