//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
)

// The delay plugin keeps each gateway in its startup window until the test
// releases it: once every client has demonstrably reached the window, and
// no sooner than minWindow after the port opened. holdMaxMs caps the hold
// so that a broken test cannot keep a gateway starting for ever.
const (
	minWindow = 5 * time.Second
	minHold   = 2 * time.Second
	holdMaxMs = 90000
	// arrivalLimit bounds the wait for clients to reach the window (Node
	// CLIs need 4 s to start on an idle two-core machine, far more on a
	// busy one).
	arrivalLimit = 60 * time.Second
)

// waitUntil polls cond every 50 ms until it holds or limit passes.
func waitUntil(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reachedHoldfast reports whether a client's connect has reached the
// gateway through h and been held or retried there, or the client is done
// (closed done). Bypassed, only done counts.
func reachedHoldfast(h *holdfast, done <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-done:
			return true
		default:
		}
		m, err := h.Metrics(context.Background())
		if err != nil {
			return false
		}
		return m.Get(mHolds)+m.Get(mRetries, "reason", "startup_unavailable")+m.Get(mDelayed) >= 1
	}
}

func closed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

// awaitArrivals waits until every named condition holds (each within what
// is left of arrivalLimit) and logs how long each took after the port
// opened; a client that never arrives fails the test.
func awaitArrivals(t *testing.T, gw *gateway, conds map[string]func() bool) {
	t.Helper()
	deadline := time.Now().Add(arrivalLimit)
	for name, cond := range conds {
		if !waitUntil(time.Until(deadline), cond) {
			t.Errorf("%s did not reach the startup window within %v", name, arrivalLimit)
			continue
		}
		t.Logf("%s in the window %v after it opened", name, (time.Since(gw.started) - gw.OpenAfter).Round(time.Millisecond))
	}
}

// releaseWindow ends the startup window no sooner than minOpen after it
// opened (gateway.OpenAfter) and minHold from now (so every client that arrived waits in the
// window for a while), then waits until the gateway reports started; it
// returns that instant.
func releaseWindow(t *testing.T, gw *gateway, minOpen time.Duration) time.Time {
	t.Helper()
	wait := max(gw.OpenAfter+minOpen-time.Since(gw.started), minHold)
	time.Sleep(wait)
	gw.ReleaseWindow(t)
	gw.WaitStarted(t, context.Background(), 90*time.Second)
	return gw.started.Add(gw.ReadyAfter)
}

// viaName names the path that the non-direct clients take.
func viaName() string {
	if bypass() {
		return "bypass (straight to the gateway)"
	}
	return "holdfast"
}

// figure logs a measured figure in a form that is easy to grep from the
// run's output.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURE "+format, args...)
}

// scrape returns holdfast's metrics, failing the test when there are none.
func scrape(t *testing.T, h *holdfast) metrics {
	t.Helper()
	m, err := h.Metrics(context.Background())
	if err != nil {
		t.Errorf("holdfast /metrics: %v", err)
		return metrics{}
	}
	t.Logf("holdfast metrics:\n%s", m.Holdfast())
	return m
}

// expectMetric checks one value with cmp ("==", ">=") and reports it.
func expectMetric(t *testing.T, m metrics, cmp string, want float64, name string, labels ...string) {
	t.Helper()
	got := m.Get(name, labels...)
	ok := false
	switch cmp {
	case "==":
		ok = got == want
	case ">=":
		ok = got >= want
	default:
		t.Fatalf("bad comparison %q", cmp)
	}
	if !ok {
		t.Errorf("%s = %g; want %s %g", seriesKey(name, labels...), got, cmp, want)
	}
}

const (
	mHandshakes = "holdfast_handshakes_total"
	mRetries    = "holdfast_upstream_retries_total"
	mHolds      = "holdfast_connect_holds_total"
	mDelayed    = "holdfast_upstream_dials_delayed_total"
	mDuration   = "holdfast_handshake_duration_seconds"
	mSessions   = "holdfast_sessions_active"
	mPass       = "holdfast_passthrough_requests_total"
)

