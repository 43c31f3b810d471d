package federate_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/internal/trusttest"
	"github.com/meshfed/meshfed/trust/source"
)

// EnvSPIRE names the spire-server binary (hack/testbins/spire/ensure.sh prints it).
const EnvSPIRE = "MESHFED_SPIRE_SERVER"

type spire struct {
	bin, dir, sock string
	endpoint       string // bundle endpoint HOST:PORT
	td             string
	cmd            *exec.Cmd
	log            *bytes.Buffer
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startSPIRE runs a spire-server for td whose bundle endpoint uses profile (https_spiffe,
// or https_web with webCert/webKey), and extraEnv (SSL_CERT_FILE: the Web PKI it trusts).
func startSPIRE(t *testing.T, bin, td, profile, webCert, webKey string, extraEnv ...string) *spire {
	dir := t.TempDir()
	s := &spire{bin: bin, dir: dir, sock: filepath.Join(dir, "api.sock"), td: td, log: &bytes.Buffer{}}
	epPort := freePort(t)
	s.endpoint = fmt.Sprintf("127.0.0.1:%d", epPort)
	prof := `profile "https_spiffe" {}`
	if profile == source.ProfileWeb {
		prof = fmt.Sprintf(`profile "https_web" {
        serving_cert_file {
          cert_file_path = %q
          key_file_path = %q
          file_sync_interval = "1m"
        }
      }`, webCert, webKey)
	}
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = %d
      %s
    }
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`, freePort(t), s.sock, td, filepath.Join(dir, "data"), epPort, prof, filepath.Join(dir, "datastore.sqlite3"))
	cfgPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, "run", "-config", cfgPath)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.Env = append(os.Environ(), extraEnv...)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		_, _ = s.cmd.Process.Wait()
		if t.Failed() {
			t.Logf("spire-server %s log:\n%s", td, s.log.String())
		}
	})
	waitfor.Cond(t, 90*time.Second, func() bool {
		_, err := s.run("healthcheck")
		return err == nil
	}, "spire-server %s healthy", td)
	return s
}

func (s *spire) run(args ...string) (string, error) {
	args = append(args, "-socketPath", s.sock)
	out, err := exec.Command(s.bin, args...).CombinedOutput()
	return string(out), err
}

// webPKI makes a CA and a server certificate for 127.0.0.1 (the https_web profile).
func webPKI(t *testing.T) (caPath, certPath, keyPath string) {
	dir := t.TempDir()
	ca := testpki.New(t, testpki.Spec{CN: "test web CA", CA: true})
	web := ca.Issue(t, testpki.Spec{CN: "127.0.0.1", IPs: []net.IP{net.ParseIP("127.0.0.1")}, DNS: []string{"localhost"},
		EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	caPath, certPath, keyPath = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testpki.Write(t, caPath, ca.CertPEM())
	testpki.Write(t, certPath, web.CertPEM())
	if err := devca.WriteKey(keyPath, web.Key); err != nil {
		t.Fatal(err)
	}
	return caPath, certPath, keyPath
}

// TestSPIREInterop: meshfed fetches SPIRE's bundle endpoint with https_spiffe and with
// https_web, and SPIRE federates with meshfed's bundle endpoint over both profiles.
func TestSPIREInterop(t *testing.T) {
	bin := os.Getenv(EnvSPIRE)
	if bin == "" {
		t.Skip(EnvSPIRE + " is not set: the SPIRE interop test needs spire-server. Run `eval \"$(hack/testbins/spire/ensure.sh)\"` once (long cold build, then cached) and re-run go test")
	}
	caPath, certPath, keyPath := webPKI(t)
	env := trusttest.NewEnv(t)
	a := env.StartCluster("a", "a.example", trusttest.ClusterOptions{Endpoint: true})
	w := env.StartCluster("w", "w.example", trusttest.ClusterOptions{Endpoint: true, EndpointCert: certPath, EndpointKey: keyPath})
	waitfor.Cond(t, 20*time.Second, func() bool {
		return a.Svc.EndpointAddr() != "" && w.Svc.EndpointAddr() != "" && a.Has("a.example", 1) && w.Has("w.example", 1)
	}, "meshfed bundle endpoints up")

	spiffeSPIRE := startSPIRE(t, bin, "spire1.example", source.ProfileSPIFFE, "", "", "SSL_CERT_FILE="+caPath)
	webSPIRE := startSPIRE(t, bin, "spire2.example", source.ProfileWeb, certPath, keyPath)

	t.Run("meshfed fetches SPIRE https_spiffe", func(t *testing.T) {
		pemOut, err := spiffeSPIRE.run("bundle", "show", "-format", "pem")
		if err != nil {
			t.Fatalf("bundle show: %v %s", err, pemOut)
		}
		bpath := filepath.Join(t.TempDir(), "spire1.pem")
		_ = os.WriteFile(bpath, []byte(pemOut), 0o644)
		spec := "endpoint:https://" + spiffeSPIRE.endpoint + ",profile=https_spiffe,id=spiffe://spire1.example/spire/server,bundle=" + bpath
		src, err := source.Parse(spec, "spire1.example", source.Options{Log: trusttest.Quiet()})
		if err != nil {
			t.Fatal(err)
		}
		b, err := src.(*source.Endpoint).Fetch(context.Background())
		if err != nil {
			t.Fatalf("fetch SPIRE's https_spiffe endpoint: %v", err)
		}
		want, _ := trust.Parse("spire1.example", []byte(pemOut), trust.ParseOptions{})
		// `bundle show -format pem` has the X.509 roots only; the endpoint adds JWT keys.
		if string(b.RootsPEM()) != string(want.RootsPEM()) {
			t.Fatal("fetched roots differ from `spire-server bundle show`")
		}
		t.Logf("SPIRE bundle: %d root(s), %d JWT key(s), sequence %d, refresh hint %s", len(b.X509Roots), len(b.Keys), b.Sequence, b.RefreshHint)
	})
	t.Run("meshfed fetches SPIRE https_web", func(t *testing.T) {
		spec := "endpoint:https://" + webSPIRE.endpoint + ",profile=https_web,ca=" + caPath
		src, err := source.Parse(spec, "spire2.example", source.Options{Log: trusttest.Quiet()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := src.(*source.Endpoint).Fetch(context.Background()); err != nil {
			t.Fatalf("fetch SPIRE's https_web endpoint: %v", err)
		}
	})
	t.Run("SPIRE federates with meshfed https_spiffe", func(t *testing.T) {
		ab, _ := a.Svc.Set().Get("a.example")
		// The bootstrap bundle authenticates meshfed's endpoint the first time; an extra
		// root in it shows that what SPIRE ends up with was fetched, not bootstrapped.
		extra, _, _ := devca.NewRoot("a.example", 24*time.Hour)
		boot, _ := ab.WithRoots(append(append([]*x509.Certificate(nil), ab.X509Roots...), extra), trust.ParseOptions{})
		bootJSON, _ := boot.MarshalJWKS()
		bpath := filepath.Join(t.TempDir(), "a.json")
		_ = os.WriteFile(bpath, bootJSON, 0o644)
		out, err := spiffeSPIRE.run("federation", "create", "-trustDomain", "a.example", "-bundleEndpointURL", "https://"+a.Svc.EndpointAddr()+"/",
			"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", "spiffe://a.example/meshfed/bundle-endpoint",
			"-trustDomainBundlePath", bpath, "-trustDomainBundleFormat", "spiffe")
		if err != nil {
			t.Fatalf("federation create: %v %s", err, out)
		}
		waitSPIREHas(t, spiffeSPIRE, "a.example", ab)
	})
	t.Run("SPIRE federates with meshfed https_web", func(t *testing.T) {
		wb, _ := w.Svc.Set().Get("w.example")
		out, err := spiffeSPIRE.run("federation", "create", "-trustDomain", "w.example", "-bundleEndpointURL", "https://"+w.Svc.EndpointAddr()+"/",
			"-bundleEndpointProfile", "https_web")
		if err != nil {
			t.Fatalf("federation create: %v %s", err, out)
		}
		waitSPIREHas(t, spiffeSPIRE, "w.example", wb)
	})
}

// waitSPIREHas waits until SPIRE's stored bundle of td has exactly want's roots, asking
// SPIRE to refresh now and then (its manager picks up new relationships every 10 s).
func waitSPIREHas(t *testing.T, s *spire, td string, want *trust.Bundle) {
	t.Helper()
	var last string
	waitfor.Cond(t, 90*time.Second, func() bool {
		_, _ = s.run("federation", "refresh", "-id", "spiffe://"+td)
		out, err := s.run("bundle", "list", "-id", "spiffe://"+td, "-format", "pem")
		last = out
		if err != nil {
			return false
		}
		i := strings.Index(out, "-----BEGIN")
		if i < 0 {
			return false
		}
		got, err := trust.Parse(td, []byte(out[i:]), trust.ParseOptions{})
		return err == nil && got.Digest() == want.Digest()
	}, "SPIRE holds meshfed's bundle of %s; last: %s", td, last)
}
