package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// The bad-input table: what holdfast answers to broken clients and broken
// gateways, at every phase (HTTP, before hello-ok, after hello-ok, upstream
// misbehaviour). Each row states the status or close code the client gets,
// and afterwards nothing may stay open: holdfast's goroutines back to what
// they were before the row, no upstream socket in its handshake, no
// session, and the gateway's unauthenticated sockets back to zero.

// scripted is an upstream whose behaviour a row scripts. It counts the
// connections it has open.
type scripted struct {
	ln   net.Listener
	live interface{ Load() int64 } // connections open on its side
}

// liveCount reads a count through a function.
type liveCount func() int64

func (f liveCount) Load() int64 { return f() }

// startScriptedTCP serves raw TCP: handle runs per connection, which is
// closed when it returns.
func startScriptedTCP(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) *scripted {
	t.Helper()
	s := testkit.ServeTCP(t, handle)
	return &scripted{ln: s.Listener(), live: liveCount(s.Live)}
}

// startScriptedWS serves WebSocket upgrades (and /startupz: started);
// session runs per socket, which is closed when it returns.
func startScriptedWS(t *testing.T, session func(ws *websocket.Conn)) *scripted {
	t.Helper()
	g := testkit.StartGateway(t, testkit.GatewayConfig{NoChallenge: true, Session: func(ws *websocket.Conn, _ []byte, _ *http.Request) {
		session(ws)
	}})
	return &scripted{ln: g.Listener(), live: liveCount(g.Live)}
}

func (s *scripted) addr() string { return s.ln.Addr().String() }

// readUntilEOF reads and discards until the peer closes.
func readUntilEOF(c net.Conn, _ *bufio.Reader) { _, _ = io.Copy(io.Discard, c) }

// drainWS reads until the socket fails: the peer closed it.
func drainWS(ws *websocket.Conn) {
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return
		}
	}
}

const challengeFrame = testkit.ChallengeFrame

// challengeThen sends a challenge, reads the connect, then runs rest.
func challengeThen(rest func(ws *websocket.Conn)) func(ws *websocket.Conn) {
	return func(ws *websocket.Conn) {
		_ = ws.WriteMessage(websocket.TextMessage, []byte(challengeFrame))
		if _, _, err := ws.ReadMessage(); err != nil {
			return
		}
		rest(ws)
	}
}

// badEnv is what a row works with.
type badEnv struct {
	t  *testing.T
	hs *harness
	gw *fakegw.Gateway // the upstream, or
	up *scripted       // this one
}

func (e *badEnv) host() string { return strings.TrimPrefix(e.hs.url, "ws://") }

// http sends raw bytes and returns the response status as "HTTP n", or
// "closed" when the connection ended without one.
func (e *badEnv) http(raw string) string {
	c := dialTCP(e.t, e.hs.url)
	defer c.c.Close()
	c.send([]byte(raw))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return "closed"
	}
	resp.Body.Close()
	return fmt.Sprintf("HTTP %d", resp.StatusCode)
}

// upgrade dials with hdr: "HTTP n" when refused, else the client.
func (e *badEnv) upgrade(hdr http.Header) (*rawClient, string) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(e.hs.url, hdr)
	if err != nil {
		if resp == nil {
			return nil, "dial: " + err.Error()
		}
		resp.Body.Close()
		return nil, fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	e.t.Cleanup(func() { ws.Close() })
	ws.SetReadLimit(64 << 20)
	return &rawClient{t: e.t, ws: ws}, ""
}

// end reads until the socket ends: "hello-ok" (after which the client
// closes 1000 and waits for the echo), "close n", or "closed without a
// close frame".
func end(c *rawClient) string {
	_ = c.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return fmt.Sprintf("close %d", ce.Code)
			}
			return "closed without a close frame: " + err.Error()
		}
		if bytes.Contains(data, []byte(`"hello-ok"`)) {
			goodbye(c)
			return "hello-ok"
		}
	}
}

