package gwproto_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
)

// The classifier reads keys with exact case and a connect id as a
// non-empty string, like the gateway.
func TestClassifyConnect(t *testing.T) {
	t.Parallel()
	cases := []struct {
		frame string
		kind  gwproto.ConnectKind
		id    string
	}{
		{`{"type":"req","id":"c1","method":"connect","params":{}}`, gwproto.Replayable, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect"}`, gwproto.Replayable, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect","params":{"device":{"id":"d"}}}`, gwproto.NonceBound, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect","params":{"device":null}}`, gwproto.Replayable, `"c1"`},
		{`{"type":"req","id":"a\/b","method":"connect"}`, gwproto.Replayable, `"a\/b"`},
		{`{"tYpe":"req","id":"c1","method":"connect"}`, gwproto.NotConnect, ``},
		{`{"Type":"req","type":"event","id":"c1","method":"connect"}`, gwproto.NotConnect, ``},
		{`{"type":"req","ID":"c1","method":"connect"}`, gwproto.NotConnect, ``},
		{`{"type":"req","id":"c1","Method":"connect"}`, gwproto.NotConnect, ``},
		{`{"type":"req","id":"c1","method":"connect","params":{"Device":{}}}`, gwproto.Replayable, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect","Params":{"device":{}}}`, gwproto.Replayable, `"c1"`},
		{`{"type":"req","id":"c1","method":"connect","params":{"device":{}},"params":{}}`, gwproto.Replayable, `"c1"`},
		{`{"type":"req","id":"","method":"connect"}`, gwproto.NotConnect, ``},
		{`{"type":"req","id":7,"method":"connect"}`, gwproto.NotConnect, ``},
		{`{"type":"req","id":null,"method":"connect"}`, gwproto.NotConnect, ``},
		{`{"type":"req","id":"c1","method":"health"}`, gwproto.NotConnect, ``},
		{`["req"]`, gwproto.NotConnect, ``},
		{`{"type":"req","id":"c1","method":"connect"} x`, gwproto.NotConnect, ``},
		{`not json`, gwproto.NotConnect, ``},
	}
	for _, tc := range cases {
		kind, id := gwproto.ClassifyConnect([]byte(tc.frame))
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
		want  gwproto.Answer
	}{
		{`{"type":"res","id":"café","ok":true,"payload":{"type":"hello-ok","policy":{"maxPayload":1048576}}}`,
			gwproto.Answer{IsResponse: true, OK: true, HelloOK: true, MaxPayload: 1 << 20}},
		{`{"type":"res","id":"caf\u00e9","ok":true,"payload":{"type":"hello-ok"}}`,
			gwproto.Answer{IsResponse: true, OK: true, HelloOK: true}},
		{`{"type":"res","id":"cafe","ok":true,"payload":{"type":"hello-ok"}}`, gwproto.Answer{}},
		{`{"type":"res","ID":"café","ok":true,"payload":{"type":"hello-ok"}}`, gwproto.Answer{}},
		{`{"tYpe":"res","id":"café","ok":true,"payload":{"type":"hello-ok"}}`, gwproto.Answer{}},
		{`{"type":"res","id":"café","OK":true,"payload":{"type":"hello-ok"}}`, gwproto.Answer{IsResponse: true}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"retryAfterMs":500,"details":{"reason":"startup-sidecars"}}}`,
			gwproto.Answer{IsResponse: true, Startup: true, RetryAfterMs: 500}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"retryAfterMs":250.7,"details":{"reason":"startup-sidecars"}}}`,
			gwproto.Answer{IsResponse: true, Startup: true, RetryAfterMs: 250}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"details":{"reason":"startup-sidecars"}}}`,
			gwproto.Answer{IsResponse: true, Startup: true, RetryAfterMs: -1}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"details":{"Reason":"startup-sidecars"}}}`,
			gwproto.Answer{IsResponse: true}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":"true","details":{"reason":"startup-sidecars"}}}`,
			gwproto.Answer{IsResponse: true}},
		{`{"type":"res","id":"café","ok":false,"error":{"code":"UNAVAILABLE","message":"m","retryable":true,"details":{"reason":"gateway-restarting"}}}`,
			gwproto.Answer{IsResponse: true}},
	}
	for _, tc := range cases {
		if got := gwproto.ParseAnswer([]byte(tc.frame), id); got != tc.want {
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

func refClassify(data []byte) (gwproto.ConnectKind, string) {
	m, ok := decodeRef(data)
	if !ok {
		return gwproto.NotConnect, ""
	}
	typ, _ := m["type"].(string)
	method, _ := m["method"].(string)
	id, _ := m["id"].(string)
	if typ != "req" || method != "connect" || id == "" {
		return gwproto.NotConnect, ""
	}
	if p, ok := m["params"].(map[string]any); ok {
		if d, ok := p["device"]; ok && d != nil {
			return gwproto.NonceBound, id
		}
	}
	return gwproto.Replayable, id
}

func refAnswer(data []byte, id string) gwproto.Answer {
	m, ok := decodeRef(data)
	if !ok {
		return gwproto.Answer{}
	}
	if typ, _ := m["type"].(string); typ != "res" {
		return gwproto.Answer{}
	}
	if got, ok := m["id"].(string); !ok || got != id {
		return gwproto.Answer{}
	}
	a := gwproto.Answer{IsResponse: true, OK: m["ok"] == true}
	if p, ok := m["payload"].(map[string]any); ok && a.OK && p["type"] == "hello-ok" {
		a.HelloOK = true
		if n, ok := p["protocol"].(json.Number); ok {
			if f, err := n.Float64(); err == nil && f >= 1 && f <= math.MaxInt32 && f == math.Trunc(f) {
				a.Protocol = int(f)
			}
		}
		if pol, ok := p["policy"].(map[string]any); ok {
			if n, ok := pol["maxPayload"].(json.Number); ok {
				if f, err := n.Float64(); err == nil && f >= 1 && f <= math.MaxInt64/2 {
					a.MaxPayload = int64(f)
				}
			}
		}
	}
	if e, ok := m["error"].(map[string]any); ok && !a.OK && e["code"] == "UNAVAILABLE" && e["retryable"] == true {
		if d, ok := e["details"].(map[string]any); ok && d["reason"] == "startup-sidecars" {
			a.Startup = true
			a.RetryAfterMs = -1
			if n, ok := e["retryAfterMs"].(json.Number); ok {
				if f, err := n.Float64(); err == nil {
					a.RetryAfterMs = int64(math.Floor(max(0, min(f, math.MaxInt32))))
				}
			}
		}
	}
	return a
}

// ClassifyConnect agrees with an exact-case decoding of the frame: same
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
		kind, id := gwproto.ClassifyConnect(data)
		wantKind, wantID := refClassify(data)
		if kind != wantKind {
			t.Fatalf("%q: kind %v; exact-case decoding says %v", data, kind, wantKind)
		}
		if kind == gwproto.NotConnect {
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

// ParseAnswer agrees with an exact-case decoding of the frame.
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
		got := gwproto.ParseAnswer(data, raw)
		want := refAnswer(data, strings.ToValidUTF8(id, "\uFFFD"))
		if got != want {
			t.Fatalf("%q (id %q): %+v; exact-case decoding says %+v", data, id, got, want)
		}
	})
}

