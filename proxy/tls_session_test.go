package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testcert"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// startTLSProxy runs holdfast serving wss:// in front of upstreamAddr, TLS
// terminated by holdfast itself (WrapTLSListener, as serve.go does). It
// returns the harness, whose url is wss://, and a pool that trusts
// holdfast's certificate.
// wrap, if set, wraps the 127.0.0.1 listener below TLS.
func startTLSProxy(t testing.TB, upstreamAddr string, tweak func(*proxy.Config), wrap func(net.Listener) net.Listener) (*harness, *x509.CertPool) {
	t.Helper()
	p, err := testcert.New("holdfast test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{p.TLS}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	hs := startProxyOn(t, upstreamAddr, tweak, func(h *proxy.Handler, ln net.Listener) net.Listener {
		if wrap != nil {
			ln = wrap(ln)
		}
		return h.WrapTLSListener(ln, cfg)
	})
	hs.url = "wss://" + strings.TrimPrefix(hs.url, "ws://")
	return hs, p.Pool()
}

// dialTLS opens a WebSocket to a wss:// holdfast trusting roots.
func dialTLS(t testing.TB, url string, roots *x509.CertPool) *rawClient {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: &tls.Config{RootCAs: roots}}
	return &rawClient{t: t, ws: testkit.DialWith(t, d, url, nil)}
}

// startTLSEcho runs an echoing gateway serving wss:// and returns its
// address and a pool that trusts it.
func startTLSEcho(t testing.TB) (string, *x509.CertPool) {
	t.Helper()
	p, err := testcert.New("gateway")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	serveMiniUpstream(t, ln, echoSession)
	return ln.Addr().String(), p.Pool()
}

// idleRelays waits until the spliced session of hs idles, and returns the
// stacks of its relay goroutines once each waits for its socket to be
// readable (the RawConn wait: holding no read buffer); it fails the test
// unless there are exactly two, one per direction, and none reads inside
// crypto/tls.
func idleRelays(t testing.TB, hs *harness) []string {
	t.Helper()
	return idleRelaysN(t, hs, 2)
}

