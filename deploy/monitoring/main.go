// Command monitoring writes holdfast's generated monitoring files from their
// sources, so that what ships and what is tested cannot drift apart:
//
//   - deploy/grafana/holdfast.json, the Grafana dashboard, from dashboard.go;
//   - deploy/prometheus/prometheusrule.yaml, a Prometheus Operator
//     PrometheusRule whose spec is deploy/prometheus/holdfast.rules.yml
//     (hand-kept, and tested with promtool).
//
// Run it from the repository root after changing either source:
//
//	go run ./deploy/monitoring
//
// Its tests fail when a committed file differs from what it would write.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// The files, relative to the repository root.
const (
	rulesFile     = "deploy/prometheus/holdfast.rules.yml"
	ruleCRDFile   = "deploy/prometheus/prometheusrule.yaml"
	dashboardFile = "deploy/grafana/holdfast.json"
)

func main() {
	root := flag.String("root", ".", "the repository root")
	flag.Parse()
	files, err := generate(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "monitoring:", err)
		os.Exit(1)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(*root, name), b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "monitoring:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", name)
	}
}

// generate returns the generated files' contents by path.
func generate(root string) (map[string][]byte, error) {
	rules, err := os.ReadFile(filepath.Join(root, rulesFile))
	if err != nil {
		return nil, err
	}
	crd, err := prometheusRule(rules)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rulesFile, err)
	}
	dash, err := dashboard()
	if err != nil {
		return nil, err
	}
	return map[string][]byte{ruleCRDFile: crd, dashboardFile: dash}, nil
}

// prometheusRule wraps a Prometheus rule file (its groups, comments and
// block scalars kept) in a monitoring.coreos.com/v1 PrometheusRule.
func prometheusRule(rules []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(rules, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("not a rule file (a mapping with groups)")
	}
	spec := doc.Content[0]
	spec.HeadComment = ""
	var groups *yaml.Node
	for i := 0; i+1 < len(spec.Content); i += 2 {
		if spec.Content[i].Value == "groups" {
			groups = spec.Content[i+1]
		} else {
			return nil, fmt.Errorf("unexpected key %q (a rule file has only groups)", spec.Content[i].Value)
		}
	}
	if groups == nil {
		return nil, fmt.Errorf("no groups")
	}
	spec.Content[0].HeadComment = ""
	str := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }
	mapping := func(kv ...*yaml.Node) *yaml.Node {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: kv}
	}
	out := mapping(
		str("apiVersion"), str("monitoring.coreos.com/v1"),
		str("kind"), str("PrometheusRule"),
		str("metadata"), mapping(
			str("name"), str("holdfast"),
			str("labels"), mapping(
				str("app.kubernetes.io/name"), str("holdfast"),
				str("app.kubernetes.io/component"), str("monitoring"),
			),
		),
		str("spec"), spec,
	)
	out.HeadComment = "holdfast's alerting and recording rules as a Prometheus Operator PrometheusRule.\n" +
		"Generated from " + rulesFile + " by go run ./deploy/monitoring; do not edit.\n" +
		"The Prometheus resource's ruleSelector must match its labels (docs/monitoring.md, \"Prometheus Operator\")."
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
