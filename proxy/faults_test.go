package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
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

// Fault injection: the gateway dies at every phase of a client's
// handshake, and broken gateways answer crowds. Every client must end with
// a defined close code or HTTP status within its bound, and nothing may
// stay open afterwards.

// outcome names how a testclient attempt ended.
func outcome(res testclient.Result, err error) string {
	switch {
	case res.HelloOK:
		return "hello-ok"
	case res.HTTPStatus != 0:
		return fmt.Sprintf("HTTP %d", res.HTTPStatus)
	case res.CloseCode != 0:
		return fmt.Sprintf("close %d", res.CloseCode)
	default:
		return fmt.Sprintf("no close frame (%v)", err)
	}
}

// attempt runs one client through holdfast and reports how it ended and
// how long it took. A spliced client makes one call and closes.
func attempt(url string, dev *deviceauth.Identity, hdr http.Header) (string, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, res, err := testclient.Connect(ctx, testclient.Options{URL: url, Token: token, Device: dev, Header: hdr, Timeout: 30 * time.Second})
	d := time.Since(start)
	if c != nil {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = c.Call(cctx, "health", nil) // may fail: the gateway may die now
		ccancel()
		c.Close()
	}
	return outcome(res, err), d
}

// waitProxyQuiet waits until holdfast has no handshake, session or
// goroutine of its own left beyond base, and the gateway no
// unauthenticated socket.
func waitProxyQuiet(t *testing.T, hs *harness, base int, upstreamOpen func() int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		g := hs.goroutines()
		pending := hs.metric("holdfast_upstream_handshakes_in_flight")
		sessions := hs.metric("holdfast_sessions_active")
		up := upstreamOpen()
		if g <= base && pending == 0 && sessions == 0 && up == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still open: %d proxy goroutines (base %d), %v upstream handshakes, %v sessions, %d upstream sockets",
				g, base, pending, sessions, up)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The gateway is killed in each phase of one client's handshake, then
// comes back: the client gets a defined close or status within its
// budget, the next client gets hello-ok, and nothing stays open.
func TestGatewayKilledInEachPhase(t *testing.T) {
	t.Parallel()
	// killedTCP serves a "gateway" that dies at one point of the upgrade
	// or the handshake (its socket closed without a word).
	type phase struct {
		name string
		// kill is the dying gateway's behaviour, nil for a fake gateway
		// that is stopped (SIGTERM-like) at the right moment.
		kill func(c net.Conn, br *bufio.Reader)
		ws   func(ws *websocket.Conn)
		// stop: with a fake gateway, what the client does before the
		// gateway stops.
		stop    func(t *testing.T, hs *harness, c *rawClient)
		gwCfg   fakegw.Config
		origin  bool // a browser client: dialled first, refused with HTTP
		want    string
		connect []byte
	}
	phases := []phase{
		{name: "dial", kill: func(c net.Conn, br *bufio.Reader) { _, _ = http.ReadRequest(br) }, origin: true, want: "HTTP 503"},
		{name: "challenge", ws: func(ws *websocket.Conn) {}, origin: true, want: "HTTP 503"},
		{name: "hold", gwCfg: fakegw.Config{Token: token, StartupWindow: time.Hour}, connect: deviceConnect,
			stop: func(t *testing.T, hs *harness, c *rawClient) { hs.waitMetric(1, "holdfast_connect_holds_total") }, want: "close 1013"},
		{name: "answer", ws: challengeThen(func(ws *websocket.Conn) {}), want: "close 1013"},
		{name: "splice", gwCfg: fakegw.Config{Token: token}, connect: connectWithID(`"c1"`),
			stop: func(t *testing.T, hs *harness, c *rawClient) {
				if _, res := c.read(); !strings.Contains(string(res), "hello-ok") {
					t.Fatalf("answer %s; want hello-ok", res)
				}
			}, want: "close 1012"},
	}
	for _, p := range phases {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			testkit.Prompt(t)
			tweak := func(c *proxy.Config) {
				c.Budget = 2 * time.Second
				c.DialTimeout = 300 * time.Millisecond
				c.AnswerTimeout = 500 * time.Millisecond
				c.LateDialMax = -1
			}
			var hs *harness
			var upstreamOpen func() int
			var base int
			var got string
			var took time.Duration
			switch {
			case p.kill != nil || p.ws != nil:
				var s *scripted
				if p.kill != nil {
					s = startScriptedTCP(t, p.kill)
				} else {
					s = startScriptedWS(t, p.ws)
				}
				hs = startProxy(t, s.addr(), tweak, nil)
				upstreamOpen = func() int { return int(s.live.Load()) }
				base = hs.goroutines()
				var hdr http.Header
				if p.origin {
					hdr = http.Header{"Origin": {"http://127.0.0.1"}}
				}
				got, took = attempt(hs.url, nil, hdr)
			default:
				gw := startGateway(t, p.gwCfg)
				hs = startProxy(t, gw.Addr(), tweak, nil)
				upstreamOpen = gw.PreauthSockets
				base = hs.goroutines()
				start := time.Now()
				c := dialRaw(t, hs.url, nil)
				c.read()
				c.write(websocket.TextMessage, p.connect)
				p.stop(t, hs, c)
				gw.Stop()
				got = end(c)
				took = time.Since(start)
				// The gateway comes back: the next client gets through.
				if err := gw.Restart(0); err != nil {
					t.Fatal(err)
				}
				if o, _ := attempt(hs.url, nil, nil); o != "hello-ok" {
					t.Errorf("after the restart: %s; want hello-ok", o)
				}
			}
			if got != p.want {
				t.Errorf("client: %s; want %s", got, p.want)
			}
			if bound := 2*time.Second + 3*time.Second; took > bound {
				t.Errorf("the client waited %v; its bound is %v", took, bound)
			}
			waitProxyQuiet(t, hs, base, upstreamOpen)
		})
	}
}

