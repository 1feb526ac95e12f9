package proxy_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/gorilla/websocket"
)

// echoSession streams each message back without allocating.
func echoSession(ws *websocket.Conn) {
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
}

// BenchmarkSpliceEcho relays a 1 KiB text message to the gateway and back
// through a spliced session: two relayed messages per op. allocs/op covers
// holdfast, the client and the echo upstream, which allocate nothing per
// message themselves.
func BenchmarkSpliceEcho(b *testing.B) {
	addr := startMiniUpstream(b, echoSession)
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
