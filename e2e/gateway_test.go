//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const delayPluginID = "holdfast-e2e-delay"

// gatewayOptions says which gateway to run and how long to keep it starting.
type gatewayOptions struct {
	Version string
	// DelayMs is the longest the delay plugin keeps the gateway starting;
	// ReleaseWindow ends the window earlier. 0 leaves the plugin out and
	// gives the gateway's natural (short) startup window.
	DelayMs int
	// TrustedProxies is gateway.trustedProxies (none by default).
	TrustedProxies []string
}

// gateway is one real OpenClaw gateway process group on 127.0.0.1.
type gateway struct {
	t       testing.TB
	opts    gatewayOptions
	Port    int
	Token   string
	Dir     string // isolated HOME, state and config
	logPath string
	// releasePath is the file whose creation ends the delay plugin's hold.
	releasePath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
	pgFile  string
	started time.Time

	// Measured on the most recent start.
	PortOpenAfter time.Duration // process start → TCP accept
	// OpenAfter is process start → the moment its test's clients may come:
	// PortOpenAfter, or later when Start waited for its test's turn on the
	// machine with the gateway in its startup window (machine_test.go).
	// Windows count from there.
	OpenAfter     time.Duration
	ReleasedAfter time.Duration // process start → ReleaseWindow
	ReadyAfter    time.Duration // process start → readiness endpoint says started
}

// URL is the gateway's WebSocket URL.
func (g *gateway) URL() string { return wsURL(g.Port) }

// HTTPBase is the gateway's HTTP base URL.
func (g *gateway) HTTPBase() string { return fmt.Sprintf("http://127.0.0.1:%d", g.Port) }

// hasStartupz reports whether the version serves /startupz. 2026.5.12 has none
// (measured: its Control UI answers the path with 200 text/html, before and
// after startup; TestReadinessEndpoints); 2026.9.6 has one.
func hasStartupz(version string) bool { return versionAtLeast(version, "2026.9.6") }

func versionAtLeast(v, min string) bool {
	a, b := strings.Split(v, "."), strings.Split(min, ".")
	for i := 0; i < len(a) && i < len(b); i++ {
		x, _ := strconv.Atoi(a[i])
		y, _ := strconv.Atoi(b[i])
		if x != y {
			return x > y
		}
	}
	return len(a) >= len(b)
}

// newGateway writes an isolated config and environment for one gateway but
// does not start it. The process is always stopped in t.Cleanup.
func newGateway(t testing.TB, opts gatewayOptions) *gateway {
	t.Helper()
	requireInstalled(t, opts.Version)
	g := &gateway{
		t:     t,
		opts:  opts,
		Port:  gatewayPort(t),
		Token: newToken(t),
		Dir:   t.TempDir(),
	}
	g.logPath = filepath.Join(g.Dir, "gateway.out")
	g.releasePath = filepath.Join(g.Dir, "release-startup-window")
	if err := os.MkdirAll(filepath.Join(g.Dir, ".openclaw", "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"gateway": map[string]any{
			"mode": "local",
			"bind": "loopback",
			"port": g.Port,
			"auth": map[string]any{"mode": "token", "token": g.Token},
		},
		"update":  map[string]any{"checkOnStart": false},
		"logging": map[string]any{"file": filepath.Join(g.Dir, ".openclaw", "logs", "gateway.log")},
	}
	if len(opts.TrustedProxies) > 0 {
		cfg["gateway"].(map[string]any)["trustedProxies"] = opts.TrustedProxies
	}
	if versionAtLeast(opts.Version, "2026.9.0") {
		cfg["models"] = map[string]any{"catalogRefresh": map[string]any{"enabled": false}}
	}
	if opts.DelayMs > 0 {
		pluginDir, err := filepath.Abs(filepath.Join("testdata", "delay-plugin"))
		if err != nil {
			t.Fatal(err)
		}
		cfg["plugins"] = map[string]any{
			// Only the delay plugin: bundled plugins would lengthen the
			// start and make the window depend on them.
			"allow": []string{delayPluginID},
			"load":  map[string]any{"paths": []string{pluginDir}},
			"entries": map[string]any{
				delayPluginID: map[string]any{"enabled": true, "config": map[string]any{
					"delayMs": opts.DelayMs, "releaseFile": g.releasePath,
				}},
			},
		}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.configPath(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !strings.Contains(t.Name(), "/") {
			// A top-level test's last cleanups: the gateway's stop
			// (up to 15 s of waiting on its shutdown) need not keep
			// the next test waiting.
			background(t)
		}
		g.Stop()
		if t.Failed() || os.Getenv("HOLDFAST_E2E_LOGS") == "1" {
			t.Log(g.LogTail())
		}
	})
	return g
}

