//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestForwardedLoopbackRealGateway: holdfast never grants a forwarded
// client more than the gateway would. A real 2026.9.6 gateway that trusts
// 127.0.0.1 and a holdfast that trusts 127.0.0.1 get the same upgrades
// from a client on 127.0.0.1; for every set of forwarding headers,
// holdfast's answer is the gateway's own: 403 proxy_attribution_required
// for a chain that names no client that is neither loopback nor trusted
// (holdfast answers it itself), 101 otherwise.
func TestForwardedLoopbackRealGateway(t *testing.T) {
	foregroundFromStart(t)
	gw := newGateway(t, gatewayOptions{Version: currentVersion, TrustedProxies: []string{"127.0.0.1/32"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	gw.Start(t, ctx)
	// The port is the gateway's once its liveness probe answers.
	for {
		if res, err := httpGet(ctx, gw.HTTPBase()+"/healthz", nil); err == nil && res.Status == http.StatusOK {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("gateway /healthz never answered 200:\n%s", gw.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	hf := startHoldfast(t, gw, holdfastOptions{TrustedProxies: []string{"127.0.0.1/32"}})

	cases := []struct {
		name string
		hdr  http.Header
		want int
	}{
		{"no forwarding headers", nil, 101},
		{"X-Forwarded-For 127.0.0.1", http.Header{"X-Forwarded-For": {"127.0.0.1"}}, 403},
		{"X-Forwarded-For 127.9.8.7", http.Header{"X-Forwarded-For": {"127.9.8.7"}}, 403},
		{"X-Forwarded-For ::1", http.Header{"X-Forwarded-For": {"::1"}}, 403},
		{"X-Forwarded-For ::ffff:127.0.0.1", http.Header{"X-Forwarded-For": {"::ffff:127.0.0.1"}}, 403},
		{"X-Real-IP only", http.Header{"X-Real-Ip": {"203.0.113.9"}}, 403},
		{"X-Forwarded-For remote, then loopback", http.Header{"X-Forwarded-For": {"203.0.113.9, 127.0.0.1"}}, 101},
		{"X-Forwarded-For remote", http.Header{"X-Forwarded-For": {"203.0.113.9"}}, 101},
	}
	refusedBefore := 0.0
	if m, err := hf.Metrics(ctx); err == nil {
		refusedBefore = m.Get("holdfast_handshakes_total", "result", "rejected")
	}
	refused := 0
	for _, tc := range cases {
		direct := upgradeStatus(t, gw.URL(), tc.hdr)
		through := upgradeStatus(t, hf.URL(), tc.hdr)
		t.Logf("%s: direct HTTP %d, through holdfast HTTP %d", tc.name, direct, through)
		if direct != tc.want {
			t.Errorf("%s: the gateway answered %d; the case expects %d", tc.name, direct, tc.want)
		}
		if through != direct {
			t.Errorf("%s: holdfast answered %d, the gateway %d", tc.name, through, direct)
		}
		if tc.want == 403 {
			refused++
		}
	}
	// holdfast answered the 403s itself, before any upstream socket.
	m, err := hf.Metrics(ctx)
	if err != nil {
		t.Fatalf("holdfast metrics: %v", err)
	}
	if got := m.Get("holdfast_handshakes_total", "result", "rejected") - refusedBefore; got != float64(refused) {
		t.Errorf("holdfast counted %v rejected handshakes; want %d (its own 403s)", got, refused)
	}
}

// upgradeStatus makes one WebSocket upgrade and returns its HTTP status
// (101 on success; the socket is closed at once).
func upgradeStatus(t *testing.T, url string, hdr http.Header) int {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(url, hdr)
	if err == nil {
		ws.Close()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("upgrade to %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