// Under load, the gateway is stopped and restarted again and again, at
// random moments, sometimes staying down a while: every client ends with
// hello-ok or a defined close or status within its bound, and once the
// load stops nothing stays open.
func TestGatewayRestartLoopUnderLoad(t *testing.T) {
	t.Parallel()
	testkit.Heavy(t)
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: 300 * time.Millisecond, MaxPreauthPerIP: -1})
	const budget, lateDial = 3 * time.Second, time.Second
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		c.Budget = budget
		c.LateDialMax = lateDial
		c.DialTimeout = 500 * time.Millisecond
		c.AnswerTimeout = time.Second
	}, nil)
	base := hs.goroutines()

	stop := make(chan struct{})
	var killer sync.WaitGroup
	killer.Add(1)
	restarts := 0
	go func() {
		defer killer.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+rng.IntN(500)) * time.Millisecond):
			}
			if rng.IntN(3) == 0 {
				gw.Stop()
				time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
			}
			if err := gw.Restart(300 * time.Millisecond); err != nil {
				t.Error(err)
				return
			}
			restarts++
		}
	}()

	var mu sync.Mutex
	counts := map[string]int{}
	var slowest time.Duration
	var workers sync.WaitGroup
	var n atomic.Int64
	// Six seconds of load, longer (up to 30 s) until a client has got
	// through: under load a handshake can take longer than the gateway
	// stays up between restarts, and 20 attempts in 6 s all missed.
	until, hardUntil := time.Now().Add(6*time.Second), time.Now().Add(30*time.Second)
	var through atomic.Int64
	for w := 0; w < 8; w++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			var dev *deviceauth.Identity
			var hdr http.Header
			switch w % 4 {
			case 1:
				dev = newDevice(t)
			case 2:
				hdr = http.Header{"Origin": {"http://127.0.0.1"}}
			case 3:
				dev = newDevice(t)
				hdr = http.Header{"Origin": {"http://127.0.0.1"}}
			}
			for now := time.Now(); now.Before(until) || (through.Load() == 0 && now.Before(hardUntil)); now = time.Now() {
				o, d := attempt(hs.url, dev, hdr)
				if o == "hello-ok" {
					through.Add(1)
				}
				n.Add(1)
				mu.Lock()
				counts[o]++
				slowest = max(slowest, d)
				mu.Unlock()
			}
		}()
	}
	workers.Wait()
	close(stop)
	killer.Wait()
	if gw.Restart(0) != nil {
		t.Fatal("restart")
	}

	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var summary []string
	for _, k := range keys {
		summary = append(summary, fmt.Sprintf("%s ×%d", k, counts[k]))
	}
	t.Logf("%d attempts over %d gateway restarts: %s; slowest %v", n.Load(), restarts, strings.Join(summary, ", "), slowest.Round(time.Millisecond))
	allowed := map[string]bool{"hello-ok": true, "close 1011": true, "close 1012": true, "close 1013": true, "HTTP 503": true}
	for k, v := range counts {
		if !allowed[k] {
			t.Errorf("%d clients ended with %s", v, k)
		}
	}
	if counts["hello-ok"] == 0 {
		t.Error("no client got through")
	}
	// A client's bound: the late dial, then the budget, then closing.
	if bound := lateDial + budget + 3*time.Second; slowest > bound {
		t.Errorf("a client waited %v; the bound is %v", slowest, bound)
	}
	waitProxyQuiet(t, hs, base, gw.PreauthSockets)
}

