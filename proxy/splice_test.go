package proxy_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testcert"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// rawClient is a WebSocket client that speaks the handshake by hand, for
// tests that need control over every frame.
type rawClient struct {
	t  testing.TB
	ws *websocket.Conn
}

func dialRaw(t testing.TB, url string, hdr http.Header) *rawClient {
	t.Helper()
	return &rawClient{t: t, ws: testkit.DialRaw(t, url, hdr)}
}

func (c *rawClient) read() (int, []byte) {
	c.t.Helper()
	return testkit.Read(c.t, c.ws, 10*time.Second)
}

func (c *rawClient) write(typ int, data []byte) {
	c.t.Helper()
	testkit.Write(c.t, c.ws, typ, data)
}

// handshake reads the challenge, sends a token-only connect followed at
// once by pipelined, then reads up to hello-ok.
func (c *rawClient) handshake(pipelined ...[]byte) {
	c.t.Helper()
	_, ch := c.read()
	if !bytes.Contains(ch, []byte(`"connect.challenge"`)) {
		c.t.Fatalf("first frame %s; want connect.challenge", ch)
	}
	connect := fmt.Sprintf(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":%q}}}`, token)
	c.write(websocket.TextMessage, []byte(connect))
	for _, p := range pipelined {
		typ := websocket.TextMessage
		if !json.Valid(p) {
			typ = websocket.BinaryMessage
		}
		c.write(typ, p)
	}
	_, res := c.read()
	if !bytes.Contains(res, []byte(`"hello-ok"`)) {
		c.t.Fatalf("answer %s; want hello-ok", res)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// After hello-ok: pipelined frames, text and binary, a 10 MiB message and
// ping/pong cross holdfast byte-identical and in order.
func TestSpliceRelaysFrames(t *testing.T) {
	t.Parallel()
	testkit.Heavy(t)
	gw := startGateway(t, fakegw.Config{Token: token, Echo: true})
	hs := startProxy(t, gw.Addr(), nil, nil)
	c := dialRaw(t, hs.url, nil)

	pipelined := [][]byte{
		[]byte(`{"type":"req","id":"p1","method":"health"}`),
		[]byte(`{"type":"req","id":"p2","method":"status"}`),
		randomBytes(t, 300), // binary
		[]byte(`{"type":"req","id":"p3","method":"health"}`),
	}
	c.handshake(pipelined...)
	for i, want := range pipelined {
		typ, got := c.read()
		wantTyp := websocket.TextMessage
		if !json.Valid(want) {
			wantTyp = websocket.BinaryMessage
		}
		if typ != wantTyp || !bytes.Equal(got, want) {
			t.Fatalf("echo %d: type %d %q; want type %d %q", i, typ, trim(got), wantTyp, trim(want))
		}
	}

	// Many messages in order, text and binary alternating.
	var sent [][]byte
	for i := range 200 {
		msg := randomBytes(t, 1+i*37%5000)
		typ := websocket.BinaryMessage
		if i%2 == 0 {
			msg = []byte(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, bytes.Repeat([]byte("x"), i)))
			typ = websocket.TextMessage
		}
		c.write(typ, msg)
		sent = append(sent, msg)
	}
	for i, want := range sent {
		if _, got := c.read(); !bytes.Equal(got, want) {
			t.Fatalf("message %d out of order or altered", i)
		}
	}

	// A 10 MiB message, streamed through.
	big := randomBytes(t, 10<<20)
	c.write(websocket.BinaryMessage, big)
	if typ, got := c.read(); typ != websocket.BinaryMessage || !bytes.Equal(got, big) {
		t.Fatalf("10 MiB message: type %d, %d bytes, equal=%v", typ, len(got), bytes.Equal(got, big))
	}

	// The gateway's close code and reason reach the client.
	gw.CloseSessions(4321, "custom reason")
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var err error
	for err == nil {
		_, _, err = c.ws.ReadMessage()
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4321 || ce.Text != "custom reason" {
		t.Fatalf("close %v; want 4321 \"custom reason\"", err)
	}
	hs.waitMetric(0, "holdfast_sessions_active")
	if got := hs.metric("holdfast_spliced_messages_total", "direction", "to_upstream"); got < 200 {
		t.Errorf("messages to upstream = %v; want ≥ 200", got)
	}
}

// Pings cross holdfast both ways: the client's ping is answered by the
// gateway, and the gateway's pings reach the client, whose pongs reach the
// gateway in time (it terminates a session that misses one).
func TestSplicePingPong(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	// The gateway ends a session whose pong has not come by its next
	// ping: 1 s leaves a client that reads every 30 ms room on a loaded
	// machine (300 ms did not, beside parallel tests).
	gw := startGateway(t, fakegw.Config{Token: token, Echo: true, PingInterval: time.Second})
	hs := startProxy(t, gw.Addr(), nil, nil)
	c := dialRaw(t, hs.url, nil)
	c.handshake()

	pong := make(chan string, 1)
	c.ws.SetPongHandler(func(s string) error { pong <- s; return nil })
	pings := make(chan string, 64)
	c.ws.SetPingHandler(func(s string) error {
		select {
		case pings <- s:
		default:
		}
		return c.ws.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
	})
	if err := c.ws.WriteControl(websocket.PingMessage, []byte("are-you-there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Reading drives the control handlers: keep a message going until the
	// pong and two of the gateway's pings (1 s apart) came through, or
	// for a deadline far beyond that on a loaded machine.
	gotPong := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && (!gotPong || len(pings) < 2); {
		c.write(websocket.TextMessage, []byte(`{"still":"alive"}`))
		if _, got := c.read(); string(got) != `{"still":"alive"}` {
			t.Fatalf("echo %q", got)
		}
		select {
		case s := <-pong:
			if s != "are-you-there" {
				t.Fatalf("pong %q; want the ping's payload", s)
			}
			gotPong = true
		default:
		}
		time.Sleep(30 * time.Millisecond)
	}
	if !gotPong {
		t.Error("no pong for the client's ping")
	}
	if len(pings) < 2 {
		t.Errorf("%d gateway pings reached the client; want ≥ 2", len(pings))
	}
}

func trim(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "…"
	}
	return string(b)
}

// startMiniUpstream is a minimal gateway on 127.0.0.1: /startupz says
// started, and each WebSocket gets a challenge, hello-ok (policy.maxPayload
// 1 MiB) in answer to its first frame, then is handed to session.
func startMiniUpstream(tb testing.TB, session func(ws *websocket.Conn)) string {
	tb.Helper()
	ln := testkit.Listen(tb)
	serveMiniUpstream(tb, ln, session)
	return ln.Addr().String()
}

// serveMiniUpstream serves the minimal gateway on ln until the test ends.
func serveMiniUpstream(tb testing.TB, ln net.Listener, session func(ws *websocket.Conn)) {
	serveScriptedGateway(tb, ln, 1<<20, nil, session)
}

// serveScriptedGateway serves a minimal protocol-4 gateway on ln until the
// test ends: /startupz says started; each WebSocket gets a challenge, its
// first frame is sent on got (if not nil and ready), hello-ok with
// policy.maxPayload answers it, then the socket is handed to session.
func serveScriptedGateway(tb testing.TB, ln net.Listener, maxPayload int, got chan<- []byte, session func(ws *websocket.Conn)) {
	testkit.StartGateway(tb, testkit.GatewayConfig{Listener: ln, Session: func(ws *websocket.Conn, connect []byte, _ *http.Request) {
		select {
		case got <- connect:
		default:
		}
		if ws.WriteMessage(websocket.TextMessage, []byte(testkit.HelloOK(testkit.RequestID(connect), maxPayload))) == nil {
			session(ws)
		}
	}})
}

// closeRecorder is a minimal upstream that records how each session ended.
// With drop set it cuts TCP right after hello-ok.
type closeRecorder struct {
	closes chan error
	drop   bool
}

func startRecorder(t *testing.T, drop bool) (*closeRecorder, string) {
	t.Helper()
	rec := &closeRecorder{closes: make(chan error, 1), drop: drop}
	addr := startMiniUpstream(t, func(ws *websocket.Conn) {
		if rec.drop {
			ws.UnderlyingConn().Close()
			return
		}
		ws.SetCloseHandler(func(int, string) error { return nil })
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				rec.closes <- err
				return
			}
		}
	})
	return rec, addr
}

func (r *closeRecorder) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.closes:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("upstream saw no end of the session")
		return nil
	}
}

