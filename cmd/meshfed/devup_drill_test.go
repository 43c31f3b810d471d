package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevUpDrillCommand: `meshfed dev up` (what `make run` runs, as a real process, in a
// fresh working directory) ends its story by printing a drill command with traffic; that
// exact command, run from the same directory, drives mTLS traffic from east (an SVID from
// east's development CA, found without any flag), sees west fail by its health checks
// under a blackhole, and reports the switch and the return with no TLS error.
func TestDevUpDrillCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a local federation and a drill")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	up := exec.CommandContext(ctx, exe, "dev", "up", "--etcd-listen", "127.0.0.1:0", "--drill-for", "2s", "--min-reassign", "1s")
	up.Dir = dir
	up.Env = append(os.Environ(), "MESHFED_AS_MAIN=1")
	up.Cancel = func() error { return up.Process.Signal(syscall.SIGTERM) }
	up.WaitDelay = 20 * time.Second
	pr, pw := io.Pipe()
	up.Stdout, up.Stderr = pw, pw
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = up.Process.Signal(syscall.SIGTERM)
		_ = up.Wait()
		pw.Close()
	}()
	var story strings.Builder
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			story.WriteString(line + "\n")
			if i := strings.Index(line, "bin/meshfed drill "); i >= 0 {
				found <- line[i:]
			}
		}
	}()
	var command string
	select {
	case command = <-found:
	case <-time.After(150 * time.Second):
		t.Fatalf("dev up printed no drill command:\n%s", story.String())
	}
	t.Logf("printed: %s", command)
	args := strings.Fields(command)[1:] // "bin/meshfed" is this binary
	drill := exec.CommandContext(ctx, exe, args...)
	drill.Dir = dir
	drill.Env = append(os.Environ(), "MESHFED_AS_MAIN=1")
	out, err := drill.CombinedOutput()
	t.Logf("drill output:\n%s", out)
	if err != nil {
		t.Fatalf("the printed drill command failed: %v", err)
	}
	s := string(out)
	for _, want := range []string{
		"client identity spiffe://east.meshfed.local/",
		"The fault blackhole at west's gateways held",
		"Before the fault west served 100%",
		"east's federation (EDS): marked west down",
		"Detection: requests stopped going to west",
		"Traffic was back on west",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("drill output lacks %q", want)
		}
	}
	if i := strings.Index(s, "Errors:"); i >= 0 {
		line, _, _ := strings.Cut(s[i:], "\n")
		for _, bad := range []string{"certificate", "TLS handshake", "trust domain"} {
			if strings.Contains(line, bad) {
				t.Errorf("the drill's errors include %q: %s", bad, line)
			}
		}
	}
}
