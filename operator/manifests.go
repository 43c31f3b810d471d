package operator

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/operator/internal/problems"
)

// KustomizeSubdir is where, under the deploy directory, join finds the manifests it
// renders for one cluster.
const KustomizeSubdir = "kustomize"

// placeholderRE matches ${MESHFED_NAME}: the only syntax the renderer touches. Anything
// else (including $(VAR) of Kubernetes env references and ${OTHER}) is left as it is.
var placeholderRE = regexp.MustCompile(`\$\{(MESHFED_[A-Z0-9_]+)\}`)

// ManifestValues are the placeholders join fills in, e.g. MESHFED_CLUSTER=east.
type ManifestValues map[string]string

// Names lists the placeholder names, sorted.
func (v ManifestValues) Names() []string {
	out := make([]string, 0, len(v))
	for k := range v {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ManifestPlan says what --emit-manifests writes.
type ManifestPlan struct {
	Source string   `json:"source"`
	Out    string   `json:"out"`
	Files  []string `json:"files"`
}

// planManifests checks that deployDir/kustomize holds files to render and that every
// placeholder in them is known, and lists the files. Nothing is written. Its errors may
// refer to JoinRequest fields (problems.Ref): join reports them as a problem.
func planManifests(deployDir, out string, vals ManifestValues) (*ManifestPlan, error) {
	src := filepath.Join(deployDir, KustomizeSubdir)
	st, err := os.Stat(src)
	if err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%s does not exist: the Kubernetes manifests (deploy/kustomize) are not in this checkout or release yet; give %s pointing at a meshfed deploy/ directory, or leave out %s", src, problems.Ref("DeployDir"), problems.Ref("EmitManifests"))
	}
	p := &ManifestPlan{Source: src, Out: out}
	var unknown []string
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(src, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range placeholderRE.FindAllStringSubmatch(string(b), -1) {
			if _, ok := vals[m[1]]; !ok {
				unknown = append(unknown, fmt.Sprintf("%s: ${%s}", rel, m[1]))
			}
		}
		p.Files = append(p.Files, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", src, err)
	}
	if len(p.Files) == 0 {
		return nil, fmt.Errorf("%s has no files: the Kubernetes manifests are not written yet; leave out %s", src, problems.Ref("EmitManifests"))
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("%s uses placeholders join does not know (%s); known: %s", src, strings.Join(unknown, ", "), strings.Join(vals.Names(), ", "))
	}
	return p, nil
}

// renderManifests writes every file of p with its placeholders filled in, keeping the
// directory layout (so the output is itself a kustomize directory: `kubectl apply -k OUT`).
func renderManifests(p *ManifestPlan, vals ManifestValues) error {
	if p == nil {
		return errors.New("no manifest plan")
	}
	for _, rel := range p.Files {
		b, err := os.ReadFile(filepath.Join(p.Source, rel))
		if err != nil {
			return err
		}
		outb := placeholderRE.ReplaceAllStringFunc(string(b), func(m string) string {
			return vals[placeholderRE.FindStringSubmatch(m)[1]]
		})
		dst := filepath.Join(p.Out, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return &validate.FieldError{Field: "EmitManifests", Msg: err.Error(), Err: err}
		}
		if err := os.WriteFile(dst, []byte(outb), 0o644); err != nil {
			return &validate.FieldError{Field: "EmitManifests", Msg: err.Error(), Err: err}
		}
	}
	return nil
}