// expectNoFailedHandshakes checks that no handshake ended other than ok.
func expectNoFailedHandshakes(t *testing.T, m metrics) {
	t.Helper()
	for _, r := range []string{"rejected", "unavailable", "error"} {
		expectMetric(t, m, "==", 0, mHandshakes, "result", r)
	}
}

// parseJSONObject parses a CLI's --json stdout.
func parseJSONObject(t *testing.T, label, stdout string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &v); err != nil {
		t.Errorf("%s: stdout is not a JSON object: %v\n%s", label, err, tail(stdout, 2000))
		return nil
	}
	return v
}

// checkHealthJSON checks the output of `gateway call health --json`.
func checkHealthJSON(t *testing.T, label string, r cliResult) {
	t.Helper()
	if r.ExitCode != 0 {
		t.Errorf("%s: exit code %d; want 0\n%s", label, r.ExitCode, r)
		return
	}
	v := parseJSONObject(t, label, r.Stdout)
	if v == nil {
		return
	}
	if ok, _ := v["ok"].(bool); !ok {
		t.Errorf("%s: health JSON has ok=%v; want true\n%s", label, v["ok"], tail(r.Stdout, 1500))
	}
	if _, has := v["agents"]; !has {
		t.Errorf("%s: health JSON lacks agents\n%s", label, tail(r.Stdout, 1500))
	}
}

// TestLegacyPair runs scenario 1 (gateway 2026.4.29, CLI 2026.4.27, the
// pair holdfast exists for) and scenario 5 (HTTP passthrough) on one start
// of the legacy gateway.
func TestLegacyPair(t *testing.T) {
	foregroundFromStart(t)
	requireInstalled(t, legacyGateway, legacyCLI)
	ctx := context.Background()
	gw := newGateway(t, gatewayOptions{Version: legacyGateway, DelayMs: holdMaxMs})
	// One holdfast per client, so each one's metrics are its own. They
	// start before the gateway: holdfast must cope with a closed port.
	hfCall := startHoldfast(t, gw, holdfastOptions{})
	hfProbe := startHoldfast(t, gw, holdfastOptions{})

	t.Run("1_target_pair_in_window", func(t *testing.T) {
		gw.Start(t, ctx)
		var wg sync.WaitGroup
		var direct, viaCall, viaProbe cliResult
		t.Cleanup(wg.Wait) // no client outlives the test, even after a Fatal
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
		directDone := run(&direct, "gateway", "call", "health", "--url", gw.URL(), "--token", gw.Token, "--json")
		callDone := run(&viaCall, "gateway", "call", "health", "--url", hfCall.URL(), "--token", gw.Token, "--json")
		probeDone := run(&viaProbe, "gateway", "probe", "--url", hfProbe.URL(), "--token", gw.Token, "--json", "--timeout", "10000")
		awaitArrivals(t, gw, map[string]func() bool{
			"direct call":    closed(directDone),
			"holdfast call":  reachedHoldfast(hfCall, callDone),
			"holdfast probe": reachedHoldfast(hfProbe, probeDone),
		})
		readyAt := releaseWindow(t, gw, minWindow)
		wg.Wait()

		figure(t, "gateway %s: port open %v after spawn; window (open → started) %v, released %v after it opened",
			legacyGateway, gw.PortOpenAfter.Round(time.Millisecond), (gw.ReadyAfter - gw.OpenAfter).Round(time.Millisecond),
			(gw.ReleasedAfter - gw.OpenAfter).Round(time.Millisecond))
		for _, c := range []struct {
			name string
			r    cliResult
		}{{"direct call", direct}, {viaName() + " call", viaCall}, {viaName() + " probe", viaProbe}} {
			figure(t, "%s (CLI %s): exit %d, %s–%s, took %v, ended %v after the gateway started",
				c.name, legacyCLI, c.r.ExitCode, c.r.Start.Format("15:04:05.000"), c.r.End.Format("15:04:05.000"), c.r.Duration().Round(time.Millisecond), c.r.End.Sub(readyAt).Round(time.Millisecond))
		}

		// Straight to the gateway: one connect, the startup rejection, exit 1.
		if direct.ExitCode != 1 {
			t.Errorf("direct call: exit code %d; want 1\n%s", direct.ExitCode, direct)
		}
		if !strings.Contains(direct.Stderr, "gateway closed (1013): gateway starting") {
			t.Errorf("direct call: stderr lacks %q\n%s", "gateway closed (1013): gateway starting", direct)
		}
		if direct.End.After(readyAt) && direct.ExitCode == 0 {
			t.Errorf("direct call finished after the window closed: the window was too short for this machine (raise HOLDFAST_E2E_DELAY_MS)")
		}

		// The same call through holdfast: held until started, then hello-ok.
		checkHealthJSON(t, "holdfast call", viaCall)
		if !viaCall.Start.Before(readyAt) {
			t.Errorf("holdfast call started %v after the window closed; it proves nothing", viaCall.Start.Sub(readyAt))
		}
		m := scrape(t, hfCall)
		expectMetric(t, m, "==", 1, mHandshakes, "result", "ok")
		expectNoFailedHandshakes(t, m)
		// The legacy CLI signs a nonce-bound device proof, so holdfast can
		// only hold it on its socket, or open that socket late, not replay it.
		if got := m.Get(mHolds) + m.Get(mDelayed); got < 1 {
			t.Errorf("holds + delayed dials = %g; want ≥ 1", got)
		}
		expectMetric(t, m, "==", 0, mRetries, "reason", "startup_unavailable")
		expectMetric(t, m, "==", 1, mDuration+"_count")

		// probe through holdfast.
		if viaProbe.ExitCode != 0 {
			t.Errorf("holdfast probe: exit code %d; want 0\n%s", viaProbe.ExitCode, viaProbe)
		}
		if v := parseJSONObject(t, "holdfast probe", viaProbe.Stdout); v != nil {
			checkProbeTarget(t, v, hfProbe.URL())
		}
		mp := scrape(t, hfProbe)
		expectMetric(t, mp, ">=", 1, mHandshakes, "result", "ok")
		expectNoFailedHandshakes(t, mp)
		if got := mp.Get(mRetries, "reason", "startup_unavailable") + mp.Get(mHolds) + mp.Get(mDelayed); got < 1 {
			t.Errorf("holdfast probe: startup retries + holds + delayed dials = %g; want ≥ 1 (the probe's connect did not meet the window)", got)
		}
	})

	t.Run("5_passthrough", func(t *testing.T) {
		if !gw.Running() {
			t.Skip("gateway not running")
		}
		checkPassthrough(t, gw, hfCall)
	})
}

