package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// stubGateway is a gateway stand-in on 127.0.0.1: every plain HTTP request
// goes to probe, and each WebSocket gets a challenge, then its script with
// the connect it sent.
type stubGateway struct {
	addr     string
	connects interface{ Load() int64 }
	g        *testkit.Gateway
}

func startStubGateway(tb testing.TB, probe http.HandlerFunc, script func(ws *websocket.Conn, connect []byte)) *stubGateway {
	tb.Helper()
	g := testkit.StartGateway(tb, testkit.GatewayConfig{Probe: probe, Session: func(ws *websocket.Conn, connect []byte, _ *http.Request) {
		script(ws, connect)
	}})
	return &stubGateway{addr: g.Addr(), connects: liveCount(g.Connects), g: g}
}

// startedProbe answers /startupz like a started gateway.
func startedProbe(w http.ResponseWriter, r *http.Request) { testkit.StartedProbe(w, r) }

// helloOK answers the connect with hello-ok, then echoes until the end.
func helloOK(ws *websocket.Conn, connect []byte) {
	var req struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(connect, &req)
	_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"res","id":"`+req.ID+`","ok":true,"payload":{"type":"hello-ok","protocol":4,"policy":{"maxPayload":1048576}}}`))
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		_ = ws.WriteMessage(typ, data)
	}
}

// tokenConnect is a token-only connect frame.
const tokenConnect = `{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,` +
	`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":"t"}}}`

// closeOf reads c until its close and returns it.
func closeOf(t *testing.T, ws *websocket.Conn, within time.Duration) *websocket.CloseError {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(within))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read: %v; want a close frame", err)
		}
		return ce
	}
}

// freshForLoad makes a "started" word good for 10 s (readiness.fresh_for,
// 1 s by default). Between two sessions of the tests below no session is
// open, so a nonce-bound connect is held for a probe unless the last
// hello-ok is fresher than that: under load one session's close and the
// next one's dial took more than a second (one hold seen, nothing down).
// A gateway reported down still makes every nonce-bound connect wait,
// whatever fresh_for is, so the tests still catch it.
func freshForLoad(c *proxy.Config) { c.ReadinessFreshFor = 10 * time.Second }

