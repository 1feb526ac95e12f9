package proxy_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// Clients behind a trusted proxy on 127.0.0.1, told apart by the
// X-Forwarded-For it sets: no address but 127.0.0.1 is ever used.
const (
	heavyAddr = "198.51.100.1"
	lightAddr = "198.51.100.2"
)

func forwardedFor(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }

func trustLoopback(c *proxy.Config) {
	c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
}

// readHelloOK reads up to hello-ok and fails the test on anything else.
func readHelloOK(t *testing.T, c *rawClient) {
	t.Helper()
	for {
		_, data := c.read()
		if bytes.Contains(data, []byte(`"hello-ok"`)) {
			return
		}
		if !bytes.Contains(data, []byte(`"type":"event"`)) {
			t.Fatalf("answer %s; want hello-ok", data)
		}
	}
}

// sendConnect reads the challenge and sends a token-only connect, or
// connect when given.
func sendConnect(t *testing.T, c *rawClient, connect ...[]byte) {
	t.Helper()
	if _, ch := c.read(); !bytes.Contains(ch, []byte(`"connect.challenge"`)) {
		t.Fatalf("first frame %s; want connect.challenge", ch)
	}
	frame := connectWithID(`"c1"`)
	if len(connect) > 0 {
		frame = connect[0]
	}
	c.write(websocket.TextMessage, frame)
}

// heldConnect is the token-only connect of id "c1" padded with JSON
// whitespace to exactly n bytes (a size class of Go's allocator, as the
// filler sizes below are whole pages): what each occupies held before
// hello-ok is its length (limits.preauth_bytes counts capacity).
func heldConnect(n int) []byte {
	c := connectWithID(`"c1"`)
	return append(c[:len(c)-1:len(c)-1], strings.Repeat(" ", n-len(c))+"}"...)
}

// One address holding every handshake slot with idle upgrades locks no
// other address out: a client from a second address gets its handshake at
// once, in place of the heavy address's newest, which is closed 1013;
// the heavy address's own newcomers are refused with 503. The same while
// the gateway starts: the light client is held and gets hello-ok when it
// has started. Before the fair share every upgrade got 503 while the heavy
// address held the limit.
func TestFairShareHandshakes(t *testing.T) {
	t.Parallel()
	for _, window := range []bool{false, true} {
		name := "gateway started"
		if window {
			name = "startup window"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := fakegw.Config{Token: token, TrustedProxies: []string{"127.0.0.1/32"}}
			if window {
				cfg.StartupWindow = time.Hour
			}
			gw := startGateway(t, cfg)
			const limit = 8
			hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
				trustLoopback(c)
				c.MaxHandshakes = limit
			}, nil)
			var heavy []*rawClient
			for i := 0; i < limit; i++ {
				c := dialRaw(t, hs.url, forwardedFor(heavyAddr))
				c.read() // the challenge; then idle
				heavy = append(heavy, c)
			}
			if status, body := upgradeStatus(t, hs.url, forwardedFor(heavyAddr)); status != http.StatusServiceUnavailable {
				t.Fatalf("heavy address over the limit: HTTP %d %s; want 503", status, body)
			}
			hs.waitMetric(1, "holdfast_limit_refusals_total", "limit", "handshakes", "scope", "global")

			light := dialRaw(t, hs.url, forwardedFor(lightAddr))
			if code := closeCode(t, heavy[limit-1]); code != websocket.CloseTryAgainLater {
				t.Fatalf("heavy address's newest handshake: close %d; want 1013", code)
			}
			hs.waitMetric(1, "holdfast_limit_refusals_total", "limit", "handshakes", "scope", "address")
			// The heavy address cannot take the place back.
			if status, _ := upgradeStatus(t, hs.url, forwardedFor(heavyAddr)); status != http.StatusServiceUnavailable {
				t.Errorf("heavy address again: HTTP %d; want 503", status)
			}
			hs.waitMetric(2, "holdfast_limit_refusals_total", "limit", "handshakes", "scope", "address")
			sendConnect(t, light)
			if window {
				waitUntil(t, "the light client's connect held", func() bool {
					return hs.metric("holdfast_connect_holds_total") >= 1
				})
				gw.SetStarted()
			}
			readHelloOK(t, light)

			// The older handshakes of the heavy address are still there; the
			// light client's session is no longer a handshake.
			waitUntil(t, "the heavy address's other handshakes in flight", func() bool { return hs.h.Handshakes() == limit-1 })
		})
	}
}

// Two addresses share the handshake limit evenly under contention: a
// light address takes places from the heavy one until they hold as many,
// then its own newcomers are refused too.
func TestFairShareHandshakesEvenSplit(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, TrustedProxies: []string{"127.0.0.1/32"}})
	const limit = 6
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		trustLoopback(c)
		c.MaxHandshakes = limit
	}, nil)
	for i := 0; i < limit; i++ {
		dialRaw(t, hs.url, forwardedFor(heavyAddr)).read()
	}
	for i := 0; i < limit/2; i++ {
		dialRaw(t, hs.url, forwardedFor(lightAddr)).read()
	}
	if status, _ := upgradeStatus(t, hs.url, forwardedFor(lightAddr)); status != http.StatusServiceUnavailable {
		t.Errorf("light address holding half: HTTP %d; want 503", status)
	}
	// Three displaced, then the light address's own newcomer refused.
	hs.waitMetric(limit/2+1, "holdfast_limit_refusals_total", "limit", "handshakes", "scope", "address")
	waitUntil(t, "half the slots each", func() bool { return hs.h.Handshakes() == limit })
}