// checkProbeTarget checks the explicit target of `gateway probe --json`.
func checkProbeTarget(t *testing.T, v map[string]any, url string) {
	t.Helper()
	targets, _ := v["targets"].([]any)
	for _, x := range targets {
		tg, _ := x.(map[string]any)
		if tg["url"] != url {
			continue
		}
		conn, _ := tg["connect"].(map[string]any)
		if ok, _ := conn["ok"].(bool); !ok {
			t.Errorf("probe target %s: connect %v; want ok", url, conn)
		}
		// rpcOk is false here directly too: a device-less probe is granted
		// no operator.read, so its status RPC fails "missing scope".
		if conn["close"] != nil {
			t.Errorf("probe target %s: close %v; want none", url, conn["close"])
		}
		return
	}
	t.Errorf("probe JSON has no target %s", url)
}

// checkPassthrough compares the gateway's HTTP endpoints fetched directly
// and through holdfast's listener (scenario 5).
func checkPassthrough(t *testing.T, gw *gateway, hf *holdfast) {
	t.Helper()
	ctx := context.Background()
	var before metrics
	if !hf.Bypassed {
		before, _ = hf.Metrics(ctx)
	}
	paths := []string{"/healthz", "/"}
	for _, p := range paths {
		d, err := httpGet(ctx, gw.HTTPBase()+p, nil)
		if err != nil {
			t.Errorf("direct GET %s: %v", p, err)
			continue
		}
		v, err := httpGet(ctx, hf.HTTPBase()+p, nil)
		if err != nil {
			t.Errorf("holdfast GET %s: %v", p, err)
			continue
		}
		figure(t, "GET %s (gateway %s): direct %d %q %d bytes; via holdfast %d %q %d bytes", p, gw.opts.Version,
			d.Status, d.Header.Get("Content-Type"), len(d.Body), v.Status, v.Header.Get("Content-Type"), len(v.Body))
		if d.Status != 200 {
			t.Errorf("direct GET %s: status %d; want 200", p, d.Status)
		}
		if v.Status != d.Status {
			t.Errorf("GET %s: status via holdfast %d; directly %d", p, v.Status, d.Status)
		}
		if v.Body != d.Body {
			t.Errorf("GET %s: body via holdfast (%d bytes) differs from direct (%d bytes)\nvia: %s\ndirect: %s",
				p, len(v.Body), len(d.Body), tail(v.Body, 300), tail(d.Body, 300))
		}
		for _, h := range []string{"Content-Type", "Cache-Control", "Content-Security-Policy", "X-Content-Type-Options"} {
			if v.Header.Get(h) != d.Header.Get(h) {
				t.Errorf("GET %s: header %s via holdfast %q; directly %q", p, h, v.Header.Get(h), d.Header.Get(h))
			}
		}
	}
	if d, err := httpGet(ctx, gw.HTTPBase()+"/", nil); err == nil && !strings.Contains(strings.ToLower(d.Body), "<html") {
		t.Errorf("GET / directly is not the Control UI page: %s", tail(d.Body, 300))
	}
	after := scrape(t, hf)
	if before != nil {
		if got := after.Get(mPass) - before.Get(mPass); got < float64(len(paths)) {
			t.Errorf("%s rose by %g; want ≥ %d (one per proxied request)", mPass, got, len(paths))
		}
		if after.Sum(mHandshakes) != before.Sum(mHandshakes) {
			t.Errorf("plain HTTP requests changed %s: %g → %g", mHandshakes, before.Sum(mHandshakes), after.Sum(mHandshakes))
		}
	}
}