func (g *gateway) configPath() string { return filepath.Join(g.Dir, ".openclaw", "openclaw.json") }

// Start spawns the gateway and waits until its port accepts TCP
// connections, and until its test may go on: another test may start its
// gateway beside this one, and a test that started its gateway beside
// another's waits here for its turn (machine_test.go).
func (g *gateway) Start(t testing.TB, ctx context.Context) {
	t.Helper()
	theMachine.startBegins(topLevel(t))
	g.Spawn(t)
	g.WaitPort(t, ctx)
	theMachine.startEnds(topLevel(t), t.Logf)
	g.OpenAfter = time.Since(g.started)
}

// WaitPort waits until the spawned gateway's port accepts TCP connections.
func (g *gateway) WaitPort(t testing.TB, ctx context.Context) {
	t.Helper()
	if err := g.waitPort(ctx, 120*time.Second); err != nil {
		t.Fatalf("gateway %s: %v\n%s", g.opts.Version, err, g.LogTail())
	}
	t.Logf("gateway %s: port open after %v", g.opts.Version, g.PortOpenAfter.Round(time.Millisecond))
}

// Spawn launches the gateway in a session and process group of its own
// (setsid), so Stop can signal it and its helper processes together. The
// startup window stays open until ReleaseWindow (or DelayMs).
func (g *gateway) Spawn(t testing.TB) {
	t.Helper()
	_ = os.Remove(g.releasePath)
	g.mu.Lock()
	if g.cmd != nil {
		g.mu.Unlock()
		t.Fatalf("gateway %s already running", g.opts.Version)
	}
	out, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		g.mu.Unlock()
		t.Fatal(err)
	}
	cmd := exec.Command(nodeBin(), openclawEntry(g.opts.Version),
		"gateway", "run", "--port", strconv.Itoa(g.Port), "--bind", "loopback", "--auth", "token")
	cmd.Dir = g.Dir
	cmd.Env = isolatedEnv(g.Dir, g.configPath())
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	fmt.Fprintf(out, "\n=== start %s at %s ===\n", g.opts.Version, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		out.Close()
		g.mu.Unlock()
		t.Fatalf("start gateway: %v", err)
	}
	g.started = time.Now()
	g.cmd = cmd
	g.done = make(chan struct{})
	g.pgFile = recordProcessGroup(cmd.Process.Pid)
	done := g.done
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(done)
	}()
	g.mu.Unlock()

	t.Logf("gateway %s: pid/pgid %d, port %d, delayMs %d", g.opts.Version, cmd.Process.Pid, g.Port, g.opts.DelayMs)
}

