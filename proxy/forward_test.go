package proxy_test

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

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
// headers at all, even when it sent some; Origin and Host are unchanged.
func TestLoopbackClientIsLocal(t *testing.T) {
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	c := dialRaw(t, hs.url, spoofed())
	c.handshake()
	h := lastUpgrade(t, gw)
	for _, k := range []string{"X-Forwarded-For", "X-Real-Ip", "Forwarded", "X-Forwarded-Host", "X-Forwarded-User", "X-Forwarded-Proto", "Tailscale-User-Login"} {
		if v := h.Get(k); v != "" {
			t.Errorf("gateway saw %s: %q; want none for a loopback client", k, v)
		}
	}
	if got := h.Get("Origin"); got != "http://127.0.0.1:18790" {
		t.Errorf("Origin %q; want it unchanged", got)
	}
	if gw.Stats().Rejected403 != 0 {
		t.Error("the gateway refused attribution")
	}
}

// A remote client gets X-Forwarded-For set to its own address and its
// spoofed headers stripped; it never looks local to the gateway.
func TestRemoteClientIsAttributed(t *testing.T) {
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
	hs.waitMetric(1, "holdfast_handshakes_total", "result", "rejected")
}

// Everything but the control socket is reverse-proxied unchanged.
func TestPassthrough(t *testing.T) {
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
