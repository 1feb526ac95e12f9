package proxy_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

const token = "test-token-not-a-secret"

func newDevice(t *testing.T) *deviceauth.Identity { return testkit.NewDevice(t) }

func connect(t *testing.T, url string, device *deviceauth.Identity) (*testclient.Conn, testclient.Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, res, err := testclient.Connect(ctx, testclient.Options{URL: url, Token: token, Device: device})
	if err != nil && res.HelloOK {
		t.Fatalf("connect: %v", err)
	}
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, res
}

func kindName(device bool) string {
	if device {
		return "device-signed"
	}
	return "token-only"
}

// The fake reproduces the problem: a client with no retry logic fails
// during the startup window. Through holdfast the same client gets hello-ok.
func TestStartupWindowIsAbsorbed(t *testing.T) {
	t.Parallel()
	for _, device := range []bool{false, true} {
		t.Run(kindName(device), func(t *testing.T) {
			t.Parallel()
			testkit.Prompt(t)
			gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: 2 * time.Second})
			hs := startProxy(t, gw.Addr(), nil, nil)
			var dev *deviceauth.Identity
			if device {
				dev = newDevice(t)
			}

			_, direct := connect(t, gw.URL(), dev)
			if direct.HelloOK || direct.Error == nil || direct.Error.Code != "UNAVAILABLE" || direct.CloseCode != 1013 {
				t.Fatalf("direct during window: %+v; want the startup UNAVAILABLE and 1013", direct)
			}

			start := time.Now()
			c, res := connect(t, hs.url, dev)
			if !res.HelloOK {
				t.Fatalf("through holdfast: %+v (error %v); want hello-ok", res, res.Error)
			}
			if waited := time.Since(start); waited > 4*time.Second {
				t.Errorf("hello-ok after %v; the window was 2s", waited)
			}
			if _, err := c.Call(context.Background(), "health", nil); err != nil {
				t.Fatalf("health after hello: %v", err)
			}
			hs.waitMetric(1, "holdfast_handshakes_total", "result", "ok")
			if device {
				if got := hs.metric("holdfast_connect_holds_total"); got != 1 {
					t.Errorf("holds = %v; want 1", got)
				}
				if got := hs.metric("holdfast_upstream_retries_total", "reason", "startup_unavailable"); got != 0 {
					t.Errorf("startup retries = %v; want 0 (a nonce-bound connect cannot be replayed)", got)
				}
			}
			// Only the direct attempt was refused; holdfast sent its
			// connect once the gateway had started.
			st := gw.Stats()
			if st.StartupRejects > 2 {
				t.Errorf("gateway refused %d connects; want at most 2", st.StartupRejects)
			}
		})
	}
}

// The gateway is not listening when the client arrives and opens its port
// a second later: the refused dials are retried within the budget.
func TestGatewayNotYetListening(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	hs := startProxy(t, addr, nil, nil)
	dev := newDevice(t)
	type out struct {
		res testclient.Result
		c   *testclient.Conn
	}
	done := make(chan out, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, res, _ := testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: token, Device: dev})
		done <- out{res, c}
	}()
	// The gateway listens once holdfast has failed to dial it, not a
	// second in: under load the client came later than that.
	testkit.WaitFor(t, 10*time.Second, "a failed dial", func() bool {
		return hs.metric("holdfast_upstream_retries_total", "reason", "dial") >= 1
	})
	startGateway(t, fakegw.Config{Addr: addr, Token: token, StartupWindow: 500 * time.Millisecond})
	o := <-done
	if o.c != nil {
		defer o.c.Close()
	}
	if !o.res.HelloOK {
		t.Fatalf("result %+v; want hello-ok", o.res)
	}
	if got := hs.metric("holdfast_upstream_retries_total", "reason", "dial"); got < 1 {
		t.Errorf("dial retries = %v; want ≥ 1", got)
	}
}

// The gateway restarts between two clients while no session is open to
// notice: the second, device-signed client must not be forwarded on a stale
// belief that the gateway has started.
func TestRestartBetweenClients(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)

	c1, res := connect(t, hs.url, newDevice(t))
	if !res.HelloOK {
		t.Fatalf("first client: %+v", res)
	}
	c1.Close()
	// holdfast's last word that the gateway started comes as it tears the
	// session down (the gateway's answer to its close), which under load
	// came well after c1.Close: the started observation ages out from
	// then.
	hs.waitMetric(0, "holdfast_sessions_active")
	time.Sleep(1200 * time.Millisecond)
	gw.Stop()
	if err := gw.Restart(1500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	_, res = connect(t, hs.url, newDevice(t))
	if !res.HelloOK {
		t.Fatalf("second client after restart: %+v (error %v); want hello-ok", res, res.Error)
	}
	if got := gw.Stats().StartupRejects; got != 0 {
		t.Errorf("gateway refused %d connects; want 0: holdfast must hold them", got)
	}
}

