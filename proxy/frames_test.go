package proxy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// The classifier reads keys with exact case and a connect id as a
// non-empty string, like the gateway.
func TestClassifyConnect(t *testing.T) {
	t.Parallel()
	cases := []struct {
		frame string
		kind  connectKind
		id    string
	}{
		{`{"type":"req","id":"c1","method":"connect","params":{}}`, replayable, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect"}`, replayable, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect","params":{"device":{"id":"d"}}}`, nonceBound, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect","params":{"device":null}}`, replayable, `"c1"`},
		{`{"type":"req","id":"a\/b","method":"connect"}`, replayable, `"a\/b"`},
		{`{"tYpe":"req","id":"c1","method":"connect"}`, notConnect, ``},
		{`{"Type":"req","type":"event","id":"c1","method":"connect"}`, notConnect, ``},
		{`{"type":"req","ID":"c1","method":"connect"}`, notConnect, ``},
		{`{"type":"req","id":"c1","Method":"connect"}`, notConnect, ``},
		{`{"type":"req","id":"c1","method":"connect","params":{"Device":{}}}`, replayable, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect","Params":{"device":{}}}`, replayable, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect","params":{"device":{}},"params":{}}`, replayable, `"c1"`},
		{`{"type":"req","id":"","method":"connect"}`, notConnect, ``},
		{`{"type":"req","id":7,"method":"connect"}`, notConnect, ``},
		{`{"type":"req","id":null,"method":"connect"}`, notConnect, ``},
		{`{"type":"req","id":"c1","method":"health"}`, notConnect, ``},
		{`["req"]`, notConnect, ``},
		{`{"type":"req","id":"c1","method":"connect"} x`, notConnect, ``},
		{`not json`, notConnect, ``},
	}
	for _, tc := range cases {
		kind, id := classifyConnect([]byte(tc.frame))
		if kind != tc.kind || string(id) != tc.id {
			t.Errorf("%s: %v %s; want %v %s", tc.frame, kind, id, tc.kind, tc.id)
		}
	}
}

func TestParseAnswer(t *testing.T) {
	t.Parallel()
	id := json.RawMessage(`"caf\u00e9"`)
	cases := []struct {
		frame string
		want  answer
	}{
		{`{"type":"res","id":"café","ok":true,"payload":{"type":"hello-ok","policy":{"maxPayload":1048576}}}`,
			answer{isResponse: true, ok: true, helloOK: true, maxPayload: 1 << 20}},
		{`{"type":"res","id":"caf\u00e9","ok":true,"payload":{"type":"hello-ok"}}`,
			answer{isResponse: true, ok: true, helloOK: true}},
		{`{"type":"res","id":"cafe","ok":true,"payload":{"type":"hello-ok"}}`, answer{}},
		{`{"type":"res","ID":"café","ok":true,"payload":{"type":"hello-ok"}}`, answer{}},
		{`{"tYpe":"res","id":"café","ok":true,"payload":{"type":"hello-ok"}}`, answer{}},
		{`{"type":"res","id":"café","OK":true,"payload":{"type":"hello-ok"}}`, answer{isResponse: true}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"retryAfterMs":500,"details":{"reason":"startup-sidecars"}}}`,
			answer{isResponse: true, startup: true, retryAfterMs: 500}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"retryAfterMs":250.7,"details":{"reason":"startup-sidecars"}}}`,
			answer{isResponse: true, startup: true, retryAfterMs: 250}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"details":{"reason":"startup-sidecars"}}}`,
			answer{isResponse: true, startup: true, retryAfterMs: -1}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"details":{"Reason":"startup-sidecars"}}}`,
			answer{isResponse: true}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":"true","details":{"reason":"startup-sidecars"}}}`,
			answer{isResponse: true}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"details":{"reason":"gateway-restarting"}}}`,
			answer{isResponse: true}},
	}
	for _, tc := range cases {
		if got := parseAnswer([]byte(tc.frame), id); got != tc.want {
			t.Errorf("%s: %+v; want %+v", tc.frame, got, tc.want)
		}
	}
}

// decodeRef decodes a frame the way the gateway's JSON.parse sees it: exact
// keys, the last duplicate wins, numbers kept as written.
func decodeRef(data []byte) (map[string]any, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	m, ok := v.(map[string]any)
	return m, ok
}

func refClassify(data []byte) (connectKind, string) {
	m, ok := decodeRef(data)
	if !ok {
		return notConnect, ""
	}
	typ, _ := m["type"].(string)
	method, _ := m["method"].(string)
	id, _ := m["id"].(string)
	if typ != "req" || method != "connect" || id == "" {
		return notConnect, ""
	}
	if p, ok := m["params"].(map[string]any); ok {
		if d, ok := p["device"]; ok && d != nil {
			return nonceBound, id
		}
	}
	return replayable, id
}

func refAnswer(data []byte, id string) answer {
	m, ok := decodeRef(data)
	if !ok {
		return answer{}
	}
	if typ, _ := m["type"].(string); typ != "res" {
		return answer{}
	}
	if got, ok := m["id"].(string); !ok || got != id {
		return answer{}
	}
	a := answer{isResponse: true, ok: m["ok"] == true}
	if p, ok := m["payload"].(map[string]any); ok && a.ok && p["type"] == "hello-ok" {
		a.helloOK = true
		if n, ok := p["protocol"].(json.Number); ok {
			if f, err := n.Float64(); err == nil && f >= 1 && f <= math.MaxInt32 && f == math.Trunc(f) {
				a.protocol = int(f)
			}
		}
		if pol, ok := p["policy"].(map[string]any); ok {
			if n, ok := pol["maxPayload"].(json.Number); ok {
				if f, err := n.Float64(); err == nil && f >= 1 && f <= math.MaxInt64/2 {
					a.maxPayload = int64(f)
				}
			}
		}
	}
	if e, ok := m["error"].(map[string]any); ok && !a.ok && e["code"] == "UNAVAILABLE" && e["retryable"] == true {
		if d, ok := e["details"].(map[string]any); ok && d["reason"] == startupReason {
			a.startup = true
			a.retryAfterMs = -1
			if n, ok := e["retryAfterMs"].(json.Number); ok {
				if f, err := n.Float64(); err == nil {
					a.retryAfterMs = int64(math.Floor(max(0, min(f, math.MaxInt32))))
				}
			}
		}
	}
	return a
}

// classifyConnect agrees with an exact-case decoding of the frame: same
// kind, same id value.
func FuzzClassifyConnect(f *testing.F) {
	for _, s := range []string{
		`{"type":"req","id":"c1","method":"connect","params":{"device":{"id":"d"}}}`,
		`{"tYpe":"req","id":"c1","method":"connect"}`,
		`{"type":"req","id":"a\/b","method":"connect","params":{"Device":{}}}`,
		`{"type":"req","id":"c1","method":"connect","params":{"device":{}},"params":null}`,
		`{"type":"req","id":"\ud800","method":"connect","params":{"device":1e999}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		kind, id := classifyConnect(data)
		wantKind, wantID := refClassify(data)
		if kind != wantKind {
			t.Fatalf("%q: kind %v; exact-case decoding says %v", data, kind, wantKind)
		}
		if kind == notConnect {
			if id != nil {
				t.Fatalf("%q: id %s for a non-connect", data, id)
			}
			return
		}
		var got string
		if err := json.Unmarshal(id, &got); err != nil || got != wantID {
			t.Fatalf("%q: id %s (%v); want %q", data, id, err, wantID)
		}
	})
}

