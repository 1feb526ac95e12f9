//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Real clients beyond the CLI (issue: every real client in CI): the
// Control UI in headless Chromium, the third-party npm client openclaw-node
// and the 2026.4.27 TUI, each through its own holdfast (so that each one's
// metrics are its own) while a real gateway is held in its startup window.

// longWindow is the window of the current-gateway case, from port open to
// the release: longer than the gateway's 15 s pre-auth timer.
const longWindow = 20 * time.Second

// clientWindow is the least time the current-gateway clients spend in the
// window after they reached holdfast: more than the gateway's 15 s
// pre-auth timer, within what the late dial and the hold after it absorb
// (9 s + 13.5 s).
const clientWindow = 16 * time.Second

// nodeClientResult is what e2e/testdata/openclaw-node/connect.cjs printed.
type nodeClientResult struct {
	Start         int64   `json:"start"`
	End           int64   `json:"end"`
	Resolved      bool    `json:"resolved"`
	Error         *string `json:"error"`
	TokenKept     bool    `json:"tokenKept"`
	Health        bool    `json:"health"`
	ServerVersion string  `json:"serverVersion"`
	Closes        []int64 `json:"closes"`
	Fatal         string  `json:"fatal"`
	raw           string
	exit          int
}

func openclawNodePrefix() string { return filepath.Join(cacheDir(), "openclaw-node") }

// runOpenclawNode runs connect.cjs against url with a fresh stored identity
// whose device token is token.
func runOpenclawNode(ctx context.Context, t testing.TB, url, token string) nodeClientResult {
	home := t.TempDir()
	script, _ := filepath.Abs(filepath.Join("testdata", "openclaw-node", "connect.cjs"))
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin(), script, openclawNodePrefix(), url, "-", filepath.Join(home, "device-identity.json"))
	cmd.Env = append(isolatedEnv(home, filepath.Join(home, "openclaw.json")), "OPENCLAW_E2E_TOKEN="+token)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var r nodeClientResult
	r.raw = stdout.String() + "\n--- stderr ---\n" + tail(stderr.String(), 2000)
	if cmd.ProcessState != nil {
		r.exit = cmd.ProcessState.ExitCode()
	}
	if jerr := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &r); jerr != nil || err != nil {
		r.Fatal = fmt.Sprintf("run: %v; output: %v", err, jerr)
	}
	return r
}

// uiRun is one Control UI page opened during a window.
type uiRun struct {
	page    *page
	opened  time.Time
	sockets []pageSocket
	text    string
	shot    string
}

// openControlUI opens the Control UI served at base with the gateway token
// in the URL fragment, as a user pastes it.
func openControlUI(ctx context.Context, t *testing.T, b *browser, base, token string) *uiRun {
	t.Helper()
	p, err := b.newPage(ctx, socketWatch)
	if err != nil {
		t.Fatalf("new page: %v", err)
	}
	u := &uiRun{page: p, opened: time.Now()}
	if err := p.Navigate(ctx, base+"/#token="+token); err != nil {
		t.Fatalf("open the Control UI: %v", err)
	}
	return u
}

// waitHello waits until a socket of the page saw hello-ok and the page has
// had settle to show it, then records the sockets, the page's text and a
// screenshot named name.
func (u *uiRun) waitHello(ctx context.Context, t *testing.T, limit time.Duration, name string) bool {
	t.Helper()
	ok := waitUntil(limit, func() bool {
		s, err := u.page.sockets(ctx)
		if err != nil {
			return false
		}
		for _, x := range s {
			if x.Hello != 0 {
				return true
			}
		}
		return false
	})
	if ok {
		time.Sleep(2 * time.Second) // let the page render the connected state
	}
	u.sockets, _ = u.page.sockets(ctx)
	_ = u.page.Eval(ctx, `document.body ? document.body.innerText : ""`, &u.text)
	u.shot = filepath.Join(artifactDir(), fmt.Sprintf("%s-%s.png", name, time.Now().Format("20060102-150405")))
	if err := u.page.Screenshot(ctx, u.shot); err != nil {
		t.Errorf("screenshot: %v", err)
		u.shot = ""
	}
	return ok
}

// report logs the figures of a page's sockets relative to readyAt.
func (u *uiRun) report(t *testing.T, label string, readyAt time.Time) (failed int, firstHello time.Time) {
	t.Helper()
	var codes []string
	for _, s := range u.sockets {
		if s.Failed() {
			failed++
		}
		if s.Hello != 0 && firstHello.IsZero() {
			firstHello = time.UnixMilli(s.Hello)
		}
		if s.Closed != 0 {
			codes = append(codes, fmt.Sprintf("%d %q %v", s.CloseCode, s.CloseReason, s.Errors))
		}
	}
	hello := "never"
	if !firstHello.IsZero() {
		hello = firstHello.Sub(readyAt).Round(time.Millisecond).String() + " after started"
	}
	figure(t, "%s: %d WebSockets opened, %d failed, hello-ok %s; closes seen by the page: %v; screenshot %s",
		label, len(u.sockets), failed, hello, codes, u.shot)
	return failed, firstHello
}

