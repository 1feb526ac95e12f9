package proxy_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The relay over real sockets: a client that writes its frames one byte
// per packet (every header split across reads, a ping between the
// fragments of a message) gets its message echoed whole and its ping
// answered by the gateway; a 125-byte ping crosses both ways.
func TestRelayFramesSplitAcrossPackets(t *testing.T) {
	t.Parallel()
	addr := startMiniUpstream(t, echoSession)
	hs := startProxy(t, addr, nil, nil)
	c := dialRaw(t, hs.url, nil)
	c.handshake()
	pongs := make(chan string, 4)
	c.ws.SetPongHandler(func(s string) error { pongs <- s; return nil })

	ping := string(make([]byte, 125))
	stream := append(rawFrame(0x01, []byte("split "), true), rawFrame(0x89, []byte(ping), true)...)
	stream = append(stream, rawFrame(0x00, []byte("across "), true)...)
	stream = append(stream, rawFrame(0x80, []byte("packets"), true)...)
	nc := c.ws.UnderlyingConn()
	for i := range stream {
		if _, err := nc.Write(stream[i : i+1]); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			time.Sleep(time.Millisecond) // let some bytes arrive alone
		}
	}
	if _, got := c.read(); string(got) != "split across packets" {
		t.Fatalf("echo %q", got)
	}
	select {
	case s := <-pongs:
		if s != ping {
			t.Fatalf("pong of %d bytes; want the ping's 125", len(s))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong for the client's ping")
	}
	hs.waitMetric(1, "holdfast_spliced_messages_total", "direction", "to_upstream")
}

// A gateway frame that is masked breaks RFC 6455 §5.1: holdfast closes the
// gateway leg 1002 and tells the client 1011.
func TestGatewayMaskedFrameAfterHelloOK(t *testing.T) {
	t.Parallel()
	got := make(chan error, 1)
	addr := startMiniUpstream(t, func(ws *websocket.Conn) {
		_, _ = ws.UnderlyingConn().Write(rawFrame(0x81, []byte(`{"type":"event"}`), true))
		ws.SetCloseHandler(func(int, string) error { return nil })
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := ws.ReadMessage()
		got <- err
	})
	hs := startProxy(t, addr, nil, nil)
	c := dialRaw(t, hs.url, nil)
	c.handshake()
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1011 {
		t.Fatalf("client got %q, %v; want close 1011", data, err)
	}
	select {
	case err := <-got:
		if !errors.As(err, &ce) || ce.Code != websocket.CloseProtocolError {
			t.Fatalf("gateway got %v; want close 1002", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the gateway saw no end")
	}
	hs.waitMetric(0, "holdfast_sessions_active")
}