// parseAnswer agrees with an exact-case decoding of the frame.
func FuzzParseAnswer(f *testing.F) {
	for _, s := range []string{
		`{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","policy":{"maxPayload":26214400}}}`,
		`{"type":"res","id":"c\u0031","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"retryAfterMs":500,"details":{"reason":"startup-sidecars"}}}`,
		`{"type":"res","id":"c1","ok":false,"error":{"code":"UNAVAILABLE","retryable":true,"retryAfterMs":-3.5,"details":{"reason":"startup-sidecars"}}}`,
		`{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","policy":{"maxPayload":1e300}}}`,
		`{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","protocol":4,"Protocol":3}}`,
		`{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","protocol":3.5}}`,
		`{"type":"event","event":"tick","payload":{},"seq":1}`,
		`{"type":"res","Id":"c1","ok":true}`,
	} {
		f.Add([]byte(s), `c1`)
	}
	f.Fuzz(func(t *testing.T, data []byte, id string) {
		if id == "" {
			return
		}
		raw, _ := json.Marshal(id)
		got := parseAnswer(data, raw)
		want := refAnswer(data, strings.ToValidUTF8(id, "\uFFFD"))
		if got != want {
			t.Fatalf("%q (id %q): %+v; exact-case decoding says %+v", data, id, got, want)
		}
	})
}

