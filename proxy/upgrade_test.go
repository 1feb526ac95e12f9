package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// maskedFrame is one client frame (RFC 6455 §5.2), masked as clients must.
func maskedFrame(opcode byte, payload []byte) []byte {
	return testkit.AppendFrame(nil, 0x80|opcode, payload, &[4]byte{0x11, 0x22, 0x33, 0x44})
}

// rawConn is a TCP client that writes bytes as they are given.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialTCP(t testing.TB, wsURL string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(wsURL, "ws://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

// upgradeRequest is a valid control upgrade request for host, with target
// as the request target.
func upgradeRequest(host, target string, extra ...string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + strings.Join(extra, "") + "\r\n"
}

func (r *rawConn) send(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawConn) response() *http.Response {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		r.t.Fatalf("reading the response: %v", err)
	}
	return resp
}

// frame reads one server frame; for a close it returns the code.
func (r *rawConn) frame() (opcode byte, payload []byte) {
	r.t.Helper()
	f, err := testkit.ReadFrame(r.br, 0)
	if err != nil {
		r.t.Fatalf("reading a frame: %v", err)
	}
	return f.Opcode, f.Payload
}

// A malformed upgrade is refused with 400 before holdfast opens an upstream
// socket for it: the gateway never sees it. So is an absolute-form request
// target, which would replace the client's Host header with the target's
// host (net/http drops the header), upgrade or passthrough alike: holdfast
// never forwards a Host the client did not send.
func TestMalformedUpgradeOpensNoUpstream(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	host := strings.TrimPrefix(hs.url, "ws://")
	for name, req := range map[string]string{
		"version 8": "GET / HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		"no version": "GET / HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		"no key": "GET / HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\n\r\n",
		"short key": "GET / HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n",
		"key not base64": "GET / HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!\r\n\r\n",
		"two keys": "GET / HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		"absolute-form upgrade":     upgradeRequest(host, "http://evil.example/"),
		"absolute-form passthrough": "GET http://evil.example/startupz HTTP/1.1\r\nHost: " + host + "\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c := dialTCP(t, hs.url)
			c.send([]byte(req))
			resp := c.response()
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("HTTP %d; want 400", resp.StatusCode)
			}
			if n := len(gw.Upgrades()); n != 0 {
				t.Errorf("the gateway saw %d upgrades; want none", n)
			}
		})
	}
}

// Frames a client sends in the same packet as its upgrade request are
// kept: its connect arrives at the gateway and the client gets hello-ok.
func TestFramesInTheUpgradePacketAreKept(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	c := dialTCP(t, hs.url)
	connect := fmt.Sprintf(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":%q}}}`, token)
	pkt := append([]byte(upgradeRequest(strings.TrimPrefix(hs.url, "ws://"), "/")), maskedFrame(1, []byte(connect))...)
	c.send(pkt)
	resp := c.response()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("HTTP %d; want 101", resp.StatusCode)
	}
	for i := 0; i < 5; i++ {
		op, data := c.frame()
		if op == 8 {
			t.Fatalf("closed: %d %q", binary.BigEndian.Uint16(data), data[2:])
		}
		if bytes.Contains(data, []byte(`"hello-ok"`)) {
			return
		}
	}
	t.Fatal("no hello-ok")
}

// The same on a listener that holdfast did not wrap (an embedding program's
// own): the early bytes are read before the socket.
func TestFramesInTheUpgradePacketAreKeptUnwrapped(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	h, err := proxy.New(proxy.Config{Upstream: &url.URL{Scheme: "ws", Host: gw.Addr()}}, proxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = h.Shutdown(ctx)
		h.Close()
		<-done
	})
	c := dialTCP(t, "ws://"+ln.Addr().String())
	connect := fmt.Sprintf(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":%q}}}`, token)
	c.send(append([]byte(upgradeRequest(ln.Addr().String(), "/")), maskedFrame(1, []byte(connect))...))
	if resp := c.response(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("HTTP %d; want 101", resp.StatusCode)
	}
	for i := 0; i < 5; i++ {
		if _, data := c.frame(); bytes.Contains(data, []byte(`"hello-ok"`)) {
			return
		}
	}
	t.Fatal("no hello-ok")
}