// idleRelaysN is idleRelays for want relay goroutines (two per session).
func idleRelaysN(t testing.TB, hs *harness, want int) []string {
	t.Helper()
	mark := fmt.Sprintf("%q:%q", harnessLabel, hs.label)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var b strings.Builder
		if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
			t.Fatal(err)
		}
		var relays []string
		waiting := 0
		for _, rec := range goroutineRecords(b.String()) {
			if !strings.Contains(rec, mark) || !strings.Contains(rec, "wire.(*Relay).relay") {
				continue
			}
			var n int
			if _, err := fmt.Sscanf(rec, "%d @", &n); err != nil {
				t.Fatal(err)
			}
			for range n {
				relays = append(relays, rec)
			}
			if strings.Contains(rec, "net.(*rawConn).Read") && strings.Contains(rec, "runtime_pollWait") &&
				!strings.Contains(rec, "crypto/tls.(*Conn).Read") {
				waiting += n
			}
		}
		if len(relays) == want && waiting == want {
			return relays
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d relay goroutines (want %d, one per direction), %d of them waiting on readability holding no buffer:\n%s",
				len(relays), want, waiting, strings.Join(relays, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A wss session whose TLS holdfast terminates, to a wss gateway, relays
// both ways through the frame relay, TLS below the batching layer on both
// legs: frames written in one TLS record, a frame split over records and
// over TLS writes, and messages of every size arrive intact; once traffic
// stops, both relay goroutines wait for readability holding no buffer, not
// inside crypto/tls with a chunk; a close ends the session cleanly. The
// same with only one leg over TLS. Before the record layer the client leg
// over TLS was read by gorilla (no relay) and the gateway leg over TLS idled
// inside crypto/tls holding a 32 KiB chunk.
func TestTLSSessionRelaysFramesAndIdlesHoldingNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                string
		clientTLS, upstream bool
	}{
		{"wss client, wss gateway", true, true},
		{"ws client, wss gateway", false, true},
		{"wss client, ws gateway", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var addr string
			// The relays' waits are looked at: they must not park
			// (park_test.go parks wss sessions).
			tweak := func(c *proxy.Config) { c.IdleParkAfter = -1 }
			if tc.upstream {
				var pool *x509.CertPool
				addr, pool = startTLSEcho(t)
				tweak = func(c *proxy.Config) {
					c.IdleParkAfter = -1
					c.Upstream.Scheme = "wss"
					c.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
				}
			} else {
				addr = startMiniUpstream(t, echoSession)
			}
			var hs *harness
			var c *rawClient
			if tc.clientTLS {
				var roots *x509.CertPool
				hs, roots = startTLSProxy(t, addr, tweak, nil)
				c = dialTLS(t, hs.url, roots)
			} else {
				hs = startProxy(t, addr, tweak, nil)
				c = dialRaw(t, hs.url, nil)
			}
			c.handshake()

			// Messages of every size, one TLS record or many each.
			for i := range 20 {
				msg := randomBytes(t, 1+i*7919%70000)
				c.write(websocket.BinaryMessage, msg)
				if _, got := c.read(); !bytes.Equal(got, msg) {
					t.Fatalf("message %d (%d bytes) altered", i, len(msg))
				}
			}
			idleRelays(t, hs)

			// Thirty frames in one write of the client's socket: one TLS
			// record, one read of holdfast's.
			var burst []byte
			var want [][]byte
			for i := range 30 {
				m := []byte(fmt.Sprintf("burst frame %d %s", i, strings.Repeat("x", i*17)))
				want = append(want, m)
				burst = append(burst, maskedFrame(websocket.TextMessage, m)...)
			}
			nc := c.ws.NetConn()
			if _, err := nc.Write(burst); err != nil {
				t.Fatal(err)
			}
			for i, m := range want {
				if _, got := c.read(); !bytes.Equal(got, m) {
					t.Fatalf("burst frame %d: got %q, want %q", i, got, m)
				}
			}
			// One frame cut over three writes (three TLS records): its
			// header split, its payload split.
			big := randomBytes(t, 40000)
			f := maskedFrame(websocket.BinaryMessage, big)
			for _, piece := range [][]byte{f[:1], f[1:5000], f[5000:]} {
				if _, err := nc.Write(piece); err != nil {
					t.Fatal(err)
				}
			}
			if _, got := c.read(); !bytes.Equal(got, big) {
				t.Fatal("the frame split over records arrived altered")
			}
			viaTLS := 0
			for _, rec := range idleRelays(t, hs) {
				if strings.Contains(rec, "readTLS") {
					viaTLS++
				}
			}
			if want := btoi(tc.clientTLS) + btoi(tc.upstream); viaTLS != want {
				t.Fatalf("%d relays wait through a TLS leg (readTLS); want %d", viaTLS, want)
			}

			// A close ends the session: holdfast answers it and tells
			// the gateway.
			if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(5*time.Second)); err != nil {
				t.Fatal(err)
			}
			ce, err := nextClose(c.ws)
			if ce == nil || ce.Code != 1000 {
				t.Fatalf("after the client's close: %v; want close 1000 back", err)
			}
			hs.waitMetric(0, "holdfast_sessions_active")
		})
	}
}

