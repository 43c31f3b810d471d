package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcdCommand: `meshfed etcd` serves clients at --listen with its data in --data-dir,
// stops cleanly on cancel, and keeps the data across a restart; bad flags are named.
func TestEtcdCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	addr := freeAddr(t)
	start := func() (stop func() error) {
		cmd := newEtcdCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"--data-dir", dir, "--listen", addr, "--etcd-log-level", "error"})
		return startCmd(t, cmd)
	}
	client := func() *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return cli
	}

	stop := start()
	cli := client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Put blocks until the server answers (the client retries while it starts).
	if _, err := cli.Put(ctx, "/meshfed/v1/probe", "1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	cli.Close()
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	stop = start()
	cli = client()
	defer cli.Close()
	r, err := cli.Get(ctx, "/meshfed/v1/probe")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "1" {
		t.Fatalf("after a restart: %v %v", r, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	for args, want := range map[string]string{
		"--listen 2379":                              "--listen",
		"--cert-file c.pem":                          "--cert-file/--key-file: give both or neither",
		"--client-cert-auth --data-dir x":            "--client-cert-auth: needs --trusted-ca-file",
		"--peer-listen nope --data-dir x":            "--peer-listen",
		"--initial-cluster m0=http://127.0.0.1:2380": "--initial-cluster: needs --peer-listen",
		"--name m0 --peer-listen 127.0.0.1:2380 --initial-cluster m1=http://127.0.0.1:2381": "does not list this member",
		"--name m0 --peer-listen 127.0.0.1:2380 --initial-cluster m0=127.0.0.1:2380":        "is not http://HOST:PORT",
	} {
		cmd := newEtcdCmd()
		cmd.SetArgs(strings.Fields(args))
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}
