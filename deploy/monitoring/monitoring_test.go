package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"gopkg.in/yaml.v3"
)

const root = "../.."

func TestGeneratedFilesAreCurrent(t *testing.T) {
	files, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what deploy/monitoring generates: run go run ./deploy/monitoring", name)
		}
	}
}

// ruleFile is the part of a rule file the checks read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestPrometheusRuleIsTheRuleFile(t *testing.T) {
	var rules map[string]any
	readYAML(t, rulesFile, &rules)
	var crd struct {
		APIVersion string         `yaml:"apiVersion"`
		Kind       string         `yaml:"kind"`
		Metadata   map[string]any `yaml:"metadata"`
		Spec       map[string]any `yaml:"spec"`
	}
	readYAML(t, ruleCRDFile, &crd)
	if crd.APIVersion != "monitoring.coreos.com/v1" || crd.Kind != "PrometheusRule" {
		t.Errorf("%s is %s %s; want monitoring.coreos.com/v1 PrometheusRule", ruleCRDFile, crd.APIVersion, crd.Kind)
	}
	if crd.Metadata["name"] != "holdfast" {
		t.Errorf("metadata.name = %v; want holdfast", crd.Metadata["name"])
	}
	if !reflect.DeepEqual(crd.Spec, rules) {
		t.Errorf("%s spec differs from %s", ruleCRDFile, rulesFile)
	}
}

// runbookPage is the page whose sections are the alerts' runbooks.
const runbookPage = "docs/monitoring.md"

// runbookPrefix is what every runbook_url starts with: the runbook page
// on the main branch, then the alert's anchor.
const runbookPrefix = "https://github.com/holdfast-proxy/holdfast/blob/main/" + runbookPage + "#"

// Every alert has a for:, a severity, a summary, a description with values
// and a runbook URL whose anchor is a heading of docs/monitoring.md named
// after the alert.
func TestAlertConventions(t *testing.T) {
	var rf ruleFile
	readYAML(t, rulesFile, &rf)
	anchors := headingAnchors(t, runbookPage)
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if r.For == "" {
				t.Errorf("%s: no for:", r.Alert)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q; want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary", r.Alert)
			}
			d := r.Annotations["description"]
			if !strings.Contains(d, "$value") && !strings.Contains(d, "query") {
				t.Errorf("%s: description carries no value: %q", r.Alert, d)
			}
			// An absent() alert has no instance to name.
			if !strings.Contains(d, "$labels.instance") && !strings.HasPrefix(r.Expr, "absent(") {
				t.Errorf("%s: description does not name the instance", r.Alert)
			}
			u := r.Annotations["runbook_url"]
			if !strings.HasPrefix(u, runbookPrefix) {
				t.Errorf("%s: runbook_url %q; want %s…", r.Alert, u, runbookPrefix)
			} else if a := strings.TrimPrefix(u, runbookPrefix); !anchors[a] || a != strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook anchor #%s is not a heading of %s named after the alert", r.Alert, a, runbookPage)
			}
		}
	}
	if alerts < 5 {
		t.Errorf("%d alerts; want at least 5", alerts)
	}
}

// Every runbook_url anywhere under deploy/ (the rule file, the
// PrometheusRule made from it, the rule tests' expected annotations)
// names a page of this repository's docs/ and an anchor that a heading of
// that page has.
func TestRunbookURLsResolve(t *testing.T) {
	const repoURL = "https://github.com/holdfast-proxy/holdfast/blob/main/"
	re := regexp.MustCompile(`runbook_url:\s*["']?([^\s"']+)`)
	urls := 0
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); ext != ".yml" && ext != ".yaml" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			urls++
			u := m[1]
			page, anchor, ok := strings.Cut(strings.TrimPrefix(u, repoURL), "#")
			if !strings.HasPrefix(u, repoURL) || !ok || !strings.HasPrefix(page, "docs/") || anchor == "" {
				t.Errorf("%s: runbook_url %q is not %sdocs/PAGE#ANCHOR", rel, u, repoURL)
				continue
			}
			if _, err := os.Stat(filepath.Join(root, page)); err != nil {
				t.Errorf("%s: runbook_url %q: no page %s", rel, u, page)
				continue
			}
			if !headingAnchors(t, page)[anchor] {
				t.Errorf("%s: runbook_url %q: %s has no heading with anchor #%s", rel, u, page, anchor)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if urls < 6 {
		t.Errorf("%d runbook_urls under deploy/; want at least one per alert", urls)
	}
}