// A TLS client that sends its connect right behind its upgrade request, in
// the same TLS record, gets hello-ok: the bytes the HTTP server read past
// the request go to the client leg's wire.Conn, read as the client's first
// frame.
func TestTLSFramesInTheUpgradeRecordAreKept(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs, roots := startTLSProxy(t, gw.Addr(), nil, nil)
	host := strings.TrimPrefix(hs.url, "wss://")
	tc, err := tls.Dial("tcp", host, &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	_ = tc.SetDeadline(time.Now().Add(15 * time.Second))
	c := &rawConn{t: t, c: tc, br: bufio.NewReader(tc)}
	connect := fmt.Sprintf(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":%q}}}`, token)
	c.send(append([]byte(upgradeRequest(host, "/")), maskedFrame(1, []byte(connect))...))
	if resp := c.response(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("HTTP %d; want 101", resp.StatusCode)
	}
	for range 5 {
		if _, data := c.frame(); bytes.Contains(data, []byte(`"hello-ok"`)) {
			return
		}
	}
	t.Fatal("no hello-ok")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// The client leg's TLS listener still hands net/http a *tls.Conn: a remote
// wss client reaches the gateway with X-Forwarded-Proto https.
func TestTLSClientForwardedAsHTTPS(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, TrustedProxies: []string{"127.0.0.1/32"}})
	hs, roots := startTLSProxy(t, gw.Addr(), nil, asRemote("203.0.113.7"))
	c := dialTLS(t, hs.url, roots)
	c.handshake()
	if got := lastUpgrade(t, gw).Get("X-Forwarded-Proto"); got != "https" {
		t.Fatalf("X-Forwarded-Proto %q; want https", got)
	}
}

// Frames past what the HTTP server's reader took of the upgrade's TLS
// record stay in crypto/tls, decrypted, when the hijack hands the socket
// over: the client leg must take them before it waits on the socket, or a
// message there would wait for the client's next bytes. Here the connect
// ends exactly where the server's 4 KiB reader stopped (with or without
// the byte its background read took), and a message follows in the same
// record: its echo must come back.
func TestTLSUpgradeRecordBeyondTheServersReader(t *testing.T) {
	t.Parallel()
	addr := startMiniUpstream(t, echoSession)
	hs, roots := startTLSProxy(t, addr, nil, nil)
	host := strings.TrimPrefix(hs.url, "wss://")
	for _, end := range []int{4096, 4097} {
		t.Run(fmt.Sprint(end), func(t *testing.T) {
			// Full-size records from the first write, as OpenSSL (Node) writes
			// them; Go's client starts with records of about 1 KB.
			tc, err := tls.Dial("tcp", host, &tls.Config{RootCAs: roots, DynamicRecordSizingDisabled: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tc.Close() })
			_ = tc.SetDeadline(time.Now().Add(15 * time.Second))
			c := &rawConn{t: t, c: tc, br: bufio.NewReader(tc)}
			rec := []byte(upgradeRequest(host, "/"))
			connect := fmt.Sprintf(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
				`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":%q}}}`, token)
			// A masked frame of 126 to 65535 bytes has an 8-byte header.
			pad := end - len(rec) - 8 - len(connect)
			connect += strings.Repeat(" ", pad)
			rec = append(rec, maskedFrame(1, []byte(connect))...)
			if len(rec) != end {
				t.Fatalf("the connect ends at %d; want %d", len(rec), end)
			}
			rec = append(rec, maskedFrame(1, []byte(`{"after":"connect"}`))...)
			c.send(rec) // one TLS record
			if resp := c.response(); resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("HTTP %d; want 101", resp.StatusCode)
			}
			for range 5 {
				op, data := c.frame()
				if op == 8 {
					t.Fatalf("closed: %q", data)
				}
				if string(data) == `{"after":"connect"}` {
					return
				}
			}
			t.Fatal("the message behind the connect did not come back")
		})
	}
}

// BenchmarkSpliceEchoTLS is BenchmarkSpliceEcho with TLS on both legs: a
// wss client, holdfast terminating TLS, a wss gateway.
func BenchmarkSpliceEchoTLS(b *testing.B) {
	addr, gwRoots := startTLSEcho(b)
	hs, roots := startTLSProxy(b, addr, func(c *proxy.Config) {
		c.Upstream.Scheme = "wss"
		c.TLSClientConfig = &tls.Config{RootCAs: gwRoots, MinVersion: tls.VersionTLS12}
	}, nil)
	c := dialTLS(b, hs.url, roots)
	c.handshake()
	ws := c.ws

	msg := bytes.Repeat([]byte("x"), 1024)
	buf := make([]byte, 2048)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			b.Fatal(err)
		}
		_, r, err := ws.NextReader()
		if err != nil {
			b.Fatal(err)
		}
		if n, _ := io.ReadFull(r, buf[:len(msg)]); n != len(msg) {
			b.Fatalf("echo of %d bytes", n)
		}
	}
}