// Close codes cross holdfast both ways; an end without a close frame is
// reported with a legal code, never 1005/1006 on the wire.
func TestCloseCodes(t *testing.T) {
	t.Parallel()
	t.Run("client close reaches the gateway", func(t *testing.T) {
		t.Parallel()
		rec, addr := startRecorder(t, false)
		hs := startProxy(t, addr, nil, nil)
		c := dialRaw(t, hs.url, nil)
		c.handshake()
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4002, "bye now"), time.Now().Add(time.Second))
		var ce *websocket.CloseError
		if err := rec.wait(t); !errors.As(err, &ce) || ce.Code != 4002 || ce.Text != "bye now" {
			t.Fatalf("upstream saw %v; want 4002 \"bye now\"", err)
		}
	})
	t.Run("client vanishing is 1001 upstream", func(t *testing.T) {
		t.Parallel()
		rec, addr := startRecorder(t, false)
		hs := startProxy(t, addr, nil, nil)
		c := dialRaw(t, hs.url, nil)
		c.handshake()
		c.ws.UnderlyingConn().Close()
		var ce *websocket.CloseError
		if err := rec.wait(t); !errors.As(err, &ce) || ce.Code != 1001 {
			t.Fatalf("upstream saw %v; want 1001", err)
		}
	})
	t.Run("gateway vanishing is 1011 to the client", func(t *testing.T) {
		t.Parallel()
		_, addr := startRecorder(t, true)
		hs := startProxy(t, addr, nil, nil)
		c := dialRaw(t, hs.url, nil)
		c.handshake()
		_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := c.ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 1011 {
			t.Fatalf("client saw %v; want 1011", err)
		}
	})
	t.Run("gateway shutdown is its shutdown event and 1012", func(t *testing.T) {
		t.Parallel()
		gw := startGateway(t, fakegw.Config{Token: token})
		hs := startProxy(t, gw.Addr(), nil, nil)
		c := dialRaw(t, hs.url, nil)
		c.handshake()
		go gw.Stop()
		var sawShutdown bool
		_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, data, err := c.ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != 1012 || ce.Text != "service restart" {
					t.Fatalf("close %v; want 1012 \"service restart\"", err)
				}
				break
			}
			if bytes.Contains(data, []byte(`"event":"shutdown"`)) {
				sawShutdown = true
			}
		}
		if !sawShutdown {
			t.Error("no shutdown event before the close")
		}
	})
}

