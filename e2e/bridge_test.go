//go:build e2e

package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	mBridged         = "holdfast_bridged_sessions_total"
	mSplicedMessages = "holdfast_spliced_messages_total"
)

// TestLegacyClientsOnCurrent is scenario 7: protocol-3 clients (the
// 2026.4.27 CLI) against a protocol-4 gateway (2026.9.6), which refuses
// them with "protocol mismatch" and close 1002, window or no window.
// Through holdfast (the legacy bridge) the CLI's call, probe and status
// succeed, even started inside the gateway's startup window.
func TestLegacyClientsOnCurrent(t *testing.T) {
	foregroundFromStart(t)
	requireInstalled(t, currentVersion, legacyCLI)
	ctx := context.Background()
	gw := newGateway(t, gatewayOptions{Version: currentVersion, DelayMs: holdMaxMs})
	// One holdfast per command, so each one's metrics are its own.
	hfCall := startHoldfast(t, gw, holdfastOptions{})
	hfProbe := startHoldfast(t, gw, holdfastOptions{})
	hfStatus := startHoldfast(t, gw, holdfastOptions{})

	t.Run("7_legacy_cli_on_current_in_window", func(t *testing.T) {
		gw.Start(t, ctx)
		var wg sync.WaitGroup
		t.Cleanup(wg.Wait)
		run := func(dst *cliResult, args ...string) <-chan struct{} {
			done := make(chan struct{})
			home := cliHome(t)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(done)
				*dst = runCLI(ctx, legacyCLI, home, 120*time.Second, args...)
			}()
			return done
		}
		var call, probe, status cliResult
		callDone := run(&call, "gateway", "call", "health", "--url", hfCall.URL(), "--token", gw.Token, "--json")
		probeDone := run(&probe, "gateway", "probe", "--url", hfProbe.URL(), "--token", gw.Token, "--json", "--timeout", "10000")
		statusDone := run(&status, "gateway", "status", "--require-rpc", "--url", hfStatus.URL(), "--token", gw.Token, "--json")
		awaitArrivals(t, gw, map[string]func() bool{
			"holdfast call":   reachedHoldfast(hfCall, callDone),
			"holdfast probe":  reachedHoldfast(hfProbe, probeDone),
			"holdfast status": reachedHoldfast(hfStatus, statusDone),
		})
		readyAt := releaseWindow(t, gw, minWindow)
		wg.Wait()

		// Straight to the started gateway, the same CLI is refused.
		var directCall, directStatus cliResult
		run(&directCall, "gateway", "call", "health", "--url", gw.URL(), "--token", gw.Token, "--json")
		run(&directStatus, "gateway", "status", "--require-rpc", "--url", gw.URL(), "--token", gw.Token, "--json")
		wg.Wait()

		figure(t, "gateway %s: port open %v after spawn; window (open → started) %v, released %v after it opened",
			currentVersion, gw.PortOpenAfter.Round(time.Millisecond), (gw.ReadyAfter - gw.OpenAfter).Round(time.Millisecond),
			(gw.ReleasedAfter - gw.OpenAfter).Round(time.Millisecond))
		for _, c := range []struct {
			name string
			r    cliResult
		}{{viaName() + " call", call}, {viaName() + " probe", probe}, {viaName() + " status --require-rpc", status},
			{"direct call (after the window)", directCall}, {"direct status --require-rpc (after the window)", directStatus}} {
			figure(t, "%s (CLI %s → gateway %s): exit %d, took %v, ended %v after the gateway started",
				c.name, legacyCLI, currentVersion, c.r.ExitCode, c.r.Duration().Round(time.Millisecond), c.r.End.Sub(readyAt).Round(time.Millisecond))
		}

		// Straight to the gateway: protocol mismatch, 1002.
		for _, c := range []struct {
			name string
			r    cliResult
		}{{"direct call", directCall}, {"direct status", directStatus}} {
			if c.r.ExitCode == 0 || !strings.Contains(c.r.Stdout+c.r.Stderr, "protocol mismatch") {
				t.Errorf("%s: exit %d; want non-zero with \"protocol mismatch\"\n%s", c.name, c.r.ExitCode, c.r)
			}
		}

		// Through holdfast, started inside the window: exit 0.
		checkHealthJSON(t, "holdfast call", call)
		for _, c := range []struct {
			name string
			r    cliResult
		}{{"holdfast call", call}, {"holdfast probe", probe}, {"holdfast status", status}} {
			if !c.r.Start.Before(readyAt) {
				t.Errorf("%s started %v after the window closed; it proves nothing", c.name, c.r.Start.Sub(readyAt))
			}
		}
		if probe.ExitCode != 0 {
			t.Errorf("holdfast probe: exit code %d; want 0\n%s", probe.ExitCode, probe)
		}
		if v := parseJSONObject(t, "holdfast probe", probe.Stdout); v != nil {
			checkProbeTarget(t, v, hfProbe.URL())
		}
		if status.ExitCode != 0 {
			t.Errorf("holdfast status --require-rpc: exit code %d; want 0\n%s", status.ExitCode, status)
		}
		if v := parseJSONObject(t, "holdfast status", status.Stdout); v != nil {
			if rpc, _ := v["rpc"].(map[string]any); rpc == nil || rpc["ok"] != true {
				t.Errorf("holdfast status: rpc %v; want ok\n%s", v["rpc"], tail(status.Stdout, 1500))
			}
		}
		for _, c := range []struct {
			name string
			hf   *holdfast
		}{{"call", hfCall}, {"probe", hfProbe}, {"status", hfStatus}} {
			m := scrape(t, c.hf)
			expectMetric(t, m, ">=", 1, mHandshakes, "result", "ok")
			expectNoFailedHandshakes(t, m)
			expectMetric(t, m, ">=", 1, mBridged)
			if got := m.Get(mRetries, "reason", "startup_unavailable") + m.Get(mHolds) + m.Get(mDelayed); got < 1 {
				t.Errorf("%s: startup retries + holds + late dials = %g; want ≥ 1 (it did not meet the window)", c.name, got)
			}
		}
	})

	t.Run("10_legacy_tui_on_current", func(t *testing.T) {
		if !gw.Running() {
			t.Skip("gateway not running")
		}
		testLegacyTUI(t, gw)
	})
}

