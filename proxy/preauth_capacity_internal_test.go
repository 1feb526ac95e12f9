package proxy

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
)

// limits.preauth_bytes counts what held frames occupy: every byte of
// capacity of a frame queued before hello-ok is reserved. Before, the
// frame's length was: a 60 000-byte frame, read in 32 KiB pieces, sat in
// a 64 KiB buffer, and 64 MiB held took about 84 MB of heap.
func TestPreauthBytesCountCapacity(t *testing.T) {
	t.Parallel()
	gw, err := fakegw.Start(fakegw.Config{Token: "t", StartupWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	h, err := New(Config{Upstream: &url.URL{Scheme: "ws", Host: gw.Addr()}, LateDialMax: -1, Budget: 10 * time.Second}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(h.WrapListener(ln)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = h.Shutdown(ctx)
		h.Close()
	})

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := ws.ReadMessage(); err != nil { // the challenge
		t.Fatal(err)
	}
	connect := `{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,` +
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":"t"}}}`
	if err := ws.WriteMessage(websocket.TextMessage, []byte(connect)); err != nil {
		t.Fatal(err)
	}
	sizes := []int{60000, 40000, 33000, 100, 65536}
	for _, n := range sizes {
		if err := ws.WriteMessage(websocket.BinaryMessage, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}

	// The frames queued, and what their lease holds.
	var held, reserved, queued int
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.group.mu.Lock()
		var c *conn
		for x := range h.group.handshakes {
			c = x
		}
		h.group.mu.Unlock()
		if c != nil {
			c.mu.Lock()
			queued, held = len(c.queue), 0
			for _, f := range c.queue {
				held += cap(f.data)
			}
			c.mu.Unlock()
			reserved = int(c.lease.Bytes())
			if queued == 1+len(sizes) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d frames queued; want %d", queued, 1+len(sizes))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if reserved < held {
		t.Errorf("frames held %d bytes of buffers; %d reserved in limits.preauth_bytes", held, reserved)
	}
	var length int
	for _, n := range sizes {
		length += n
	}
	length += len(connect)
	if slack := held - length; slack > length/8 {
		t.Errorf("frames of %d bytes held %d bytes of buffers; want at most 1/8 more", length, held)
	}
	t.Logf("frames %d bytes, buffers %d, reserved %d", length, held, reserved)
}
