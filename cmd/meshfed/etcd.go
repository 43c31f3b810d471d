package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
)

func init() { register(newEtcdCmd) }

type etcdServerFlags struct {
	dataDir, listen, peerListen string
	name, initialCluster, token string
	cert, key, ca               string
	clientCertAuth              bool
	compaction                  string
	logLevel                    string
}

func newEtcdCmd() *cobra.Command {
	var f etcdServerFlags
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Run an embedded etcd server for one-machine federations",
		Long: `Runs a single-member etcd server inside meshfed, for one machine (a laptop, a demo,
a lab). Every other meshfed command reaches it at --listen by default (127.0.0.1:2379).

Beyond one machine, run a real etcd cluster (three or five members, mTLS, auth) and point
every command at it with --etcd-endpoints: see docs/operations.md (etcd topology, backup
and restore). --initial-cluster makes this process one member of such a cluster (the
testbed runs three this way, docs/testbed.md); a restarted member reads its membership
from --data-dir and rejoins.

Examples:
  meshfed etcd --data-dir ./meshfed-etcd
  meshfed etcd --data-dir /var/lib/meshfed-etcd --listen 10.0.0.5:2379 \
    --cert-file server.pem --key-file server-key.pem --trusted-ca-file ca.pem --client-cert-auth

  # one member of three (run the same with --name m1 and m2 on their addresses)
  meshfed etcd --name m0 --data-dir ./m0 --listen 10.0.0.5:2379 --peer-listen 10.0.0.5:2380 \
    --initial-cluster m0=http://10.0.0.5:2380,m1=http://10.0.0.6:2380,m2=http://10.0.0.7:2380`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runEtcd(cmd.Context(), cmd.OutOrStdout(), f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "meshfed-etcd", "directory holding etcd's data (created if absent)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:2379", "client address HOST:PORT")
	fl.StringVar(&f.peerListen, "peer-listen", "", "peer address HOST:PORT (default: a free port on the client host; a single member never uses it)")
	fl.StringVar(&f.name, "name", "meshfed", "member name (with --initial-cluster: this member's entry there)")
	fl.StringVar(&f.initialCluster, "initial-cluster", "", "every member of a new multi-member cluster, NAME=http://HOST:PORT,... (needs --peer-listen); empty: a single member")
	fl.StringVar(&f.token, "initial-cluster-token", "", "token that keeps clusters with the same member URLs apart (default: etcd's)")
	fl.StringVar(&f.cert, "cert-file", "", "serve clients over TLS with this PEM certificate (with --key-file)")
	fl.StringVar(&f.key, "key-file", "", "PEM private key of --cert-file")
	fl.StringVar(&f.ca, "trusted-ca-file", "", "PEM CA that client certificates must chain to (with --client-cert-auth)")
	fl.BoolVar(&f.clientCertAuth, "client-cert-auth", false, "require client certificates (mTLS)")
	fl.StringVar(&f.compaction, "auto-compaction-retention", "1h", "keep this much history (periodic compaction); watchers resync after it")
	fl.StringVar(&f.logLevel, "etcd-log-level", "warn", "etcd's own log level: debug, info, warn, error")
	return cmd
}

func runEtcd(ctx context.Context, out io.Writer, f etcdServerFlags) error {
	var errs validate.Errors
	errs.AddErr("--listen", validate.ListenAddr(f.listen))
	if f.peerListen != "" {
		errs.AddErr("--peer-listen", validate.ListenAddr(f.peerListen))
	}
	if (f.cert == "") != (f.key == "") {
		errs.Add("--cert-file/--key-file", "give both or neither")
	}
	if f.clientCertAuth && (f.ca == "" || f.cert == "") {
		errs.Add("--client-cert-auth", "needs --trusted-ca-file and --cert-file/--key-file")
	}
	if f.dataDir == "" {
		errs.Add("--data-dir", "must not be empty")
	}
	if f.name == "" {
		errs.Add("--name", "must not be empty")
	}
	switch {
	case f.initialCluster != "" && f.peerListen == "":
		errs.Add("--initial-cluster", "needs --peer-listen: the address the other members reach this one at, e.g. --peer-listen 10.0.0.5:2380")
	case f.initialCluster != "":
		errs.AddErr("--initial-cluster", embedetcd.CheckInitialCluster(f.initialCluster, f.name, "http://"+f.peerListen))
	}
	if err := errs.Err(); err != nil {
		return err
	}
	cfg := embedetcd.Config{DataDir: f.dataDir, ClientAddr: f.listen, PeerAddr: f.peerListen,
		Name: f.name, InitialCluster: f.initialCluster, ClusterToken: f.token,
		AutoCompactionRetention: f.compaction, LogLevel: f.logLevel}
	if f.cert != "" {
		cfg.TLS = &embedetcd.TLSFiles{CertFile: f.cert, KeyFile: f.key, TrustedCAFile: f.ca, ClientCertAuth: f.clientCertAuth}
	}
	srv, err := embedetcd.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	slog.Info("embedded etcd serving", "endpoint", srv.Endpoint(), "data_dir", f.dataDir)
	fmt.Fprintf(out, "etcd ready at %s (data in %s); Ctrl-C to stop\n", srv.Endpoint(), f.dataDir)
	select {
	case <-ctx.Done():
		slog.Info("stopping embedded etcd")
		return nil
	case err := <-srv.Err():
		return fmt.Errorf("embedded etcd: %w", err)
	}
}