// tuiTickMargin is how long past two tick intervals (the 4.27 client's
// watchdog, 2 × 30 s) the TUI must stay connected.
const tuiTickMargin = 5 * time.Second

// testLegacyTUI is scenario 10: the 2026.4.27 TUI through holdfast to a
// started 2026.9.6 gateway. Every event that gateway sends an operator
// carries recipientProfileId, which the 4.27 client's closed protocol-3
// envelope refuses; unfiltered, the TUI would see no event at all and its
// tick watchdog would close 4000 and reconnect after 60 s. Through the
// bridge it connects, renders the events of a chat run (the run's
// lifecycle error: no model is configured), and stays on its one session
// past two tick intervals.
func testLegacyTUI(t *testing.T, gw *gateway) {
	hf := startHoldfast(t, gw, holdfastOptions{})
	tui := startTUI(t, legacyCLI, hf.URL(), gw.Token)
	screen, ok := tui.WaitScreen(90*time.Second, tuiConnected)
	connectedAt := time.Now()
	figure(t, "TUI %s via %s to gateway %s: connected %v, %v after its start", legacyCLI, viaName(), currentVersion, ok,
		connectedAt.Sub(tui.Start).Round(time.Millisecond))
	if !ok {
		t.Fatalf("the TUI did not show a connected gateway:\n%s", tail(tui.History(), 3000))
	}
	t.Logf("TUI screen:\n%s", screen)
	before := scrape(t, hf)

	// A chat message: the TUI shows it at once and waits; only the run's
	// events (agent lifecycle, chat) end the wait.
	if err := tui.SendKeys("hello from the legacy TUI", "Enter"); err != nil {
		t.Fatal(err)
	}
	sentAt := time.Now()
	if _, ok := tui.WaitScreen(15*time.Second, func(s string) bool { return strings.Contains(s, "hello from the legacy TUI") }); !ok {
		t.Errorf("the message typed does not show")
	}
	screen, ok = tui.WaitScreen(45*time.Second, tuiRunEnded)
	figure(t, "TUI chat run: events rendered %v, %v after the message was sent", ok, time.Since(sentAt).Round(time.Millisecond))
	if !ok {
		t.Errorf("the TUI never showed the run's events (still waiting):\n%s", screen)
	}
	if strings.Contains(screen, "send failed") {
		t.Errorf("chat.send itself failed (an answer, not the run's events):\n%s", screen)
	}

	// Past two tick intervals on the same session: no 4000, no reconnect.
	// A wait of a minute with a connected TUI and its gateway: the next
	// test may start meanwhile.
	background(t)
	deadline := connectedAt.Add(2*30*time.Second + tuiTickMargin)
	for time.Now().Before(deadline) {
		s := tui.Screen()
		if !tuiOnline(s) {
			t.Fatalf("the TUI lost its gateway %v after connecting:\n%s", time.Since(connectedAt).Round(time.Second), s)
		}
		if exited, code := tui.Exited(); exited {
			t.Fatalf("the TUI exited (status %d)", code)
		}
		time.Sleep(time.Second)
	}
	hist := tui.History()
	if strings.Contains(hist, "disconnected") || strings.Contains(hist, "tick timeout") || strings.Contains(hist, "reconnect") {
		t.Errorf("the TUI shows a disconnection:\n%s", tail(hist, 3000))
	}
	m := scrape(t, hf)
	figure(t, "TUI stayed connected %v; messages to it %g (%g after hello), bridged sessions %g",
		time.Since(connectedAt).Round(time.Second), m.Get(mSplicedMessages, "direction", "to_client"),
		m.Get(mSplicedMessages, "direction", "to_client")-before.Get(mSplicedMessages, "direction", "to_client"), m.Get(mBridged))
	expectMetric(t, m, "==", 1, mHandshakes, "result", "ok") // one connect: no reconnect
	expectNoFailedHandshakes(t, m)
	expectMetric(t, m, "==", 1, mSessions)
	expectMetric(t, m, "==", 1, mBridged)
	// Two ticks at least reached it in the wait.
	if got := m.Get(mSplicedMessages, "direction", "to_client") - before.Get(mSplicedMessages, "direction", "to_client"); got < 2 {
		t.Errorf("%g messages reached the TUI after it connected; want ≥ 2 (ticks)", got)
	}
}

// tuiOnline reports whether the TUI's status line says it is connected
// (the "gateway connected" notice that tuiConnected waits for lasts only a
// few seconds; "connected" stays).
func tuiOnline(screen string) bool {
	return strings.Contains(screen, "connected") && !strings.Contains(screen, "disconnected") &&
		!strings.Contains(screen, "connecting")
}

// tuiRunEnded reports whether the TUI's status line shows a run that was
// ended by the gateway's events (idle, or error) rather than still waiting.
func tuiRunEnded(screen string) bool {
	for _, line := range strings.Split(screen, "\n") {
		if strings.Contains(line, "connected |") && !strings.Contains(line, "…") &&
			(strings.Contains(line, "| error") || strings.Contains(line, "| idle")) {
			return true
		}
	}
	return false
}
