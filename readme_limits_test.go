package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/metrics"
)

// README's limits table states the defaults the code has: every
// configurable bound appears as "`key` (default)".
func TestREADMELimits(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "\n## Limits\n")
	if start < 0 {
		t.Fatal("README has no Limits section")
	}
	section := s[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	d := DefaultConfig()
	for key, value := range map[string]string{
		"limits.handshakes":                   fmt.Sprint(d.Limits.Handshakes),
		"limits.preauth_bytes":                mib(d.Limits.PreauthBytes),
		"splice.max_message_bytes":            mib(d.Splice.MaxMessageBytes),
		"handshake.budget":                    humanDuration(d.Handshake.Budget),
		"upstream.max_preauth_per_address":    fmt.Sprint(d.Upstream.MaxPreauthPerAddress),
		"upstream.dial_timeout":               humanDuration(d.Upstream.DialTimeout),
		"passthrough.response_header_timeout": humanDuration(d.Passthrough.ResponseHeaderTimeout),
	} {
		want := "`" + key + "` (" + value
		if !strings.Contains(section, want) {
			t.Errorf("README's limits table does not say %s…)", want)
		}
	}
}

// README's limits section states the fair-share rule of the two shared
// limits as the code applies it: each limit's row says it is shared
// between client addresses, and the refusal counter's labels and their
// values are the ones metrics records.
func TestREADMEFairShare(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "\n## Limits\n")
	if start < 0 {
		t.Fatal("README has no Limits section")
	}
	section := s[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	for _, key := range []string{"limits.handshakes", "limits.preauth_bytes"} {
		row := ""
		for _, line := range strings.Split(section, "\n") {
			if strings.HasPrefix(line, "|") && strings.Contains(line, "`"+key+"`") {
				row = line
			}
		}
		if !strings.Contains(row, "shared fairly between client addresses") ||
			!strings.Contains(row, "the address holding the most") {
			t.Errorf("README's limits row for %s does not state the fair share: %q", key, row)
		}
	}
	for _, want := range []string{
		"`holdfast_limit_refusals_total{limit,scope}`",
		fmt.Sprintf("`scope=%q`", metrics.ScopeGlobal),
		fmt.Sprintf("`scope=%q`", metrics.ScopeAddress),
		"at least two more than the newcomer's",
		"1013 `holdfast overloaded; retry shortly`",
		"`Retry-After: 1`",
	} {
		if !strings.Contains(section, want) {
			t.Errorf("README's limits section does not say %s", want)
		}
	}
}

func mib(n int64) string {
	if n%(1<<20) != 0 {
		return fmt.Sprint(n)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

func humanDuration(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return fmt.Sprintf("%d min", d/time.Minute)
	}
	return fmt.Sprintf("%g s", d.Seconds())
}
