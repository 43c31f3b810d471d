package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.UnmarshalStrict(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// TestAlertRuleCopies: the PrometheusRule (monitoring/alerts.yaml) and the chart's copy carry
// exactly the groups of the plain rules file.
func TestAlertRuleCopies(t *testing.T) {
	plain := readYAML(t, repoPath("deploy", "monitoring", "meshfed.rules.yaml"))
	chart := readYAML(t, repoPath("deploy", chartDir, "files", "meshfed.rules.yaml"))
	pr := readYAML(t, repoPath("deploy", "monitoring", "alerts.yaml"))
	if pr["kind"] != "PrometheusRule" || pr["apiVersion"] != "monitoring.coreos.com/v1" {
		t.Errorf("monitoring/alerts.yaml: %v %v, want a monitoring.coreos.com/v1 PrometheusRule", pr["apiVersion"], pr["kind"])
	}
	if !reflect.DeepEqual(plain, chart) {
		t.Error("deploy/helm/meshfed/files/meshfed.rules.yaml differs from deploy/monitoring/meshfed.rules.yaml: copy it again")
	}
	if !reflect.DeepEqual(plain["groups"], dig(pr, "spec", "groups")) {
		t.Error("deploy/monitoring/alerts.yaml spec.groups differs from meshfed.rules.yaml: regenerate it (docs/deploy.md)")
	}
}

// TestAlertsAndDashboardUseRealMetrics: every meshfed_* name in the alerts and the dashboard
// is a metric the code registers (a misspelt metric makes an alert that never fires).
func TestAlertsAndDashboardUseRealMetrics(t *testing.T) {
	known := registeredMetrics(t)
	if len(known) < 20 {
		t.Fatalf("found only %d metric names in the code: the scan is broken", len(known))
	}
	used := regexp.MustCompile(`\bmeshfed_[a-z0-9_]+\b`)
	for _, f := range []string{"monitoring/meshfed.rules.yaml", "monitoring/grafana-dashboard.json", "monitoring/tests/alerts_test.yaml"} {
		b, err := os.ReadFile(repoPath("deploy", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range used.FindAllString(string(b), -1) {
			base := m
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(m, suf); ok && known[b] {
					base = b
				}
			}
			if !known[base] {
				t.Errorf("deploy/%s uses %s, which no meshfed component registers", f, m)
			}
		}
	}
}

// registeredMetrics scans the Go sources for metric names: full "meshfed_..." literals, and
// Namespace/Subsystem/Name triples written with `const ns, sub = "meshfed", "x"`.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	lit := regexp.MustCompile(`"(meshfed_[a-z0-9_]+)"`)
	nsSub := regexp.MustCompile(`const ns, sub = "([a-z0-9_]+)", "([a-z0-9_]+)"`)
	name := regexp.MustCompile(`Namespace: ns, Subsystem: sub, Name: "([a-z0-9_]+)"`)
	err := filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "hack") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
			known[m[1]] = true
		}
		if ns := nsSub.FindStringSubmatch(string(b)); ns != nil {
			for _, m := range name.FindAllStringSubmatch(string(b), -1) {
				known[ns[1]+"_"+ns[2]+"_"+m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return known
}

// TestPromtool: `promtool check rules` on the rules file, `promtool test rules` on the alert
// unit tests (every alert fires on its input series), and every dashboard expression parses
// (checked as recording rules).
func TestPromtool(t *testing.T) {
	promtool := tool(t, "promtool")
	rules := repoPath("deploy", "monitoring", "meshfed.rules.yaml")
	if out, err := run(t, nil, promtool, "check", "rules", rules); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := run(t, nil, promtool, "test", "rules", repoPath("deploy", "monitoring", "tests", "alerts_test.yaml"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// Every alert of the rules file is exercised by the unit tests.
	tests, _ := os.ReadFile(repoPath("deploy", "monitoring", "tests", "alerts_test.yaml"))
	for _, g := range dig(readYAML(t, rules), "groups").([]any) {
		for _, r := range dig(g, "rules").([]any) {
			if a, ok := dig(r, "alert").(string); ok && !strings.Contains(string(tests), "alertname: "+a+"\n") {
				t.Errorf("alert %s has no promtool unit test in deploy/monitoring/tests/alerts_test.yaml", a)
			}
		}
	}

	exprs := dashboardExprs(t)
	var rr []any
	for i, e := range exprs {
		e = strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*").Replace(e)
		rr = append(rr, map[string]any{"record": "dashboard:expr_" + itoa(i), "expr": e})
	}
	b, _ := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rr}}})
	f := filepath.Join(t.TempDir(), "dashboard.rules.yaml")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, nil, promtool, "check", "rules", f); err != nil {
		t.Fatalf("dashboard expressions: %v\n%s", err, out)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// dashboardExprs checks the dashboard's structure and returns its PromQL expressions.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(repoPath("deploy", "monitoring", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			ID      int                      `json:"id"`
			Type    string                   `json:"type"`
			Title   string                   `json:"title"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("grafana-dashboard.json: title %q uid %q, %d panels", d.Title, d.UID, len(d.Panels))
	}
	ids := map[int]bool{}
	var exprs []string
	var titles []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q query %s is empty", p.Title, q.RefID)
			}
			exprs = append(exprs, q.Expr)
		}
	}
	sort.Strings(titles)
	t.Logf("%d panels, %d queries", len(titles), len(exprs))
	return exprs
}

// TestHelmPrometheusRule: the chart's PrometheusRule carries the rules file's groups.
func TestHelmPrometheusRule(t *testing.T) {
	objs, err := helmTemplate(t, allOnValues)
	if err != nil {
		t.Fatal(err)
	}
	pr := find(objs, "PrometheusRule", "meshfed")
	if pr == nil {
		t.Fatal("prometheusRule.enabled=true renders no PrometheusRule meshfed")
	}
	plain := readYAML(t, repoPath("deploy", "monitoring", "meshfed.rules.yaml"))
	if !reflect.DeepEqual(plain["groups"], dig(map[string]any(pr), "spec", "groups")) {
		t.Error("the chart's PrometheusRule groups differ from deploy/monitoring/meshfed.rules.yaml")
	}
}