// A client message over hello-ok's policy.maxPayload closes 1009.
func TestMessageOverMaxPayload(t *testing.T) {
	t.Parallel()
	_, addr := startRecorder(t, false) // its hello-ok states 1 MiB
	hs := startProxy(t, addr, nil, nil)
	c := dialRaw(t, hs.url, nil)
	c.handshake()
	go func() { _ = c.ws.WriteMessage(websocket.BinaryMessage, make([]byte, 2<<20)) }()
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig || ce.Text != "" {
		t.Fatalf("client saw %v; want 1009 with an empty reason", err)
	}
	// gorilla wrote that close, not closeLeg: the access line has it too.
	line := waitAccess(t, hs, 1)[0]
	if field(line, "client_close_sent") != "1009" || field(line, "session") != "client message over the gateway's maxPayload" {
		t.Errorf("access line %s; want client_close_sent=1009 for the message over maxPayload", line)
	}
}

// When holdfast closes a client first and reads the client to its end (here
// 1009, for a message over policy.maxPayload), the client's stream ends
// right after the close frame: a client that answers the close and then
// waits for the server to end the connection (RFC 6455 §7.1.1; browsers
// do) is not kept waiting for splice.close_grace, on ws and on wss.
func TestClosedClientStreamEndsAfterTheClose(t *testing.T) {
	t.Parallel()
	const grace = 5 * time.Second
	for _, wss := range []bool{false, true} {
		t.Run(map[bool]string{false: "ws", true: "wss"}[wss], func(t *testing.T) {
			t.Parallel()
			testkit.Prompt(t)
			_, addr := startRecorder(t, false) // its hello-ok states 1 MiB
			tweak := func(c *proxy.Config) { c.CloseGrace = grace }
			var c *rawClient
			if wss {
				hs, roots := startTLSProxy(t, addr, tweak, nil)
				c = dialTLS(t, hs.url, roots)
			} else {
				c = dialRaw(t, startProxy(t, addr, tweak, nil).url, nil)
			}
			c.handshake()
			go func() { _ = c.ws.WriteMessage(websocket.BinaryMessage, make([]byte, 2<<20)) }()
			_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			// gorilla answers the close, as a browser does, and returns it.
			_, _, err := c.ws.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
				t.Fatalf("client saw %v; want 1009", err)
			}
			closed := time.Now()
			_ = c.ws.NetConn().SetReadDeadline(time.Now().Add(2 * grace))
			n, err := io.Copy(io.Discard, c.ws.NetConn())
			if err != nil || n != 0 {
				t.Fatalf("after the close: %d bytes, %v; want the stream's end and nothing", n, err)
			}
			if waited := time.Since(closed); waited > grace/2 {
				t.Fatalf("the stream ended %v after the close frame; want at once, not after close_grace (%v)", waited.Round(time.Millisecond), grace)
			}
		})
	}
}

