package deploy_test

import (
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// TestImageRecipe checks what can be checked of the image without a Docker engine (none runs
// here): the Dockerfile builds ./cmd/meshfed with CGO_ENABLED=0 onto a libc-less base as UID
// 65532 (the manifests' securityContext), and a binary built that way is static and runs
// alone in an empty root as that user.
func TestImageRecipe(t *testing.T) {
	df, err := os.ReadFile(repoPath("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^RUN CGO_ENABLED=0 go build .*-o /out/meshfed \./cmd/meshfed$`,
		`(?m)^FROM gcr\.io/distroless/static\S*:nonroot$`,
		`(?m)^COPY --from=build /out/meshfed /meshfed$`,
		`(?m)^USER 65532:65532$`,
		`(?m)^ENTRYPOINT \["/meshfed"\]$`,
	} {
		if !regexp.MustCompile(re).Match(df) {
			t.Errorf("Dockerfile: no line matching %s", re)
		}
	}
	for _, f := range []string{"helm/meshfed/templates/_helpers.tpl", "kustomize/base/federation.yaml"} {
		b, err := os.ReadFile(repoPath("deploy", f))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "65532") {
			t.Errorf("deploy/%s does not run as 65532, the image's user", f)
		}
	}

	bin := meshfedBinary(t) // built as the Dockerfile builds it (CGO_ENABLED=0)
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary has an ELF interpreter: it needs libc, which the distroless static base lacks")
		}
	}
	if libs, _ := ef.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("the binary links shared libraries %v", libs)
	}

	// Run it in an empty root, as the image's user: only the binary and a /tmp.
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "meshfed"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/meshfed", "--version")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	var errno syscall.Errno
	if errors.As(err, &errno) && (errno == syscall.EPERM || errno == syscall.EACCES) {
		t.Skipf("chroot not permitted here (%v): the static checks above passed", err)
	}
	if err != nil {
		t.Fatalf("meshfed in an empty root as 65532: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "meshfed") {
		t.Fatalf("meshfed --version in an empty root printed %q", out)
	}
}
