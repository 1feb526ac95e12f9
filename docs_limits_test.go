package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/metrics"
)

// limitsPage is the reference page of holdfast's limits.
const limitsPage = "docs/limits.md"

// readLimitsPage returns docs/limits.md.
func readLimitsPage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(limitsPage)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docs/limits.md's table states the defaults the code has: every
// configurable bound appears as "`key` (default)".
func TestDocLimits(t *testing.T) {
	t.Parallel()
	section := readLimitsPage(t)
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
			t.Errorf("%s's limits table does not say %s…)", limitsPage, want)
		}
	}
}

// docs/limits.md states the fair-share rule of the two shared limits as
// the code applies it: each limit's row says it is shared between client
// addresses, and the refusal counter's labels and their values are the
// ones metrics records.
func TestDocFairShare(t *testing.T) {
	t.Parallel()
	section := readLimitsPage(t)
	for _, key := range []string{"limits.handshakes", "limits.preauth_bytes"} {
		row := ""
		for _, line := range strings.Split(section, "\n") {
			if strings.HasPrefix(line, "|") && strings.Contains(line, "`"+key+"`") {
				row = line
			}
		}
		if !strings.Contains(row, "shared fairly between client addresses") ||
			!strings.Contains(row, "the address holding the most") {
			t.Errorf("%s's limits row for %s does not state the fair share: %q", limitsPage, key, row)
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
			t.Errorf("%s does not say %s", limitsPage, want)
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
