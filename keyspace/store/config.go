package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
)

// Config is how to reach etcd (what the shared etcd flags of every command fill in).
type Config struct {
	Endpoints   []string
	CACert      string
	Cert        string
	Key         string
	Username    string
	Password    string
	Prefix      string
	DialTimeout time.Duration
}

// DefaultEndpoint is the embedded etcd's default client address.
const DefaultEndpoint = "127.0.0.1:2379"

// Fields of Config as its errors name them (*validate.FieldError): a command maps them to
// its flags.
const (
	FieldEndpoints = "endpoints"
	FieldCACert    = "CA certificate"
	FieldCert      = "client certificate"
	FieldKey       = "client key"
	FieldCertKey   = "client certificate/key"
	FieldUserPass  = "user/password"
	FieldPrefix    = "prefix"
)

// Validate checks the config and reports every problem, each naming its field.
func (c *Config) Validate() error {
	var errs validate.Errors
	if len(c.Endpoints) == 0 {
		errs.Add(FieldEndpoints, "no endpoint: give HOST:PORT or https://HOST:PORT (comma-separated), or set MESHFED_ETCD_ENDPOINTS")
	}
	for _, e := range c.Endpoints {
		hp := e
		if rest, ok := strings.CutPrefix(e, "https://"); ok {
			hp = rest
		} else if rest, ok := strings.CutPrefix(e, "http://"); ok {
			hp = rest
		}
		if err := validate.HostPort(hp); err != nil {
			errs.Add(FieldEndpoints, "%v", err)
		}
	}
	if (c.Cert == "") != (c.Key == "") {
		errs.Add(FieldCertKey, "give both the client certificate and its key, or neither")
	}
	for field, path := range map[string]string{FieldCACert: c.CACert, FieldCert: c.Cert, FieldKey: c.Key} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			errs.Add(field, "%v", err)
		}
	}
	if (c.Username == "") != (c.Password == "") {
		errs.Add(FieldUserPass, "give both the user and the password, or neither")
	}
	if _, err := records.NewKeyspace(c.Prefix); err != nil {
		errs.Add(FieldPrefix, "%v", err)
	}
	return errs.Err()
}

// TLSConfig builds the client TLS config, or nil when no TLS file is set and no endpoint
// is https.
func (c *Config) TLSConfig() (*tls.Config, error) {
	useTLS := c.CACert != "" || c.Cert != ""
	for _, e := range c.Endpoints {
		if strings.HasPrefix(e, "https://") {
			useTLS = true
		}
	}
	if !useTLS {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, &validate.FieldError{Field: FieldCACert, Msg: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &validate.FieldError{Field: FieldCACert, Msg: c.CACert + ": no PEM certificate found"}
		}
		tc.RootCAs = pool
	}
	if c.Cert != "" {
		kp, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, &validate.FieldError{Field: FieldCertKey, Msg: err.Error()}
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return tc, nil
}

// Dial opens the process's etcd client and checks that etcd answers (and that the
// credentials work) before returning. Keep one client per process.
func Dial(ctx context.Context, c Config) (*clientv3.Client, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	tc, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	eps := make([]string, len(c.Endpoints))
	for i, e := range c.Endpoints {
		eps[i] = strings.TrimPrefix(strings.TrimPrefix(e, "https://"), "http://")
	}
	dt := c.DialTimeout
	if dt == 0 {
		dt = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		TLS:                  tc,
		Username:             c.Username,
		Password:             c.Password,
		DialTimeout:          dt,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		// etcd's client logs through zap at info; meshfed reports what matters itself.
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{},
		Context:     context.Background(),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %s: %w (check the endpoints, that etcd is up, and its TLS: the CA certificate, the client certificate and key)", strings.Join(c.Endpoints, ","), err)
	}
	pctx, cancel := context.WithTimeout(ctx, dt)
	defer cancel()
	if _, err := cli.Get(pctx, "health-probe-"+c.Prefix, clientv3.WithCountOnly()); err != nil && !isPermissionDenied(err) {
		cli.Close()
		return nil, fmt.Errorf("etcd %s does not answer: %w (check the endpoints, TLS and credentials)", strings.Join(c.Endpoints, ","), err)
	}
	return cli, nil
}