// On a gateway that is up and stays up, sessions of both kinds one after
// the other, each closed normally, cost no hold and at most one readiness
// probe after the first confirmation, and the gateway is never reported
// down (issue: each client leaving made it "down").
func TestUpGatewayStaysStarted(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), freshForLoad, nil)

	var closed atomic.Int64
	session := func(dev *deviceauth.Identity) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, res, _ := testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: token, Device: dev})
		if !res.HelloOK {
			t.Fatalf("%+v; want hello-ok", res)
		}
		if i := closed.Add(1); i%2 == 0 {
			c.Close() // 1000, then the socket at once, as stock clients do
			return
		}
		// 1000, then the close handshake.
		_ = c.WS().WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		_ = c.WS().SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, _, err := c.WS().ReadMessage(); err != nil {
				break
			}
		}
		c.Close()
	}
	session(nil) // the first confirmation: a token-only hello-ok
	st := gw.Stats()
	probesBefore := st.StartupzPolls + st.ReadyzPolls
	holdsBefore := hs.metric("holdfast_connect_holds_total")
	for i := range 30 {
		var dev *deviceauth.Identity
		if i%2 == 0 {
			dev = newDevice(t)
		}
		session(dev)
	}
	hs.waitMetric(0, "holdfast_sessions_active")
	st = gw.Stats()
	if n := st.StartupzPolls + st.ReadyzPolls - probesBefore; n > 1 {
		t.Errorf("%d readiness probes after the first confirmation; want at most 1", n)
	}
	if n := hs.metric("holdfast_connect_holds_total") - holdsBefore; n != 0 {
		t.Errorf("%v connects held on an up gateway; want 0", n)
	}
	if hs.metric("holdfast_gateway_state", "state", "started") != 1 {
		t.Error("gateway_state is not started")
	}
	if strings.Contains(hs.logs.String(), "to=down") {
		t.Errorf("the gateway was reported down:\n%s", grepLines(hs.logs.String(), "gateway state"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Right after the window ends the gateway, busy admitting the clients just
// released, answers its readiness probes slower than the probe timeout.
// The held clients are released by the first "started", nobody waits for
// the slow probes, and the state ends "started", never "down".
func TestSlowReadinessAfterWindow(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	var startedAnswers atomic.Int64
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: 1500 * time.Millisecond,
		ReadinessDelay: func(started bool) time.Duration {
			if started && startedAnswers.Add(1) > 1 {
				return 1500 * time.Millisecond // over the 1 s probe timeout
			}
			return 0
		}})
	hs := startProxy(t, gw.Addr(), nil, nil)

	// Held through the window.
	var wg sync.WaitGroup
	var conns sync.Map
	connectOne := func(dev *deviceauth.Identity) time.Duration {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, res, _ := testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: token, Device: dev})
		if !res.HelloOK {
			t.Errorf("%+v; want hello-ok", res)
			return 0
		}
		conns.Store(c, true)
		return time.Since(start)
	}
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); connectOne(newDevice(t)) }()
	}
	wg.Wait()
	// During the slow spell, more clients of both kinds: none waits. A
	// wait for the gateway's word is a hold (these clients are dialled
	// first), so none is held; how long each takes is the machine's
	// (a whole handshake took 1.6 s under load with nothing held), and
	// is bounded only well below the 8 s budget a hold could take.
	holds := hs.metric("holdfast_connect_holds_total")
	for i := range 6 {
		var dev *deviceauth.Identity
		if i%2 == 0 {
			dev = newDevice(t)
		}
		if d := connectOne(dev); d > 4*time.Second {
			t.Errorf("client %d after the window waited %v; want no wait for the slow probes", i, d)
		}
		if n := hs.metric("holdfast_connect_holds_total"); n != holds {
			t.Errorf("client %d after the window was held (connect holds %v, %v before); want no wait for the slow probes", i, n, holds)
			holds = n
		}
		time.Sleep(300 * time.Millisecond)
	}
	conns.Range(func(k, _ any) bool { k.(*testclient.Conn).Close(); return true })
	hs.waitMetric(0, "holdfast_sessions_active")
	if hs.metric("holdfast_gateway_state", "state", "started") != 1 || hs.metric("holdfast_gateway_state", "state", "down") != 0 {
		t.Errorf("gateway state:\n%s", grepLines(hs.logs.String(), "gateway state"))
	}
}

// A front that routes only the WebSocket path answers the readiness
// endpoints with 404 HTML: holdfast says so once at warn level, holds
// nobody for the budget, stops probing and trusts what connections see.
func TestUnusableReadinessEndpoints(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	var probes atomic.Int64
	up := startStubGateway(t, func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("<html>404 Not Found</html>"))
	}, helloOK)
	hs := startProxy(t, up.addr, nil, nil)
	for i := range 6 {
		var dev *deviceauth.Identity
		if i%2 == 0 {
			dev = newDevice(t)
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, res, _ := testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: token, Device: dev})
		cancel()
		if !res.HelloOK {
			t.Fatalf("client %d: %+v; want hello-ok", i, res)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("client %d waited %v; want no hold for the budget", i, d)
		}
		c.Close()
	}
	logs := hs.logs.String()
	warned := grepLines(logs, "readiness endpoints are unusable")
	if n := strings.Count(warned, "level=WARN"); n != 1 || strings.Count(warned, "\n") != 0 {
		t.Errorf("warnings about the readiness endpoints:\n%s\nwant one line at warn level", warned)
	}
	if n := probes.Load(); n > 4 {
		t.Errorf("%d probe requests; want the endpoints found unusable once (at most 4 requests)", n)
	}
	if hs.metric("holdfast_gateway_state", "state", "started") != 1 {
		t.Errorf("gateway state not started from what connections saw:\n%s", grepLines(logs, "gateway state"))
	}
}