// A budget shorter than the window: the client gets the gateway's own
// UNAVAILABLE and close 1013 in about the budget.
func TestBudgetShorterThanWindow(t *testing.T) {
	t.Parallel()
	for _, device := range []bool{false, true} {
		t.Run(kindName(device), func(t *testing.T) {
			t.Parallel()
			testkit.Prompt(t)
			gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: 10 * time.Second})
			budget := 1500 * time.Millisecond
			hs := startProxy(t, gw.Addr(), func(c *proxy.Config) { c.Budget = budget }, nil)
			var dev *deviceauth.Identity
			if device {
				dev = newDevice(t)
			}
			start := time.Now()
			_, res := connect(t, hs.url, dev)
			took := time.Since(start)
			if res.HelloOK || res.Error == nil || res.Error.Code != "UNAVAILABLE" || !res.Error.Retryable {
				t.Fatalf("result %+v; want the gateway's UNAVAILABLE", res)
			}
			if !strings.Contains(string(res.Error.Details), "startup-sidecars") || res.Error.RetryAfterMs != 500 {
				t.Errorf("error %+v; want the gateway's own startup frame", res.Error)
			}
			if res.CloseCode != 1013 || res.CloseReason != "gateway starting" {
				t.Errorf("close %d %q; want 1013 \"gateway starting\"", res.CloseCode, res.CloseReason)
			}
			if took < budget-300*time.Millisecond || took > budget+time.Second {
				t.Errorf("answered after %v; want about the budget (%v)", took, budget)
			}
			hs.waitMetric(1, "holdfast_handshakes_total", "result", "unavailable")
		})
	}
}

// Answers other than hello-ok and the startup error pass through unchanged,
// with the gateway's close code.
func TestRejectionPassesThrough(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, res, _ := testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: "wrong"})
	if res.HelloOK || res.Error == nil || res.Error.DetailsCode() != "AUTH_TOKEN_MISMATCH" {
		t.Fatalf("result %+v; want AUTH_TOKEN_MISMATCH", res)
	}
	if res.CloseCode != 1008 {
		t.Errorf("close %d %q; want the gateway's 1008", res.CloseCode, res.CloseReason)
	}
	hs.waitMetric(1, "holdfast_handshakes_total", "result", "rejected")
}

// 200 device-signed clients wait through one window, against a gateway that
// admits 32 unauthenticated sockets per address: all get hello-ok, with a
// bounded number of readiness probes and connect attempts.
func TestCrowdThroughOneWindow(t *testing.T) {
	t.Parallel()
	testkit.Heavy(t)
	const n = 200
	window := 2 * time.Second
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: window, MaxPreauthPerIP: 32})
	// The gateway's 32 pre-auth sockets make the crowd queue: under the
	// race detector, beside the other heavy tests, the gateway got through
	// 15 to 40 handshakes a second, and the last clients of 200 needed
	// more than 12 s. The budget bounds a client's wait, not the
	// machine's speed, so it is generous here.
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		c.Budget = 30 * time.Second
		c.ReadinessPollInterval = 100 * time.Millisecond
	}, nil)

	var wg sync.WaitGroup
	results := make([]testclient.Result, n)
	conns := make([]*testclient.Conn, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev, err := deviceauth.NewIdentity()
			if err != nil {
				t.Error(err)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			conns[i], results[i], _ = testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: token, Device: dev, Timeout: 40 * time.Second})
		}()
	}
	wg.Wait()
	ok := 0
	for i, r := range results {
		if r.HelloOK {
			ok++
		} else if ok < 3 {
			t.Logf("client %d: %+v", i, r)
		}
		if conns[i] != nil {
			conns[i].Close()
		}
	}
	if ok != n {
		t.Fatalf("%d of %d clients got hello-ok", ok, n)
	}
	st := gw.Stats()
	t.Logf("gateway saw: %+v", st)
	if st.Rejected503 != 0 {
		t.Errorf("gateway refused %d upgrades for its pre-auth limit; holdfast must queue", st.Rejected503)
	}
	if st.ConnectAttempts != n {
		t.Errorf("gateway saw %d connect attempts; want %d (one each)", st.ConnectAttempts, n)
	}
	// One watcher probes every 100ms while anyone waits: at most about 20
	// probes for a 2 s window, whatever the number of clients. How many of
	// them fall inside the window depends on how soon the crowd arrives (on
	// a loaded machine, late), but every held connect was released by a
	// probe's confirmation, so there was at least one.
	if polls := st.StartupzPolls + st.ReadyzPolls; polls > 40 || polls < 1 {
		t.Errorf("gateway saw %d readiness probes; want 1..40", polls)
	}
	if st.MaxPreauthSeen > 32 {
		t.Errorf("max unauthenticated sockets seen = %d; want ≤ 32", st.MaxPreauthSeen)
	}
	hs.waitMetric(n, "holdfast_handshakes_total", "result", "ok")
	if got := hs.metric("holdfast_connect_holds_total"); got < 1 || got > n {
		t.Errorf("holds = %v; want 1..%d", got, n)
	}
	hs.waitMetric(0, "holdfast_sessions_active")
}

