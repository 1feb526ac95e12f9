//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// terminal is one command running in a detached tmux session of a private
// tmux server (its own socket under the test's temporary directory), so a
// full-screen client such as the TUI gets a real terminal, and the test
// reads what it shows. The pane stays after the command exits, so its last
// screen and exit status can still be read. It is stopped in t.Cleanup.
type terminal struct {
	t      testing.TB
	socket string
	pid    int // the pane's process: a session and process group leader
	Start  time.Time
}

// startTerminal runs argv in a cols×rows terminal with env as the whole
// environment (TERM is set for it) and dir as the working directory.
func startTerminal(t testing.TB, env []string, dir string, cols, rows int, argv ...string) *terminal {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux missing (%v); run e2e/setup.sh", err)
	}
	tdir := t.TempDir()
	tm := &terminal{t: t, socket: filepath.Join(tdir, "tmux.sock")}
	conf := filepath.Join(tdir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g history-limit 5000\nset -g status off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-S", tm.socket, "-f", conf, "new-session", "-d", "-s", "main",
		"-x", strconv.Itoa(cols), "-y", strconv.Itoa(rows), "-c", dir, "--"}
	args = append(args, argv...)
	cmd := exec.Command("tmux", args...)
	cmd.Env = append(withoutVar(env, "TERM"), "TERM=xterm-256color")
	tm.Start = time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(tm.Stop)
	if out, err := tm.tmux("display-message", "-p", "-t", "main", "#{pane_pid}"); err == nil {
		tm.pid, _ = strconv.Atoi(strings.TrimSpace(out))
	}
	return tm
}

func withoutVar(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func (tm *terminal) tmux(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "tmux", append([]string{"-S", tm.socket}, args...)...).CombinedOutput()
	return string(out), err
}

// Screen returns what the terminal shows now, one line per row, trailing
// blanks trimmed.
func (tm *terminal) Screen() string {
	out, err := tm.tmux("capture-pane", "-p", "-t", "main")
	if err != nil {
		return fmt.Sprintf("(capture-pane: %v: %s)", err, out)
	}
	return out
}

// History returns the scrollback and the screen.
func (tm *terminal) History() string {
	out, err := tm.tmux("capture-pane", "-p", "-S", "-", "-t", "main")
	if err != nil {
		return fmt.Sprintf("(capture-pane: %v: %s)", err, out)
	}
	return out
}

// SendKeys types keys (tmux key names such as "Enter" or "C-c", or text).
func (tm *terminal) SendKeys(keys ...string) error {
	_, err := tm.tmux(append([]string{"send-keys", "-t", "main"}, keys...)...)
	return err
}

// Exited reports whether the command has ended, and its exit status.
func (tm *terminal) Exited() (bool, int) {
	out, err := tm.tmux("display-message", "-p", "-t", "main", "#{pane_dead} #{pane_dead_status}")
	if err != nil {
		return true, -1 // the server is gone
	}
	f := strings.Fields(out)
	if len(f) == 0 || f[0] != "1" {
		return false, 0
	}
	code := -1
	if len(f) > 1 {
		code, _ = strconv.Atoi(f[1])
	}
	return true, code
}

// WaitScreen polls the screen every 100 ms until cond holds or limit
// passes; it returns the last screen and whether cond held.
func (tm *terminal) WaitScreen(limit time.Duration, cond func(screen string) bool) (string, bool) {
	deadline := time.Now().Add(limit)
	for {
		s := tm.Screen()
		if cond(s) {
			return s, true
		}
		if time.Now().After(deadline) {
			return s, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop ends the command's process group (a client may outlive the hangup
// of its terminal, and its children with it), then the tmux server.
func (tm *terminal) Stop() {
	if tm.pid > 1 {
		_ = syscall.Kill(-tm.pid, syscall.SIGTERM)
		deadline := time.Now().Add(3 * time.Second)
		for groupAlive(tm.pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(-tm.pid, syscall.SIGKILL)
	}
	_, _ = tm.tmux("kill-server")
}

// The TUI of a given OpenClaw version, under tmux.

// tuiHome makes a fresh, isolated home for a TUI, its plugins off.
func tuiHome(t testing.TB) string {
	t.Helper()
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".openclaw"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := `{"update":{"checkOnStart":false},"plugins":{"enabled":false}}`
	if err := os.WriteFile(filepath.Join(home, ".openclaw", "openclaw.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

// startTUI runs `openclaw tui --url URL --token TOKEN` of version in a
// 160×48 terminal with a fresh isolated home. OpenClaw 2026.4.x stages its
// bundled plugins' runtime dependencies (npm installs that block the TUI
// for a minute or more) on the first start with a fresh state directory:
// the TUI uses the staging directory setup.sh filled once
// (plugin-stage-VERSION in the cache; only 2026.4.27 is staged there).
func startTUI(t testing.TB, version, url, token string) *terminal {
	t.Helper()
	requireInstalled(t, version)
	home := tuiHome(t)
	env := append(isolatedEnv(home, filepath.Join(home, ".openclaw", "openclaw.json")),
		// Staged once by setup.sh (the TUI's bundled plugins' runtime).
		"OPENCLAW_PLUGIN_STAGE_DIR="+filepath.Join(cacheDir(), "plugin-stage-"+version))
	return startTerminal(t, env, home, 160, 48,
		nodeBin(), openclawEntry(version), "tui", "--url", url, "--token", token)
}
