package proxy_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// startTunnelUpstream serves WebSockets on every path: each echoes what it
// gets, or with stream set sends 1 000-byte messages as fast as it can;
// the close code each socket got is sent on closes.
func startTunnelUpstream(t *testing.T, stream bool) (addr string, closes chan int) {
	t.Helper()
	closes = make(chan int, 8)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := websocket.Upgrader{}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			http.NotFound(w, r)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		if stream {
			go func() {
				msg := make([]byte, 1000)
				for {
					_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if ws.WriteMessage(websocket.BinaryMessage, msg) != nil {
						return
					}
				}
			}()
		}
		for {
			typ, data, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				code := 0
				if errors.As(err, &ce) {
					code = ce.Code
				}
				closes <- code
				return
			}
			if !stream {
				_ = ws.WriteMessage(typ, data)
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), closes
}

// A passthrough WebSocket (passthrough.websocket_paths) is drained like a
// control session: the client gets 1012 "holdfast restarting" and the
// gateway 1001, each between two frames, even while the gateway streams;
// Drain returns once the tunnel has ended. Before, a drain did not reach
// such tunnels at all: Drain returned with the tunnel open, and the client
// got 1006 when the process exited.
func TestPassthroughTunnelDrained(t *testing.T) {
	t.Parallel()
	for _, stream := range []bool{false, true} {
		name := "idle"
		if stream {
			name = "gateway streaming"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if stream {
				testkit.Heavy(t) // the gateway sends as fast as it can
			}
			addr, closes := startTunnelUpstream(t, stream)
			hs := startProxy(t, addr, nil, nil)
			ws := dialRaw(t, hs.url+"/__openclaw__/canvas", nil)
			if !stream {
				ws.write(websocket.TextMessage, []byte("ping"))
				if _, got := ws.read(); string(got) != "ping" {
					t.Fatalf("echo %q", got)
				}
			} else {
				ws.read() // streaming
			}
			drained := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				drained <- hs.h.Drain(ctx, 0)
			}()
			_ = ws.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			var code int
			for {
				_, _, err := ws.ws.ReadMessage() // every frame before the close is whole
				if err != nil {
					var ce *websocket.CloseError
					if !errors.As(err, &ce) {
						t.Fatalf("client: %v; want a close frame", err)
					}
					code = ce.Code
					break
				}
			}
			if code != 1012 {
				t.Errorf("client got close %d; want 1012", code)
			}
			select {
			case c := <-closes:
				if c != 1001 {
					t.Errorf("gateway got close %d; want 1001", c)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the gateway got no close")
			}
			if err := <-drained; err != nil {
				t.Errorf("Drain = %v; want nil", err)
			}
		})
	}
}
