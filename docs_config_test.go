package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// configPage is the reference page of the configuration file.
const configPage = "docs/configuration.md"

// docConfigRows returns the key and default of every row of
// docs/configuration.md's key tables: "| `key` | `default` | … |".
func docConfigRows(t *testing.T) (keys []string, defaults map[string]string) {
	t.Helper()
	b, err := os.ReadFile(configPage)
	if err != nil {
		t.Fatal(err)
	}
	defaults = map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, " | ")
		if len(cells) < 3 {
			t.Errorf("%s: row %q has no default cell", configPage, line)
			continue
		}
		key := strings.Trim(strings.TrimPrefix(cells[0], "| "), "`")
		value := cells[1]
		if len(value) < 2 || value[0] != '`' || value[len(value)-1] != '`' {
			t.Errorf("%s: %s: default %q is not one `value`", configPage, key, value)
			continue
		}
		if _, dup := defaults[key]; dup {
			t.Errorf("%s: %s has two rows", configPage, key)
		}
		keys = append(keys, key)
		defaults[key] = value[1 : len(value)-1]
	}
	return keys, defaults
}

// yamlLeafKeys returns the dotted path of every scalar or sequence in a
// YAML mapping.
func yamlLeafKeys(n *yaml.Node, prefix string) []string {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		return yamlLeafKeys(n.Content[0], prefix)
	}
	if n.Kind != yaml.MappingNode {
		return []string{prefix}
	}
	var keys []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if prefix != "" {
			k = prefix + "." + k
		}
		keys = append(keys, yamlLeafKeys(n.Content[i+1], k)...)
	}
	return keys
}

// nestedYAML writes "a.b.c" = value as a YAML document.
func nestedYAML(key, value string) string {
	var b strings.Builder
	parts := strings.Split(key, ".")
	for i, p := range parts {
		b.WriteString(strings.Repeat("  ", i) + p + ":")
		if i < len(parts)-1 {
			b.WriteString("\n")
		}
	}
	b.WriteString(" " + value + "\n")
	return b.String()
}

// docs/configuration.md has one row for every key of the configuration,
// no row for a key that does not exist, and each row's default is the
// code's: a file setting that key to the documented value loads as
// DefaultConfig (which TestShippedConfigIsValidAndDefault ties to
// proxy.yaml and TestDefaultsLiveInOnePlace to proxy.DefaultConfig).
func TestDocConfigKeys(t *testing.T) {
	t.Parallel()
	var code yaml.Node
	b, err := yaml.Marshal(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &code); err != nil {
		t.Fatal(err)
	}
	var shipped yaml.Node
	b, err = os.ReadFile("proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &shipped); err != nil {
		t.Fatal(err)
	}
	want := yamlLeafKeys(&code, "")
	if got := yamlLeafKeys(&shipped, ""); !slices.Equal(got, want) {
		t.Errorf("proxy.yaml's keys are\n %v\nthe configuration's\n %v", got, want)
	}
	keys, defaults := docConfigRows(t)
	for _, k := range want {
		if _, ok := defaults[k]; !ok {
			t.Errorf("%s has no row for %s", configPage, k)
		}
	}
	def := sprint(DefaultConfig())
	for _, k := range keys {
		if !slices.Contains(want, k) {
			t.Errorf("%s has a row for %s, which is not a configuration key", configPage, k)
			continue
		}
		doc := nestedYAML(k, defaults[k])
		cfg, err := ParseConfig([]byte(doc))
		if err != nil {
			t.Errorf("%s: %s: default `%s` does not load: %v", configPage, k, defaults[k], err)
			continue
		}
		if got := sprint(cfg); got != def {
			t.Errorf("%s: %s: the documented default `%s` is not the code's", configPage, k, defaults[k])
		}
	}
}
