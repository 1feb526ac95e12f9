package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Settings that are valid but cannot do what they say are warned about,
// each naming its key: -check-config lists them under "ok", and the
// defaults have none.
func TestCheckConfigWarnings(t *testing.T) {
	t.Parallel()
	if w := DefaultConfig().Warnings(); len(w) != 0 {
		t.Errorf("the defaults warn: %q", w)
	}
	cases := []struct {
		name, yaml string
		n          int      // warnings
		want       []string // substrings of the warnings
	}{
		{"a budget shorter than the late dial", "handshake:\n  budget: 2s\n", 1,
			[]string{"handshake.budget: 2s is shorter than handshake.late_dial (9s)", "held up to late_dial + budget = 11s"}},
		{"the late dial off: the budget alone bounds every client", "handshake:\n  budget: 2s\n  late_dial: 0s\n", 0, nil},
		{"a budget longer than a hold on one socket", "handshake:\n  budget: 14s\n", 1,
			[]string{"handshake.budget: 14s is longer than a connect can be held on its socket (handshake.preauth_timeout - handshake.hold_margin = 13.5s)"}},
		{"a late dial past the 2026.4.x challenge timer", "handshake:\n  late_dial: 12s\n", 1,
			[]string{"handshake.late_dial: 2026.4.x clients give up on their challenge after 10s: with 12s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "holdfast.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			if err := run([]string{"-check-config", "-config", path}, &out, &errOut, controls{}); err != nil {
				t.Fatalf("check: %v %s", err, errOut.String())
			}
			got := out.String()
			if !strings.HasPrefix(got, path+": ok\n") {
				t.Errorf("stdout %q; want it to start with the ok line", got)
			}
			if n := strings.Count(got, "\n  warning: "); n != tc.n {
				t.Errorf("%d warnings; want %d:\n%s", n, tc.n, got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("no warning containing %q:\n%s", w, got)
				}
			}
		})
	}
}
