package testkit

import (
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// DialRaw opens a WebSocket to url with hdr and nothing else: no
// connect.challenge is read, no connect sent, so that a test controls every
// frame. It fails the test (with the HTTP status, if any) when the upgrade
// fails, allows messages of up to 64 MiB and closes the socket when the
// test ends.
func DialRaw(t testing.TB, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	return DialWith(t, websocket.Dialer{HandshakeTimeout: 10 * time.Second}, url, hdr)
}

// DialWith is DialRaw through d (a wss:// URL with d's TLS configuration,
// say).
func DialWith(t testing.TB, d websocket.Dialer, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	ws, resp, err := d.Dial(url, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(func() { _ = ws.Close() })
	ws.SetReadLimit(64 << 20)
	return ws
}

// Read reads one message from ws within d and fails the test if none comes.
func Read(t testing.TB, ws *websocket.Conn, d time.Duration) (int, []byte) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(d))
	typ, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, data
}

// Write writes one message on ws and fails the test if it cannot.
func Write(t testing.TB, ws *websocket.Conn, typ int, data []byte) {
	t.Helper()
	if err := ws.WriteMessage(typ, data); err != nil {
		t.Fatalf("write: %v", err)
	}
}