// TestLongWindowCurrent holds a 2026.9.6 gateway in its window for
// longWindow after its port opens (longer than its 15 s pre-auth timer)
// and sends openclaw-node 0.14.0 and the Control UI (in Chromium) through
// holdfast from the moment the port opens.
func TestLongWindowCurrent(t *testing.T) {
	foreground(t)
	requireInstalled(t, currentVersion)
	ctx := context.Background()
	gw := newGateway(t, gatewayOptions{Version: currentVersion, DelayMs: holdMaxMs})
	hfNode := startHoldfast(t, gw, holdfastOptions{})
	hfUI := startHoldfast(t, gw, holdfastOptions{})
	b := startBrowser(t)

	gw.Start(t, ctx)
	portOpen := gw.started.Add(gw.OpenAfter)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	var nodeRes nodeClientResult
	nodeDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(nodeDone)
		nodeRes = runOpenclawNode(ctx, t, hfNode.URL(), gw.Token)
	}()
	ui := openControlUI(ctx, t, b, hfUI.HTTPBase(), gw.Token)
	awaitArrivals(t, gw, map[string]func() bool{
		"openclaw-node": reachedHoldfast(hfNode, nodeDone),
		"Control UI": func() bool {
			s, err := ui.page.sockets(ctx)
			return err == nil && len(s) > 0
		},
	})
	// Node and Chromium start slowly on a busy machine: the window lasts
	// longWindow after the port opened and at least clientWindow after
	// both clients arrived, either way longer than the pre-auth timer.
	arrived := time.Now()
	time.Sleep(max(time.Until(portOpen.Add(longWindow)), time.Until(arrived.Add(clientWindow))) - minHold)
	readyAt := releaseWindow(t, gw, 0) // after minHold more
	window := readyAt.Sub(portOpen)
	figure(t, "gateway %s: port open %v after spawn; window (open → started) %v, clients in it %v before it ended",
		currentVersion, gw.PortOpenAfter.Round(time.Millisecond), window.Round(time.Millisecond), readyAt.Sub(arrived).Round(time.Millisecond))
	if window < longWindow-time.Second || readyAt.Sub(arrived) < clientWindow {
		t.Errorf("window %v after the port opened, %v after the clients arrived; want ≥ %v and ≥ %v (it proves nothing shorter)",
			window, readyAt.Sub(arrived), longWindow, clientWindow)
	}

	t.Run("openclaw-node", func(t *testing.T) {
		<-nodeDone
		start, end := time.UnixMilli(nodeRes.Start), time.UnixMilli(nodeRes.End)
		figure(t, "openclaw-node 0.14.0 via %s: connect() resolved %v (error %v) %v after the port opened, %v after started, %v after it began; stored device token kept %v; health %v",
			viaName(), nodeRes.Resolved, deref(nodeRes.Error), end.Sub(portOpen).Round(time.Millisecond),
			end.Sub(readyAt).Round(time.Millisecond), end.Sub(start).Round(time.Millisecond), nodeRes.TokenKept, nodeRes.Health)
		if nodeRes.Fatal != "" {
			t.Fatalf("openclaw-node: %s\n%s", nodeRes.Fatal, nodeRes.raw)
		}
		if !nodeRes.Resolved {
			t.Errorf("first connect() rejected: %v", deref(nodeRes.Error))
		}
		if !nodeRes.TokenKept {
			t.Errorf("the stored device token was wiped")
		}
		if !nodeRes.Health {
			t.Errorf("health RPC after connect failed")
		}
		// connect() was pending longer than the gateway's pre-auth timer:
		// no single upstream socket could have carried it.
		if took := end.Sub(start); nodeRes.Resolved && took < 15*time.Second {
			t.Errorf("connect() resolved %v after it began; the window it met was too short to prove anything", took)
		}
		m := scrape(t, hfNode)
		expectMetric(t, m, "==", 1, mHandshakes, "result", "ok")
		expectNoFailedHandshakes(t, m)
		expectMetric(t, m, "==", 1, mDelayed)
	})

	t.Run("control_ui", func(t *testing.T) {
		ok := ui.waitHello(ctx, t, 45*time.Second, "control-ui-"+currentVersion)
		failed, hello := ui.report(t, "Control UI "+currentVersion+" via "+viaName(), readyAt)
		t.Logf("page text (head):\n%s", head(ui.text, 600))
		if !ok {
			t.Fatalf("no WebSocket of the page saw hello-ok")
		}
		if failed > 1 {
			t.Errorf("%d WebSockets failed; want at most 1", failed)
		}
		for _, s := range ui.sockets {
			if s.Failed() && s.CloseCode != 1013 && s.CloseCode != 4013 {
				t.Errorf("a socket closed %d %q; want the startup close (1013 or the page's 4013)", s.CloseCode, s.CloseReason)
			}
		}
		if d := hello.Sub(readyAt); d > 5*time.Second {
			t.Errorf("hello-ok %v after the gateway started; want within 5 s", d)
		}
		m := scrape(t, hfUI)
		expectMetric(t, m, ">=", 1, mHandshakes, "result", "ok")
		// A browser is dialled first: its signed connect is held, and at
		// most once passed the gateway's UNAVAILABLE when the budget ran
		// out; nothing else fails.
		expectMetric(t, m, ">=", 1, mHolds)
		expectMetric(t, m, "==", 0, mDelayed)
		for _, r := range []string{"rejected", "error"} {
			expectMetric(t, m, "==", 0, mHandshakes, "result", r)
		}
	})

	// A browser that breaks one of holdfast's own rules (a frame over
	// 64 KiB before hello-ok) gets 1009 and its close event at once:
	// holdfast ends its side of the connection right after the close
	// frame, where Chromium, having answered the close, waits up to 2 s
	// for the server to end it (RFC 6455 §7.1.1), and holdfast's
	// close_grace here is longer.
	t.Run("browser_close_event_at_once", func(t *testing.T) {
		hf := startHoldfast(t, gw, holdfastOptions{CloseGrace: 5 * time.Second})
		if hf.Bypassed {
			t.Skip("holdfast's own close: there is no holdfast to measure with HOLDFAST_E2E_BYPASS=1")
		}
		p, err := b.newPage(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Code   int     `json:"code"`
			Reason string  `json:"reason"`
			Ms     float64 `json:"ms"`
		}
		js := `new Promise((resolve) => {
			const ws = new WebSocket(` + strconv.Quote(hf.URL()) + `);
			let sent = 0;
			ws.onmessage = () => { if (!sent) { sent = performance.now(); ws.send("x".repeat(70 * 1024)); } };
			ws.onclose = (e) => resolve({code: e.code, reason: e.reason, ms: performance.now() - sent});
		})`
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := p.Eval(ectx, js, &res); err != nil {
			t.Fatal(err)
		}
		figure(t, "Chromium: close %d %q %.0f ms after its 70 KiB pre-auth frame (close_grace 5 s)", res.Code, res.Reason, res.Ms)
		if res.Code != 1009 {
			t.Errorf("close %d %q; want 1009", res.Code, res.Reason)
		}
		if res.Ms > 1000 {
			t.Errorf("the close event came %.0f ms after the frame; want at once, not when Chromium gives up waiting for the server (2 s)", res.Ms)
		}
	})
}

