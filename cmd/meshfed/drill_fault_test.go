package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// TestDrillFaultEndsAlone: a reset fault from a real `meshfed drill` process reaches
// west's gateway through west's federation service (xDS); then the drill process is
// killed (SIGKILL), west's federation service stopped and etcd shut down. The gateway
// keeps resetting (it keeps its last configuration) and lifts the fault by itself at the
// deadline the fault carries, within a second of it.
func TestDrillFaultEndsAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a federation and a drill process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, err := harness.Start(ctx, harness.Options{GatewayRoutesFromXDS: true, Clusters: []harness.ClusterSpec{
		{Name: "east", Region: "r1", Zone: "r1a"}, {Name: "west", Region: "r1", Zone: "r1b"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	west := f.Cluster("west")
	wl, err := harness.StartWorkload("west", "echo-0", harness.WorkloadIP(west.Index, 0)+":0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Close()
	host, port, _ := net.SplitHostPort(wl.Addr)
	if err := west.SetExports(fmt.Sprintf("services:\n  - {name: echo, namespace: demo, ports: [{port: 8443, targetPort: %s}], endpoints: [{address: %s}]}\n", port, host)); err != nil {
		t.Fatal(err)
	}
	gw := west.Gateway
	sni := names.ServiceSNI("demo", "echo", 8443)
	call := func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", west.GatewayAddr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			return err
		}
		return c.Close()
	}
	waitfor.Cond(t, 30*time.Second, func() bool { return call() == nil }, "west's gateway routes demo/echo")

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const duration = 20 * time.Second
	drill := exec.Command(exe, "drill", "--etcd-endpoints", strings.Join(f.Etcd.Clients, ","), "--fail", "west",
		"--fault", "reset", "--duration", duration.String(), "--lease-ttl", "10s")
	drill.Env = append(os.Environ(), "MESHFED_AS_MAIN=1")
	var out strings.Builder
	drill.Stdout, drill.Stderr = &out, &out
	if err := drill.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = drill.Wait(); close(exited) }()
	defer func() { _ = drill.Process.Kill(); <-exited }()
	waitfor.Cond(t, 20*time.Second, func() bool { return len(gw.Faults()) == 1 }, "the fault at west's gateway (drill output: %s)", &out)
	deadline := gw.Faults()[0].Deadline
	if err := call(); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("call during the reset fault: %v", err)
	}

	// Everything that could lift it goes away.
	if err := drill.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if err := west.StopFederation(); err != nil {
		t.Fatal(err)
	}
	f.Etcd.Close()
	if time.Until(deadline) < time.Second {
		t.Fatalf("the kills took until %v before the deadline: make --duration longer", time.Until(deadline))
	}
	if err := call(); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("call after the kills, before the deadline: %v (the gateway must keep its last configuration)", err)
	}
	waitfor.Cond(t, time.Until(deadline)+5*time.Second, func() bool { return call() == nil }, "calls pass again after the deadline")
	if late := time.Since(deadline); late > 1500*time.Millisecond {
		t.Errorf("the fault ended %v after its deadline; want within 1s (+ polling)", late)
	}
	if n := len(gw.Faults()); n != 0 {
		t.Errorf("%d faults still in force", n)
	}
	t.Logf("fault ended %v after its deadline, with no drill process, no federation service and no etcd", time.Since(deadline).Round(time.Millisecond))
}
