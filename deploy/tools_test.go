package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/yaml"
)

// repoRoot is the module root (this package lives in deploy/).
var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}()

func repoPath(parts ...string) string { return filepath.Join(append([]string{repoRoot}, parts...)...) }

// tool returns the path of helm, kustomize or promtool. $MESHFED_HELM, $MESHFED_KUSTOMIZE
// and $MESHFED_PROMTOOL win (make test exports them); otherwise hack/tools/ensure.sh builds
// the tool from the Go module proxy into the cache, or finds it there. Without network on a
// machine that never built it, the test is skipped with a loud message; any other failure
// fails the test.
func tool(t *testing.T, name string) string {
	t.Helper()
	envs := map[string]string{"helm": "MESHFED_HELM", "kustomize": "MESHFED_KUSTOMIZE", "promtool": "MESHFED_PROMTOOL"}
	if p := os.Getenv(envs[name]); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("$%s=%s: %v", envs[name], p, err)
		}
		return p
	}
	toolsMu.Lock()
	defer toolsMu.Unlock()
	if p, ok := toolPaths[name]; ok {
		return p
	}
	cmd := exec.Command("bash", repoPath("hack", "tools", "ensure.sh"), name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := stderr.String()
		if offline(msg) {
			t.Skipf("\n\n*** SKIPPED: cannot build %s: the Go module proxy is unreachable and it is not cached.\n"+
				"*** The Kubernetes manifests and alerts were NOT validated.\n*** %s\n", name, lastLines(msg, 5))
		}
		t.Fatalf("hack/tools/ensure.sh %s: %v\n%s", name, err, msg)
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Log(s)
	}
	m := regexp.MustCompile(`export ` + envs[name] + `=(\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("hack/tools/ensure.sh %s printed no export line: %q", name, out)
	}
	toolPaths[name] = string(m[1])
	return toolPaths[name]
}

var (
	toolsMu   sync.Mutex
	toolPaths = map[string]string{}
)

func offline(stderr string) bool {
	for _, s := range []string{"dial tcp", "no such host", "network is unreachable", "connection refused", "i/o timeout", "TLS handshake timeout", "proxyconnect"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n*** ")
}

// run runs a command and returns stdout; stderr goes into the error.
func run(t *testing.T, env []string, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// helmEnv keeps helm's cache, config and data out of the user's home.
func helmEnv(t *testing.T) []string {
	d := t.TempDir()
	return []string{"HELM_CACHE_HOME=" + d + "/cache", "HELM_CONFIG_HOME=" + d + "/config", "HELM_DATA_HOME=" + d + "/data"}
}

const chartDir = "helm/meshfed"

// helmTemplate renders the chart as `helm install` would, CRDs included, for Kubernetes
// 1.37 (the version of the test apiserver and of client-go).
func helmTemplate(t *testing.T, values map[string]any, valueFiles ...string) ([]obj, error) {
	t.Helper()
	helm := tool(t, "helm")
	args := []string{"template", "meshfed", repoPath("deploy", chartDir), "--namespace", "meshfed-system",
		"--kube-version", "1.37.2", "--include-crds"}
	for _, f := range valueFiles {
		args = append(args, "-f", f)
	}
	if values != nil {
		b, err := yaml.Marshal(values)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", f)
	}
	out, err := run(t, helmEnv(t), helm, args...)
	if err != nil {
		return nil, err
	}
	return parseObjects(t, out), nil
}

// kustomizeBuild renders a kustomization directory.
func kustomizeBuild(t *testing.T, dir string) []obj {
	t.Helper()
	out, err := run(t, nil, tool(t, "kustomize"), "build", dir)
	if err != nil {
		t.Fatal(err)
	}
	return parseObjects(t, out)
}

// obj is one rendered Kubernetes object.
type obj map[string]any

func (o obj) kind() string       { s, _ := o["kind"].(string); return s }
func (o obj) apiVersion() string { s, _ := o["apiVersion"].(string); return s }
func (o obj) meta() map[string]any {
	m, _ := o["metadata"].(map[string]any)
	return m
}
func (o obj) name() string      { s, _ := o.meta()["name"].(string); return s }
func (o obj) namespace() string { s, _ := o.meta()["namespace"].(string); return s }
func (o obj) id() string {
	if ns := o.namespace(); ns != "" {
		return o.kind() + " " + ns + "/" + o.name()
	}
	return o.kind() + " " + o.name()
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// parseObjects splits a multi-document YAML stream into objects, dropping empty documents.
func parseObjects(t *testing.T, data []byte) []obj {
	t.Helper()
	var out []obj
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var o obj
		if err := yaml.UnmarshalStrict([]byte(doc), &o); err != nil {
			t.Fatalf("document %d does not parse: %v\n%s", i, err, doc)
		}
		if o.kind() == "" || o.apiVersion() == "" || o.name() == "" {
			t.Fatalf("document %d lacks kind, apiVersion or metadata.name:\n%s", i, doc)
		}
		out = append(out, o)
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(doc))
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func ids(objs []obj) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.id())
	}
	sort.Strings(out)
	return out
}

func find(objs []obj, kind, name string) obj {
	for _, o := range objs {
		if o.kind() == kind && (o.name() == name || strings.HasPrefix(o.name(), name+"-") && kind == "ConfigMap") {
			return o
		}
	}
	return nil
}

// dig walks maps and slices: dig(o, "spec", "template", "spec", "containers", 0, "args").
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

// podSpec returns the pod spec of a Deployment or CronJob (nil for other kinds).
func podSpec(o obj) map[string]any {
	var v any
	switch o.kind() {
	case "Deployment", "StatefulSet", "DaemonSet", "Job":
		v = dig(map[string]any(o), "spec", "template", "spec")
	case "CronJob":
		v = dig(map[string]any(o), "spec", "jobTemplate", "spec", "template", "spec")
	}
	m, _ := v.(map[string]any)
	return m
}

func podAnnotations(o obj) map[string]any {
	var v any
	switch o.kind() {
	case "Deployment":
		v = dig(map[string]any(o), "spec", "template", "metadata", "annotations")
	case "CronJob":
		v = dig(map[string]any(o), "spec", "jobTemplate", "spec", "template", "metadata", "annotations")
	}
	m, _ := v.(map[string]any)
	return m
}

func strs(v any) []string {
	s, _ := v.([]any)
	var out []string
	for _, x := range s {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// meshfedBinary builds cmd/meshfed once per test binary, to read its --help.
func meshfedBinary(t *testing.T) string {
	t.Helper()
	meshfedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshfed-deploy-test-")
		if err != nil {
			meshfedErr = err
			return
		}
		meshfedPath = filepath.Join(dir, "meshfed")
		cmd := exec.Command("go", "build", "-o", meshfedPath, "./cmd/meshfed")
		cmd.Dir = repoRoot
		// -race from `make test` would only slow this build down. CGO_ENABLED=0 as in
		// `make build` and the Dockerfile: this is the binary the image ships.
		cmd.Env = append(os.Environ(), "GOFLAGS=", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			meshfedErr = fmt.Errorf("go build ./cmd/meshfed: %w\n%s", err, out)
		}
	})
	if meshfedErr != nil {
		t.Fatal(meshfedErr)
	}
	return meshfedPath
}

var (
	meshfedOnce sync.Once
	meshfedPath string
	meshfedErr  error
)
