package istiotest

import (
	"bytes"
	"context"
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

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshfed/meshfed/internal/kubetest"
)

// Environment variables that hack/testbins/istiod/ensure.sh prints.
const (
	EnvIstiod = "MESHFED_ISTIOD"
	EnvCRDs   = "MESHFED_ISTIO_CRDS"
)

// SkipHint is what a test without the binary is told.
const SkipHint = EnvIstiod + " is not set: the Istio tier needs a real istiod. Run " +
	"`make test`, or `eval \"$(hack/testbins/istiod/ensure.sh)\"` once " +
	"(a long cold build, then cached; docs/istio.md) and re-run go test"

// Namespace is istiod's own namespace (POD_NAMESPACE); it must exist for /ready.
const Namespace = "istio-system"

// Config says how to launch one istiod.
type Config struct {
	// Binary is pilot-discovery; default $MESHFED_ISTIOD.
	Binary string
	// CRDs is istio's CRD file, applied to the apiserver before istiod starts; default
	// $MESHFED_ISTIO_CRDS. Needed when the mesh config lists `k8s://` (or none).
	CRDs string
	// APIServer is the cluster istiod watches (required: the pinned istiod panics without a
	// Kubernetes registry).
	APIServer *kubetest.APIServer
	// ClusterID is istiod's --clusterID (default "Kubernetes", istiod's own default).
	ClusterID string
	// MeshConfig and MeshNetworks are the contents of the --meshConfig and
	// --networksConfig files (YAML of MeshConfig and MeshNetworks; empty: defaults).
	MeshConfig, MeshNetworks []byte
	// Env adds to istiod's environment (after the defaults below, so it wins).
	Env map[string]string
	// XDSPort, when set, is the loopback port of istiod's plaintext xDS (--grpcAddr), for a
	// test that must name it before istiod starts (default: a free port).
	XDSPort int
	// PodName is POD_NAME (default "istiod-0"): two replicas need different names.
	PodName string
	// StartTimeout bounds launch until /ready answers 200 (default 120 s).
	StartTimeout time.Duration
	// Dir, when set, is where the config files and the log go (kept; default a temporary
	// directory removed by Close).
	Dir string
}

// Istiod is one running pilot-discovery.
type Istiod struct {
	// XDSAddr is the plaintext xDS address (sidecars and Sidecar connect here).
	XDSAddr string
	// HTTPAddr serves /ready and /debug/... (configz, syncz, adsz).
	HTTPAddr string
	// MonitoringAddr serves /metrics.
	MonitoringAddr string
	// Dir holds mesh.yaml, meshNetworks.yaml, kubeconfig and istiod.log.
	Dir string
	// ReadyDuration is launch to the first 200 from /ready.
	ReadyDuration time.Duration

	cfg     Config
	ownDir  bool
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// Start launches istiod for the test and stops it when the test ends; without the binary it
// skips the test (see SkipHint).
func Start(t testing.TB, cfg Config) *Istiod {
	t.Helper()
	if cfg.Binary == "" {
		cfg.Binary = os.Getenv(EnvIstiod)
	}
	if cfg.Binary == "" {
		t.Skip(SkipHint)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	i, err := Launch(ctx, cfg)
	if i != nil {
		t.Cleanup(i.Close)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("istiod: xDS %s, http %s: /ready after %v; dir %s", i.XDSAddr, i.HTTPAddr, i.ReadyDuration.Round(time.Millisecond), i.Dir)
	return i
}

// Launch prepares the cluster (istio-system, the CRDs) and starts istiod, waiting for /ready.
// On error the returned Istiod (if not nil) holds the log: call Close.
func Launch(ctx context.Context, cfg Config) (*Istiod, error) {
	if cfg.Binary == "" {
		cfg.Binary = os.Getenv(EnvIstiod)
	}
	if cfg.Binary == "" {
		return nil, errors.New(SkipHint)
	}
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("istiod binary: %w (re-run hack/testbins/istiod/ensure.sh)", err)
	}
	if cfg.APIServer == nil {
		return nil, errors.New("istiotest: Config.APIServer is required (the pinned istiod needs a Kubernetes registry)")
	}
	if cfg.CRDs == "" {
		cfg.CRDs = os.Getenv(EnvCRDs)
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = "Kubernetes"
	}
	if cfg.PodName == "" {
		cfg.PodName = "istiod-0"
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 120 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	if err := PrepareCluster(ctx, cfg.APIServer.Config, cfg.CRDs); err != nil {
		return nil, err
	}
	i := &Istiod{cfg: cfg, Dir: cfg.Dir}
	if i.Dir == "" {
		d, err := os.MkdirTemp("", "meshfed-istiotest-")
		if err != nil {
			return nil, fmt.Errorf("istiotest dir: %w", err)
		}
		i.Dir, i.ownDir = d, true
	} else if err := os.MkdirAll(i.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("istiotest dir: %w", err)
	}
	if err := i.writeFiles(); err != nil {
		return i, err
	}
	if err := i.run(ctx); err != nil {
		return i, err
	}
	return i, nil
}

// PrepareCluster creates istio-system and applies istio's CRDs (crdFile may be empty: no
// CRDs), as an Istio install would before istiod starts. Idempotent.
func PrepareCluster(ctx context.Context, cfg *rest.Config, crdFile string) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("istiotest: %w", err)
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("istiotest: create namespace %s: %w", Namespace, err)
	}
	if crdFile == "" {
		return nil
	}
	b, err := os.ReadFile(crdFile)
	if err != nil {
		return fmt.Errorf("istiotest: istio CRDs ($%s): %w", EnvCRDs, err)
	}
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---")) {
		if len(bytes.TrimSpace(d)) == 0 || !bytes.Contains(d, []byte("kind: CustomResourceDefinition")) {
			continue
		}
		docs = append(docs, d)
	}
	if err := kubetest.ApplyCRDs(ctx, cfg, docs...); err != nil {
		return fmt.Errorf("istiotest: istio CRDs: %w", err)
	}
	return nil
}

