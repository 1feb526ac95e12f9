package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The units of deploy/systemd (docs/operations.md, "Single host").
const (
	systemUnit = "deploy/systemd/holdfast.service"
	userUnit   = "deploy/systemd/user/holdfast.service"
	// maxExposure is the highest `systemd-analyze security` exposure the
	// system unit may have (0 is the most locked down, 10 the least).
	maxExposure = 2.0
)

// systemdAnalyze returns the path of systemd-analyze. Where it is missing
// the test is skipped, unless HOLDFAST_REQUIRE_SYSTEMD_ANALYZE=1
// (scripts/test.sh, which installs it).
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("HOLDFAST_REQUIRE_SYSTEMD_ANALYZE") == "1" {
			t.Fatalf("systemd-analyze not found (HOLDFAST_REQUIRE_SYSTEMD_ANALYZE=1): %v", err)
		}
		t.Skipf("systemd-analyze not found: %v", err)
	}
	return p
}

// unitCopy writes unit into a new directory under its own name, with the
// holdfast binary's path (bin) pointing to an executable stub, since
// systemd-analyze verify checks that every command exists.
func unitCopy(t *testing.T, unit, bin string) string {
	t.Helper()
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "holdfast")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(bin)) {
		t.Fatalf("%s does not run %s", unit, bin)
	}
	path := filepath.Join(dir, filepath.Base(unit))
	if err := os.WriteFile(path, bytes.ReplaceAll(data, []byte(bin), []byte(stub)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSystemdUnitsVerify runs systemd-analyze verify on both units. It
// prints unknown keys and bad values but still exits 0, so any output
// fails the test.
func TestSystemdUnitsVerify(t *testing.T) {
	t.Parallel()
	analyze := systemdAnalyze(t)
	for _, tc := range []struct {
		unit, bin string
		args      []string
	}{
		{systemUnit, "/usr/local/bin/holdfast", []string{"verify"}},
		{userUnit, "%h/.local/bin/holdfast", []string{"--user", "verify"}},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			t.Parallel()
			path := unitCopy(t, tc.unit, tc.bin)
			cmd := exec.Command(analyze, append(tc.args, path)...)
			// A user manager's runtime directory, where no session has one.
			runDir := filepath.Join(t.TempDir(), "run")
			if err := os.Mkdir(runDir, 0o700); err != nil {
				t.Fatal(err)
			}
			cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runDir, "SYSTEMD_LOG_COLOR=0")
			out, err := cmd.CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(tc.args, " "), err, out)
			}
		})
	}
}

// exposureRe finds the figure in "Overall exposure level for
// holdfast.service: 1.1 OK".
var exposureRe = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestSystemdUnitSecurity holds the system unit to an exposure of at most
// maxExposure in systemd-analyze security's offline assessment.
func TestSystemdUnitSecurity(t *testing.T) {
	t.Parallel()
	analyze := systemdAnalyze(t)
	out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", systemUnit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureRe.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no overall exposure:\n%s", out)
	}
	exposure, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	if exposure > maxExposure {
		t.Errorf("exposure of %s = %.1f, want at most %.1f; what it lacks:\n%s", systemUnit, exposure, maxExposure, failing(out))
	} else {
		t.Logf("exposure of %s: %.1f", systemUnit, exposure)
	}
}

// failing returns the assessment's lines that carry an exposure.
func failing(out []byte) string {
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "✗") {
			b.WriteString(sc.Text() + "\n")
		}
	}
	return b.String()
}

// unitSettings returns the [Service] settings of a unit file, each key's
// values in order.
func unitSettings(t *testing.T, unit string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			kv[k] = append(kv[k], v)
		}
	}
	return kv
}

// TestSystemdUnitsStop ties the units' stop to holdfast's drain: SIGTERM
// starts it, and TimeoutStopSec (after which systemd sends SIGKILL) is at
// least 5 s longer than the default shutdown.grace, which bounds the whole
// stop from the signal (drain_delay and drain included), as
// terminationGracePeriodSeconds is in deploy/kubernetes. Reload is SIGHUP,
// after the same check of the file that the start makes.
func TestSystemdUnitsStop(t *testing.T) {
	t.Parallel()
	sc := DefaultConfig().Shutdown
	if sc.Grace < sc.DrainDelay+sc.Drain {
		t.Fatalf("default shutdown.grace %v shorter than drain_delay %v + drain %v", sc.Grace, sc.DrainDelay, sc.Drain)
	}
	for _, tc := range []struct{ unit, config string }{
		{systemUnit, "/etc/holdfast/proxy.yaml"},
		{userUnit, "%E/holdfast/proxy.yaml"},
	} {
		t.Run(tc.unit, func(t *testing.T) {
			t.Parallel()
			kv := unitSettings(t, tc.unit)
			if got := kv["KillSignal"]; len(got) != 1 || got[0] != "SIGTERM" {
				t.Errorf("KillSignal = %q, want SIGTERM (the drain)", got)
			}
			ts := kv["TimeoutStopSec"]
			if len(ts) != 1 {
				t.Fatalf("TimeoutStopSec = %q, want one value", ts)
			}
			d, err := time.ParseDuration(ts[0])
			if err != nil {
				t.Fatalf("TimeoutStopSec %q: %v", ts[0], err)
			}
			if want := sc.Grace + 5*time.Second; d < want {
				t.Errorf("TimeoutStopSec = %v, want at least shutdown.grace %v + 5s = %v", d, sc.Grace, want)
			}
			start := kv["ExecStart"]
			if len(start) != 1 || !strings.HasSuffix(start[0], "holdfast -config "+tc.config) {
				t.Errorf("ExecStart = %q, want holdfast -config %s", start, tc.config)
			}
			check := strings.Replace(start[0], " -config ", " -check-config -config ", 1)
			if pre := kv["ExecStartPre"]; len(pre) != 1 || pre[0] != check {
				t.Errorf("ExecStartPre = %q, want %q", pre, check)
			}
			want := []string{check, "/bin/kill -HUP $MAINPID"}
			if got := kv["ExecReload"]; strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("ExecReload = %q, want %q", got, want)
			}
		})
	}
}
