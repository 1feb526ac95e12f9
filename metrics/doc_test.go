package metrics

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// docs/monitoring.md's metrics table is what New and RegisterBuildInfo
// register: one row per holdfast_ metric, with its labels, its type and
// every value each label takes; no row for a metric that does not exist.
func TestDocMetricsTable(t *testing.T) {
	t.Parallel()
	const page = "../docs/monitoring.md"
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Metrics\n")
	if !ok {
		t.Fatalf("%s has no \"## Metrics\" section", page)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	row := regexp.MustCompile("(?m)^\\| `(holdfast_[a-z_]+)(?:\\{([a-z_,]+)\\})?` \\| ([a-z]+) \\|(.*)$")
	type docRow struct {
		labels, typ, text string
	}
	rows := map[string]docRow{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		rows[m[1]] = docRow{labels: m[2], typ: m[3], text: m[4]}
	}

	reg := prometheus.NewRegistry()
	New(reg, false)
	RegisterBuildInfo(reg, "v0", "go0")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, mf := range families {
		name := mf.GetName()
		registered[name] = true
		r, ok := rows[name]
		if !ok {
			t.Errorf("%s's metrics table has no row for %s", page, name)
			continue
		}
		if want := strings.ToLower(mf.GetType().String()); r.typ != want {
			t.Errorf("%s: %s is a %s; the table says %s", page, name, want, r.typ)
		}
		values := map[string][]string{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(values[l.GetName()], l.GetValue()) {
					values[l.GetName()] = append(values[l.GetName()], l.GetValue())
				}
			}
		}
		var labels []string
		for l := range values {
			labels = append(labels, l)
		}
		slices.Sort(labels)
		documented := strings.Split(r.labels, ",")
		if r.labels == "" {
			documented = nil
		}
		slices.Sort(documented)
		if !slices.Equal(labels, documented) {
			t.Errorf("%s: %s has labels %v; the table says {%s}", page, name, labels, r.labels)
		}
		if name == "holdfast_build_info" {
			continue // its values are the build's
		}
		for l, vs := range values {
			for _, v := range vs {
				if !strings.Contains(r.text, "`"+v+"`") {
					t.Errorf("%s: %s's row does not name its %s value `%s`", page, name, l, v)
				}
			}
		}
	}
	for name := range rows {
		if !registered[name] {
			t.Errorf("%s's metrics table has a row for %s, which holdfast does not register", page, name)
		}
	}
}