// goodbye closes a spliced client properly: close frame, echo, socket.
func goodbye(c *rawClient) {
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			break
		}
	}
	c.ws.Close()
}

// connectAfterChallenge upgrades, reads the challenge and sends frame.
func (e *badEnv) connectAfterChallenge(typ int, frame []byte) *rawClient {
	c, refused := e.upgrade(nil)
	if c == nil {
		e.t.Fatalf("upgrade: %s", refused)
	}
	c.read()
	c.write(typ, frame)
	return c
}

// helloThen completes a token-only handshake, then runs then.
func (e *badEnv) helloThen(then func(c *rawClient) string) string {
	c, refused := e.upgrade(nil)
	if c == nil {
		return refused
	}
	c.handshake()
	return then(c)
}

// rawFrame is a client frame with the given first byte (FIN, RSV, opcode),
// masked or not.
func rawFrame(b0 byte, payload []byte, masked bool) []byte {
	if !masked {
		return testkit.AppendFrame(nil, b0, payload, nil)
	}
	return testkit.AppendFrame(nil, b0, payload, &[4]byte{9, 8, 7, 6})
}

// writeRaw writes bytes below gorilla, on the client's socket.
func writeRaw(c *rawClient, b []byte) {
	_, _ = c.ws.NetConn().Write(b)
}

// deviceConnect is a connect with a device proof: holdfast holds it until
// the gateway has started (the proof is not checked here).
var deviceConnect = []byte(`{"type":"req","id":"d1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,` +
	`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},` +
	`"device":{"id":"x","publicKey":"x","signature":"x","signedAt":1,"nonce":"x"}}}`)

type badRow struct {
	phase, name string
	// Upstream: gw (a fake gateway, the default) or up (scripted).
	gw    *fakegw.Config
	up    func(t *testing.T) *scripted
	tweak func(*proxy.Config)
	wrap  func(net.Listener) net.Listener
	do    func(e *badEnv) string
	want  string
}

// fastFail keeps rows about unreachable or broken gateways short.
func fastFail(c *proxy.Config) {
	c.Budget = time.Second
	c.DialTimeout = 300 * time.Millisecond
	c.AnswerTimeout = 300 * time.Millisecond
	c.LateDialMax = -1
}