func (i *Istiod) writeFiles() error {
	kc := clientcmdapi.NewConfig()
	rc := i.cfg.APIServer.Config
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.TLSClientConfig.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	kc.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*kc, filepath.Join(i.Dir, "kubeconfig")); err != nil {
		return fmt.Errorf("istiotest kubeconfig: %w", err)
	}
	if err := os.WriteFile(filepath.Join(i.Dir, "mesh.yaml"), i.cfg.MeshConfig, 0o644); err != nil {
		return fmt.Errorf("istiotest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(i.Dir, "meshNetworks.yaml"), i.cfg.MeshNetworks, 0o644); err != nil {
		return fmt.Errorf("istiotest: %w", err)
	}
	return nil
}

// run starts the process on fresh loopback ports and waits for /ready; a port taken by
// another process in between is retried with fresh ones.
func (i *Istiod) run(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(4)
		if err != nil {
			return err
		}
		i.XDSAddr = loop(ports[0])
		if i.cfg.XDSPort != 0 {
			i.XDSAddr = loop(i.cfg.XDSPort)
		}
		i.HTTPAddr = loop(ports[1])
		i.MonitoringAddr = loop(ports[2])
		if err := i.exec(ports[3]); err != nil {
			return err
		}
		err = i.waitReady(ctx)
		if err == nil {
			return nil
		}
		i.stop()
		if attempt < 3 && strings.Contains(i.LogTail(30), "address already in use") {
			continue
		}
		return fmt.Errorf("%w\nistiod.log (last lines):\n%s", err, i.LogTail(40))
	}
}

