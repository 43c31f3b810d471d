package operator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestJoinEmitManifests(t *testing.T) {
	t.Parallel()
	_, st := etcdNoAuth(t)
	ctx := tctx(t)
	deploy := t.TempDir()
	out := filepath.Join(t.TempDir(), "east")

	// No deploy/kustomize: a clear refusal, and nothing is joined.
	r := joinReq(t, "east", "eu", "east.example.org")
	r.EmitManifests, r.DeployDir = out, deploy
	_, err := Join(ctx, st, r)
	if err == nil || !strings.Contains(err.Error(), "EmitManifests: ") || !strings.Contains(err.Error(), "not in this checkout") {
		t.Fatalf("without deploy/kustomize: %v", err)
	}
	if keysUnder(t, st, "clusters/") != 0 {
		t.Fatal("join went ahead")
	}

	k := filepath.Join(deploy, KustomizeSubdir)
	if err := os.MkdirAll(filepath.Join(k, "gateway"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"kustomization.yaml":      "resources: [gateway/deployment.yaml]\n",
		"gateway/deployment.yaml": "args: [--cluster=${MESHFED_CLUSTER}, --prefix=${MESHFED_PREFIX}]\nenv: $(KEEP) ${HOME}\nlabels: {region: ${MESHFED_REGION}, td: ${MESHFED_TRUST_DOMAIN}, v: ${MESHFED_VERSION}}\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(k, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An unknown placeholder is refused, naming it.
	if err := os.WriteFile(filepath.Join(k, "bad.yaml"), []byte("x: ${MESHFED_NOPE}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Join(ctx, st, r); err == nil || !strings.Contains(err.Error(), "MESHFED_NOPE") {
		t.Fatalf("unknown placeholder: %v", err)
	}
	os.Remove(filepath.Join(k, "bad.yaml"))

	r.ManifestExtra = ManifestValues{"MESHFED_VERSION": "v1.2.3"}
	plan, err := Join(ctx, st, r)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Manifest == nil || len(plan.Manifest.Files) != 2 {
		t.Fatalf("manifest plan %+v", plan.Manifest)
	}
	got, err := os.ReadFile(filepath.Join(out, "gateway", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := "args: [--cluster=east, --prefix=/meshfed/v1/]\nenv: $(KEEP) ${HOME}\nlabels: {region: eu, td: east.example.org, v: v1.2.3}\n"
	if string(got) != want {
		t.Fatalf("rendered:\n%s\nwant:\n%s", got, want)
	}
	if _, err := os.Stat(filepath.Join(out, "kustomization.yaml")); err != nil {
		t.Fatal(err)
	}
}

// TestJoinRendersTheRealTemplate: the deploy/kustomize template of this repository renders
// with every placeholder filled.
func TestJoinRendersTheRealTemplate(t *testing.T) {
	t.Parallel()
	deploy := filepath.Join("..", "deploy")
	if _, err := os.Stat(filepath.Join(deploy, KustomizeSubdir, "kustomization.yaml")); err != nil {
		t.Skip("deploy/kustomize is not in this tree yet")
	}
	_, st := etcdNoAuth(t)
	out := filepath.Join(t.TempDir(), "east")
	r := joinReq(t, "east", "eu", "east.example.org")
	r.EmitManifests, r.DeployDir, r.EtcdEndpoints = out, deploy, "https://etcd-0.example.org:2379"
	plan, err := Join(tctx(t), st, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range plan.Manifest.Files {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		if m := placeholderRE.FindString(string(b)); m != "" {
			t.Errorf("%s: %s left unfilled", f, m)
		}
	}
	b, err := os.ReadFile(filepath.Join(out, "kustomization.yaml"))
	if err != nil || !strings.Contains(string(b), "MESHFED_CLUSTER=east") || !strings.Contains(string(b), "MESHFED_ETCD_ENDPOINTS=https://etcd-0.example.org:2379") {
		t.Fatalf("kustomization.yaml: %v\n%s", err, b)
	}
}