// A gateway that answers the connect late, but within the budget, is
// waited for: the client gets hello-ok and the connect is sent once, even
// past answer_timeout (issue: resent, then 1013 after twice the budget).
func TestSlowAnswerIsWaitedFor(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	up := startStubGateway(t, startedProbe, func(ws *websocket.Conn, connect []byte) {
		time.Sleep(1500 * time.Millisecond)
		helloOK(ws, connect)
	})
	hs := startProxy(t, up.addr, func(c *proxy.Config) {
		c.Budget = 3 * time.Second
		c.AnswerTimeout = 500 * time.Millisecond
	}, nil)
	c := dialRaw(t, hs.url, nil)
	c.read()
	start := time.Now()
	c.write(websocket.TextMessage, []byte(tokenConnect))
	_, answer := c.read()
	if !strings.Contains(string(answer), "hello-ok") {
		t.Fatalf("answer %s; want hello-ok", answer)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("hello-ok after %v; the gateway answered after 1.5s", d)
	}
	if n := up.connects.Load(); n != 1 {
		t.Errorf("the gateway got the connect %d times; want once", n)
	}
}

// An upstream that drops every socket right after the connect gets it
// again with a back-off, a bounded number of times, and the client its
// close within the budget (issue: 118 connects in 11.7 s).
func TestReplaysBackOffAndAreCapped(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	up := startStubGateway(t, startedProbe, func(ws *websocket.Conn, _ []byte) {
		ws.NetConn().Close()
	})
	budget := 4 * time.Second
	hs := startProxy(t, up.addr, func(c *proxy.Config) { c.Budget = budget }, nil)
	c := dialRaw(t, hs.url, nil)
	c.read()
	start := time.Now()
	c.write(websocket.TextMessage, []byte(tokenConnect))
	ce := closeOf(t, c.ws, 10*time.Second)
	if ce.Code != websocket.CloseTryAgainLater {
		t.Errorf("close %v; want 1013", ce)
	}
	if d := time.Since(start); d > budget+time.Second {
		t.Errorf("closed after %v; want within the %v budget", d, budget)
	}
	if n := up.connects.Load(); n < 2 || n > 5 {
		t.Errorf("the gateway got the connect %d times; want 2..5", n)
	}
	at := up.g.ConnectTimes()
	// Replays wait like dials: full jitter over a doubling step, so two
	// gaps in a row may shrink by chance, but none is shorter than the
	// step's floor (a quarter of dial_backoff_base, 100 ms by default).
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 25*time.Millisecond {
			t.Errorf("replay %d came %v after the one before: no back-off", i+1, gap)
		}
	}
	hs.waitMetric(1, "holdfast_handshakes_total", "result", "unavailable")
}

