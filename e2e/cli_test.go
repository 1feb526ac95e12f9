//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// cliResult is what one OpenClaw CLI invocation did.
type cliResult struct {
	Args     []string
	ExitCode int // -1 when killed or not started
	Stdout   string
	Stderr   string
	Start    time.Time
	End      time.Time
	Err      error
}

func (r cliResult) Duration() time.Duration { return r.End.Sub(r.Start) }

func (r cliResult) String() string {
	return "exit " + strconv.Itoa(r.ExitCode) + " after " + r.Duration().Round(time.Millisecond).String() +
		"\n--- stdout ---\n" + tail(r.Stdout, 3000) + "\n--- stderr ---\n" + tail(r.Stderr, 3000)
}

// cliHome makes a fresh, isolated home for a CLI (its own device identity
// and an empty config), so no call inherits pairing from another.
func cliHome(t testing.TB) string {
	t.Helper()
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".openclaw"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := `{"update":{"checkOnStart":false}}`
	if err := os.WriteFile(filepath.Join(home, ".openclaw", "openclaw.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

// runCLI runs `openclaw ARGS…` of the given version with home as its
// isolated HOME and state, bounded by limit. The process gets its own
// process group, which is killed if the limit passes.
func runCLI(ctx context.Context, version, home string, limit time.Duration, args ...string) cliResult {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.Command(nodeBin(), append([]string{openclawEntry(version)}, args...)...)
	cmd.Dir = home
	cmd.Env = isolatedEnv(home, filepath.Join(home, ".openclaw", "openclaw.json"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r := cliResult{Args: args, ExitCode: -1, Start: time.Now()}
	if err := cmd.Start(); err != nil {
		r.Err, r.End = err, time.Now()
		return r
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		r.Err = err
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		r.Err = errors.Join(ctx.Err(), <-waited)
	}
	r.End = time.Now()
	if cmd.ProcessState != nil {
		r.ExitCode = cmd.ProcessState.ExitCode()
	}
	// Helpers the CLI may have left in its group go too.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	r.Stdout, r.Stderr = stdout.String(), stderr.String()
	return r
}
