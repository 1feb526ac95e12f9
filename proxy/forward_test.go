package proxy_test

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// spoofed are forwarding headers a client must not be able to set.
func spoofed() http.Header {
	return http.Header{
		"X-Forwarded-For":      {"127.0.0.1"},
		"X-Real-Ip":            {"127.0.0.1"},
		"Forwarded":            {"for=127.0.0.1"},
		"X-Forwarded-Host":     {"evil.example"},
		"X-Forwarded-User":     {"admin"},
		"Tailscale-User-Login": {"admin@example.com"},
		"Origin":               {"http://127.0.0.1:18790"},
	}
}

func asRemote(ip string) func(net.Listener) net.Listener {
	return func(ln net.Listener) net.Listener {
		return remoteListener{ln, &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
	}
}

func lastUpgrade(t *testing.T, gw *fakegw.Gateway) http.Header {
	t.Helper()
	ups := gw.Upgrades()
	if len(ups) == 0 {
		t.Fatal("the gateway saw no upgrade")
	}
	return ups[len(ups)-1]
}

// A loopback client is local: it reaches the gateway with no forwarding
// headers at all; Origin and Host are unchanged.
func TestLoopbackClientIsLocal(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	c := dialRaw(t, hs.url, http.Header{"Origin": {"http://127.0.0.1:18790"}})
	c.handshake()
	h := lastUpgrade(t, gw)
	for k := range h {
		if strings.HasPrefix(k, "X-Forwarded-") || k == "Forwarded" || k == "X-Real-Ip" || strings.HasPrefix(k, "Tailscale-") {
			t.Errorf("gateway saw %s: %q; want none for a loopback client", k, h.Get(k))
		}
	}
	if got := h.Get("Origin"); got != "http://127.0.0.1:18790" {
		t.Errorf("Origin %q; want it unchanged", got)
	}
	if gw.Stats().Rejected403 != 0 {
		t.Error("the gateway refused attribution")
	}
}

// upgradeStatus makes a WebSocket upgrade to url with hdr and returns the
// HTTP status (101 when it succeeded; the socket is closed at once).
func upgradeStatus(t *testing.T, url string, hdr http.Header) (int, string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(url, hdr)
	if err == nil {
		ws.Close()
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("upgrade to %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body)
}

// A forwarded chain is remote whatever it claims: holdfast never makes a
// forwarded client local. Where the gateway itself refuses a request with
// 403 proxy_attribution_required (the same peer, the same headers, the
// same trusted proxies), holdfast refuses it too, before opening any
// upstream socket; where the gateway accepts it, so does holdfast, and the
// gateway sees the client as remote.
func TestForwardedLoopbackIsNeverLocal(t *testing.T) {
	t.Parallel()
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
	cases := []struct {
		name    string
		trusted bool // holdfast and the gateway both trust 127.0.0.1
		hdr     http.Header
		want    int    // status through holdfast and direct
		wantXFF string // X-Forwarded-For the gateway sees through holdfast
	}{
		{"trusted, xff 127.0.0.1", true, xff("127.0.0.1"), 403, ""},
		{"trusted, xff 127.9.8.7", true, xff("127.9.8.7"), 403, ""},
		{"trusted, xff ::1", true, xff("::1"), 403, ""},
		{"trusted, xff ::ffff:127.0.0.1", true, xff("::ffff:127.0.0.1"), 403, ""},
		{"trusted, xff ends in loopback", true, xff("203.0.113.9, 127.0.0.1"), 101, "203.0.113.9"},
		{"trusted, xff two headers ending in loopback", true, http.Header{"X-Forwarded-For": {"203.0.113.9", "::1"}}, 101, "203.0.113.9"},
		{"trusted, xff remote", true, xff("203.0.113.9"), 101, "203.0.113.9"},
		{"trusted, x-real-ip only", true, http.Header{"X-Real-Ip": {"203.0.113.9"}}, 403, ""},
		{"trusted, forwarded only", true, http.Header{"Forwarded": {"for=203.0.113.9"}}, 403, ""},
		{"trusted, x-forwarded-proto only", true, http.Header{"X-Forwarded-Proto": {"https"}}, 403, ""},
		{"trusted, xff empty", true, xff(" , "), 403, ""},
		{"trusted, no headers", true, nil, 101, ""},
		{"untrusted, xff remote", false, xff("203.0.113.9"), 403, ""},
		{"untrusted, xff 127.0.0.1", false, xff("127.0.0.1"), 403, ""},
		{"untrusted, tailscale header", false, http.Header{"Tailscale-User-Login": {"admin@example.com"}}, 403, ""},
		{"untrusted, no headers", false, nil, 101, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var gwTrusted []string
			var tweak func(*proxy.Config)
			if tc.trusted {
				gwTrusted = []string{"127.0.0.1/32"}
				tweak = func(c *proxy.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} }
			}
			gw := startGateway(t, fakegw.Config{Token: token, TrustedProxies: gwTrusted})
			hs := startProxy(t, gw.Addr(), tweak, nil)

			direct, _ := upgradeStatus(t, gw.URL(), tc.hdr.Clone())
			if direct != tc.want {
				t.Fatalf("direct to the gateway: HTTP %d; the case expects %d", direct, tc.want)
			}
			before := len(gw.Upgrades())
			got, body := upgradeStatus(t, hs.url, tc.hdr.Clone())
			if got != tc.want {
				t.Fatalf("through holdfast: HTTP %d %s; want %d as direct", got, body, tc.want)
			}
			ups := gw.Upgrades()[before:]
			if tc.want == 403 {
				if !strings.Contains(body, "proxy_attribution_required") {
					t.Errorf("403 body %q; want the gateway's proxy_attribution_required", body)
				}
				if len(ups) != 0 {
					t.Errorf("holdfast opened %d upstream sockets for an unattributable client", len(ups))
				}
				return
			}
			if len(ups) == 0 {
				t.Fatal("the gateway saw no upgrade")
			}
			h := ups[len(ups)-1]
			if got := strings.Join(h.Values("X-Forwarded-For"), ","); got != tc.wantXFF {
				t.Errorf("gateway saw X-Forwarded-For %q; want %q", got, tc.wantXFF)
			}
		})
	}
}

// Plain HTTP follows the same rule: an unattributable request gets 403,
// except the gateway's liveness probe, which the gateway answers to anyone.
func TestForwardedLoopbackPassthrough(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, TrustedProxies: []string{"127.0.0.1/32"}})
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	}, nil)
	client := &http.Client{Timeout: 10 * time.Second}
	for path, want := range map[string]int{"/startupz": 403, "/readyz": 403, "/": 403, "/healthz": 200} {
		for _, base := range []string{gw.HTTPURL(), hs.http} {
			req, _ := http.NewRequest(http.MethodGet, base+path, nil)
			req.Header.Set("X-Forwarded-For", "127.0.0.1")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s%s with X-Forwarded-For 127.0.0.1: HTTP %d; want %d", base, path, resp.StatusCode, want)
			}
		}
	}
}

