package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// spliceClient dials holdfast and completes a token-only handshake with a
// minimal upstream; it returns the spliced socket.
func spliceClient(url string) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, _, err := ws.ReadMessage(); err != nil { // connect.challenge
		ws.Close()
		return nil, fmt.Errorf("challenge: %w", err)
	}
	connect := fmt.Sprintf(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":%q}}}`, token)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(connect)); err != nil {
		ws.Close()
		return nil, err
	}
	_, data, err := ws.ReadMessage()
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("answer: %w", err)
	}
	var res struct {
		Payload struct {
			Type string `json:"type"`
		} `json:"payload"`
	}
	if json.Unmarshal(data, &res) != nil || res.Payload.Type != "hello-ok" {
		ws.Close()
		return nil, fmt.Errorf("answer %s; want hello-ok", data)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, nil
}

// openSessions splices n clients through hs, at most 32 handshakes at once.
func openSessions(t *testing.T, hs *harness, n int) []*websocket.Conn {
	t.Helper()
	conns := make([]*websocket.Conn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ws, err := spliceClient(hs.url)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = ws
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		t.Fatalf("opening %d sessions: %v", n, err)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// closeSeen is what one client saw at the end of its session.
type closeSeen struct {
	at   time.Time
	code int
	text string
	err  error
}

// watchClose reads ws until it ends and reports how.
func watchClose(ws *websocket.Conn, out chan<- closeSeen) {
	ws.SetCloseHandler(func(int, string) error { return nil }) // answered below
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		s := closeSeen{at: time.Now(), err: err}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			s.code, s.text = ce.Code, ce.Text
			// The client's echo, as a real one sends.
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(ce.Code, ""), time.Now().Add(time.Second))
		}
		out <- s
		return
	}
}

// On a drain, 500 spliced sessions are closed spread evenly over the drain
// period: each client gets a close frame with 1012 (on which OpenClaw
// clients reconnect), none is dropped without one (1006), and no 1-second
// slice of the drain holds more than twice its share of the closes.
func TestDrainSpreadsCloses(t *testing.T) {
	t.Parallel()
	testkit.Heavy(t)
	const (
		n      = 500
		spread = 4 * time.Second
	)
	addr := startMiniUpstream(t, func(ws *websocket.Conn) {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	})
	hs := startProxy(t, addr, func(c *proxy.Config) { c.CloseGrace = 2 * time.Second }, nil)
	conns := openSessions(t, hs, n)
	hs.waitMetric(n, "holdfast_sessions_active")

	seen := make(chan closeSeen, n)
	for _, ws := range conns {
		go watchClose(ws, seen)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	drained := make(chan error, 1)
	go func() { drained <- hs.h.Drain(ctx, spread) }()
	for deadline := time.Now().Add(5 * time.Second); hs.h.Ready(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Ready() still true during a drain")
		}
	}

	perSecond := make([]int, int(spread/time.Second)+2)
	for i := range n {
		var s closeSeen
		select {
		case s = <-seen:
		case <-time.After(25 * time.Second):
			t.Fatalf("only %d of %d clients saw their session end", i, n)
		}
		if s.code != 1012 || s.text != "holdfast restarting" {
			t.Errorf("client saw %v; want close 1012 \"holdfast restarting\"", s.err)
		}
		slot := min(int(s.at.Sub(start)/time.Second), len(perSecond)-1)
		perSecond[slot]++
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain = %v; want nil (every connection ended)", err)
	}
	took := time.Since(start)
	t.Logf("closes per second over a %v drain of %d sessions: %v (drain took %v)", spread, n, perSecond, took.Round(time.Millisecond))
	share := n / int(spread/time.Second)
	for sec, k := range perSecond {
		if k > 2*share {
			t.Errorf("second %d of the drain held %d closes; want at most %d (twice its share)", sec, k, 2*share)
		}
	}
	if perSecond[int(spread/time.Second)-1] == 0 {
		t.Errorf("no close in the drain's last second: %v", perSecond)
	}
	hs.waitMetric(0, "holdfast_sessions_active")
}

// A stop at once (the grace period over, or a second SIGTERM) gives every
// client still in its handshake a close frame before holdfast exits: 1013
// "gateway starting" while the gateway has not started, on which current
// clients retry. Here: a device client waiting for a late dial, a browser's
// device connect held on its upstream socket, and a token-only connect
// being replayed through the window.
func TestStopAtOnceClosesHandshakes(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Minute})
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		c.Budget = 12 * time.Second
		c.LateDialMax = 12 * time.Second
	}, nil)
	browser := http.Header{"Origin": {"http://127.0.0.1:18789"}}
	clients := []testclient.Options{
		{URL: hs.url, Token: token, Device: newDevice(t), Header: browser}, // held
		{URL: hs.url, Token: token, Header: browser},                       // held or replayed
		{URL: hs.url, Token: token, Device: newDevice(t)},                  // late dial, once the window is known
	}
	results := make(chan testclient.Result, len(clients))
	for i, o := range clients {
		if i == 2 {
			waitUntil(t, "the gateway known to be starting", func() bool { return hs.metric("holdfast_connect_holds_total") >= 1 })
		}
		go func() {
			_, res, _ := testclient.Connect(context.Background(), o)
			results <- res
		}()
	}
	waitUntil(t, "three clients in their handshake, one waiting for a late dial", func() bool {
		return hs.h.Handshakes() == 3 && hs.metric("holdfast_upstream_dials_delayed_total") == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := hs.h.Drain(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain = %v; want the deadline (handshakes were still in flight)", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Drain took %v past a 300ms deadline", took)
	}
	for range clients {
		select {
		case res := <-results:
			if res.CloseCode != 1013 || res.CloseReason != "gateway starting" {
				t.Errorf("client in its handshake ended with %+v; want close 1013 \"gateway starting\"", res)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a client in its handshake got no answer after the stop")
		}
	}
	// Recorded as the endings table says, not as clients that left.
	hs.waitMetric(3, "holdfast_handshakes_total", "result", "unavailable")
	if got := hs.metric("holdfast_handshakes_total", "result", "client_gone"); got != 0 {
		t.Errorf("handshakes_total{result=client_gone} = %v; want 0", got)
	}
	if n := strings.Count(hs.logs.String(), "holdfast stopped during the handshake; the gateway had not started"); n != 3 {
		t.Errorf("%d log lines for the stopped handshakes; want 3", n)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// At a stop at once, a client in its handshake on a gateway that has
// started (here one that got its challenge and has not sent its connect)
// gets 1001 "holdfast shutting down".
func TestStopAtOnceStartedGateway(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	// A first session tells holdfast the gateway has started.
	c, res := connect(t, hs.url, nil)
	if !res.HelloOK {
		t.Fatalf("first client: %+v", res)
	}
	c.Close()
	silent := dialRaw(t, hs.url, nil)
	if _, ch := silent.read(); !strings.Contains(string(ch), "connect.challenge") {
		t.Fatalf("first frame %s; want the challenge", ch)
	}
	waitUntil(t, "the silent client in its handshake", func() bool { return hs.h.Handshakes() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := hs.h.Drain(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain = %v; want the deadline", err)
	}
	_ = silent.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := silent.ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || ce.Text != "holdfast shutting down" {
		t.Errorf("silent client ended with %v; want close 1001 \"holdfast shutting down\"", err)
	}
	hs.waitMetric(1, "holdfast_handshakes_total", "result", "unavailable")
}
