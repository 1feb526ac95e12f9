package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
)

// accessLines returns the access log lines in logs.
func accessLines(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `msg=access `) {
			out = append(out, l)
		}
	}
	return out
}

// waitAccess waits until logs hold n access lines.
func waitAccess(t *testing.T, hs *harness, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := accessLines(hs.logs.String())
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access lines after 10 s; want %d\n%s", len(lines), n, hs.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// field returns key's value in a text-format log line ("" when absent).
func field(line, key string) string {
	m := regexp.MustCompile(`(?:^| )` + regexp.QuoteMeta(key) + `=("(?:[^"\\]|\\.)*"|\S*)`).FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	return strings.Trim(m[1], `"`)
}

// One line per client connection when it ends, with what it did.
func TestAccessLogSession(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: 800 * time.Millisecond})
	hs := startProxy(t, gw.Addr(), nil, nil)
	dev := newDevice(t)
	c, res := connect(t, hs.url+"/ws?token="+token, dev)
	if !res.HelloOK {
		t.Fatalf("connect: %+v", res)
	}
	if _, err := c.Call(context.Background(), "health", nil); err != nil {
		t.Fatal(err)
	}
	if len(accessLines(hs.logs.String())) != 0 {
		t.Fatal("access line before the connection ended")
	}
	// A session of at least 100 ms.
	time.Sleep(100 * time.Millisecond)
	_ = c.WS().WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "client done"), time.Now().Add(time.Second))
	for {
		if _, _, err := c.WS().ReadMessage(); err != nil {
			break
		}
	}
	line := waitAccess(t, hs, 1)[0]
	t.Log(line)
	for key, want := range map[string]string{
		"level": "INFO", "path": "/ws", "connect": "nonce-bound", "result": "ok", "attempts": "1",
		"held": "true", "client_close_got": "4001", "client_close_got_reason": "client done",
		"gateway_close_sent": "4001", "gateway_close_sent_reason": "client done",
		// The relay's echo of the client's close: its code, no reason.
		"client_close_sent": "4001", "client_close_sent_reason": "",
	} {
		if got := field(line, key); got != want {
			t.Errorf("%s=%q; want %q", key, got, want)
		}
	}
	if field(line, "hello_ok_ms") != field(line, "handshake_ms") {
		t.Errorf("hello_ok_ms=%s handshake_ms=%s; the same for a spliced session", field(line, "hello_ok_ms"), field(line, "handshake_ms"))
	}
	if !strings.HasPrefix(field(line, "client"), "127.0.0.1:") {
		t.Errorf("client=%q; want the client's address", field(line, "client"))
	}
	for key, min := range map[string]int64{
		// Held in the window: the time to hello-ok is not 0.
		"hello_ok_ms": 1, "session_ms": 100,
		"msgs_up": 1, "bytes_up": 1, "msgs_down": 1, "bytes_down": 1,
	} {
		var n int64
		if _, err := fmt.Sscan(field(line, key), &n); err != nil || n < min {
			t.Errorf("%s=%q; want at least %d", key, field(line, key), min)
		}
	}
	// Messages: the connect and the health request went up (the connect
	// before the splice does not count), the health answer and events down.
	if field(line, "msgs_up") != "1" {
		t.Errorf("msgs_up=%s; want 1 (the health request)", field(line, "msgs_up"))
	}
	noSecrets(t, hs.logs.String(), token, res.Nonce)
}

// noSecrets fails when logs carry any of secrets.
func noSecrets(t *testing.T, logs string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("the log carries %q", s)
		}
	}
}

// A connect with a token, a password and a device signature that the
// gateway refuses: its line says so and carries none of them, nor the
// challenge nonce.
func TestAccessLogRefusedConnectNoSecrets(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)
	const (
		tok = "tok-SECRET-6f1e"
		pw  = "pw-SECRET-93ab"
		sig = "sig-SECRET-c4d2"
		pk  = "pk-SECRET-0a7b"
	)
	ws, _, err := websocket.DefaultDialer.Dial(hs.url+"/?password="+pw, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, ch, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var challenge struct {
		Payload struct {
			Nonce string `json:"nonce"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(ch, &challenge); err != nil || challenge.Payload.Nonce == "" {
		t.Fatalf("challenge %s: %v", ch, err)
	}
	connect := fmt.Sprintf(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"role":"operator","scopes":["operator.read"],`+
		`"auth":{"token":%q,"password":%q},"device":{"id":"dev-1","publicKey":%q,"signature":%q,"signedAt":%d,"nonce":%q}}}`,
		tok, pw, pk, sig, time.Now().UnixMilli(), challenge.Payload.Nonce)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(connect)); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			break
		}
	}
	line := waitAccess(t, hs, 1)[0]
	t.Log(line)
	if field(line, "result") != "rejected" || field(line, "connect") != "nonce-bound" {
		t.Errorf("result=%q connect=%q; want rejected nonce-bound", field(line, "result"), field(line, "connect"))
	}
	if field(line, "hello_ok_ms") != "-1" || field(line, "session_ms") != "-1" || field(line, "msgs_up") != "0" {
		t.Errorf("a refused connect has no hello-ok, session or relayed message: %s", line)
	}
	// The gateway's close, relayed to the client.
	for _, leg := range []string{"gateway_close_got", "client_close_sent"} {
		if field(line, leg) != "1008" || !strings.Contains(field(line, leg+"_reason"), "token mismatch") {
			t.Errorf("%s=%s %q; want the gateway's 1008 and its reason", leg, field(line, leg), field(line, leg+"_reason"))
		}
	}
	noSecrets(t, hs.logs.String(), tok, pw, sig, pk, challenge.Payload.Nonce)
}
