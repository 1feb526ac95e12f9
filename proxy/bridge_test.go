package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

const mBridged = "holdfast_bridged_sessions_total"

// legacyConnect connects as a protocol-3 client (2026.4.27: minProtocol and
// maxProtocol 3), device-signed when device is set.
func legacyConnect(t *testing.T, url string, device *deviceauth.Identity, mode string) (*testclient.Conn, testclient.Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, res, err := testclient.Connect(ctx, testclient.Options{URL: url, Token: token, Device: device,
		MinProtocol: 3, MaxProtocol: 3, Mode: mode, Role: map[bool]string{true: "node", false: ""}[mode == "node"]})
	if err == nil && c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, res
}

// checkV3Events reads n frames and checks what a protocol-3 client checks:
// every envelope is closed over the protocol-3 keys, and event seq numbers
// follow each other from 1.
func checkV3Events(t *testing.T, c *testclient.Conn, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	allowed := map[string]bool{"type": true, "event": true, "payload": true, "seq": true, "stateVersion": true}
	var events []string
	next := int64(1)
	for len(events) < n {
		raw, err := c.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("after %d events (%v): %v", len(events), events, err)
		}
		var f map[string]json.RawMessage
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatalf("frame %s: %v", raw, err)
		}
		if string(f["type"]) != `"event"` {
			continue
		}
		for k := range f {
			if !allowed[k] {
				t.Fatalf("event %s has key %q, which a protocol-3 client refuses", raw, k)
			}
		}
		var seq int64
		if err := json.Unmarshal(f["seq"], &seq); err != nil || seq != next {
			t.Fatalf("event %s: seq %s; want %d (gap or reorder)", raw, f["seq"], next)
		}
		next++
		events = append(events, string(f["event"]))
	}
	return events
}

// A protocol-3 client reaches a current gateway through holdfast, inside
// and after the startup window, device-signed (held) and token-only
// (replayed): it gets hello-ok, and the gateway's events arrive reduced to
// the protocol-3 envelope with seq continuous. Straight to the gateway it
// gets 1002.
func TestBridgeLegacyClientOnCurrentGateway(t *testing.T) {
	t.Parallel()
	for _, device := range []bool{true, false} {
		t.Run(kindName(device), func(t *testing.T) {
			t.Parallel()
			testkit.Prompt(t)
			// The window ends once the connect has met it: a timed one
			// (700 ms, then 2 s) ended before the connect on a loaded
			// machine.
			gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Hour, TickInterval: 40 * time.Millisecond})
			hs := startProxy(t, gw.Addr(), nil, nil)
			var dev *deviceauth.Identity
			if device {
				dev = newDevice(t)
			}
			type answer struct {
				c   *testclient.Conn
				res testclient.Result
			}
			answers := make(chan answer, 1)
			go func() {
				c, res := legacyConnect(t, hs.url, dev, "")
				answers <- answer{c, res}
			}()
			waitUntil(t, "the connect in the window", func() bool {
				return float64(gw.Stats().StartupRejects)+hs.metric("holdfast_connect_holds_total") >= 1
			})
			gw.SetStarted()
			a := <-answers
			c, res := a.c, a.res
			if !res.HelloOK {
				t.Fatalf("through holdfast: %s", describe(res))
			}
			if !bytes.Contains(res.Hello, []byte(`"protocol":4`)) {
				t.Fatalf("hello %s", res.Hello)
			}
			events := checkV3Events(t, c, 6)
			if events[0] != `"health"` || events[1] != `"tick"` {
				t.Errorf("events %v; want health then ticks", events)
			}
			if _, err := c.Call(context.Background(), "health", nil); err != nil {
				t.Errorf("health RPC: %v", err)
			}
			if st := gw.Stats(); float64(st.StartupRejects)+hs.metric("holdfast_connect_holds_total") < 1 {
				t.Errorf("the connect never met the window (stats %+v)", st)
			}
			hs.waitMetric(1, mBridged)
			hs.waitMetric(1, "holdfast_handshakes_total", "result", "ok")
			if logs := hs.logs.String(); !strings.Contains(logs, "legacy connect: maxProtocol raised to 4") ||
				strings.Contains(logs, token) {
				t.Errorf("want one debug line per bridged connect and no token in the log:\n%s", logs)
			}

			// Straight to the gateway: the protocol mismatch.
			_, direct := legacyConnect(t, gw.URL(), dev, "")
			if direct.HelloOK || direct.CloseCode != 1002 || direct.Error == nil || direct.Error.DetailsCode() != "PROTOCOL_MISMATCH" {
				t.Fatalf("direct: %s; want protocol mismatch and 1002", describe(direct))
			}
		})
	}
}