// TestLegacyClients holds a 2026.4.29 gateway in its window and sends the
// 2026.4.27 TUI (under tmux) through holdfast. Its challenge timer is 10 s,
// so the window ends soon after it reached holdfast, which dials its
// upstream socket the moment the gateway has started; the 2026.4.27 CLI and
// the Control UI get a window of their own (TestLegacyStatusAndControlUI),
// as every client's start adds to the seconds a just-started gateway can
// take to answer a new upgrade on a two-core machine.
func TestLegacyClients(t *testing.T) {
	foregroundFromStart(t)
	requireInstalled(t, legacyGateway, legacyCLI)
	ctx := context.Background()
	gw := newGateway(t, gatewayOptions{Version: legacyGateway, DelayMs: holdMaxMs})
	hfTUI := startHoldfast(t, gw, holdfastOptions{})

	gw.Start(t, ctx)
	tui := startTUI(t, legacyCLI, hfTUI.URL(), gw.Token)
	awaitArrivals(t, gw, map[string]func() bool{"TUI": reachedHoldfast(hfTUI, nil)})
	readyAt := releaseWindow(t, gw, minWindow)
	figure(t, "gateway %s: port open %v after spawn; window (open → started) %v",
		legacyGateway, gw.PortOpenAfter.Round(time.Millisecond), (gw.ReadyAfter - gw.OpenAfter).Round(time.Millisecond))

	screen, ok := tui.WaitScreen(60*time.Second, tuiConnected)
	hist := tui.History()
	figure(t, "TUI %s via %s: connected %v, %v after started", legacyCLI, viaName(), ok, time.Since(readyAt).Round(time.Millisecond))
	t.Logf("TUI screen:\n%s", screen)
	if !ok {
		t.Errorf("the TUI did not show a connected gateway")
	}
	if strings.Contains(hist, "connect failed") || strings.Contains(hist, "gateway starting") ||
		strings.Contains(hist, "disconnected") {
		t.Errorf("the TUI showed an error:\n%s", tail(hist, 3000))
	}
	if exited, code := tui.Exited(); exited {
		t.Errorf("the TUI exited (status %d)", code)
	}
	m := scrape(t, hfTUI)
	expectMetric(t, m, "==", 1, mHandshakes, "result", "ok")
	expectNoFailedHandshakes(t, m)
	if got := m.Get(mHolds) + m.Get(mDelayed); got < 1 {
		t.Errorf("holds + delayed dials = %g; want ≥ 1", got)
	}
}