func (i *Istiod) exec(httpsPort int) error {
	args := []string{"discovery",
		"--kubeconfig=" + filepath.Join(i.Dir, "kubeconfig"),
		"--meshConfig=" + filepath.Join(i.Dir, "mesh.yaml"),
		"--networksConfig=" + filepath.Join(i.Dir, "meshNetworks.yaml"),
		"--clusterID=" + i.cfg.ClusterID,
		"--grpcAddr=" + i.XDSAddr,
		"--httpAddr=" + i.HTTPAddr,
		"--monitoringAddr=" + i.MonitoringAddr,
		// No webhooks are registered, but the HTTPS server still binds: keep it on loopback.
		"--httpsAddr=" + loop(httpsPort),
		// No secure (istiod-CA) xDS port: the tests are sidecars on plaintext loopback.
		"--secureGRPCAddr=",
		"--profile=false",
		"--shutdownDuration=1s",
		"--log_output_level=default:info",
	}
	env := map[string]string{
		"POD_NAMESPACE": Namespace,
		"POD_NAME":      i.cfg.PodName,
		// Empty names: istiod patches no webhook configurations.
		"INJECTION_WEBHOOK_CONFIG_NAME":  "",
		"VALIDATION_WEBHOOK_CONFIG_NAME": "",
		// No CA: the tests read configuration, they do not get certificates.
		"ENABLE_CA_SERVER": "false",
		// Leader election and status writing are not under test.
		"PILOT_ENABLE_STATUS":              "false",
		"ENABLE_ENHANCED_RESOURCE_SCOPING": "false",
		"PILOT_ENABLE_ANALYSIS":            "false",
		"ISTIOD_CUSTOM_HOST":               "istiod.istio-system.svc",
		"REVISION":                         "default",
		"JWT_POLICY":                       "first-party-jwt",
		"KUBECONFIG":                       filepath.Join(i.Dir, "kubeconfig"),
	}
	for k, v := range i.cfg.Env {
		env[k] = v
	}
	cmd := exec.Command(i.cfg.Binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + i.Dir}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Dir = i.Dir
	logf, err := os.OpenFile(filepath.Join(i.Dir, "istiod.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("istiod log: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies, the kernel kills istiod too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", i.cfg.Binary, err)
	}
	i.cmd, i.exited, i.waitErr = cmd, make(chan struct{}), nil
	go func() {
		i.waitErr = cmd.Wait()
		logf.Close()
		close(i.exited)
	}()
	return nil
}

func (i *Istiod) waitReady(ctx context.Context) error {
	start := time.Now()
	c := &http.Client{Timeout: 2 * time.Second}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-i.exited:
			return fmt.Errorf("istiod exited before /ready: %v", i.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("istiod not ready (last /ready: %s): %w", last, ctx.Err())
		case <-t.C:
		}
		resp, err := c.Get("http://" + i.HTTPAddr + "/ready")
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		if resp.StatusCode == http.StatusOK {
			i.ReadyDuration = time.Since(start)
			return nil
		}
	}
}

// Exited is closed when the process has ended.
func (i *Istiod) Exited() <-chan struct{} { return i.exited }

// Restart stops istiod and starts it again with the same configuration files and ports
// chosen afresh (the returned error carries the log tail when it does not get ready).
func (i *Istiod) Restart(ctx context.Context) error {
	i.stop()
	ctx, cancel := context.WithTimeout(ctx, i.cfg.StartTimeout)
	defer cancel()
	return i.run(ctx)
}

// Stop stops istiod (SIGTERM, then SIGKILL after 10 s); Restart starts it again.
func (i *Istiod) Stop() { i.stop() }

func (i *Istiod) stop() {
	if i.cmd == nil || i.cmd.Process == nil {
		return
	}
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-i.exited:
	case <-time.After(10 * time.Second):
		_ = i.cmd.Process.Kill()
		<-i.exited
	}
	i.cmd = nil
}

// Close stops istiod and removes its directory unless MESHFED_ISTIOTEST_KEEP is set or the
// directory was given in Config.
func (i *Istiod) Close() {
	i.once.Do(func() {
		i.stop()
		if i.ownDir && os.Getenv("MESHFED_ISTIOTEST_KEEP") == "" {
			_ = os.RemoveAll(i.Dir)
		}
	})
}

// LogTail returns the last n lines of istiod's log, for failure messages.
func (i *Istiod) LogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(i.Dir, "istiod.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Debug GETs istiod's /debug/<what> (configz, syncz, adsz, ...).
func (i *Istiod) Debug(what string) ([]byte, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + i.HTTPAddr + "/debug/" + what)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func loop(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// Binary is $MESHFED_ISTIOD ("" when unset: tests skip with SkipHint).
func Binary() string { return os.Getenv(EnvIstiod) }