// TestCurrent runs scenarios 2 and 3 during one startup window of gateway
// 2026.9.6, then scenario 5 and scenario 4 (restart under holdfast) on the
// same gateway.
func TestCurrent(t *testing.T) {
	foregroundFromStart(t)
	requireInstalled(t, currentVersion)
	ctx := context.Background()
	gw := newGateway(t, gatewayOptions{Version: currentVersion, DelayMs: holdMaxMs})
	hfCLI := startHoldfast(t, gw, holdfastOptions{})
	hfToken := startHoldfast(t, gw, holdfastOptions{})
	hfDevice := startHoldfast(t, gw, holdfastOptions{})

	t.Run("window", func(t *testing.T) {
		gw.Start(t, ctx)
		var wg sync.WaitGroup
		t.Cleanup(wg.Wait)
		var direct, via cliResult
		type tcOut struct {
			res      testclient.Result
			err      error
			health   json.RawMessage
			status   json.RawMessage
			healthEr error
			statusEr error
			start    time.Time
			hello    time.Time
		}
		var tok, dev tcOut
		viaDone := make(chan struct{})
		for _, c := range []struct {
			dst  *cliResult
			url  string
			done chan struct{}
		}{{&direct, gw.URL(), nil}, {&via, hfCLI.URL(), viaDone}} {
			home := cliHome(t)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if c.done != nil {
					defer close(c.done)
				}
				*c.dst = runCLI(ctx, currentVersion, home, 120*time.Second,
					"gateway", "call", "health", "--url", c.url, "--token", gw.Token, "--json", "--timeout", "60000")
			}()
		}
		// Both CLIs were started together; once the one through holdfast
		// is in the window, the direct one, started alike, is retrying too.
		awaitArrivals(t, gw, map[string]func() bool{"holdfast call": reachedHoldfast(hfCLI, viaDone)})
		time.Sleep(1500 * time.Millisecond)

		// The no-retry clients connect now, so their wait stays well
		// inside holdfast's budget however slowly the CLIs started.
		identity, err := deviceauth.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		tokDone, devDone := make(chan struct{}), make(chan struct{})
		for _, c := range []struct {
			dst  *tcOut
			url  string
			dev  *deviceauth.Identity
			done chan struct{}
		}{{&tok, hfToken.URL(), nil, tokDone}, {&dev, hfDevice.URL(), identity, devDone}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(c.done)
				cctx, cancel := context.WithTimeout(ctx, 45*time.Second)
				defer cancel()
				c.dst.start = time.Now()
				conn, res, err := testclient.Connect(cctx, testclient.Options{URL: c.url, Token: gw.Token, Device: c.dev, Timeout: 40 * time.Second})
				c.dst.res, c.dst.err, c.dst.hello = res, err, time.Now()
				if err != nil || conn == nil {
					return
				}
				defer conn.Close()
				c.dst.health, c.dst.healthEr = conn.Call(cctx, "health", nil)
				c.dst.status, c.dst.statusEr = conn.Call(cctx, "status", nil)
			}()
		}
		awaitArrivals(t, gw, map[string]func() bool{
			"testclient token-only":    reachedHoldfast(hfToken, tokDone),
			"testclient device-signed": reachedHoldfast(hfDevice, devDone),
		})
		readyAt := releaseWindow(t, gw, minWindow)
		wg.Wait()
		figure(t, "gateway %s: port open %v after spawn; window (open → started) %v, released %v after it opened",
			currentVersion, gw.PortOpenAfter.Round(time.Millisecond), (gw.ReadyAfter - gw.OpenAfter).Round(time.Millisecond),
			(gw.ReleasedAfter - gw.OpenAfter).Round(time.Millisecond))

		t.Run("2_current_cli", func(t *testing.T) {
			figure(t, "direct call (CLI %s, retries by itself): exit %d, took %v, ended %v after started",
				currentVersion, direct.ExitCode, direct.Duration().Round(time.Millisecond), direct.End.Sub(readyAt).Round(time.Millisecond))
			figure(t, "%s call (CLI %s): exit %d, took %v, ended %v after started; %v relative to direct",
				viaName(), currentVersion, via.ExitCode, via.Duration().Round(time.Millisecond), via.End.Sub(readyAt).Round(time.Millisecond), via.End.Sub(direct.End).Round(time.Millisecond))
			checkHealthJSON(t, "direct call", direct)
			checkHealthJSON(t, "holdfast call", via)
			if !via.Start.Before(readyAt) {
				t.Errorf("holdfast call started %v after the window closed; it proves nothing", via.Start.Sub(readyAt))
			}
			if d := via.End.Sub(direct.End); d > 500*time.Millisecond {
				t.Errorf("holdfast call ended %v after the direct call; want at most 0.5 s later", d)
			}
			m := scrape(t, hfCLI)
			expectMetric(t, m, ">=", 1, mHandshakes, "result", "ok")
			expectNoFailedHandshakes(t, m)
			if got := m.Get(mRetries, "reason", "startup_unavailable") + m.Get(mHolds) + m.Get(mDelayed); got < 1 {
				t.Errorf("startup retries + holds + delayed dials = %g; want ≥ 1 (the call did not meet the window through holdfast)", got)
			}
		})

		t.Run("3_no_retry_client", func(t *testing.T) {
			for _, c := range []struct {
				name string
				out  tcOut
				hf   *holdfast
			}{{"token-only", tok, hfToken}, {"device-signed", dev, hfDevice}} {
				t.Run(c.name, func(t *testing.T) {
					o := c.out
					figure(t, "testclient %s: hello after %v (%v after started), result %+v",
						c.name, o.hello.Sub(o.start).Round(time.Millisecond), o.hello.Sub(readyAt).Round(time.Millisecond), summarize(o.res))
					if o.err != nil || !o.res.HelloOK {
						t.Fatalf("connect: hello-ok %v, err %v, error %v, close %d %q, http %d",
							o.res.HelloOK, o.err, o.res.Error, o.res.CloseCode, o.res.CloseReason, o.res.HTTPStatus)
					}
					if !o.start.Before(readyAt) {
						t.Errorf("connect started after the window closed; it proves nothing")
					}
					var hello struct {
						Type     string `json:"type"`
						Protocol int    `json:"protocol"`
					}
					_ = json.Unmarshal(o.res.Hello, &hello)
					if hello.Type != "hello-ok" || hello.Protocol != 4 {
						t.Errorf("hello: type %q protocol %d; want hello-ok 4", hello.Type, hello.Protocol)
					}
					if o.healthEr != nil || len(o.health) == 0 {
						t.Errorf("health RPC: %v (%s)", o.healthEr, tail(string(o.health), 300))
					}
					if o.statusEr != nil || len(o.status) == 0 {
						t.Errorf("status RPC: %v (%s)", o.statusEr, tail(string(o.status), 300))
					}
					m := scrape(t, c.hf)
					expectMetric(t, m, "==", 1, mHandshakes, "result", "ok")
					expectNoFailedHandshakes(t, m)
					if c.out.res.Nonce == "" {
						t.Errorf("no challenge nonce recorded")
					}
					if c.name == "token-only" {
						// A token-only connect is replayable: retried on new
						// sockets, or held while holdfast knows the gateway is
						// starting.
						if got := m.Get(mRetries, "reason", "startup_unavailable") + m.Get(mHolds) + m.Get(mDelayed); got < 1 {
							t.Errorf("startup retries + holds + delayed dials = %g; want ≥ 1", got)
						}
					} else {
						// A signed connect is bound to its socket's nonce:
						// held, or its socket opened late.
						if got := m.Get(mHolds) + m.Get(mDelayed); got < 1 {
							t.Errorf("holds + delayed dials = %g; want ≥ 1", got)
						}
						expectMetric(t, m, "==", 0, mRetries, "reason", "startup_unavailable")
					}
				})
			}
		})
	})

	t.Run("5_passthrough", func(t *testing.T) {
		if !gw.Running() {
			t.Skip("gateway not running")
		}
		checkPassthrough(t, gw, hfCLI)
	})

	t.Run("4_restart_under_holdfast", func(t *testing.T) {
		if !gw.Running() {
			t.Skip("gateway not running")
		}
		hf := startHoldfast(t, gw, holdfastOptions{})
		testRestart(t, gw, hf)
	})
}