// TestLegacyStatusAndControlUI holds a 2026.4.29 gateway in its window and
// sends `openclaw gateway status --require-rpc` (2026.4.27) and the
// gateway's own Control UI (in Chromium) through holdfast.
func TestLegacyStatusAndControlUI(t *testing.T) {
	foreground(t)
	requireInstalled(t, legacyGateway, legacyCLI)
	ctx := context.Background()
	gw := newGateway(t, gatewayOptions{Version: legacyGateway, DelayMs: holdMaxMs})
	hfStatus := startHoldfast(t, gw, holdfastOptions{})
	hfUI := startHoldfast(t, gw, holdfastOptions{})
	b := startBrowser(t)
	gw.Start(t, ctx)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	var status cliResult
	statusDone := make(chan struct{})
	home := cliHome(t)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(statusDone)
		status = runCLI(ctx, legacyCLI, home, 120*time.Second,
			"gateway", "status", "--require-rpc", "--url", hfStatus.URL(), "--token", gw.Token)
	}()
	ui := openControlUI(ctx, t, b, hfUI.HTTPBase(), gw.Token)
	awaitArrivals(t, gw, map[string]func() bool{
		"gateway status --require-rpc": reachedHoldfast(hfStatus, statusDone),
		"Control UI": func() bool {
			s, err := ui.page.sockets(ctx)
			return err == nil && len(s) > 0
		},
	})
	readyAt := releaseWindow(t, gw, minWindow)
	figure(t, "gateway %s: port open %v after spawn; window (open → started) %v",
		legacyGateway, gw.PortOpenAfter.Round(time.Millisecond), (gw.ReadyAfter - gw.OpenAfter).Round(time.Millisecond))

	t.Run("gateway_status_require_rpc", func(t *testing.T) {
		<-statusDone
		figure(t, "gateway status --require-rpc (CLI %s) via %s: exit %d after %v, %v after started",
			legacyCLI, viaName(), status.ExitCode, status.Duration().Round(time.Millisecond), status.End.Sub(readyAt).Round(time.Millisecond))
		if status.ExitCode != 0 {
			t.Errorf("exit %d; want 0\n%s", status.ExitCode, status)
		}
		out := strings.ToLower(status.Stdout + status.Stderr)
		for _, bad := range []string{"probe: failed", "timeout", "1013", "gateway starting", "connect failed"} {
			if strings.Contains(out, bad) {
				t.Errorf("output shows %q\n%s", bad, status)
			}
		}
		if !status.Start.Before(readyAt) {
			t.Errorf("status started after the window closed; it proves nothing")
		}
		m := scrape(t, hfStatus)
		expectMetric(t, m, ">=", 1, mHandshakes, "result", "ok")
		expectNoFailedHandshakes(t, m)
	})

	t.Run("control_ui", func(t *testing.T) {
		ok := ui.waitHello(ctx, t, 45*time.Second, "control-ui-"+legacyGateway)
		failed, hello := ui.report(t, "Control UI "+legacyGateway+" via "+viaName(), readyAt)
		t.Logf("page text (head):\n%s", head(ui.text, 600))
		if !ok {
			t.Fatalf("no WebSocket of the page saw hello-ok")
		}
		// The page's socket is held (the window after it opened is
		// shorter than the budget): one socket, no failure.
		if failed > 0 || len(ui.sockets) != 1 {
			t.Errorf("%d WebSockets opened, %d failed; want 1 and none", len(ui.sockets), failed)
		}
		if d := hello.Sub(readyAt); d > 5*time.Second {
			t.Errorf("hello-ok %v after the gateway started; want within 5 s", d)
		}
		m := scrape(t, hfUI)
		expectMetric(t, m, ">=", 1, mHandshakes, "result", "ok")
		expectMetric(t, m, ">=", 1, mHolds)
		expectNoFailedHandshakes(t, m)
	})
}

// tuiConnected reports whether the 2026.4.x TUI's status line says it is
// connected to the gateway ("gateway connected | idle"); it shows
// "connecting" until then, and loads its session after hello-ok, which
// takes it several seconds on a busy machine.
func tuiConnected(screen string) bool {
	return strings.Contains(screen, "gateway connected")
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func head(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