// A handshake displaced before its upgrade (its upstream dial under way)
// gets HTTP 503 with Retry-After at once.
func TestFairShareDisplacedBeforeUpgrade(t *testing.T) {
	t.Parallel()
	// An upstream that accepts TCP and never answers the upgrade.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var accepted []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range accepted {
			c.Close()
		}
		mu.Unlock()
	})
	nAccepted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(accepted)
	}
	const limit = 3
	hs := startProxy(t, ln.Addr().String(), func(c *proxy.Config) {
		trustLoopback(c)
		c.MaxHandshakes = limit
		c.DialTimeout = 4 * time.Second
		c.Budget = 5 * time.Second
	}, nil)

	answers := make([]chan upgradeAnswer, limit+1)
	for i := range answers {
		answers[i] = make(chan upgradeAnswer, 1)
		addr := heavyAddr
		if i == limit {
			addr = lightAddr
		}
		go func() { answers[i] <- tryUpgrade(hs.url, forwardedFor(addr)) }()
		if i < limit {
			waitUntil(t, "the upstream dial under way", func() bool { return nAccepted() == i+1 })
		}
	}
	select {
	case a := <-answers[limit-1]:
		if a.status != http.StatusServiceUnavailable || a.retry == "" || !strings.Contains(a.body, "too many clients") {
			t.Fatalf("displaced before its upgrade: HTTP %d Retry-After %q %q; want 503 with Retry-After", a.status, a.retry, a.body)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the heavy address's newest handshake was not displaced")
	}
	hs.waitMetric(1, "holdfast_limit_refusals_total", "limit", "handshakes", "scope", "address")
	for i := 0; i < limit-1; i++ {
		select {
		case a := <-answers[i]:
			t.Errorf("an older handshake of the heavy address ended early: %+v", a)
		default:
		}
	}
	for i := 0; i < limit-1; i++ {
		<-answers[i] // their dials time out
	}
	<-answers[limit]
}

// upgradeAnswer is what an upgrade request got.
type upgradeAnswer struct {
	status int
	body   string
	retry  string // Retry-After
}

// tryUpgrade makes a WebSocket upgrade and reports its answer (status 0:
// none); a WebSocket it got is closed at once. Safe off the test goroutine.
func tryUpgrade(url string, hdr http.Header) upgradeAnswer {
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	ws, resp, err := d.Dial(url, hdr)
	if err == nil {
		ws.Close()
		return upgradeAnswer{status: http.StatusSwitchingProtocols}
	}
	if resp == nil {
		return upgradeAnswer{body: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return upgradeAnswer{resp.StatusCode, string(b), resp.Header.Get("Retry-After")}
}

// One address holding all of limits.preauth_bytes while the gateway starts
// locks no other address out: the light client's connect takes the place
// of the heavy address's newest holder (closed 1013), is held, and gets
// hello-ok once the gateway has started; the heavy address's newcomers are
// refused.
func TestFairSharePreauthBytes(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, TrustedProxies: []string{"127.0.0.1/32"}, StartupWindow: time.Hour})
	connect := heldConnect(256)
	const filler = 7 << 13 // 57 344 bytes: 7 pages
	limit := int64(2*len(connect) + 2*filler)
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		trustLoopback(c)
		c.MaxPreauthBytes = limit
	}, nil)
	var heavy []*rawClient
	for i := 0; i < 2; i++ {
		c := dialRaw(t, hs.url, forwardedFor(heavyAddr))
		sendConnect(t, c, connect)
		c.write(websocket.BinaryMessage, make([]byte, filler))
		heavy = append(heavy, c)
		// The newest holder is the one that began to hold bytes last:
		// the second client starts once the first holds, so that under
		// load its frames are not read first.
		waitUntil(t, "the heavy connect held", func() bool {
			return hs.metric("holdfast_connect_holds_total") >= float64(i+1)
		})
	}
	waitUntil(t, "the buffer full", func() bool {
		status, _ := upgradeStatus(t, hs.url, forwardedFor(heavyAddr))
		return status == http.StatusServiceUnavailable
	})
	hs.waitMetric(1, "holdfast_limit_refusals_total", "limit", "preauth_bytes", "scope", "global")

	light := dialRaw(t, hs.url, forwardedFor(lightAddr))
	sendConnect(t, light, connect)
	if code := closeCode(t, heavy[1]); code != websocket.CloseTryAgainLater {
		t.Fatalf("heavy address's newest holder: close %d; want 1013", code)
	}
	hs.waitMetric(1, "holdfast_limit_refusals_total", "limit", "preauth_bytes", "scope", "address")
	waitUntil(t, "the light client's connect held", func() bool {
		return hs.metric("holdfast_connect_holds_total") >= 3
	})
	gw.SetStarted()
	readHelloOK(t, light)
	readHelloOK(t, heavy[0]) // the older holder was kept
}
