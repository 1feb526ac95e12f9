package proxy_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A client whose socket ends without a close frame (here: it shuts down
// its sending side and keeps reading) is written nothing more: the gateway
// gets holdfast's close 1001 "client gone" and answers it, and that answer
// is not relayed into the client's dead socket.
func TestVanishedClientIsToldNothing(t *testing.T) {
	t.Parallel()
	gotClose := make(chan int, 1)
	addr := startMiniUpstream(t, func(ws *websocket.Conn) {
		for {
			if _, _, err := ws.NextReader(); err != nil {
				if ce, ok := err.(*websocket.CloseError); ok {
					gotClose <- ce.Code // gorilla has answered it
				}
				return
			}
		}
	})
	hs := startProxy(t, addr, nil, nil)
	c := dialRaw(t, hs.url, nil)
	c.handshake()

	if err := c.ws.NetConn().(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-gotClose:
		if code != 1001 {
			t.Errorf("gateway got close %d; want 1001", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway got no close")
	}
	log := newFrameLog()
	readFrames(c.ws.NetConn(), log) // until holdfast closes the socket
	if log.sawClose() {
		t.Errorf("holdfast wrote a close frame to the vanished client (opcodes %v)", log.ops)
	}
	// The access line comes once the session has ended.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(hs.logs.String(), "msg=access") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(hs.logs.String(), "client_close_sent=0 ") {
		t.Errorf("access log does not say no close was sent to the client:\n%s", hs.logs.String())
	}
}