// A remote client gets X-Forwarded-For set to its own address and its
// spoofed headers stripped; it never looks local to the gateway.
func TestRemoteClientIsAttributed(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, TrustedProxies: []string{"127.0.0.1/32"}})
	hs := startProxy(t, gw.Addr(), nil, asRemote("203.0.113.7"))
	c := dialRaw(t, hs.url, spoofed())
	c.handshake()
	h := lastUpgrade(t, gw)
	if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "203.0.113.7" {
		t.Errorf("X-Forwarded-For %q; want exactly the client's address", got)
	}
	for _, k := range []string{"X-Real-Ip", "Forwarded", "X-Forwarded-User", "Tailscale-User-Login"} {
		if v := h.Get(k); v != "" {
			t.Errorf("gateway saw spoofed %s: %q", k, v)
		}
	}
	if got := h.Get("X-Forwarded-Host"); got == "evil.example" {
		t.Error("spoofed X-Forwarded-Host passed through")
	}
}

// Behind a trusted load balancer, the client is the right-most untrusted
// X-Forwarded-For hop.
func TestTrustedProxyChain(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, TrustedProxies: []string{"127.0.0.1/32"}})
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	}, asRemote("192.0.2.10"))
	c := dialRaw(t, hs.url, http.Header{"X-Forwarded-For": {"198.51.100.1, 203.0.113.9, 192.0.2.11"}})
	c.handshake()
	if got := lastUpgrade(t, gw).Values("X-Forwarded-For"); len(got) != 1 || got[0] != "203.0.113.9" {
		t.Errorf("X-Forwarded-For %q; want the right-most untrusted hop 203.0.113.9", got)
	}
}

// When the gateway does not trust holdfast, a remote client's upgrade gets
// the gateway's 403, and holdfast logs what the operator must change.
func TestAttributionRefusalIsExplained(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token}) // no trusted proxies
	hs := startProxy(t, gw.Addr(), nil, asRemote("203.0.113.7"))
	req, _ := http.NewRequest(http.MethodGet, hs.http+"/", nil)
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket",
		"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "proxy_attribution_required") {
		t.Fatalf("HTTP %d %s; want the gateway's 403", resp.StatusCode, body)
	}
	if logs := hs.logs.String(); !strings.Contains(logs, "gateway.trustedProxies") {
		t.Errorf("log does not name gateway.trustedProxies:\n%s", logs)
	}
	// Its own result, so that an alert can name gateway.trustedProxies;
	// recorded before the client saw the 403.
	if got := hs.metric("holdfast_handshakes_total", "result", "attribution_refused"); got != 1 {
		t.Errorf("attribution_refused = %v; want 1", got)
	}
	if got := hs.metric("holdfast_handshakes_total", "result", "rejected"); got != 0 {
		t.Errorf("rejected = %v; want 0", got)
	}
}

// Everything but the control socket is reverse-proxied unchanged.
func TestPassthrough(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Hour})
	hs := startProxy(t, gw.Addr(), nil, nil)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, path := range []string{"/healthz", "/startupz", "/", "/no-such-page"} {
		get := func(base string) (int, string, string) {
			resp, err := client.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
		}
		ds, dct, db := get(gw.HTTPURL())
		ps, pct, pb := get(hs.http)
		// Bodies with uptime differ; compare status, type and shape.
		if ds != ps || dct != pct || (path != "/startupz" && db != pb) {
			t.Errorf("%s: direct %d %s %q; through holdfast %d %s %q", path, ds, dct, trimS(db), ps, pct, trimS(pb))
		}
	}
	if got := hs.metric("holdfast_passthrough_requests_total"); got != 4 {
		t.Errorf("passthrough requests = %v; want 4", got)
	}
}

func trimS(s string) string { return trim([]byte(s)) }