// ParseChallenge agrees with an exact-case decoding of the frame.
func FuzzParseChallenge(f *testing.F) {
	for _, s := range []string{
		`{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":1700000000000,"capabilities":[]}}`,
		`{"type":"event","event":"connect.challenge","payload":{"nonce":"  ","ts":1}}`,
		`{"type":"event","event":"connect.challenge","payload":{"Nonce":"n"}}`,
		`{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":1.5e3}}`,
		`{"TYPE":"event","event":"connect.challenge","payload":{"nonce":"n"}}`,
		`{"type":"event","event":"connect.challenge","payload":{"nonce":"\u0020\t"}}`,
		`{"type":"event","event":"connect.challenge","payload":{"nonce":"\u00a0"}}`,
		"{\"type\":\"event\",\"event\":\"connect.challenge\",\"payload\":{\"nonce\":\"\u00a0 \"}}",
		"{\"type\":\"event\",\"event\":\"connect.challenge\",\"payload\":{\"nonce\":\" \xff\"}}",
		`{"type":"event","event":"connect.challenge","payload":{"nonce":1}}`,
		`{"type":"event","event":"connect.challenge","payload":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := gwproto.ParseChallenge(data)
		if is := gwproto.IsChallenge(data); is != ok {
			t.Fatalf("%q: IsChallenge %v; ParseChallenge %v", data, is, ok)
		}
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
			kind, id := gwproto.ClassifyConnect([]byte(`{"type":"req","id":` + enc + `,"method":"connect","params":{}}`))
			if kind != gwproto.Replayable {
				t.Fatalf("id %s: classified %v", enc, kind)
			}
			res := `{"type":"res","id":` + jsStringify(s) + `,"ok":true,"payload":{"type":"hello-ok"}}`
			if a := gwproto.ParseAnswer([]byte(res), id); !a.HelloOK {
				t.Fatalf("client id %s, gateway id %s: not matched", enc, jsStringify(s))
			}
			other := `{"type":"res","id":` + jsStringify(s+"x") + `,"ok":true,"payload":{"type":"hello-ok"}}`
			if a := gwproto.ParseAnswer([]byte(other), id); a.IsResponse {
				t.Fatalf("client id %s matched another id %s", enc, jsStringify(s+"x"))
			}
		}
	})
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
		if _, ok := gwproto.ParseChallenge(ch); !ok {
			b.Fatal("challenge")
		}
		kind, id := gwproto.ClassifyConnect(connect)
		if kind != gwproto.NonceBound {
			b.Fatal("connect")
		}
		if a := gwproto.ParseAnswer(hello, id); !a.HelloOK || a.MaxPayload != 26214400 {
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
	if a := gwproto.ParseAnswer(hello, json.RawMessage(`"c1"`)); !a.HelloOK || a.Protocol != 4 || a.MaxPayload != 2048 {
		t.Errorf("wide hello-ok read as %+v", a)
	}
	connect := []byte(`{` + pad(50) + `"type":"req","id":"c1","method":"connect","params":{` + pad(40) + `"device":{"id":"d"}}}`)
	if kind, id := gwproto.ClassifyConnect(connect); kind != gwproto.NonceBound || string(id) != `"c1"` {
		t.Errorf("wide connect read as %v %s", kind, id)
	}
	ch := []byte(`{` + pad(35) + `"type":"event","event":"connect.challenge","payload":{` + pad(35) + `"nonce":"n","ts":7}}`)
	if c, ok := gwproto.ParseChallenge(ch); !ok || c.Nonce != "n" || c.TS != 7 {
		t.Errorf("wide challenge read as %+v %v", c, ok)
	}
}

func TestSameID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		a, b string
		want bool
	}{
		{"same bytes", `"c1"`, `"c1"`, true},
		{"escaped slash", `"a\/b"`, `"a/b"`, true},
		{"escaped non-ASCII", `"caf\u00e9"`, `"café"`, true},
		{"Go's HTML escape", `"\u003cx\u003e"`, `"<x>"`, true},
		{"different strings", `"c1"`, `"c2"`, false},
		{"case differs", `"C1"`, `"c1"`, false},
		{"number ids are not ids", `7`, `7`, false},
		{"number against string", `7`, `"7"`, false},
		{"empty", ``, `"c1"`, false},
		{"invalid escape", `"\x"`, `"x"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gwproto.SameID(json.RawMessage(tc.a), json.RawMessage(tc.b)); got != tc.want {
				t.Errorf("SameID(%s, %s) = %v; want %v", tc.a, tc.b, got, tc.want)
			}
			if got := gwproto.SameID(json.RawMessage(tc.b), json.RawMessage(tc.a)); got != tc.want {
				t.Errorf("SameID(%s, %s) = %v; want %v", tc.b, tc.a, got, tc.want)
			}
		})
	}
}

