package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// startEchoUpstream is a minimal gateway for benchmarks: challenge,
// hello-ok, then an echo that streams each message back without
// allocating.
func startEchoUpstream(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("/startupz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true,"status":"started"}`))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":1}}`))
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var req struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(data, &req)
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"res","id":"`+req.ID+`","ok":true,"payload":{"type":"hello-ok","protocol":4}}`))
		buf := make([]byte, 32<<10)
		for {
			typ, r, err := ws.NextReader()
			if err != nil {
				return
			}
			w, err := ws.NextWriter(typ)
			if err != nil {
				return
			}
			if _, err := io.CopyBuffer(w, r, buf); err != nil {
				return
			}
			if w.Close() != nil {
				return
			}
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		srv.Close()
	})
	return ln.Addr().String()
}

// BenchmarkSpliceEcho relays a 1 KiB text message to the gateway and back
// through a spliced session: two relayed messages per op. allocs/op covers
// holdfast, the client and the echo upstream, which allocate nothing per
// message themselves.
func BenchmarkSpliceEcho(b *testing.B) {
	addr := startEchoUpstream(b)
	hs := startProxy(b, addr, nil, nil)
	c := dialRaw(b, hs.url, nil)
	c.handshake()
	ws := c.ws

	msg := bytes.Repeat([]byte("x"), 1024)
	buf := make([]byte, 2048)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w, _ := ws.NextWriter(websocket.TextMessage)
		_, _ = w.Write(msg)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		_, r, err := ws.NextReader()
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.ReadFull(r, buf[:len(msg)])
		if n != len(msg) {
			b.Fatalf("echo of %d bytes", n)
		}
	}
}