// A token-only client in a window is replayed on new sockets; the gateway
// sees its connect again with the challenge of each new socket swallowed.
func TestReplayableConnectIsRetried(t *testing.T) {
	t.Parallel()
	// The window ends once the first connect has met it: a timed one
	// (1.5 s) had ended before the first connect on a loaded machine.
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Hour})
	hs := startProxy(t, gw.Addr(), nil, nil)
	results := make(chan testclient.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, res, _ := testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: token})
		if c != nil {
			c.Close()
		}
		results <- res
	}()
	waitUntil(t, "the first connect refused in the window", func() bool { return gw.Stats().StartupRejects >= 1 })
	gw.SetStarted()
	res := <-results
	if !res.HelloOK {
		t.Fatalf("result %+v; want hello-ok", res)
	}
	if got := hs.metric("holdfast_upstream_retries_total", "reason", "startup_unavailable"); got < 1 {
		t.Errorf("startup retries = %v; want ≥ 1 (the first connect met the window)", got)
	}
	// After the first refusal holdfast holds the replay until the gateway
	// has started instead of sending it every 500 ms.
	if st := gw.Stats(); st.ConnectAttempts > 3 {
		t.Errorf("gateway saw %d connects; want ≤ 3", st.ConnectAttempts)
	}
}

// Older gateways have no /startupz (the Control UI answers it with HTML):
// readiness falls back to /readyz's detailed body.
func TestLegacyGatewayReadiness(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: 1500 * time.Millisecond, Legacy: true})
	hs := startProxy(t, gw.Addr(), nil, nil)
	_, res := connect(t, hs.url, newDevice(t))
	if !res.HelloOK {
		t.Fatalf("result %+v (%v); want hello-ok", res, res.Error)
	}
	var hello struct {
		Protocol int `json:"protocol"`
	}
	_ = json.Unmarshal(res.Hello, &hello)
	if hello.Protocol != 3 {
		t.Errorf("protocol %d; want the legacy gateway's 3", hello.Protocol)
	}
	if st := gw.Stats(); st.ReadyzPolls == 0 || st.StartupRejects != 0 {
		t.Errorf("gateway stats %+v; want /readyz probes and no refused connect", st)
	}
}

// A spliced session that sees the gateway close with 1012 makes holdfast
// forget that the gateway had started: a device-signed client arriving at
// once is held through the new window, not forwarded to be refused.
func TestRestartSeenBySession(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	c1, res := connect(t, hs.url, newDevice(t))
	if !res.HelloOK {
		t.Fatalf("first client: %+v", res)
	}
	gw.Stop() // the session gets shutdown and 1012
	_ = c1.WS().SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c1.WS().ReadMessage(); err != nil {
			break
		}
	}
	if err := gw.Restart(time.Second); err != nil {
		t.Fatal(err)
	}
	_, res = connect(t, hs.url, newDevice(t))
	if !res.HelloOK {
		t.Fatalf("client after the restart: %+v (error %v); want hello-ok", res, res.Error)
	}
	if got := gw.Stats().StartupRejects; got != 0 {
		t.Errorf("gateway refused %d connects; want 0", got)
	}
}