// parseChallenge agrees with an exact-case decoding of the frame.
func FuzzParseChallenge(f *testing.F) {
	for _, s := range []string{
		`{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":1700000000000,"capabilities":[]}}`,
		`{"type":"event","event":"connect.challenge","payload":{"nonce":"  ","ts":1}}`,
		`{"type":"event","event":"connect.challenge","payload":{"Nonce":"n"}}`,
		`{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":1.5e3}}`,
		`{"TYPE":"event","event":"connect.challenge","payload":{"nonce":"n"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := parseChallenge(data)
		m, valid := decodeRef(data)
		p, _ := m["payload"].(map[string]any)
		nonce, _ := p["nonce"].(string)
		want := valid && m["type"] == "event" && m["event"] == "connect.challenge" && strings.TrimSpace(nonce) != ""
		if ok != want {
			t.Fatalf("%q: accepted %v; exact-case decoding says %v", data, ok, want)
		}
		if ok && got.Nonce != nonce {
			t.Fatalf("%q: nonce %q; want %q", data, got.Nonce, nonce)
		}
	})
}

// jsStringify encodes s as JSON.stringify does: only ", \ and control
// characters are escaped.
func jsStringify(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// asciiJSON escapes every non-ASCII character as \uXXXX (surrogate pairs
// above the BMP) and every slash as \/, as some client encoders do.
func asciiJSON(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\' || r == '/':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r > 0x7e:
			if r > 0xffff {
				r1, r2 := utf16.EncodeRune(r)
				fmt.Fprintf(&b, `\u%04X\u%04X`, r1, r2)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// The gateway re-serialises the connect id: whatever escapes the client
// used, holdfast matches the answer to it, and never an answer to another
// id.
func FuzzConnectIDRoundTrip(f *testing.F) {
	for _, s := range []string{"c1", "a/b", "café", "<x>&", "😀", "\u2028\u2029", "\x00\x1f\x7f", `"\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		s = strings.ToValidUTF8(s, "\uFFFD")
		if s == "" {
			return
		}
		goJSON, _ := json.Marshal(s)
		for _, enc := range []string{string(goJSON), asciiJSON(s), jsStringify(s)} {
			kind, id := classifyConnect([]byte(`{"type":"req","id":` + enc + `,"method":"connect","params":{}}`))
			if kind != replayable {
				t.Fatalf("id %s: classified %v", enc, kind)
			}
			res := `{"type":"res","id":` + jsStringify(s) + `,"ok":true,"payload":{"type":"hello-ok"}}`
			if a := parseAnswer([]byte(res), id); !a.helloOK {
				t.Fatalf("client id %s, gateway id %s: not matched", enc, jsStringify(s))
			}
			other := `{"type":"res","id":` + jsStringify(s+"x") + `,"ok":true,"payload":{"type":"hello-ok"}}`
			if a := parseAnswer([]byte(other), id); a.isResponse {
				t.Fatalf("client id %s matched another id %s", enc, jsStringify(s+"x"))
			}
		}
	})
}

// validStatusCode is the ws library's (the gateway's) test of a received
// close code.
func validStatusCode(code int) bool {
	return (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006) || (code >= 3000 && code <= 4999)
}

// Whatever close holdfast received, what it sends on is a close frame a
// peer accepts: a valid code, at most 125 bytes, valid UTF-8; the received
// code and reason (cut on a rune boundary) when they may be sent, 1005 as
// an empty frame, the fallback otherwise.
func FuzzWireClose(f *testing.F) {
	f.Add(1000, "", true)
	f.Add(1005, "", true)
	f.Add(1006, "x", true)
	f.Add(1015, "", true)
	f.Add(4001, strings.Repeat("é", 70), true)
	f.Add(2999, "x", true)
	f.Add(0, "", false)
	f.Fuzz(func(t *testing.T, code int, text string, isClose bool) {
		var err error = errors.New("read: connection reset")
		if isClose {
			err = &websocket.CloseError{Code: code, Text: text}
		}
		out := wire.CloseFor(err, closeUpstreamLost, "upstream connection lost")
		if isClose && code == websocket.CloseNoStatusReceived {
			if len(out) != 0 {
				t.Fatalf("1005 sent as %x; want an empty close frame", out)
			}
			return
		}
		if len(out) < 2 || len(out) > 125 {
			t.Fatalf("close payload of %d bytes", len(out))
		}
		got, reason := int(binary.BigEndian.Uint16(out)), string(out[2:])
		if !validStatusCode(got) {
			t.Fatalf("sent close code %d", got)
		}
		if utf8.ValidString(text) && !utf8.ValidString(reason) {
			t.Fatalf("reason %q is not UTF-8", reason)
		}
		if isClose && validStatusCode(code) {
			if got != code || !strings.HasPrefix(text, reason) || (len(text) <= 123 && reason != text) {
				t.Fatalf("received %d %q, sent %d %q", code, text, got, reason)
			}
		} else if got != closeUpstreamLost {
			t.Fatalf("received %d (close %v), sent %d; want the fallback", code, isClose, got)
		}
	})
}

