package proxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// connectWithID is a token-only connect whose id is idJSON, verbatim.
func connectWithID(idJSON string) []byte {
	return fmt.Appendf(nil, `{"type":"req","id":%s,"method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":%q}}}`, idJSON, token)
}

// The gateway answers a connect with its id re-serialised from the value:
// "a\/b" comes back as "a/b". holdfast matches the answer by value, so the
// client gets hello-ok at once, and the gateway sees one connect.
func TestEscapedConnectID(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	for _, id := range []string{`"a\/b"`, `"caf\u00e9"`, `"\u003cx\u003e\u0026"`, `"\ud83d\ude00"`, `"t\u0061b\tx"`, `"\"q\""`} {
		t.Run(id, func(t *testing.T) {
			gw := startGateway(t, fakegw.Config{Token: token})
			hs := startProxy(t, gw.Addr(), nil, nil)
			c := dialRaw(t, hs.url, nil)
			c.read() // challenge
			start := time.Now()
			c.write(websocket.TextMessage, connectWithID(id))
			_, res := c.read()
			if !bytes.Contains(res, []byte(`"hello-ok"`)) {
				t.Fatalf("answer %s; want hello-ok", trim(res))
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("hello-ok after %v", d)
			}
			if n := gw.Stats().ConnectAttempts; n != 1 {
				t.Errorf("the gateway saw %d connects; want 1", n)
			}
		})
	}
}

// The connect classifier reads keys as the gateway does, with exact case:
// a frame whose "tYpe" or "Device" only differs in case is no connect (or
// no device proof) to the gateway, which refuses it at once. holdfast must
// not hold it as a device connect until the gateway has started.
func TestConnectKeysAreExactCase(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	device := `"device":{"id":"x","publicKey":"x","signature":"x","signedAt":1,"nonce":"x"}`
	params := `"minProtocol":3,"maxProtocol":4,"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"}`
	for name, frame := range map[string]string{
		"tYpe":   `{"tYpe":"req","id":"c1","method":"connect","params":{` + params + `,` + device + `}}`,
		"Method": `{"type":"req","id":"c1","Method":"connect","params":{` + params + `,` + device + `}}`,
		"ID":     `{"type":"req","ID":"c1","method":"connect","params":{` + params + `,` + device + `}}`,
		"Params": `{"type":"req","id":"c1","method":"connect","Params":{` + params + `,` + device + `}}`,
	} {
		t.Run(name, func(t *testing.T) {
			gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Hour})
			hs := startProxy(t, gw.Addr(), nil, nil)
			direct := closeAfter(t, gw.URL(), []byte(frame))
			start := time.Now()
			through := closeAfter(t, hs.url, []byte(frame))
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the gateway's refusal reached the client after %v; want it at once", d)
			}
			if through != direct {
				t.Errorf("close through holdfast %d; direct %d", through, direct)
			}
		})
	}
}

// closeAfter sends frame as the first frame and returns the close code
// that ends the socket.
func closeAfter(t *testing.T, url string, frame []byte) int {
	t.Helper()
	c := dialRaw(t, url, nil)
	c.read() // challenge
	c.write(websocket.TextMessage, frame)
	_ = c.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, _, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			t.Fatalf("read: %v", err)
		}
	}
}

// startSlowHello is a minimal gateway that answers the connect with
// hello-ok only when release is closed, then reports every frame it gets.
func startSlowHello(t *testing.T) (addr string, release chan struct{}, got chan []byte) {
	t.Helper()
	release, got = make(chan struct{}), make(chan []byte, 64)
	g := testkit.StartGateway(t, testkit.GatewayConfig{Session: func(ws *websocket.Conn, _ []byte, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","protocol":4}}`))
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			got <- data
		}
	}})
	return g.Addr(), release, got
}

// Before hello-ok a client may send 15 frames after its connect, as on the
// gateway: they arrive in order after hello-ok. The 16th closes 1008.
func TestPendingFramesLimit(t *testing.T) {
	t.Parallel()
	for _, n := range []int{15, 16} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			addr, release, got := startSlowHello(t)
			hs := startProxy(t, addr, nil, nil)
			c := dialRaw(t, hs.url, nil)
			c.read() // challenge
			c.write(websocket.TextMessage, connectWithID(`"c1"`))
			for i := 1; i <= n; i++ {
				c.write(websocket.TextMessage, fmt.Appendf(nil, `{"type":"req","id":"r%d","method":"health"}`, i))
			}
			if n > 15 {
				code := closeCode(t, c)
				if code != 1008 {
					t.Fatalf("close %d; want 1008", code)
				}
				return
			}
			time.Sleep(100 * time.Millisecond) // let holdfast queue them; the limit must not depend on it
			close(release)
			if _, res := c.read(); !bytes.Contains(res, []byte("hello-ok")) {
				t.Fatalf("answer %s; want hello-ok", res)
			}
			for i := 1; i <= n; i++ {
				select {
				case f := <-got:
					if want := fmt.Sprintf(`"r%d"`, i); !bytes.Contains(f, []byte(want)) {
						t.Fatalf("frame %d at the gateway: %s; want id %s", i, f, want)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("the gateway got %d of %d frames", i-1, n)
				}
			}
		})
	}
}

// closeCode reads until the socket closes and returns the close code (and
// fails on anything but a close).
func closeCode(t *testing.T, c *rawClient) int {
	t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("read: %v; want a close frame", err)
			}
			return ce.Code
		}
	}
}
