package xdsroutes

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDataPlaneImportsNoControlPlane enforces the design's boundary: no package of the
// data plane (eastwest/...) depends, even indirectly, on the control plane (federation/,
// discovery/, trust/). They meet on the wire only; api/ and internal/admin are shared.
func TestDataPlaneImportsNoControlPlane(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	const mod = "github.com/meshfed/meshfed/"
	// Package code only: tests may use both planes (the harness does).
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", mod+"eastwest/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 10 || !strings.Contains(string(out), mod+"eastwest/xdsroutes") {
		t.Fatalf("go list saw too little: %v", pkgs)
	}
	for _, p := range pkgs {
		for _, cp := range []string{"federation", "discovery", "trust"} {
			if p == mod+cp || strings.HasPrefix(p, mod+cp+"/") {
				t.Errorf("the data plane depends on the control plane package %s (see `go list -deps %seastwest/...`)", p, mod)
			}
		}
	}
}
