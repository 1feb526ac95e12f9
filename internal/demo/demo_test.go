package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The demo shows the failure straight to the gateway, the success through
// holdfast and the metrics that recorded it.
func TestDemo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	// The clients reach holdfast after section 1 (two connects straight
	// to the gateway), which took more than 1.5 s under the race detector
	// on a loaded host: the window had ended, and holdfast rightly
	// delayed nobody. 5 s leaves room for that.
	if err := run(ctx, &out, Options{Window: 5 * time.Second}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Logf("demo output:\n%s", text)

	direct, rest, ok := strings.Cut(text, "\n2. ")
	if !ok {
		t.Fatal("no section 2")
	}
	through, metrics, ok := strings.Cut(rest, "\n3. ")
	if !ok {
		t.Fatal("no section 3")
	}
	failed := regexp.MustCompile(`(?m)^   (device-signed|token-only) client +FAILED after [0-9.]+s: UNAVAILABLE "gateway starting; retry shortly" \(retryAfterMs 500\), close 1013 "gateway starting"$`)
	if n := len(failed.FindAllString(direct, -1)); n != 2 {
		t.Errorf("straight to the gateway: %d clients failed with UNAVAILABLE and 1013, want 2", n)
	}
	helloOK := regexp.MustCompile(`(?m)^   (device-signed|token-only) client +hello-ok after ([0-9.]+)s, ([0-9.]+)s after the window ended; health: ok$`)
	if n := len(helloOK.FindAllString(through, -1)); n != 2 {
		t.Errorf("through holdfast: %d clients got hello-ok and a health answer, want 2", n)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^   holdfast_handshakes_total\{result="ok"\} +2 `),
		regexp.MustCompile(`(?m)^   holdfast_upstream_dials_delayed_total +2 `),
		regexp.MustCompile(`(?m)^   holdfast_sessions_active +2 `),
		regexp.MustCompile(`(?m)^   holdfast_gateway_state\{state="started"\} +1 `),
		regexp.MustCompile(`(?m)^   holdfast_readiness_probes_total\{result="started"\} +[1-9][0-9]* `),
	} {
		if !want.MatchString(metrics) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Zero-valued series and histogram buckets are left out.
	if strings.Contains(metrics, "_bucket") || regexp.MustCompile(`(?m) 0 +\S`).MatchString(metrics) {
		t.Errorf("metrics section prints buckets or zero values:\n%s", metrics)
	}
}

func TestDemoRejectsShortWindow(t *testing.T) {
	t.Parallel()
	if err := run(context.Background(), &bytes.Buffer{}, Options{Window: 100 * time.Millisecond}); err == nil {
		t.Fatal("a 100ms window was accepted")
	}
}
