//go:build linux

package proxy

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// The upstream socket has no TCP keepalive: the protocol keeps a session
// alive end to end (docs/operations.md, "Keepalive"), and the probes would
// cost each dial four system calls.
func TestUpstreamSocketHasNoKeepalive(t *testing.T) {
	t.Parallel()
	target := answerUpgrade(t, func(a string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\n\r\n"
	}, nil)
	h := newTestHandler(t, target)
	ws, _, err := h.openUpstream(context.Background(), target, http.Header{}, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	tc, ok := ws.Conn.(*net.TCPConn)
	if !ok {
		t.Fatalf("upstream socket is a %T", ws.Conn)
	}
	if on := testkit.KeepaliveOn(t, tc); on {
		t.Error("SO_KEEPALIVE is set on the upstream socket")
	}
}
