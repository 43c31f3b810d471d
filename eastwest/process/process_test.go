package process_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
	"github.com/meshfed/meshfed/internal/healthprobe"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStartServesAndCloses: a process from an exports file answers its health name,
// serves /readyz and /metrics (with the certificate expiry gauge) and, after Close, no
// longer listens.
func TestStartServesAndCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exports.yaml")
	if err := os.WriteFile(path, []byte("services:\n  - {name: echo, namespace: demo, ports: [{port: 8443, targetPort: 9443}], endpoints: [{address: 127.0.0.1}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := process.Start(context.Background(), process.Config{
		Gateway: eastwest.Config{Cluster: "east", Log: log},
		Listen:  "127.0.0.1:0", Admin: "127.0.0.1:0", Exports: path,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := healthprobe.Probe(context.Background(), "", p.Addr(), nil); !r.OK {
		t.Fatalf("health probe: %v (%q)", r.Err, r.Text)
	}
	if code, body := get(t, "http://"+p.AdminAddr()+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d: %s", code, body)
	}
	if _, body := get(t, "http://"+p.AdminAddr()+"/metrics"); !strings.Contains(body, `meshfed_cert_expiry_seconds{cert="gateway-health"`) ||
		!strings.Contains(body, "meshfed_gateway_route_table_updates_total") {
		t.Fatalf("metrics lack the health certificate's expiry or the gateway's metrics:\n%s", body)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + p.AdminAddr() + "/readyz"); err == nil {
		t.Fatal("admin endpoints still answer after Close")
	}
}

// TestStartErrorsNameThePart: what fails is attributed to the part of the Config behind
// it, for the command to name its flag.
func TestStartErrorsNameThePart(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		cfg  process.Config
		part process.Part
	}{
		{process.Config{Exports: "/nonexistent/exports.yaml", Listen: "127.0.0.1:0"}, process.PartExports},
		{process.Config{Exports: "/nonexistent/exports.yaml", HealthCertFile: "/nonexistent.pem", HealthKeyFile: "/nonexistent.key"}, process.PartHealthCert},
		{process.Config{Exports: "x", Admin: "not-an-address"}, process.PartAdmin},
	} {
		tc.cfg.Gateway.Log = log
		_, err := process.Start(context.Background(), tc.cfg)
		var pe *process.Error
		if !errors.As(err, &pe) || pe.Part != tc.part {
			t.Errorf("Start(%+v) = %v, want an error about the %s", tc.cfg, err, tc.part)
		}
	}
}