func summarize(r testclient.Result) string {
	var b strings.Builder
	b.WriteString("hello-ok=" + strconv.FormatBool(r.HelloOK))
	if r.Error != nil {
		b.WriteString(" error=" + r.Error.Error())
	}
	if r.CloseCode != 0 {
		b.WriteString(" close=" + strconv.Itoa(r.CloseCode) + " " + strconv.Quote(r.CloseReason))
	}
	if r.HTTPStatus != 0 {
		b.WriteString(" http=" + strconv.Itoa(r.HTTPStatus))
	}
	return b.String()
}

// testRestart is scenario 4: a spliced session sees the gateway's shutdown
// event and close 1012 through holdfast; clients that connect while the
// gateway is down and starting are absorbed.
func testRestart(t *testing.T, gw *gateway, hf *holdfast) {
	ctx := context.Background()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, res, err := testclient.Connect(cctx, testclient.Options{URL: hf.URL(), Token: gw.Token})
	if err != nil || !res.HelloOK {
		t.Fatalf("spliced session: connect: err %v, %s", err, summarize(res))
	}
	defer conn.Close()
	if _, err := conn.Call(cctx, "health", nil); err != nil {
		t.Fatalf("spliced session: health: %v", err)
	}
	m0 := scrape(t, hf)
	expectMetric(t, m0, "==", 1, mSessions)

	// SIGTERM the gateway; read until the close.
	t0 := time.Now()
	gw.Terminate()
	var sawShutdown bool
	var shutdownPayload string
	var closeErr *websocket.CloseError
	for {
		msg, err := conn.ReadMessage(cctx)
		if err != nil {
			if !errors.As(err, &closeErr) {
				t.Errorf("spliced session: read ended with %v; want a close frame", err)
			}
			break
		}
		var f struct {
			Type    string          `json:"type"`
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(msg, &f) == nil && f.Type == "event" && f.Event == "shutdown" {
			sawShutdown, shutdownPayload = true, string(f.Payload)
		}
	}
	figure(t, "restart: shutdown event %v (%s), close %v, %v after SIGTERM", sawShutdown, shutdownPayload, closeErr, time.Since(t0).Round(time.Millisecond))
	if !sawShutdown {
		t.Errorf("spliced session: no shutdown event before the close")
	}
	if closeErr == nil || closeErr.Code != 1012 || closeErr.Text != "service restart" {
		t.Errorf("spliced session: close %v; want 1012 \"service restart\"", closeErr)
	}
	gw.WaitExit(20 * time.Second)
	figure(t, "restart: gateway exited %v after SIGTERM", time.Since(t0).Round(time.Millisecond))
	if m := scrape(t, hf); m != nil {
		expectMetric(t, m, "==", 0, mSessions)
	}

	// Start it again. A cold start keeps the port closed for 10–20 s,
	// longer than any handshake budget (which must stay under the
	// clients' 15 s timers), so the clients connect once the gateway
	// starts its HTTP server: the port is still closed (dials are
	// refused and retried), then the startup window follows.
	downFor := time.Since(t0)
	gw.Spawn(t)
	gw.WaitOutput(t, ctx, "starting HTTP server", 90*time.Second)
	portClosed := !gw.PortOpen()
	identity, err := deviceauth.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	type out struct {
		name   string
		res    testclient.Result
		err    error
		health error
		took   time.Duration
	}
	outs := make([]out, 2)
	dones := []chan struct{}{make(chan struct{}), make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for i, dev := range []*deviceauth.Identity{nil, identity} {
		name := "token-only"
		if dev != nil {
			name = "device-signed"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(dones[i])
			start := time.Now()
			cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
			defer cancel()
			c, res, err := testclient.Connect(cctx, testclient.Options{URL: hf.URL(), Token: gw.Token, Device: dev, Timeout: 30 * time.Second})
			o := out{name: name, res: res, err: err, took: time.Since(start)}
			if err == nil && c != nil {
				_, o.health = c.Call(cctx, "health", nil)
				c.Close()
			}
			outs[i] = o
		}()
	}
	gw.WaitPort(t, ctx)
	awaitArrivals(t, gw, map[string]func() bool{
		"reconnecting clients": func() bool {
			if closed(dones[0])() && closed(dones[1])() {
				return true
			}
			m, err := hf.Metrics(ctx)
			return err == nil && m.Get(mHolds)+m.Get(mRetries, "reason", "startup_unavailable")+m.Get(mDelayed) >= 1
		},
	})
	releaseWindow(t, gw, 2*time.Second)
	wg.Wait()
	figure(t, "restart: gateway down %v before respawn; port open %v after respawn (closed when clients connected: %v), window %v",
		downFor.Round(time.Millisecond), gw.PortOpenAfter.Round(time.Millisecond), portClosed, (gw.ReadyAfter - gw.OpenAfter).Round(time.Millisecond))
	for _, o := range outs {
		figure(t, "restart: %s client connected while down: %s after %v (health err %v)", o.name, summarize(o.res), o.took.Round(time.Millisecond), o.health)
		if o.err != nil || !o.res.HelloOK {
			t.Errorf("%s client while down: err %v, %s", o.name, o.err, summarize(o.res))
		} else if o.health != nil {
			t.Errorf("%s client while down: health RPC: %v", o.name, o.health)
		}
	}
	m := scrape(t, hf)
	expectMetric(t, m, "==", 3, mHandshakes, "result", "ok")
	expectNoFailedHandshakes(t, m)
	if portClosed {
		// Refused dials retried, or (late dial) no dial until started.
		if got := m.Get(mRetries, "reason", "dial") + m.Get(mDelayed); got < 1 {
			t.Errorf("dial retries + delayed dials = %g; want ≥ 1", got)
		}
	}
}