func badInputRows() []badRow {
	// The connects a row's scripted gateway received, one counter a row.
	var replays, lateConnects atomic.Int64
	ready := &fakegw.Config{Token: token}
	upgradeWith := func(extra string) func(e *badEnv) string {
		return func(e *badEnv) string {
			return e.http("GET / HTTP/1.1\r\nHost: " + e.host() + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + extra + "\r\n")
		}
	}
	firstFrame := func(typ int, frame []byte) func(e *badEnv) string {
		return func(e *badEnv) string { return end(e.connectAfterChallenge(typ, frame)) }
	}
	validKey := "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	trusted := func(c *proxy.Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} }
	origin := http.Header{"Origin": {"http://127.0.0.1"}}
	client := func(hdr http.Header) func(e *badEnv) string {
		return func(e *badEnv) string {
			c, refused := e.upgrade(hdr)
			if c == nil {
				return refused
			}
			// The challenge, or the close that comes instead of it.
			_ = c.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
			if _, _, err := c.ws.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					return fmt.Sprintf("close %d", ce.Code)
				}
				return "closed without a close frame: " + err.Error()
			}
			c.write(websocket.TextMessage, connectWithID(`"c1"`))
			return end(c)
		}
	}
	browserUpgrade, tokenClient := client(origin), client(nil)
	return []badRow{
		// HTTP, before any upgrade.
		{phase: "http", name: "websocket version 8", gw: ready, do: upgradeWith("Sec-WebSocket-Version: 8\r\n" + validKey), want: "HTTP 400"},
		{phase: "http", name: "no websocket key", gw: ready, do: upgradeWith("Sec-WebSocket-Version: 13\r\n"), want: "HTTP 400"},
		{phase: "http", name: "key not 16 bytes", gw: ready, do: upgradeWith("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n"), want: "HTTP 400"},
		{phase: "http", name: "two keys", gw: ready, do: upgradeWith("Sec-WebSocket-Version: 13\r\n" + validKey + validKey), want: "HTTP 400"},
		{phase: "http", name: "absolute-form upgrade", gw: ready, do: func(e *badEnv) string {
			return e.http(upgradeRequest(e.host(), "http://evil.example/"))
		}, want: "HTTP 400"},
		{phase: "http", name: "absolute-form GET", gw: ready, do: func(e *badEnv) string {
			return e.http("GET http://evil.example/startupz HTTP/1.1\r\nHost: " + e.host() + "\r\n\r\n")
		}, want: "HTTP 400"},
		{phase: "http", name: "CONNECT", gw: ready, do: func(e *badEnv) string {
			return e.http("CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
		}, want: "HTTP 400"},
		{phase: "http", name: "POST upgrade (the gateway's 405)", gw: ready, do: func(e *badEnv) string {
			return e.http("POST / HTTP/1.1\r\nHost: " + e.host() + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
				"Sec-WebSocket-Version: 13\r\n" + validKey + "Content-Length: 0\r\n\r\n")
		}, want: "HTTP 405"},
		{phase: "http", name: "X-Forwarded-For 127.0.0.1 from a trusted proxy", gw: &fakegw.Config{Token: token, TrustedProxies: []string{"127.0.0.1/32"}},
			tweak: trusted, do: func(e *badEnv) string {
				return e.http(upgradeRequest(e.host(), "/", "X-Forwarded-For: 127.0.0.1\r\n"))
			}, want: "HTTP 403"},
		{phase: "http", name: "X-Real-IP from an untrusted loopback peer", gw: ready, do: func(e *badEnv) string {
			return e.http(upgradeRequest(e.host(), "/", "X-Real-IP: 203.0.113.9\r\n"))
		}, want: "HTTP 403"},
		{phase: "http", name: "header block over 1 MiB", gw: ready, do: func(e *badEnv) string {
			return e.http(upgradeRequest(e.host(), "/", "X-Big: "+strings.Repeat("a", 2<<20)+"\r\n"))
		}, want: "HTTP 431"},
		{phase: "http", name: "request line garbage", gw: ready, do: func(e *badEnv) string {
			return e.http("GARBAGE\r\n\r\n")
		}, want: "HTTP 400"},
		{phase: "http", name: "no Host header", gw: ready, do: func(e *badEnv) string {
			return e.http("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" + validKey + "\r\n")
		}, want: "HTTP 400"},

		// Before hello-ok.
		{phase: "preauth", name: "frame over 64 KiB", gw: ready, do: firstFrame(websocket.TextMessage, bytes.Repeat([]byte("x"), 65<<10)), want: "close 1009"},
		{phase: "preauth", name: "16 frames after the connect", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, challengeThen(drainWS)) // never answers
		}, do: func(e *badEnv) string {
			c := e.connectAfterChallenge(websocket.TextMessage, connectWithID(`"c1"`))
			for i := 0; i < 16; i++ {
				c.write(websocket.TextMessage, []byte(`{"type":"req","id":"x","method":"health"}`))
			}
			return end(c)
		}, want: "close 1008"},
		{phase: "preauth", name: "invalid JSON (the gateway's 1000)", gw: ready, do: firstFrame(websocket.TextMessage, []byte(`{"type":`)), want: "close 1000"},
		{phase: "preauth", name: "first request not a connect", gw: ready, do: firstFrame(websocket.TextMessage, []byte(`{"type":"req","id":"x","method":"health"}`)), want: "close 1008"},
		{phase: "preauth", name: "connect params fail the schema", gw: ready, do: firstFrame(websocket.TextMessage,
			[]byte(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,"client":{"id":"nobody","version":"1","platform":"linux","mode":"cli"}}}`)), want: "close 1008"},
		{phase: "preauth", name: "wrong token", gw: &fakegw.Config{Token: "another-token"}, do: firstFrame(websocket.TextMessage, connectWithID(`"c1"`)), want: "close 1008"},
		{phase: "preauth", name: "tYpe instead of type", gw: ready, do: firstFrame(websocket.TextMessage,
			bytes.Replace(connectWithID(`"c1"`), []byte(`"type"`), []byte(`"tYpe"`), 1)), want: "close 1008"},
		{phase: "preauth", name: "connect id a number", gw: ready, do: firstFrame(websocket.TextMessage, connectWithID(`7`)), want: "close 1008"},
		{phase: "preauth", name: "connect in a binary frame", gw: ready, do: firstFrame(websocket.BinaryMessage, connectWithID(`"c1"`)), want: "hello-ok"},
		{phase: "preauth", name: "connect id with escapes", gw: ready, do: firstFrame(websocket.TextMessage, connectWithID(`"caf\u00e9\/\u003c"`)), want: "hello-ok"},
		{phase: "preauth", name: "fragmented connect", gw: ready, do: func(e *badEnv) string {
			c, _ := e.upgrade(nil)
			c.read()
			f := connectWithID(`"c1"`)
			writeRaw(c, rawFrame(0x01, f[:10], true))
			writeRaw(c, rawFrame(0x00, f[10:40], true))
			writeRaw(c, rawFrame(0x80, f[40:], true))
			return end(c)
		}, want: "hello-ok"},
		{phase: "preauth", name: "frames in the upgrade packet", gw: ready, do: func(e *badEnv) string {
			c := dialTCP(e.t, e.hs.url)
			defer c.c.Close()
			c.send(append([]byte(upgradeRequest(e.host(), "/")), maskedFrame(1, connectWithID(`"c1"`))...))
			if resp := c.response(); resp.StatusCode != http.StatusSwitchingProtocols {
				return fmt.Sprintf("HTTP %d", resp.StatusCode)
			}
			for i := 0; i < 5; i++ {
				if op, data := c.frame(); op == 8 {
					return fmt.Sprintf("close %d", binary.BigEndian.Uint16(data))
				} else if bytes.Contains(data, []byte(`"hello-ok"`)) {
					c.send(maskedFrame(8, []byte{0x03, 0xe8}))
					return "hello-ok"
				}
			}
			return "no hello-ok"
		}, want: "hello-ok"},
		{phase: "preauth", name: "ping before the connect", gw: ready, do: func(e *badEnv) string {
			c, _ := e.upgrade(nil)
			c.read()
			_ = c.ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second))
			c.write(websocket.TextMessage, connectWithID(`"c1"`))
			return end(c)
		}, want: "hello-ok"},
		{phase: "preauth", name: "unmasked frame", gw: ready, do: func(e *badEnv) string {
			c, _ := e.upgrade(nil)
			c.read()
			writeRaw(c, rawFrame(0x81, connectWithID(`"c1"`), false))
			return end(c)
		}, want: "close 1002"},
		{phase: "preauth", name: "reserved opcode", gw: ready, do: func(e *badEnv) string {
			c, _ := e.upgrade(nil)
			c.read()
			writeRaw(c, rawFrame(0x83, []byte("x"), true))
			return end(c)
		}, want: "close 1002"},
		{phase: "preauth", name: "ping over 125 bytes", gw: ready, do: func(e *badEnv) string {
			c, _ := e.upgrade(nil)
			c.read()
			writeRaw(c, rawFrame(0x89, make([]byte, 200), true))
			return end(c)
		}, want: "close 1002"},
		{phase: "preauth", name: "RSV bit set", gw: ready, do: func(e *badEnv) string {
			c, _ := e.upgrade(nil)
			c.read()
			writeRaw(c, rawFrame(0xC1, connectWithID(`"c1"`), true))
			return end(c)
		}, want: "close 1002"},
		{phase: "preauth", name: "no connect before the pre-auth timer", gw: &fakegw.Config{Token: token, PreauthTimeout: 2 * time.Second},
			tweak: func(c *proxy.Config) { c.PreauthTimeout = 2 * time.Second; c.HoldMargin = 1500 * time.Millisecond },
			do: func(e *badEnv) string {
				c, _ := e.upgrade(nil)
				c.read()
				return end(c)
			}, want: "close 1008"},
		{phase: "preauth", name: "client leaves after the challenge", gw: ready, do: func(e *badEnv) string {
			c, _ := e.upgrade(nil)
			c.read()
			c.ws.NetConn().Close()
			return "left"
		}, want: "left"},
		{phase: "preauth", name: "client leaves while its connect is held", gw: &fakegw.Config{Token: token, StartupWindow: time.Hour}, do: func(e *badEnv) string {
			c := e.connectAfterChallenge(websocket.TextMessage, deviceConnect)
			e.hs.waitMetric(1, "holdfast_connect_holds_total")
			c.ws.NetConn().Close()
			return "left"
		}, want: "left"},
		{phase: "upstream", name: "stops while a signed connect is held", gw: &fakegw.Config{Token: token, StartupWindow: time.Hour}, do: func(e *badEnv) string {
			c := e.connectAfterChallenge(websocket.TextMessage, deviceConnect)
			e.hs.waitMetric(1, "holdfast_connect_holds_total")
			start := time.Now()
			e.gw.Stop()
			got := end(c)
			if d := time.Since(start); d > time.Second {
				return fmt.Sprintf("%s after %v", got, d) // told when its hold would have ended, not at once
			}
			return got
		}, want: "close 1013"},
		{phase: "preauth", name: "connect during the whole budget's startup window", gw: &fakegw.Config{Token: token, StartupWindow: time.Hour},
			tweak: func(c *proxy.Config) { c.Budget = time.Second; c.LateDialMax = -1 }, do: tokenClient, want: "close 1013"},

		// After hello-ok.
		{phase: "spliced", name: "first message after hello-ok over policy.maxPayload (2 MiB, 1 MiB)", gw: &fakegw.Config{Token: token, MaxPayload: 1 << 20}, do: func(e *badEnv) string {
			return e.helloThen(func(c *rawClient) string {
				go func() { _ = c.ws.WriteMessage(websocket.BinaryMessage, make([]byte, 2<<20)) }()
				return end(c)
			})
		}, want: "close 1009"},
		{phase: "spliced", name: "a second connect (the gateway's INVALID_REQUEST)", gw: ready, do: func(e *badEnv) string {
			return e.helloThen(func(c *rawClient) string {
				c.write(websocket.TextMessage, connectWithID(`"c2"`))
				for {
					_, data := c.read()
					if bytes.Contains(data, []byte(`"id":"c2"`)) {
						goodbye(c)
						if bytes.Contains(data, []byte(`"INVALID_REQUEST"`)) {
							return "INVALID_REQUEST"
						}
						return string(data)
					}
				}
			})
		}, want: "INVALID_REQUEST"},
		{phase: "spliced", name: "unmasked frame", gw: ready, do: func(e *badEnv) string {
			return e.helloThen(func(c *rawClient) string {
				writeRaw(c, rawFrame(0x81, []byte(`{}`), false))
				return end(c)
			})
		}, want: "close 1002"},
		{phase: "spliced", name: "ping over 125 bytes", gw: ready, do: func(e *badEnv) string {
			return e.helloThen(func(c *rawClient) string {
				writeRaw(c, rawFrame(0x89, make([]byte, 126), true))
				return end(c)
			})
		}, want: "close 1002"},
		{phase: "spliced", name: "continuation without a start", gw: ready, do: func(e *badEnv) string {
			return e.helloThen(func(c *rawClient) string {
				writeRaw(c, rawFrame(0x80, []byte("x"), true))
				return end(c)
			})
		}, want: "close 1002"},
		{phase: "spliced", name: "client vanishes", gw: ready, do: func(e *badEnv) string {
			return e.helloThen(func(c *rawClient) string {
				c.ws.NetConn().Close()
				return "left"
			})
		}, want: "left"},

		// Upstream misbehaviour.
		{phase: "upstream", name: "not listening, browser client", up: func(t *testing.T) *scripted {
			s := startScriptedTCP(t, readUntilEOF)
			s.ln.Close()
			return s
		}, tweak: fastFail, do: browserUpgrade, want: "HTTP 503"},
		{phase: "upstream", name: "not listening, late dial", up: func(t *testing.T) *scripted {
			s := startScriptedTCP(t, readUntilEOF)
			s.ln.Close()
			return s
		}, tweak: func(c *proxy.Config) { fastFail(c); c.LateDialMax = 300 * time.Millisecond }, do: tokenClient, want: "close 1013"},
		{phase: "upstream", name: "accepts TCP, never answers", up: func(t *testing.T) *scripted {
			return startScriptedTCP(t, readUntilEOF)
		}, tweak: fastFail, do: browserUpgrade, want: "HTTP 503"},
		{phase: "upstream", name: "answers the upgrade with 200", up: func(t *testing.T) *scripted {
			return startScriptedTCP(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err == nil {
					_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"))
				}
			})
		}, tweak: fastFail, do: browserUpgrade, want: "HTTP 502"},
		{phase: "upstream", name: "answers 101 with a wrong accept key", up: func(t *testing.T) *scripted {
			return startScriptedTCP(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err == nil {
					_, _ = c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n"))
				}
			})
		}, tweak: fastFail, do: browserUpgrade, want: "HTTP 502"},
		{phase: "upstream", name: "answers with bytes that are not HTTP", up: func(t *testing.T) *scripted {
			return startScriptedTCP(t, func(c net.Conn, br *bufio.Reader) {
				_, _ = c.Write([]byte("\x00\xff\x13garbage\r\n\r\n"))
			})
		}, tweak: fastFail, do: browserUpgrade, want: "HTTP 503"},
		{phase: "upstream", name: "upgrades, never sends a challenge", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, drainWS)
		}, tweak: fastFail, do: browserUpgrade, want: "HTTP 503"},
		{phase: "upstream", name: "first frame not a challenge", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, func(ws *websocket.Conn) {
				_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"event","event":"tick","payload":{}}`))
				drainWS(ws)
			})
		}, tweak: fastFail, do: browserUpgrade, want: "HTTP 503"},
		{phase: "upstream", name: "challenge with a blank nonce", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, func(ws *websocket.Conn) {
				_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"event","event":"connect.challenge","payload":{"nonce":" "}}`))
				drainWS(ws)
			})
		}, tweak: fastFail, do: browserUpgrade, want: "HTTP 503"},
		{phase: "upstream", name: "closes 1011 on the connect", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, challengeThen(func(ws *websocket.Conn) {
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1011, "boom"), time.Now().Add(time.Second))
				drainWS(ws)
			}))
		}, tweak: fastFail, do: tokenClient, want: "close 1011"},
		{phase: "upstream", name: "never answers the connect", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, challengeThen(drainWS))
		}, tweak: fastFail, do: tokenClient, want: "close 1013"},
		{phase: "upstream", name: "drops TCP after the connect", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, challengeThen(func(ws *websocket.Conn) {}))
		}, tweak: fastFail, do: tokenClient, want: "close 1013"},
		{phase: "upstream", name: "drops TCP after every connect: the replays are capped", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, challengeThen(func(ws *websocket.Conn) { replays.Add(1) }))
		}, tweak: func(c *proxy.Config) { fastFail(c); c.Budget = 5 * time.Second }, do: func(e *badEnv) string {
			replays.Store(0)
			got := client(nil)(e)
			if n := replays.Load(); n > 5 {
				return fmt.Sprintf("%s after %d connects", got, n)
			}
			return got + ", at most 5 connects"
		}, want: "close 1013, at most 5 connects"},
		{phase: "upstream", name: "answers the connect late, within the budget", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, challengeThen(func(ws *websocket.Conn) {
				lateConnects.Add(1)
				time.Sleep(1200 * time.Millisecond)
				_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","protocol":4}}`))
				drainWS(ws)
			}))
		}, tweak: func(c *proxy.Config) { fastFail(c); c.Budget = 6 * time.Second }, do: func(e *badEnv) string {
			lateConnects.Store(0)
			got := client(nil)(e)
			return fmt.Sprintf("%s, %d connect(s)", got, lateConnects.Load())
		}, want: "hello-ok, 1 connect(s)"},
		{phase: "upstream", name: "17 frames before answering", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, challengeThen(func(ws *websocket.Conn) {
				for i := 0; i < 17; i++ {
					_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"event","event":"tick","payload":{}}`))
				}
				drainWS(ws)
			}))
		}, tweak: fastFail, do: tokenClient, want: "close 1013"},
		{phase: "upstream", name: "frame over 4 MiB before answering", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, challengeThen(func(ws *websocket.Conn) {
				_ = ws.WriteMessage(websocket.TextMessage, make([]byte, 5<<20))
				drainWS(ws)
			}))
		}, tweak: fastFail, do: tokenClient, want: "close 1013"},
		{phase: "upstream", name: "refuses a remote client with 403", gw: ready, wrap: asRemote("203.0.113.7"), do: browserUpgrade, want: "HTTP 403"},
		{phase: "upstream", name: "stops after hello-ok (1012)", gw: ready, do: func(e *badEnv) string {
			return e.helloThen(func(c *rawClient) string {
				go e.gw.Stop()
				return end(c)
			})
		}, want: "close 1012"},
		{phase: "upstream", name: "vanishes after hello-ok", up: func(t *testing.T) *scripted {
			return startScriptedWS(t, challengeThen(func(ws *websocket.Conn) {
				_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","protocol":4}}`))
				ws.NetConn().Close()
			}))
		}, do: func(e *badEnv) string {
			return e.helloThen(func(c *rawClient) string { return end(c) })
		}, want: "close 1011"},
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	rows := badInputRows()
	if len(rows) < 30 {
		t.Fatalf("%d rows; the table needs at least 30", len(rows))
	}
	for _, r := range rows {
		t.Run(r.phase+"/"+r.name, func(t *testing.T) {
			t.Parallel()
			testkit.Prompt(t)
			e := &badEnv{t: t}
			var addr string
			if r.up != nil {
				e.up = r.up(t)
				addr = e.up.addr()
			} else {
				e.gw = startGateway(t, *r.gw)
				addr = e.gw.Addr()
			}
			e.hs = startProxy(t, addr, r.tweak, r.wrap)
			base := e.hs.goroutines()
			start := time.Now()
			if got := r.do(e); got != r.want {
				t.Errorf("got %s; want %s", got, r.want)
			}
			t.Logf("%s after %v", r.want, time.Since(start).Round(time.Millisecond))
			e.waitQuiet(base)
		})
	}
}

// waitQuiet waits until nothing the row opened is left: holdfast's
// goroutines back to base, no upstream socket in its handshake, no
// session, and the upstream's unauthenticated sockets closed.
func (e *badEnv) waitQuiet(base int) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := e.hs.goroutines()
		pending := e.hs.metric("holdfast_upstream_handshakes_in_flight")
		sessions := e.hs.metric("holdfast_sessions_active")
		var upstream int64
		if e.gw != nil {
			upstream = int64(e.gw.PreauthSockets())
		} else {
			upstream = e.up.live.Load()
		}
		if g <= base && pending == 0 && sessions == 0 && upstream == 0 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			e.t.Fatalf("still open: %d proxy goroutines (base %d), %v upstream handshakes, %v sessions, %d upstream sockets\n%s",
				g, base, pending, sessions, upstream, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
