package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
)

// EnvAPIServer names the kube-apiserver binary; hack/testbins/ensure.sh prints it.
const EnvAPIServer = "MESHFED_KUBE_APISERVER"

// SkipHint is what a test without the binary is told.
const SkipHint = EnvAPIServer + " is not set: the Kubernetes tier needs a real kube-apiserver. " +
	"Run `make test`, or `eval \"$(hack/testbins/ensure.sh)\"` once (cold build ~8 min, then cached) and re-run go test"

// Config says how to launch one apiserver.
type Config struct {
	// Binary is the kube-apiserver path; default $MESHFED_KUBE_APISERVER.
	Binary string
	// StartTimeout bounds launch until /readyz answers 200 (default 90 s: ~5 s is usual, but
	// `make test` runs many test binaries on 2 cores at once).
	StartTimeout time.Duration
	// MCSCRDs installs the MCS API CRDs (ServiceExport, ServiceImport) and waits until they
	// are served.
	MCSCRDs bool
	// ExtraArgs are appended to the kube-apiserver command line.
	ExtraArgs []string
}

// APIServer is one running kube-apiserver with its own embedded etcd.
type APIServer struct {
	// Config reaches the apiserver as an admin (token in group system:masters), over TLS
	// verified against the test CA.
	Config *rest.Config
	// URL is https://127.0.0.1:<port>.
	URL string
	// Dir holds certificates, keys, the token file and kube-apiserver.log.
	Dir string
	// Version is the server's /version gitVersion.
	Version string
	// ReadyDuration is launch to the first 200 from /readyz (etcd start included);
	// StartDuration adds the CRD installation, if any.
	ReadyDuration, StartDuration time.Duration

	etcd    *embedetcd.Server
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// Start launches an apiserver for the test and stops it when the test ends. Without the
// binary it skips the test (see SkipHint).
func Start(t testing.TB, opts ...Option) *APIServer {
	t.Helper()
	return StartN(t, 1, opts...)[0]
}

// StartN launches n independent apiservers ("clusters") concurrently: two take about as
// long as one on two cores, because most of a start is waiting on bootstrap steps.
func StartN(t testing.TB, n int, opts ...Option) []*APIServer {
	t.Helper()
	cfg := Config{}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.Binary == "" {
		cfg.Binary = os.Getenv(EnvAPIServer)
	}
	if cfg.Binary == "" {
		t.Skip(SkipHint)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make([]*APIServer, n)
	var g multierror.Group
	for i := range n {
		g.Go(func() error {
			var err error
			out[i], err = Launch(ctx, cfg)
			return err
		})
	}
	errs := g.Wait()
	for i, s := range out {
		if s != nil {
			t.Cleanup(s.Close)
			t.Logf("kube-apiserver %d: %s %s: /readyz after %v, started (with CRDs) in %v; dir %s", i, s.URL, s.Version,
				s.ReadyDuration.Round(time.Millisecond), s.StartDuration.Round(time.Millisecond), s.Dir)
		}
	}
	if errs != nil {
		errs.ErrorFormat = validate.LineFormat
		t.Fatal(errs)
	}
	return out
}

// Option changes the launch Config.
type Option func(*Config)

// WithMCSCRDs installs the MCS API CRDs before Start returns.
func WithMCSCRDs() Option { return func(c *Config) { c.MCSCRDs = true } }

// WithArgs appends kube-apiserver flags.
func WithArgs(args ...string) Option {
	return func(c *Config) { c.ExtraArgs = append(c.ExtraArgs, args...) }
}

// Launch starts embedded etcd and kube-apiserver and waits until the apiserver is ready.
// Close stops both and removes Dir.
func Launch(ctx context.Context, cfg Config) (*APIServer, error) {
	if cfg.Binary == "" {
		cfg.Binary = os.Getenv(EnvAPIServer)
	}
	if cfg.Binary == "" {
		return nil, errors.New(SkipHint)
	}
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("kube-apiserver binary: %w (re-run hack/testbins/ensure.sh)", err)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	start := time.Now()

	dir, err := os.MkdirTemp("", "meshfed-kubetest-")
	if err != nil {
		return nil, fmt.Errorf("kubetest dir: %w", err)
	}
	s := &APIServer{Dir: dir}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	f, err := writeFiles(dir)
	if err != nil {
		return nil, err
	}
	s.etcd, err = embedetcd.Start(ctx, embedetcd.Config{ClientAddr: "127.0.0.1:0", NoFsync: true})
	if err != nil {
		return nil, fmt.Errorf("etcd for kube-apiserver: %w", err)
	}
	// kube-apiserver binds its own port, so a free one is picked here and handed over; another
	// process can take it in between, so a bind failure is retried with a fresh port.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if err := s.exec(cfg, f, port); err != nil {
			return nil, err
		}
		s.Config = &rest.Config{
			Host:            s.URL,
			BearerToken:     f.token,
			TLSClientConfig: rest.TLSClientConfig{CAData: f.caPEM},
			// Tests create objects in bursts; the client's default 5 qps would throttle them.
			QPS: 200, Burst: 400,
		}
		err = s.waitReady(ctx, f)
		if err == nil {
			break
		}
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(s.Config)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver /version: %w (was it built with hack/testbins/ensure.sh's ldflags?)", err)
	}
	s.Version = v.GitVersion
	s.ReadyDuration = time.Since(start)
	if cfg.MCSCRDs {
		if err := s.InstallMCSCRDs(ctx); err != nil {
			return nil, err
		}
	}
	s.StartDuration = time.Since(start)
	ok = true
	return s, nil
}

// Close stops kube-apiserver (SIGTERM, then SIGKILL after 10 s) and etcd, and removes Dir
// unless MESHFED_KUBETEST_KEEP is set (to read kube-apiserver.log after a failure).
func (s *APIServer) Close() {
	s.once.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(10 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.exited
			}
		}
		if s.etcd != nil {
			s.etcd.Close()
		}
		if os.Getenv("MESHFED_KUBETEST_KEEP") == "" {
			_ = os.RemoveAll(s.Dir)
		}
	})
}