// ReleaseWindow lets the delay plugin's start() resolve, which ends the
// startup window as soon as the gateway's other sidecars are ready.
func (g *gateway) ReleaseWindow(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(g.releasePath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	g.ReleasedAfter = time.Since(g.started)
}

// PortOpen reports whether the gateway's port accepts connections now.
func (g *gateway) PortOpen() bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", g.Port), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// WaitOutput waits until the gateway's output since the latest spawn
// contains s.
func (g *gateway) WaitOutput(t testing.TB, ctx context.Context, s string, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		b, _ := os.ReadFile(g.logPath)
		if i := bytes.LastIndex(b, []byte("=== start ")); i >= 0 && bytes.Contains(b[i:], []byte(s)) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("gateway %s: %q not in its output after %v\n%s", g.opts.Version, s, limit, g.LogTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (g *gateway) waitPort(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", g.Port), time.Second)
		if err == nil {
			c.Close()
			g.PortOpenAfter = time.Since(g.started)
			g.OpenAfter = g.PortOpenAfter
			return nil
		}
		select {
		case <-g.done:
			return errors.New("gateway exited before its port opened")
		case <-ctx.Done():
			return fmt.Errorf("port %d not open after %v", g.Port, limit)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// readiness is one answer of the gateway's startup gate.
type readiness struct {
	Started bool
	Status  int
	Body    string
}

// Readiness asks the endpoint that mirrors the gateway's WebSocket startup
// gate: /startupz where it exists (2026.9.6; not 2026.4.29–2026.5.12,
// whose Control UI answers that path with HTML), otherwise /readyz (whose
// detailed body, given to loopback callers without forwarding headers,
// lists "startup-sidecars" while starting).
func (g *gateway) Readiness(ctx context.Context) (readiness, error) {
	path := "/readyz"
	if hasStartupz(g.opts.Version) {
		path = "/startupz"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.HTTPBase()+path, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return readiness{}, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	r := readiness{Status: res.StatusCode, Body: string(body)}
	if path == "/startupz" {
		r.Started = res.StatusCode == 200 && bytes.Contains(body, []byte(`"started"`))
	} else {
		r.Started = !bytes.Contains(body, []byte("startup-sidecars")) && res.StatusCode == 200
	}
	return r, nil
}

// WaitStarted polls the readiness endpoint every 50 ms until the gateway
// reports started, and records when that happened.
func (g *gateway) WaitStarted(t testing.TB, ctx context.Context, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last readiness
	var lastErr error
	for {
		r, err := g.Readiness(ctx)
		if err == nil && r.Started {
			g.ReadyAfter = time.Since(g.started)
			t.Logf("gateway %s: started after %v at %s (window ≈ %v after port open)", g.opts.Version,
				g.ReadyAfter.Round(time.Millisecond), time.Now().Format("15:04:05.000"), (g.ReadyAfter - g.PortOpenAfter).Round(time.Millisecond))
			return
		}
		last, lastErr = r, err
		select {
		case <-g.done:
			t.Fatalf("gateway %s exited while starting\n%s", g.opts.Version, g.LogTail())
		case <-ctx.Done():
			t.Fatalf("gateway %s not started after %v: last %+v err %v\n%s", g.opts.Version, limit, last, lastErr, g.LogTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Running reports whether the gateway process is alive.
func (g *gateway) Running() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil {
		return false
	}
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM to the gateway's process group, waits up to 15 s, then
// SIGKILLs the group. It is safe to call more than once.
func (g *gateway) Stop() {
	g.mu.Lock()
	cmd, done, pgFile := g.cmd, g.done, g.pgFile
	g.cmd = nil
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	pgid := cmd.Process.Pid
	t0 := time.Now()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		g.t.Logf("gateway %s: still running 15 s after SIGTERM; killing group %d", g.opts.Version, pgid)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	// Helpers that outlived the leader get the same treatment.
	deadline := time.Now().Add(5 * time.Second)
	for groupAlive(pgid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if groupAlive(pgid) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	if pgFile != "" {
		_ = os.Remove(pgFile)
	}
	g.t.Logf("gateway %s: stopped in %v", g.opts.Version, time.Since(t0).Round(time.Millisecond))
}

// Terminate sends SIGTERM to the group and returns at once; Stop (or
// WaitExit) collects the process afterwards.
func (g *gateway) Terminate() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd != nil {
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGTERM)
	}
}

// WaitExit waits until the gateway process exited and forgets it, so that
// Start can be called again with the same port, token and state.
func (g *gateway) WaitExit(limit time.Duration) {
	g.t.Helper()
	g.mu.Lock()
	done := g.done
	g.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
		g.Stop() // collects helpers and the pgid record
	case <-time.After(limit):
		g.t.Errorf("gateway %s did not exit within %v of SIGTERM", g.opts.Version, limit)
		g.Stop()
	}
}

// LogTail returns the end of the gateway's stdout/stderr.
func (g *gateway) LogTail() string {
	b, _ := os.ReadFile(g.logPath)
	return "--- gateway output (tail) ---\n" + tail(string(b), 4000)
}

// groupAlive reports whether any process of group pgid still runs (zombies
// waiting to be reaped do not count).
func groupAlive(pgid int) bool {
	live, _ := groupMembers(pgid)
	return live > 0
}

// The process groups of started gateways are recorded under the cache so
// that a test binary killed by a timeout cannot leave a gateway behind: the
// next run (and run.sh) stop the groups recorded there.
func pgDir() string { return filepath.Join(cacheDir(), "run") }

// recordProcessGroup writes "PGID OWNER": the gateway's process group and
// the pid of the test binary that started it.
func recordProcessGroup(pgid int) string {
	_ = os.MkdirAll(pgDir(), 0o755)
	p := filepath.Join(pgDir(), fmt.Sprintf("gateway-%d.pgid", pgid))
	_ = os.WriteFile(p, fmt.Appendf(nil, "%d %d\n", pgid, os.Getpid()), 0o644)
	return p
}

// parseRecord reads a record of recordProcessGroup; owner is 0 in a record
// that names none.
func parseRecord(b []byte) (pgid, owner int, err error) {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, 0, fmt.Errorf("empty record")
	}
	if pgid, err = strconv.Atoi(f[0]); err != nil {
		return 0, 0, err
	}
	if len(f) > 1 {
		owner, _ = strconv.Atoi(f[1])
	}
	return pgid, owner, nil
}

// ownerAlive reports whether the test binary that recorded a gateway still
// runs: its gateway is its own to stop, not a leftover.
func ownerAlive(owner int) bool {
	if owner <= 1 || owner == os.Getpid() {
		return false
	}
	_, err := os.Stat(fmt.Sprintf("/proc/%d", owner))
	return err == nil
}

// reapRecordedGateways stops gateway process groups left by an earlier run
// that died without its cleanups. Only groups whose leader or members still
// run an openclaw command line are signalled, and never one whose recording
// test binary still runs (a suite running beside this one).
func reapRecordedGateways() {
	files, _ := filepath.Glob(filepath.Join(pgDir(), "gateway-*.pgid"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		pgid, owner, err := parseRecord(b)
		if err == nil && ownerAlive(owner) {
			continue
		}
		if err == nil && pgid > 1 && groupAlive(pgid) && groupLooksLikeOpenClaw(pgid) {
			fmt.Fprintf(os.Stderr, "e2e: stopping leftover gateway process group %d\n", pgid)
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			for i := 0; i < 100 && groupAlive(pgid); i++ {
				time.Sleep(50 * time.Millisecond)
			}
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
		_ = os.Remove(f)
	}
}

func groupLooksLikeOpenClaw(pgid int) bool {
	_, oc := groupMembers(pgid)
	return oc
}

// groupMembers counts the live (not zombie) processes of group pgid and
// reports whether one of them is an OpenClaw process.
func groupMembers(pgid int) (live int, openclaw bool) {
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// Fields after the parenthesised comm: state ppid pgrp …
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) || f[0] == "Z" || f[0] == "X" {
			continue
		}
		live++
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
		if bytes.Contains(cmdline, []byte("openclaw")) || strings.Contains(s[:i], "openclaw") {
			openclaw = true
		}
	}
	return live, openclaw
}