func describe(r testclient.Result) string {
	s := "hello-ok=" + strconv.FormatBool(r.HelloOK)
	if r.Error != nil {
		s += " error=" + r.Error.Error() + " " + string(r.Error.Details)
	}
	if r.CloseCode != 0 {
		s += " close=" + strconv.Itoa(r.CloseCode) + " " + strconv.Quote(r.CloseReason)
	}
	return s
}

// The 2026.5.12 line refuses protocol 3 from everyone, probes too: through
// holdfast both get hello-ok.
func TestBridgeProtocol4OnlyGateway(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, Generation: fakegw.Protocol4Only})
	hs := startProxy(t, gw.Addr(), nil, nil)
	for _, mode := range []string{"cli", "probe"} {
		if _, res := legacyConnect(t, hs.url, newDevice(t), mode); !res.HelloOK {
			t.Errorf("%s through holdfast: %s", mode, describe(res))
		}
		if _, res := legacyConnect(t, gw.URL(), newDevice(t), mode); res.CloseCode != 1002 {
			t.Errorf("%s direct: %s; want 1002", mode, describe(res))
		}
	}
	hs.waitMetric(2, mBridged)
}

// What the bridge leaves alone: node connects, clients that offer 4, and
// legacy clients in front of a protocol-3 gateway (rewritten, since holdfast
// cannot know the gateway's protocol beforehand, but not bridged: the
// gateway answers with the client's protocol).
func TestBridgeLeavesOthersAlone(t *testing.T) {
	t.Parallel()
	t.Run("node connect", func(t *testing.T) {
		gw := startGateway(t, fakegw.Config{Token: token, Generation: fakegw.Protocol4Only})
		hs := startProxy(t, gw.Addr(), nil, nil)
		_, res := legacyConnect(t, hs.url, newDevice(t), "node")
		if res.HelloOK || res.CloseCode != 1002 {
			t.Fatalf("node [3,3] through holdfast: %s; want the gateway's 1002", describe(res))
		}
		hs.waitMetric(0, mBridged)
	})
	t.Run("current client", func(t *testing.T) {
		gw := startGateway(t, fakegw.Config{Token: token, TickInterval: 40 * time.Millisecond})
		hs := startProxy(t, gw.Addr(), nil, nil)
		c, res := connect(t, hs.url, newDevice(t)) // [3,4]
		if !res.HelloOK {
			t.Fatalf("connect: %s", describe(res))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		raw, err := c.ReadMessage(ctx)
		if err != nil || !bytes.HasSuffix(raw, []byte(`,"recipientProfileId":"owner"}`)) {
			t.Fatalf("event %s (%v); want it as the gateway sent it", raw, err)
		}
		hs.waitMetric(0, mBridged)
	})
	t.Run("protocol-3 gateway", func(t *testing.T) {
		gw := startGateway(t, fakegw.Config{Token: token, Legacy: true})
		hs := startProxy(t, gw.Addr(), nil, nil)
		c, res := legacyConnect(t, hs.url, newDevice(t), "")
		if !res.HelloOK || !bytes.Contains(res.Hello, []byte(`"protocol":3`)) {
			t.Fatalf("connect: %s %s", describe(res), res.Hello)
		}
		checkV3Events(t, c, 1)
		hs.waitMetric(0, mBridged)
		if !strings.Contains(hs.logs.String(), "not bridged") {
			t.Errorf("no debug line saying the session is not bridged")
		}
	})
}

// With the bridge switched off, connects reach the gateway as sent.
func TestBridgeDisabled(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) { c.DisableLegacyBridge = true }, nil)
	_, res := legacyConnect(t, hs.url, newDevice(t), "")
	if res.HelloOK || res.CloseCode != 1002 || res.Error == nil || res.Error.DetailsCode() != "PROTOCOL_MISMATCH" {
		t.Fatalf("through holdfast, bridge off: %s; want the gateway's 1002", describe(res))
	}
	hs.waitMetric(0, mBridged)
}

