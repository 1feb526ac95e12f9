package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
)

// benchToken is the shared secret the clients present and the window
// scenario's gateway expects.
const benchToken = "bench-token"

// connectFrame is the client's connect req with token auth. Without dev it
// carries no device, so any proxy may replay it; with dev it carries a
// device proof bound to this socket's challenge nonce and ts, as current
// clients send (PROTOCOL.md §2, §3).
func connectFrame(id string, dev *deviceauth.Identity, nonce string, ts int64) []byte {
	device := ""
	if dev != nil {
		sig := dev.Sign(deviceauth.Payload{
			DeviceID: dev.ID(), ClientID: "test", ClientMode: "test", Role: "operator",
			Scopes: []string{"operator.read"}, SignedAtMs: ts, Token: benchToken,
			Nonce: nonce, Platform: "linux",
		})
		device = `,"device":{"id":"` + dev.ID() + `","publicKey":"` + dev.PublicKey() + `","signature":"` + sig +
			`","signedAt":` + strconv.FormatInt(ts, 10) + `,"nonce":"` + nonce + `"}`
	}
	return []byte(`{"type":"req","id":"` + id + `","method":"connect","params":{"minProtocol":4,"maxProtocol":4,` +
		`"client":{"id":"test","version":"1.0.0","platform":"linux","mode":"test"},` +
		`"role":"operator","scopes":["operator.read"],"auth":{"token":"` + benchToken + `"}` + device + `}}`)
}

// frameHead is the part of a frame the client looks at.
type frameHead struct {
	Type    string `json:"type"`
	Event   string `json:"event"`
	ID      string `json:"id"`
	OK      bool   `json:"ok"`
	Payload struct {
		Type  string `json:"type"`  // hello-ok in a connect res
		Nonce string `json:"nonce"` // in connect.challenge
		TS    int64  `json:"ts"`    // in connect.challenge
	} `json:"payload"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// newDialer returns the load generator's WebSocket dialer. tlsConf is the
// TLS client configuration for wss:// URLs (nil: the default, for ws://).
func newDialer(timeout time.Duration, tlsConf *tls.Config) *websocket.Dialer {
	return &websocket.Dialer{HandshakeTimeout: timeout, ReadBufferSize: 4096, WriteBufferSize: 4096, TLSClientConfig: tlsConf}
}

// handshake dials wsURL and runs the client side of the gateway handshake:
// wait for connect.challenge, send connect (signed by dev unless it is nil),
// wait for the res with hello-ok. It makes exactly one attempt, bounded by
// timeout, with hdr added to the upgrade request. On success the session is
// spliced and the returned conn echoes.
func handshake(ctx context.Context, d *websocket.Dialer, wsURL string, hdr http.Header, id string, dev *deviceauth.Identity, timeout time.Duration) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, resp, err := d.DialContext(ctx, wsURL, hdr)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: %w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetReadDeadline(deadline)
	sentConnect := false
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			conn.Close()
			if sentConnect {
				return nil, fmt.Errorf("waiting for hello-ok: %w", err)
			}
			return nil, fmt.Errorf("waiting for challenge: %w", err)
		}
		var f frameHead
		if err := json.Unmarshal(msg, &f); err != nil {
			conn.Close()
			return nil, fmt.Errorf("bad frame: %w", err)
		}
		switch {
		case !sentConnect && f.Type == "event" && f.Event == "connect.challenge":
			_ = conn.SetWriteDeadline(deadline)
			if err := conn.WriteMessage(websocket.TextMessage, connectFrame(id, dev, f.Payload.Nonce, f.Payload.TS)); err != nil {
				conn.Close()
				return nil, fmt.Errorf("send connect: %w", err)
			}
			sentConnect = true
		case sentConnect && f.Type == "res" && f.ID == id:
			if !f.OK || f.Payload.Type != "hello-ok" {
				conn.Close()
				if f.Error != nil {
					return nil, fmt.Errorf("connect refused: %s: %s", f.Error.Code, f.Error.Message)
				}
				return nil, fmt.Errorf("connect refused: %.200s", msg)
			}
			_ = conn.SetReadDeadline(time.Time{})
			_ = conn.SetWriteDeadline(time.Time{})
			return conn, nil
		}
	}
}

// echoPayload returns a text message of exactly size bytes that is a valid
// req frame, so a proxy that looks into frames sees ordinary traffic.
func echoPayload(size int) []byte {
	head := `{"type":"req","id":"echo","method":"echo","params":{"pad":"`
	tail := `"}}`
	pad := size - len(head) - len(tail)
	if pad < 0 {
		pad = 0
	}
	return []byte(head + strings.Repeat("x", pad) + tail)
}

// newHTTPClient returns a client for probes and stats with a short timeout.
func newHTTPClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Second}
}

// httpGet builds a GET request for url bound to ctx.
func httpGet(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}

// sessionID returns the connect id for session i.
func sessionID(i int) string {
	return "c" + strconv.Itoa(i)
}
