package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// etcdFlags are the flags every etcd-using command shares.
type etcdFlags struct {
	endpoints      string
	cacert         string
	cert, key      string
	user, password string
	prefix         string
	dialTimeout    time.Duration
}

const etcdFlagsHelp = `etcd connection (shared by every command that talks to etcd):
  --etcd-endpoints  HOST:PORT or https://HOST:PORT, comma-separated (env MESHFED_ETCD_ENDPOINTS)
  --etcd-cacert     CA bundle that signed etcd's serving certificate
  --etcd-cert/key   client certificate for etcd mTLS
  --etcd-user/password  etcd auth (env MESHFED_ETCD_PASSWORD avoids the password in ps)
  --prefix          keyspace prefix (default /meshfed/v1/)`

func addEtcdFlags(fs *pflag.FlagSet, f *etcdFlags) {
	def := os.Getenv("MESHFED_ETCD_ENDPOINTS")
	if def == "" {
		def = store.DefaultEndpoint
	}
	fs.StringVar(&f.endpoints, "etcd-endpoints", def, "etcd client endpoints, comma-separated HOST:PORT or https://HOST:PORT (env MESHFED_ETCD_ENDPOINTS)")
	fs.StringVar(&f.cacert, "etcd-cacert", "", "PEM CA bundle to verify etcd's serving certificate")
	fs.StringVar(&f.cert, "etcd-cert", "", "PEM client certificate for etcd mTLS (with --etcd-key)")
	fs.StringVar(&f.key, "etcd-key", "", "PEM private key of --etcd-cert")
	fs.StringVar(&f.user, "etcd-user", "", "etcd auth user (with --etcd-password)")
	fs.StringVar(&f.password, "etcd-password", os.Getenv("MESHFED_ETCD_PASSWORD"), "etcd auth password (env MESHFED_ETCD_PASSWORD)")
	fs.StringVar(&f.prefix, "prefix", records.DefaultPrefix, "etcd keyspace prefix shared by every cluster of the clusterset")
	fs.DurationVar(&f.dialTimeout, "etcd-dial-timeout", 5*time.Second, "how long to wait for etcd at start")
}

func (f *etcdFlags) config() store.Config {
	var eps []string
	for _, e := range strings.Split(f.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return store.Config{Endpoints: eps, CACert: f.cacert, Cert: f.cert, Key: f.key,
		Username: f.user, Password: f.password, Prefix: f.prefix, DialTimeout: f.dialTimeout}
}

// etcdFlagOf maps the fields of store.Config's errors to the flags.
var etcdFlagOf = map[string]string{
	store.FieldEndpoints: "--etcd-endpoints",
	store.FieldCACert:    "--etcd-cacert",
	store.FieldCert:      "--etcd-cert",
	store.FieldKey:       "--etcd-key",
	store.FieldCertKey:   "--etcd-cert/--etcd-key",
	store.FieldUserPass:  "--etcd-user/--etcd-password",
	store.FieldPrefix:    "--prefix",
}

// validate checks the flags, each problem naming its flag.
func (f *etcdFlags) validate() error {
	cfg := f.config()
	return flagErr(cfg.Validate(), etcdFlagOf)
}

// open dials etcd and returns the store over the process's one client.
func (f *etcdFlags) open(ctx context.Context, log *slog.Logger) (*store.Store, *clientv3.Client, error) {
	cli, err := store.Dial(ctx, f.config())
	if m := flagErr(err, etcdFlagOf); m != err {
		return nil, nil, m // a field of the config: its flag named
	} else if err != nil {
		return nil, nil, fmt.Errorf("%w (flags: --etcd-endpoints, --etcd-cacert, --etcd-cert/--etcd-key, --etcd-user/--etcd-password)", err)
	}
	st, err := store.New(cli, f.prefix, log)
	if err != nil {
		cli.Close()
		return nil, nil, fmt.Errorf("--prefix: %w", err)
	}
	return st, cli, nil
}