// A pre-auth frame over 64 KiB closes 1009, as on the gateway.
func TestPreauthFrameTooLarge(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	c := dialRaw(t, hs.url, nil)
	c.read() // challenge
	c.write(websocket.TextMessage, bytes.Repeat([]byte("x"), 70<<10))
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("client saw %v; want 1009", err)
	}
	hs.waitMetric(1, "holdfast_handshakes_total", "result", "error")
}

// A first frame that is not a connect goes to the gateway, whose answer and
// close code come back unchanged.
func TestNonConnectFirstFrame(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	c := dialRaw(t, hs.url, nil)
	c.read()
	c.write(websocket.TextMessage, []byte(`{"type":"req","id":"x","method":"health"}`))
	_, data := c.read()
	if !bytes.Contains(data, []byte("first request must be connect")) {
		t.Fatalf("answer %s; want the gateway's invalid handshake error", data)
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1008 {
		t.Fatalf("close %v; want the gateway's 1008", err)
	}
}

// A wss gateway: holdfast verifies its certificate, probes its readiness
// over HTTPS, and splices through TLS with frames batched below it.
func TestTLSUpstream(t *testing.T) {
	t.Parallel()
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	serveMiniUpstream(t, ln, echoSession)
	hs := startProxy(t, ln.Addr().String(), func(c *proxy.Config) {
		c.Upstream.Scheme = "wss"
		c.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}, nil)
	c := dialRaw(t, hs.url, nil)
	c.handshake()
	for i := range 50 {
		msg := randomBytes(t, 1+i*997%40000)
		c.write(websocket.BinaryMessage, msg)
		if _, got := c.read(); !bytes.Equal(got, msg) {
			t.Fatalf("message %d altered through TLS", i)
		}
	}
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	p, err := testcert.New("holdfast test")
	if err != nil {
		t.Fatal(err)
	}
	return p.TLS, p.Pool()
}
