package layers

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const mod = "github.com/meshfed/meshfed/"

// may says, for each part (a package path prefix: a package belongs to the longest one
// that is its path or a parent of it), which other parts its package code may import
// (the standard library and third-party modules aside). Tests are not held to it: they
// may use both planes.
var may = map[string][]string{
	"api":      {},
	"internal": {"api"},
	// Test helpers that start a real etcd or kube-apiserver.
	"internal/testetcd": {"api", "internal", "keyspace"},
	"internal/kubetest": {"api", "internal", "keyspace"},
	// The istiod test tier: istiod against a real kube-apiserver.
	"internal/istiotest": {"api", "internal", "internal/kubetest", "keyspace"},
	// The shared record model.
	"keyspace": {"api", "internal"},
	// The parts: each imports only api/, the keyspace and internal/.
	"discovery":  {"api", "internal", "keyspace"},
	"trust":      {"api", "internal", "keyspace"},
	"federation": {"api", "internal", "keyspace"},
	// The data plane: no keyspace, no control-plane part (and no etcd client: see
	// TestDataPlaneImportsNoControlPlane).
	"eastwest": {"api", "internal"},
	// trust's test helper starts a real etcd.
	"trust/internal/trusttest": {"api", "internal", "internal/testetcd", "keyspace", "trust"},
	// The composers: the federation agent wires the parts (the gateway process is
	// eastwest/process, inside the data plane).
	"federation/agent": {"api", "internal", "keyspace", "discovery", "trust", "federation"},
	// Above them.
	"operator": {"api", "internal", "keyspace", "discovery", "trust", "federation"},
	// operator's test helpers run a federation of the harness.
	"operator/internal/optest": {"api", "internal", "internal/testetcd", "keyspace", "harness"},
	"harness":                  {"api", "internal", "keyspace", "discovery", "trust", "federation", "federation/agent", "eastwest", "operator"},
	"bench":                    {"api", "internal", "keyspace", "discovery", "trust", "federation", "federation/agent", "eastwest", "operator", "harness"},
	"cmd": {"api", "internal", "internal/testetcd", "internal/kubetest", "keyspace", "discovery", "trust", "federation",
		"federation/agent", "eastwest", "operator", "harness"},
	"deploy": {},
}

// partOf is the longest key of may that is p or a parent of p ("" when none).
func partOf(p string) string {
	best := ""
	for k := range may {
		if (p == k || strings.HasPrefix(p, k+"/")) && len(k) > len(best) {
			best = k
		}
	}
	return best
}

// allowed tells whether package code of part may import imp (a module-relative path):
// imp is in the same part or in one that may lists for it.
func allowed(part, imp string) bool {
	ip := partOf(imp)
	if ip == part {
		return true
	}
	for _, a := range may[part] {
		if ip == a {
			return true
		}
	}
	return false
}

// TestImportOrderTable: the table says no where the layers say no (the test below would
// pass vacuously otherwise).
func TestImportOrderTable(t *testing.T) {
	for _, c := range []struct {
		from, imp string
		want      bool
	}{
		{"federation/service", "keyspace/store", true},
		{"federation/service", "discovery", false},
		{"federation/xds", "federation/agent", false},
		{"federation/agent", "discovery/kube", true},
		{"discovery/kube", "federation/service", false},
		{"trust/federate", "federation/xds", false},
		{"keyspace/store", "trust", false},
		{"eastwest/process", "keyspace/records", false},
		{"eastwest/process", "internal/admin", true},
		{"operator", "harness", false},
		{"api/names", "keyspace/records", false},
		{"internal/admin", "keyspace/store", false},
	} {
		if got := allowed(partOf(c.from), c.imp); got != c.want {
			t.Errorf("%s importing %s: allowed = %v, want %v", c.from, c.imp, got, c.want)
		}
	}
}

type pkg struct {
	path    string
	imports []string
}

func list(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}"}, patterns...)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var ps []pkg
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			ps = append(ps, pkg{path: f[0], imports: f[1:]})
		}
	}
	return ps
}

// TestImportOrder checks every import of every package of the module against may.
func TestImportOrder(t *testing.T) {
	ps := list(t, mod+"...")
	seen := 0
	var bad []string
	for _, p := range ps {
		rel, ok := strings.CutPrefix(p.path, mod)
		if !ok {
			continue
		}
		seen++
		part := partOf(rel)
		if part == "" {
			bad = append(bad, rel+": in no part of the import-order table (internal/layers): add it")
			continue
		}
		for _, imp := range p.imports {
			ri, ok := strings.CutPrefix(imp, mod)
			if !ok || allowed(part, ri) {
				continue
			}
			bad = append(bad, rel+" imports "+ri+" ("+part+" may import "+strings.Join(append([]string{part}, may[part]...), ", ")+")")
		}
	}
	if seen < 40 {
		t.Fatalf("go list saw only %d packages of the module", seen)
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
}

// TestDataPlaneImportsNoControlPlane enforces the design's boundary: no package of the
// data plane (eastwest/..., the gateway process included) depends, even indirectly, on
// the control plane (federation/, discovery/, trust/) or on the keyspace, and no etcd
// client is linked. They meet on the wire only; api/ and internal/ are shared.
func TestDataPlaneImportsNoControlPlane(t *testing.T) {
	ps := list(t, mod+"eastwest/...")
	var paths []string
	for _, p := range ps {
		paths = append(paths, p.path)
	}
	if len(paths) < 10 || !strings.Contains(strings.Join(paths, " "), mod+"eastwest/xdsroutes") || !strings.Contains(strings.Join(paths, " "), mod+"eastwest/process") {
		t.Fatalf("go list saw too little: %v", paths)
	}
	// Who imports what, to name the way in.
	by := map[string]string{}
	for _, p := range ps {
		for _, i := range p.imports {
			if _, ok := by[i]; !ok {
				by[i] = p.path
			}
		}
	}
	for _, p := range paths {
		for _, cp := range []string{"federation", "discovery", "trust", "keyspace"} {
			if p == mod+cp || strings.HasPrefix(p, mod+cp+"/") {
				t.Errorf("the data plane depends on the control plane package %s, imported by %s (see `go list -deps %seastwest/...`)", p, by[p], mod)
			}
		}
		if strings.HasPrefix(p, "go.etcd.io/etcd/client/v3") || strings.HasPrefix(p, "go.etcd.io/etcd/server/") {
			t.Errorf("the data plane links an etcd client or server: %s, imported by %s", p, by[p])
		}
	}
}