func TestConnectKindString(t *testing.T) {
	t.Parallel()
	for k, want := range map[gwproto.ConnectKind]string{
		gwproto.NotConnect: "not-connect", gwproto.Replayable: "replayable", gwproto.NonceBound: "nonce-bound", 99: "not-connect",
	} {
		if got := k.String(); got != want {
			t.Errorf("ConnectKind(%d).String() = %q; want %q", int(k), got, want)
		}
	}
}

// The capabilities are the challenge payload's, as raw JSON and a slice of
// the frame; the last of duplicated keys counts.
func TestChallengeCapabilities(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, frame, want string // want "" = none
	}{
		{"list", `{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":1,"capabilities":["model-catalog-snapshot"]}}`, `["model-catalog-snapshot"]`},
		{"spaces kept", `{"payload":{"capabilities" : [ "a" , "b" ] }}`, `[ "a" , "b" ]`},
		{"last duplicate", `{"payload":{"capabilities":["a"],"capabilities":[]}}`, `[]`},
		{"any value", `{"payload":{"capabilities":{"x":1}}}`, `{"x":1}`},
		{"exact case", `{"payload":{"Capabilities":["a"]}}`, ""},
		{"no capabilities", `{"type":"event","event":"connect.challenge","payload":{"nonce":"n"}}`, ""},
		{"payload not an object", `{"payload":["capabilities"]}`, ""},
		{"invalid JSON", `{"payload":{"capabilities":["a"]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.frame)
			data = data[:len(data):len(data)] // so that a slice of it ends at cap(data)
			caps, ok := gwproto.ChallengeCapabilities(data)
			if tc.want == "" {
				if ok || caps != nil {
					t.Fatalf("got %s (ok %v); want none", caps, ok)
				}
				return
			}
			if !ok || string(caps) != tc.want {
				t.Fatalf("got %s (ok %v); want %s", caps, ok, tc.want)
			}
			if i := len(data) - cap(caps); i < 0 || &data[i] != &caps[0] {
				t.Fatalf("capabilities are not a slice of the frame")
			}
		})
	}
}
