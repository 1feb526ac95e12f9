package proxy

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/proxy/internal/forwarded"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// answerUpgrade serves one connection on a fresh listener: it reads the
// upgrade request, hands it to got, and writes answer(accept), where
// accept is the Sec-WebSocket-Accept that completes the request.
func answerUpgrade(t *testing.T, answer func(accept string) string, got chan<- *http.Request) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		if got != nil {
			got <- req
		}
		sum := sha1.Sum([]byte(req.Header.Get("Sec-Websocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		_, _ = io.WriteString(c, answer(base64.StdEncoding.EncodeToString(sum[:])))
		_, _ = io.Copy(io.Discard, c)
	}()
	return "ws://" + ln.Addr().String() + "/chat?x=1"
}

func newTestHandler(t *testing.T, upstream string) *Handler {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Upstream: u}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// holdfast's own upgrade answer check judges a 101 as gorilla's dialer
// did (status, Upgrade and Connection tokens in any case, the accept key),
// and refuses one that names an extension, which holdfast never offers
// (RFC 6455 §4.1): each bad 101 is holdfast's 502 (a broken *httpError);
// a refusal is the gateway's own answer, body and all.
func TestOpenUpstreamJudgesTheAnswer(t *testing.T) {
	t.Parallel()
	const sw = "HTTP/1.1 101 Switching Protocols\r\n"
	for _, tc := range []struct {
		name     string
		answer   func(accept string) string
		status   int // 0: upgraded
		protocol string
		body     string
	}{
		{name: "valid", answer: func(a string) string {
			return sw + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\n\r\n"
		}},
		{name: "tokens in any case, in lists", answer: func(a string) string {
			return sw + "upgrade: h2c, WebSocket\r\nconnection: keep-alive, UPGRADE\r\nsec-websocket-accept:  " + a + " \r\n\r\n"
		}},
		{name: "subprotocol", answer: func(a string) string {
			return sw + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\nSec-WebSocket-Protocol: p1\r\n\r\n"
		}, protocol: "p1"},
		{name: "HTTP/1.0 status line", answer: func(a string) string {
			return "HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\n\r\n"
		}},
		{name: "wrong accept", answer: func(string) string {
			return sw + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n"
		}, status: http.StatusBadGateway},
		{name: "no Upgrade", answer: func(a string) string {
			return sw + "Connection: Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\n\r\n"
		}, status: http.StatusBadGateway},
		{name: "Upgrade not websocket", answer: func(a string) string {
			return sw + "Upgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\n\r\n"
		}, status: http.StatusBadGateway},
		{name: "no Connection upgrade", answer: func(a string) string {
			return sw + "Upgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Accept: " + a + "\r\n\r\n"
		}, status: http.StatusBadGateway},
		{name: "an extension nobody offered", answer: func(a string) string {
			return sw + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n"
		}, status: http.StatusBadGateway},
		{name: "folded header line", answer: func(a string) string {
			return sw + "Upgrade: websocket\r\nConnection:\r\n Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\n\r\n"
		}},
		{name: "200", answer: func(string) string {
			return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
		}, status: http.StatusBadGateway},
		{name: "403 chunked", answer: func(string) string {
			return "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5\r\n{\"a\":\r\n3\r\n1}\n\r\n0\r\n\r\n"
		}, status: http.StatusForbidden, body: "{\"a\":1}\n"},
		{name: "503", answer: func(string) string {
			return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
		}, status: http.StatusServiceUnavailable, body: "busy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := answerUpgrade(t, tc.answer, nil)
			h := newTestHandler(t, target)
			ws, protocol, err := h.openUpstream(context.Background(), target, http.Header{}, time.Now().Add(5*time.Second))
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("not upgraded: %v", err)
				}
				ws.Close()
				if protocol != tc.protocol {
					t.Errorf("subprotocol %q; want %q", protocol, tc.protocol)
				}
				return
			}
			if err == nil {
				ws.Close()
				t.Fatal("upgraded")
			}
			var he *httpError
			if !errors.As(err, &he) {
				t.Fatalf("error %v is not an HTTP answer", err)
			}
			if he.status != tc.status || he.broken != (tc.status == http.StatusBadGateway) {
				t.Errorf("status %d (broken %v); want %d", he.status, he.broken, tc.status)
			}
			if tc.body != "" && string(he.body) != tc.body {
				t.Errorf("body %q; want %q", he.body, tc.body)
			}
		})
	}
}

// The upgrade request carries the client's path and query, its Host, the
// WebSocket handshake's own headers once each, and every header
// upstreamHeader kept, values intact.
func TestOpenUpstreamRequest(t *testing.T) {
	t.Parallel()
	got := make(chan *http.Request, 1)
	target := answerUpgrade(t, func(a string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\n\r\n"
	}, got)
	h := newTestHandler(t, target)
	r, err := http.NewRequest("GET", "http://gw.example:8080/chat?x=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header = http.Header{
		"Origin":                 {"https://ui.example"},
		"Cookie":                 {"a=1", "b=2"},
		"Sec-Websocket-Protocol": {"p1, p2"},
		"Sec-Websocket-Key":      {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Version":  {"13"},
		"Connection":             {"Upgrade, X-Hop"},
		"Upgrade":                {"websocket"},
		"X-Hop":                  {"1"},
		"Content-Length":         {"0"},
	}
	hdr := forwarded.UpstreamHeader(r)
	ws, _, err := h.openUpstream(context.Background(), target, hdr, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ws.Close()
	req := <-got
	if req.RequestURI != "/chat?x=1" || req.Host != "gw.example:8080" {
		t.Errorf("request %s, Host %s", req.RequestURI, req.Host)
	}
	for k, want := range map[string][]string{
		"Origin":                 {"https://ui.example"},
		"Cookie":                 {"a=1", "b=2"},
		"Sec-Websocket-Protocol": {"p1, p2"},
		"Sec-Websocket-Version":  {"13"},
		"Upgrade":                {"websocket"},
		"Connection":             {"Upgrade"},
		"X-Hop":                  nil,
		"Content-Length":         nil,
		"User-Agent":             nil,
	} {
		if g := req.Header.Values(k); strings.Join(g, "|") != strings.Join(want, "|") {
			t.Errorf("%s: %q; want %q", k, g, want)
		}
	}
	if k := req.Header.Values("Sec-Websocket-Key"); len(k) != 1 || k[0] == "dGhlIHNhbXBsZSBub25jZQ==" {
		t.Errorf("Sec-WebSocket-Key %q; want one of holdfast's own", k)
	}
}

// A 101 and the frame behind it, in one packet: the frame is read as the
// connection's first.
func TestOpenUpstreamKeepsTheFrameBehindThe101(t *testing.T) {
	t.Parallel()
	ws := openUpgraded(t, "\x81\x05hello")
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, data, err := ws.ReadMessage(1<<20, nil)
	if err != nil || mt != websocket.TextMessage || string(data) != "hello" {
		t.Fatalf("first message %d %q, %v", mt, data, err)
	}
}

// openUpgraded opens the upstream leg to a server that answers the upgrade
// with a 101 followed by after, and closes it when the test ends.
func openUpgraded(t *testing.T, after string) *wire.Conn {
	t.Helper()
	target := answerUpgrade(t, func(a string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + a + "\r\n\r\n" + after
	}, nil)
	h := newTestHandler(t, target)
	ws, _, err := h.openUpstream(context.Background(), target, http.Header{}, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}