// The first message after hello-ok is held to hello-ok's
// policy.maxPayload (1 MiB here), not only to max_message_bytes: the
// client gets 1009 and the gateway never sees the message.
func TestFirstMessageOverMaxPayload(t *testing.T) {
	t.Parallel()
	var got atomic.Int64
	up := startStubGateway(t, startedProbe, func(ws *websocket.Conn, connect []byte) {
		var req struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(connect, &req)
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"res","id":"`+req.ID+`","ok":true,"payload":{"type":"hello-ok","protocol":4,"policy":{"maxPayload":1048576}}}`))
		ws.SetReadLimit(64 << 20)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			got.Add(int64(len(data)))
		}
	})
	hs := startProxy(t, up.addr, nil, nil)
	c := dialRaw(t, hs.url, nil)
	c.read()
	c.write(websocket.TextMessage, []byte(tokenConnect))
	if _, answer := c.read(); !strings.Contains(string(answer), "hello-ok") {
		t.Fatalf("answer %s", answer)
	}
	// One frame, as browsers and Node's ws send a message: gorilla checks
	// its limit per frame header, so the frame's whole length counts.
	go func() { _, _ = c.ws.NetConn().Write(maskedFrame(websocket.BinaryMessage, make([]byte, 2<<20))) }()
	if ce := closeOf(t, c.ws, 10*time.Second); ce.Code != websocket.CloseMessageTooBig {
		t.Errorf("close %v; want 1009", ce)
	}
	time.Sleep(200 * time.Millisecond)
	if n := got.Load(); n >= 2<<20 {
		t.Errorf("the gateway received the %d-byte message", n)
	}
}

// A device connect held during the window learns at once that its
// upstream socket is gone, not when its hold ends.
func TestHeldConnectToldWhenUpstreamGone(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Hour})
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) { c.Budget = 10 * time.Second }, nil)
	type out struct {
		res testclient.Result
		at  time.Time
	}
	done := make(chan out, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, res, _ := testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: token, Device: newDevice(t)})
		done <- out{res, time.Now()}
	}()
	// Wait until the connect is held.
	deadline := time.Now().Add(5 * time.Second)
	for hs.metric("holdfast_connect_holds_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the connect was not held")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopped := time.Now()
	gw.Stop()
	o := <-done
	if d := o.at.Sub(stopped); d > 2*time.Second {
		t.Errorf("the client was told %v after its upstream socket went; want at once", d)
	}
	if o.res.HelloOK || o.res.CloseCode != websocket.CloseTryAgainLater {
		t.Errorf("result %+v; want close 1013", o.res)
	}
}

// The handshake's result is counted before the client can see its end: a
// scrape made as soon as the client has read its answer counts it.
func TestResultCountedBeforeTheClientSeesIt(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	for i := 1; i <= 5; i++ {
		c := dialRaw(t, hs.url, nil)
		c.read()
		c.write(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"req","id":"c%d","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
			`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":"wrong"}}}`, i)))
		_, answer := c.read()
		if !strings.Contains(string(answer), "AUTH_TOKEN_MISMATCH") {
			t.Fatalf("answer %s", answer)
		}
		if got := hs.metric("holdfast_handshakes_total", "result", "rejected"); got != float64(i) {
			t.Fatalf("rejected = %v right after the client saw answer %d; want %d", got, i, i)
		}
		if got := hs.metric("holdfast_handshake_duration_seconds"); got != float64(i) {
			t.Fatalf("duration count = %v; want %d", got, i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, res, _ := testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: token})
	if !res.HelloOK {
		t.Fatalf("%+v", res)
	}
	defer c.Close()
	if got := hs.metric("holdfast_handshakes_total", "result", "ok"); got != 1 {
		t.Errorf("ok = %v right after hello-ok; want 1", got)
	}
}

// The same with a gateway slower to echo a close than holdfast's close
// grace: holdfast drops the upstream socket before the echo, and that read
// error is holdfast's own doing, not the gateway going down.
func TestUpGatewayStaysStartedSlowCloseEcho(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	var probes atomic.Int64
	up := startStubGateway(t, func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		startedProbe(w, r)
	}, func(ws *websocket.Conn, connect []byte) {
		ws.SetCloseHandler(func(code int, _ string) error {
			time.Sleep(400 * time.Millisecond)
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
			return nil
		})
		helloOK(ws, connect)
	})
	hs := startProxy(t, up.addr, func(c *proxy.Config) {
		c.CloseGrace = 200 * time.Millisecond
		freshForLoad(c)
	}, nil)
	session := func(i int, device bool) {
		t.Helper()
		c := dialRaw(t, hs.url, nil)
		c.read()
		dev := ""
		if device {
			dev = `,"device":{"id":"d","publicKey":"k","signature":"s","signedAt":1,"nonce":"n-1"}`
		}
		c.write(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"req","id":"c%d","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
			`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":"t"}%s}}`, i, dev)))
		if _, answer := c.read(); !strings.Contains(string(answer), "hello-ok") {
			t.Fatalf("session %d: %s", i, answer)
		}
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		closeOf(t, c.ws, 5*time.Second)
		c.ws.Close()
	}
	session(0, false)
	probesBefore := probes.Load()
	holdsBefore := hs.metric("holdfast_connect_holds_total")
	for i := 1; i <= 10; i++ {
		session(i, i%2 == 0)
	}
	hs.waitMetric(0, "holdfast_sessions_active")
	if n := probes.Load() - probesBefore; n > 1 {
		t.Errorf("%d readiness probes after the first confirmation; want at most 1", n)
	}
	if n := hs.metric("holdfast_connect_holds_total") - holdsBefore; n != 0 {
		t.Errorf("%v connects held on an up gateway; want 0", n)
	}
	if strings.Contains(hs.logs.String(), "to=down") {
		t.Errorf("the gateway was reported down:\n%s", grepLines(hs.logs.String(), "gateway state"))
	}
}