// headingAnchors returns the anchors GitHub gives the headings of the
// Markdown page at path (relative to the repository's root), fenced code
// blocks left out.
func headingAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile(`^#{1,6} +(.+)$`)
	anchors := map[string]bool{}
	fenced := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		if m := heading.FindStringSubmatch(line); m != nil && !fenced {
			anchors[githubSlug(m[1])] = true
		}
	}
	return anchors
}

// githubSlug is the anchor GitHub gives a Markdown heading: lower case,
// spaces to '-', punctuation dropped.
func githubSlug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// grafanaDashboard is the part of the dashboard the checks read.
type grafanaDashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int            `json:"id"`
		Title      string         `json:"title"`
		Type       string         `json:"type"`
		Datasource map[string]any `json:"datasource"`
		GridPos    struct{ H, W, X, Y int }
		Targets    []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

func TestDashboardShape(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard without uid or title")
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("no datasource variable (got %v)", vars)
	}
	for _, v := range []string{"job", "instance"} {
		if vars[v] != "query" {
			t.Errorf("no %s variable", v)
		}
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Datasource["uid"] != "${datasource}" {
			t.Errorf("panel %q: datasource %v; want the ${datasource} variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, `job=~"$job",instance=~"$instance"`) {
				t.Errorf("panel %q: query %q does not select $job and $instance", p.Title, tg.Expr)
			}
		}
		if p.GridPos.W == 0 || p.GridPos.H == 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if o, ok := used[cell{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap", o, p.Title)
				}
				used[cell{x, y}] = p.Title
			}
		}
	}
	for _, want := range []string{"Handshakes by result", "Handshake duration", "Holds and retries", "Gateway state",
		"Sessions and waiting connects", "Relayed messages", "Readiness probes"} {
		found := false
		for _, p := range d.Panels {
			found = found || p.Title == want
		}
		if !found {
			t.Errorf("no panel %q", want)
		}
	}
}

// requirePromtool returns promtool's path. Without it the test is skipped,
// unless HOLDFAST_REQUIRE_PROMTOOL=1 (scripts/test.sh, which installs it).
func requirePromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("HOLDFAST_REQUIRE_PROMTOOL") == "1" {
			t.Fatalf("promtool not found (HOLDFAST_REQUIRE_PROMTOOL=1): %v", err)
		}
		t.Skip("promtool not installed (Debian package prometheus); scripts/test.sh installs it")
	}
	return p
}

func promtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(requirePromtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		return
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool(t, filepath.Join(root, "deploy/prometheus"), "check", "rules", "holdfast.rules.yml")
	// The PrometheusRule's spec is a rule file too.
	var crd struct {
		Spec map[string]any `yaml:"spec"`
	}
	readYAML(t, ruleCRDFile, &crd)
	b, err := yaml.Marshal(crd.Spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "spec.yml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, dir, "check", "rules", "spec.yml")
}

func TestPromtoolTestRules(t *testing.T) {
	promtool(t, filepath.Join(root, "deploy/prometheus"), "test", "rules", "holdfast.rules.test.yml")
}

// Every panel query parses as PromQL: each becomes a recording rule that
// promtool checks, with the dashboard variables filled in as Grafana would.
func TestPromtoolPanelQueriesParse(t *testing.T) {
	d := readDashboard(t)
	var b strings.Builder
	b.WriteString("groups:\n  - name: panels\n    rules:\n")
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			fmt.Fprintf(&b, "      - record: panel_%d_%s\n        expr: %s\n", p.ID, tg.RefID, strconvQuote(FillVariables(tg.Expr, "holdfast", ".+", "1m")))
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "panels.yml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, dir, "check", "rules", "panels.yml")
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s) // a JSON string is a YAML double-quoted scalar
	return string(b)
}