// LogTail returns the last n lines of kube-apiserver's log, for failure messages.
func (s *APIServer) LogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "kube-apiserver.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *APIServer) exec(cfg Config, f *files, port int) error {
	s.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	args := []string{
		"--etcd-servers=" + s.etcd.Endpoint(),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(s.Dir, "certs"),
		"--tls-cert-file=" + f.servingCert,
		"--tls-private-key-file=" + f.servingKey,
		"--service-account-key-file=" + f.saKey,
		"--service-account-signing-key-file=" + f.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--token-auth-file=" + f.tokenFile,
		"--authorization-mode=RBAC",
		// No kubelets or controller-manager: the apiserver must not try to maintain the
		// kubernetes Service's endpoints from a lease nobody renews.
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--profiling=false",
		"--v=1",
	}
	args = append(args, cfg.ExtraArgs...)
	logf, err := os.Create(filepath.Join(s.Dir, "kube-apiserver.log"))
	if err != nil {
		return fmt.Errorf("kube-apiserver log: %w", err)
	}
	cmd := exec.Command(cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies (timeout, ^C), the kernel kills the apiserver too instead of
	// leaving it running on the machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", cfg.Binary, err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	return nil
}

func (s *APIServer) waitReady(ctx context.Context, f *files) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.caPEM)
	hc := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		Timeout:   5 * time.Second,
	}
	defer hc.CloseIdleConnections()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+f.token)
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, failedChecks(body))
		} else {
			last = err.Error()
		}
		select {
		case <-s.exited:
			s.cmd = nil
			return fmt.Errorf("kube-apiserver exited before ready (%v):\n%s", s.waitErr, s.LogTail(30))
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver %s not ready: %w; last /readyz: %s\n%s", s.URL, ctx.Err(), last, s.LogTail(30))
		case <-tick.C:
		}
	}
}

// failedChecks keeps the "[-]" lines of a /readyz answer.
func failedChecks(body []byte) string {
	var out []string
	for _, l := range bytes.Split(body, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("[-]")) {
			out = append(out, string(l))
		}
	}
	if len(out) == 0 {
		return strings.TrimSpace(string(body))
	}
	return strings.Join(out, "; ")
}

type files struct {
	caPEM                   []byte
	servingCert, servingKey string
	saKey                   string
	tokenFile, token        string
}

// writeFiles creates a CA, a serving certificate for 127.0.0.1, the service-account signing
// key and the static token file holding the admin token.
func writeFiles(dir string) (*files, error) {
	f := &files{
		servingCert: filepath.Join(dir, "serving.crt"),
		servingKey:  filepath.Join(dir, "serving.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		tokenFile:   filepath.Join(dir, "tokens.csv"),
	}
	ca, err := testpki.Make(testpki.Spec{CN: "meshfed kubetest CA", CA: true}, nil)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	f.caPEM = ca.CertPEM()
	srv, err := testpki.Make(testpki.Spec{CN: "kube-apiserver", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, DNS: []string{"localhost", "kubernetes.default.svc"}}, ca)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	srvKeyPEM, err := srv.MarshalKey()
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	f.token = hex.EncodeToString(tok)
	writes := []struct {
		path string
		data []byte
	}{
		{filepath.Join(dir, "ca.crt"), f.caPEM},
		{f.servingCert, srv.CertPEM()},
		{f.servingKey, srvKeyPEM},
		{f.saKey, ecPEM(saKey)},
		// token,user,uid,"groups": system:masters is bound to cluster-admin by RBAC bootstrap.
		{f.tokenFile, []byte(f.token + `,admin,admin-uid,"system:masters"` + "\n")},
	}
	for _, w := range writes {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			return nil, fmt.Errorf("kubetest: %w", err)
		}
	}
	return f, nil
}

func ecPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err) // only fails for curves crypto/ecdsa does not generate
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
