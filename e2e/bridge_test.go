//go:build e2e

package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

const mBridged = "holdfast_bridged_sessions_total"

// TestLegacyClientsOnCurrent is scenario 7: protocol-3 clients (the
// 2026.4.27 CLI) against a protocol-4 gateway (2026.9.6), which refuses
// them with "protocol mismatch" and close 1002, window or no window.
// Through holdfast (the legacy bridge) the CLI's call, probe and status
// succeed, even started inside the gateway's startup window.
func TestLegacyClientsOnCurrent(t *testing.T) {
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

		figure(t, "gateway %s: port open %v after spawn; window (port open → started) %v, released %v after the port opened",
			currentVersion, gw.PortOpenAfter.Round(time.Millisecond), (gw.ReadyAfter - gw.PortOpenAfter).Round(time.Millisecond),
			(gw.ReleasedAfter - gw.PortOpenAfter).Round(time.Millisecond))
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
}
