//go:build e2e

package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// probeWindow is the longest window, from its arrival at holdfast, that
// the 2026.4.27 `gateway probe` with its default 3 s timeout survives.
const probeWindow = 2 * time.Second

// TestLegacyProbeDefaultTimeout: the 2026.4.27 `gateway probe` with its
// default timeout (3 s, not the --timeout 10000 the other scenarios give
// it) through holdfast, arriving in the startup window of a real 2026.9.6
// gateway that is released as soon as the probe has reached holdfast. The
// probe's connect waits for the gateway on a warm socket whose challenge it
// gets the moment the gateway has started, so it survives a window that
// ends within about 2 s of its arrival (docs/compatibility.md, "The
// longest window each client class survives").
func TestLegacyProbeDefaultTimeout(t *testing.T) {
	foregroundFromStart(t)
	requireInstalled(t, currentVersion, legacyCLI)
	ctx := context.Background()
	gw := newGateway(t, gatewayOptions{Version: currentVersion, DelayMs: holdMaxMs})
	hf := startHoldfast(t, gw, holdfastOptions{})
	gw.Start(t, ctx)
	// The window is the delay plugin's from here, so that its release
	// ends it at once (a gateway still starting its sidecars would not).
	gw.WaitOutput(t, ctx, "holdfast-e2e-delay: holding startup", 120*time.Second)

	var probe cliResult
	done := make(chan struct{})
	home := cliHome(t)
	go func() {
		defer close(done)
		probe = runCLI(ctx, legacyCLI, home, 60*time.Second, "gateway", "probe", "--url", hf.URL(), "--token", gw.Token, "--json")
	}()
	awaitArrivals(t, gw, map[string]func() bool{"holdfast probe": reachedHoldfast(hf, done)})
	arrived := time.Now()
	gw.ReleaseWindow(t)
	gw.WaitStarted(t, ctx, 90*time.Second)
	readyAt := gw.started.Add(gw.ReadyAfter)
	<-done

	figure(t, "probe %s (default timeout) via %s: exit %d, took %v; window from its arrival to the gateway's start %v, ended %v after the start",
		legacyCLI, viaName(), probe.ExitCode, probe.Duration().Round(time.Millisecond), readyAt.Sub(arrived).Round(time.Millisecond),
		probe.End.Sub(readyAt).Round(time.Millisecond))
	if !probe.Start.Before(readyAt) {
		t.Errorf("the probe started %v after the window closed; it proves nothing", probe.Start.Sub(readyAt))
	}
	// The window the probe can survive ends within about 2 s of its
	// arrival: its 3 s cover the connect, hello-ok and its RPCs. The
	// delay plugin's release ends the window in 0.3-0.7 s on a quiet
	// machine, but a loaded one can take longer to start than the probe
	// waits (2.2 s measured at load 15 on two cores): that window is not
	// one it should survive, and says nothing of holdfast.
	if w := readyAt.Sub(arrived); w > probeWindow {
		t.Skipf("the gateway started %v after the probe arrived, more than the %v window its 3 s timer leaves (exit %d): not the window this test needs",
			w.Round(time.Millisecond), probeWindow, probe.ExitCode)
	}
	if probe.ExitCode != 0 {
		t.Fatalf("probe with its default timeout: exit %d; want 0\n%s", probe.ExitCode, probe)
	}
	if v := parseJSONObject(t, "holdfast probe", probe.Stdout); v != nil {
		checkProbeTarget(t, v, hf.URL())
	}
	m := scrape(t, hf)
	expectMetric(t, m, ">=", 1, mHandshakes, "result", "ok")
	expectNoFailedHandshakes(t, m)
}

// TestReadinessEndpoints checks, against each installed gateway release,
// what holdfast's readiness watcher relies on (PROTOCOL.md §7, §9): where
// /startupz exists it answers JSON "starting" with 503 during the window
// and "started" after; where it does not (2026.4.29, 2026.5.12) the Control
// UI answers it with 200 text/html throughout, and /readyz is the source:
// 503 listing startup-sidecars during the window, 200 after.
func TestReadinessEndpoints(t *testing.T) {
	foregroundFromStart(t)
	for _, version := range []string{legacyGateway, "2026.5.12", currentVersion} {
		t.Run(version, func(t *testing.T) {
			if _, err := os.Stat(openclawEntry(version)); err != nil {
				t.Skipf("openclaw %s is not installed (e2e/setup.sh OPENCLAW_VERSIONS)", version)
			}
			ctx := context.Background()
			gw := newGateway(t, gatewayOptions{Version: version, DelayMs: holdMaxMs})
			gw.Start(t, ctx)
			get := func(path string) (int, string, string) {
				t.Helper()
				res, err := http.Get(gw.HTTPBase() + path)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				defer res.Body.Close()
				body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<16))
				return res.StatusCode, res.Header.Get("Content-Type"), string(body)
			}
			check := func(phase string, started bool) {
				t.Helper()
				code, ctype, body := get("/startupz")
				switch {
				case hasStartupz(version) && started:
					if code != 200 || !strings.Contains(body, `"status":"started"`) {
						t.Errorf("%s: /startupz %d %q; want 200 JSON started", phase, code, tail(body, 200))
					}
				case hasStartupz(version):
					if code != 503 || !strings.Contains(body, `"status":"starting"`) {
						t.Errorf("%s: /startupz %d %q; want 503 JSON starting", phase, code, tail(body, 200))
					}
				default:
					if code != 200 || !strings.HasPrefix(ctype, "text/html") {
						t.Errorf("%s: /startupz %d %s; want the Control UI's 200 text/html (no /startupz)", phase, code, ctype)
					}
				}
				figure(t, "gateway %s %s: /startupz %d %s", version, phase, code, ctype)
				code, _, body = get("/readyz")
				if started != (code == 200) || started == strings.Contains(body, "startup-sidecars") {
					t.Errorf("%s: /readyz %d %q; want 200 once started, 503 with startup-sidecars before", phase, code, tail(body, 300))
				}
				figure(t, "gateway %s %s: /readyz %d %s", version, phase, code, tail(body, 120))
			}
			check("in its window", false)
			gw.ReleaseWindow(t)
			gw.WaitStarted(t, ctx, 90*time.Second)
			check("started", true)
		})
	}
}
