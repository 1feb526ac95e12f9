package proxy_test

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/proxy"
)

// Clients in their handshake are bounded globally: beyond the limit an
// upgrade gets 503 with Retry-After, counted; a slot comes back when a
// client's handshake ends.
func TestHandshakeLimit(t *testing.T) {
	t.Parallel()
	addr, release, _ := startSlowHello(t) // every connect waits for release
	hs := startProxy(t, addr, func(c *proxy.Config) { c.MaxHandshakes = 2 }, nil)
	var held []*rawClient
	for i := 0; i < 2; i++ {
		c := dialRaw(t, hs.url, nil)
		c.read() // challenge
		c.write(websocket.TextMessage, connectWithID(`"c1"`))
		held = append(held, c)
	}
	status, _ := upgradeStatus(t, hs.url, nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("third client: HTTP %d; want 503", status)
	}
	resp, err := http.Get(hs.http + "/") // not a handshake: not limited
	if err == nil {
		resp.Body.Close()
	}
	hs.waitMetric(1, "holdfast_limit_refusals_total", "limit", "handshakes", "scope", "global")

	held[0].ws.Close() // its handshake ends: the slot comes back
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, _ := upgradeStatus(t, hs.url, nil)
		if status == http.StatusSwitchingProtocols {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a client left: HTTP %d; want 101", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
}

// The bytes all clients hold before hello-ok are bounded globally: a
// client whose frame does not fit is closed 1013; while the limit is
// reached, upgrades get 503; the bytes come back when a handshake ends.
func TestPreauthBytesLimit(t *testing.T) {
	t.Parallel()
	addr, release, _ := startSlowHello(t)
	connect := heldConnect(256)
	const filler = 5 << 13 // 40 960 bytes: 5 pages, held in a buffer of that size
	limit := int64(2*len(connect) + filler)
	hs := startProxy(t, addr, func(c *proxy.Config) { c.MaxPreauthBytes = limit }, nil)

	a := dialRaw(t, hs.url, nil)
	a.read()
	a.write(websocket.TextMessage, connect)
	b := dialRaw(t, hs.url, nil)
	b.read()
	b.write(websocket.TextMessage, connect)
	// a fills the buffer exactly: the next upgrade is refused.
	a.write(websocket.BinaryMessage, make([]byte, filler))
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, _ := upgradeStatus(t, hs.url, nil)
		if status == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with the buffer full: HTTP %d; want 503", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hs.waitMetric(1, "holdfast_limit_refusals_total", "limit", "preauth_bytes", "scope", "global")
	// b's next frame does not fit: 1013.
	b.write(websocket.BinaryMessage, []byte{1})
	if code := closeCode(t, b); code != 1013 {
		t.Fatalf("client over the limit: close %d; want 1013", code)
	}
	hs.waitMetric(2, "holdfast_limit_refusals_total", "limit", "preauth_bytes", "scope", "global")

	// a gets hello-ok: its frames go to the gateway and the bytes come back.
	close(release)
	if _, res := a.read(); !bytes.Contains(res, []byte("hello-ok")) {
		t.Fatalf("answer %s; want hello-ok", res)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		status, _ := upgradeStatus(t, hs.url, nil)
		if status == http.StatusSwitchingProtocols {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after hello-ok: HTTP %d; want 101", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