// helloOKFrame returns a hello-ok res of about the real gateway's size
// (15 KB: its features list every method and event).
func helloOKFrame(id string) []byte {
	var methods []string
	for i := range 400 {
		methods = append(methods, fmt.Sprintf("method.number%d", i))
	}
	b, _ := json.Marshal(map[string]any{
		"type": "res", "id": id, "ok": true,
		"payload": map[string]any{
			"type": "hello-ok", "protocol": 4,
			"server":   map[string]any{"version": "2026.9.6", "connId": "conn-1"},
			"features": map[string]any{"methods": methods, "events": []string{"tick", "health", "chat"}},
			"snapshot": map[string]any{"presence": []any{}, "health": map[string]any{}, "uptimeMs": 1234},
			"auth":     map[string]any{"role": "operator", "scopes": []string{"operator.read"}},
			"policy":   map[string]any{"maxPayload": 26214400, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000},
		},
	})
	return b
}

// BenchmarkParseFrames reads what a handshake reads: the challenge, the
// client's connect and a full-size hello-ok.
func BenchmarkParseFrames(b *testing.B) {
	ch := []byte(`{"type":"event","event":"connect.challenge","payload":{"nonce":"0b4f6f3e-6c1e-4b39-9d7e-2f0c3c1d5e6a","ts":1764489600000,"capabilities":["model-catalog-snapshot"]}}`)
	connect := []byte(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":4,"maxProtocol":4,` +
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"role":"operator","scopes":["operator.read"],` +
		`"auth":{"token":"t"},"device":{"id":"d","publicKey":"k","signature":"s","signedAt":1,"nonce":"n"}}}`)
	hello := helloOKFrame("c1")
	b.SetBytes(int64(len(ch) + len(connect) + len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := parseChallenge(ch); !ok {
			b.Fatal("challenge")
		}
		kind, id := classifyConnect(connect)
		if kind != nonceBound {
			b.Fatal("connect")
		}
		if a := parseAnswer(hello, id); !a.helloOK || a.maxPayload != 26214400 {
			b.Fatalf("answer %+v", a)
		}
	}
}

// Frames whose objects have more members than a reader's arena holds are
// read the same: the lists that do not fit spill to the heap, and the last
// of duplicated keys still counts.
func TestParseWideFrames(t *testing.T) {
	t.Parallel()
	pad := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, `"k%d":[%d,{"x":"}"}],`, i, i)
		}
		return b.String()
	}
	hello := []byte(`{` + pad(40) + `"type":"res","id":"c1","ok":true,"payload":{` + pad(30) +
		`"type":"hello-ok","protocol":4,"policy":{` + pad(20) + `"maxPayload":1000,"maxPayload":2048}},"type":"res"}`)
	if a := parseAnswer(hello, json.RawMessage(`"c1"`)); !a.helloOK || a.protocol != 4 || a.maxPayload != 2048 {
		t.Errorf("wide hello-ok read as %+v", a)
	}
	connect := []byte(`{` + pad(50) + `"type":"req","id":"c1","method":"connect","params":{` + pad(40) + `"device":{"id":"d"}}}`)
	if kind, id := classifyConnect(connect); kind != nonceBound || string(id) != `"c1"` {
		t.Errorf("wide connect read as %v %s", kind, id)
	}
	ch := []byte(`{` + pad(35) + `"type":"event","event":"connect.challenge","payload":{` + pad(35) + `"nonce":"n","ts":7}}`)
	if c, ok := parseChallenge(ch); !ok || c.Nonce != "n" || c.TS != 7 {
		t.Errorf("wide challenge read as %+v %v", c, ok)
	}
}