// Crowds against broken gateways: one that accepts TCP and never answers,
// one that answers the upgrade with 200, one that answers with bytes that
// are not HTTP, one that upgrades but never sends its challenge. Every
// client gets its HTTP status (browsers, dialled first) or close 1013
// (others, upgraded first) within its budget, and nothing stays open.
func TestBrokenGatewaysUnderLoad(t *testing.T) {
	t.Parallel()
	// Prompt, its crowds one after the other: 300 ms timeouts decide
	// between 502 and 503.
	testkit.Prompt(t)
	gateways := map[string]struct {
		start          func(t *testing.T) *scripted
		browser, other string
		// dialTimeout, 300 ms unless set, is handshake.dial_timeout.
		dialTimeout time.Duration
	}{
		"blackhole": {func(t *testing.T) *scripted { return startScriptedTCP(t, readUntilEOF) }, "HTTP 503", "close 1013", 0},
		"garbage 200": {func(t *testing.T) *scripted {
			return startScriptedTCP(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err == nil {
					_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"))
				}
			})
			// Its 200 must arrive within the dial timeout, or the dial timed
			// out (503): forty dials at once under the race detector on a
			// loaded host took longer than 300 ms, so it gets 1 s (still
			// within the budget).
		}, "HTTP 502", "HTTP 502|close 1011", time.Second},
		"not HTTP": {func(t *testing.T) *scripted {
			return startScriptedTCP(t, func(c net.Conn, br *bufio.Reader) {
				_, _ = c.Write([]byte("\x00\xffgarbage\r\n\r\n"))
			})
		}, "HTTP 503", "close 1013", 0},
		// Its /startupz says started and its failed dials say down:
		// others are dialled first or late, depending on the last word.
		"challenge-less": {func(t *testing.T) *scripted { return startScriptedWS(t, drainWS) }, "HTTP 503", "HTTP 503|close 1013", 0},
	}
	for name, g := range gateways {
		t.Run(name, func(t *testing.T) {
			s := g.start(t)
			const budget = 1500 * time.Millisecond
			dialTimeout := g.dialTimeout
			if dialTimeout == 0 {
				dialTimeout = 300 * time.Millisecond
			}
			hs := startProxy(t, s.addr(), func(c *proxy.Config) {
				c.Budget = budget
				c.DialTimeout = dialTimeout
				c.LateDialMax = 300 * time.Millisecond
				c.ReadinessProbeTimeout = 300 * time.Millisecond
			}, nil)
			base := hs.goroutines()
			type result struct {
				browser bool
				out     string
				took    time.Duration
			}
			results := make(chan result, 40)
			var wg sync.WaitGroup
			for i := 0; i < 40; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var hdr http.Header
					if i%2 == 0 {
						hdr = http.Header{"Origin": {"http://127.0.0.1"}}
					}
					o, d := attempt(hs.url, nil, hdr)
					results <- result{hdr != nil, o, d}
				}()
			}
			wg.Wait()
			close(results)
			for r := range results {
				want := g.other
				if r.browser {
					want = g.browser
				}
				if !strings.Contains("|"+want+"|", "|"+r.out+"|") {
					t.Errorf("browser %v: %s; want %s", r.browser, r.out, want)
				}
				if bound := 300*time.Millisecond + budget + 3*time.Second; r.took > bound {
					t.Errorf("a client waited %v; the bound is %v", r.took, bound)
				}
			}
			waitProxyQuiet(t, hs, base, func() int { return int(s.live.Load()) })
		})
	}
}