// TestBridgeFrames drives a scripted gateway: the connect it receives
// differs from the client's in maxProtocol alone, and each frame it sends
// reaches the client filtered, one for one and in order; a message over
// policy.maxPayload and binary messages pass unchanged.
func TestBridgeFrames(t *testing.T) {
	t.Parallel()
	const maxPayload = 4096
	big := `{"type":"event","event":"big","payload":"` + strings.Repeat("x", maxPayload) + `","seq":4,"recipientProfileId":"p"}`
	script := []struct {
		typ      int
		sent     string
		received string // "" = as sent
	}{
		{websocket.TextMessage, `{"type":"event","event":"health","payload":{"ok":true},"seq":1,"recipientProfileId":"p"}`, `{"type":"event","event":"health","payload":{"ok":true},"seq":1}`},
		{websocket.TextMessage, `{"type":"event","event":"tick","payload":{"ts":1},"seq":2}`, ""},
		{websocket.TextMessage, `{"type":"res","id":"r1","ok":false,"error":{"code":"INVALID_REQUEST","message":"unknown method: talk.realtime.start","hint":"x"},"trace":"t"}`,
			`{"type":"res","id":"r1","ok":false,"error":{"code":"INVALID_REQUEST","message":"unknown method: talk.realtime.start"}}`},
		{websocket.TextMessage, `{"type":"event","event":"chat","payload":{"state":"delta","message":{"text":"hi"},"deltaText":"hi"},"seq":3,"stateVersion":{"presence":1},"recipientProfileId":"p"}`,
			`{"type":"event","event":"chat","payload":{"state":"delta","message":{"text":"hi"},"deltaText":"hi"},"seq":3,"stateVersion":{"presence":1}}`},
		{websocket.BinaryMessage, `{"recipientProfileId":"binary frames are not touched"}`, ""},
		{websocket.TextMessage, big, ""},
		{websocket.TextMessage, `{"type":"event","event":"tick","payload":{"ts":2},"seq":5,"recipientProfileId":"p"}`, `{"type":"event","event":"tick","payload":{"ts":2},"seq":5}`},
	}
	gotConnect := make(chan []byte, 1)
	addr := startScriptedGateway(t, maxPayload, gotConnect, func(ws *websocket.Conn) {
		for _, s := range script {
			if err := ws.WriteMessage(s.typ, []byte(s.sent)); err != nil {
				return
			}
		}
		_, _, _ = ws.ReadMessage() // until the client leaves
	})
	hs := startProxy(t, addr, nil, nil)
	c := dialRaw(t, hs.url, nil)
	c.read() // challenge
	connect := "{\"type\":\"req\",\"id\":\"c1\",\"method\":\"connect\",\"params\":{ \"minProtocol\":3, \"maxProtocol\" : 3 ,\n" +
		`"client":{"id":"openclaw-tui","version":"2026.4.27","platform":"linux","mode":"ui"},"auth":{"token":"t"}}}`
	c.write(websocket.TextMessage, []byte(connect))
	if _, hello := c.read(); !bytes.Contains(hello, []byte(`"hello-ok"`)) {
		t.Fatalf("answer %s", hello)
	}
	want := strings.Replace(connect, `"maxProtocol" : 3`, `"maxProtocol" : 4`, 1)
	if got := <-gotConnect; string(got) != want {
		t.Fatalf("gateway received\n%s\nwant\n%s", got, want)
	}
	for i, s := range script {
		typ, data := c.read()
		wantData := s.received
		if wantData == "" {
			wantData = s.sent
		}
		if typ != s.typ || string(data) != wantData {
			t.Fatalf("frame %d: got type %d %s\nwant type %d %s", i, typ, trim(data), s.typ, trim([]byte(wantData)))
		}
	}
	hs.waitMetric(1, mBridged)
	hs.waitMetric(float64(len(script)), "holdfast_spliced_messages_total", "direction", "to_client")
}

// startScriptedGateway is a minimal protocol-4 gateway: challenge, the
// connect recorded on got, hello-ok with policy.maxPayload, then session.
func startScriptedGateway(t *testing.T, maxPayload int, got chan<- []byte, session func(ws *websocket.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveScriptedGateway(t, ln, maxPayload, got, session)
	return ln.Addr().String()
}
