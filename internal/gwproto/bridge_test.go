package gwproto_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/gwproto"
)

func TestRewriteLegacyConnect(t *testing.T) {
	t.Parallel()
	const client = `"client":{"id":"cli","version":"2026.4.27","platform":"linux","mode":"cli"}`
	for _, tc := range []struct {
		name, in, want string // want "" = unchanged
	}{
		{"protocol 3 client", `{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":3,` + client + `}}`,
			`{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,` + client + `}}`},
		{"odd spacing and order kept", "{ \"params\" : {\n \"maxProtocol\" :\t3 , " + client + `, "minProtocol": 1 }, "method":"connect","type":"req","id":"x"}`,
			"{ \"params\" : {\n \"maxProtocol\" :\t4 , " + client + `, "minProtocol": 1 }, "method":"connect","type":"req","id":"x"}`},
		{"3.0 is an integer", `{"params":{"minProtocol":3,"maxProtocol":3.0,` + client + `}}`,
			`{"params":{"minProtocol":3,"maxProtocol":4,` + client + `}}`},
		{"probe", `{"params":{"minProtocol":3,"maxProtocol":3,"client":{"id":"cli","mode":"probe"}}}`,
			`{"params":{"minProtocol":3,"maxProtocol":4,"client":{"id":"cli","mode":"probe"}}}`},
		{"node role with another mode", `{"params":{"minProtocol":3,"maxProtocol":3,"role":"node","client":{"mode":"cli"}}}`,
			`{"params":{"minProtocol":3,"maxProtocol":4,"role":"node","client":{"mode":"cli"}}}`},
		{"min 4 max 4 untouched", `{"params":{"minProtocol":4,"maxProtocol":4,` + client + `}}`, ""},
		{"asks for 4 untouched", `{"params":{"minProtocol":3,"maxProtocol":4,` + client + `}}`, ""},
		{"asks for 5 untouched", `{"params":{"minProtocol":3,"maxProtocol":5,` + client + `}}`, ""},
		{"min above max untouched", `{"params":{"minProtocol":4,"maxProtocol":3,` + client + `}}`, ""},
		{"min above 4 untouched", `{"params":{"minProtocol":5,"maxProtocol":3,` + client + `}}`, ""},
		{"node connect untouched", `{"params":{"minProtocol":3,"maxProtocol":3,"role":"node","client":{"id":"node-host","mode":"node"}}}`, ""},
		{"escaped node untouched", `{"params":{"minProtocol":3,"maxProtocol":3,"role":"n\u006fde","client":{"mode":"node"}}}`, ""},
		{"duplicate maxProtocol untouched", `{"params":{"minProtocol":3,"maxProtocol":3,"maxProtocol":3,` + client + `}}`, ""},
		{"duplicate params untouched", `{"params":{"minProtocol":3,"maxProtocol":3},"params":{"minProtocol":3,"maxProtocol":3}}`, ""},
		{"string protocol untouched", `{"params":{"minProtocol":3,"maxProtocol":"3",` + client + `}}`, ""},
		{"fraction untouched", `{"params":{"minProtocol":3,"maxProtocol":2.5,` + client + `}}`, ""},
		{"zero untouched", `{"params":{"minProtocol":0,"maxProtocol":3,` + client + `}}`, ""},
		{"missing min untouched", `{"params":{"maxProtocol":3,` + client + `}}`, ""},
		{"no params untouched", `{"type":"req","id":"1","method":"connect"}`, ""},
		{"params not an object", `{"params":[3,3]}`, ""},
		{"invalid JSON untouched", `{"params":{"minProtocol":3,"maxProtocol":3,}}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, ok := gwproto.RewriteLegacyConnect([]byte(tc.in))
			if tc.want == "" {
				if ok || string(out) != tc.in {
					t.Fatalf("rewritten to %s; want it untouched", out)
				}
				return
			}
			if !ok || string(out) != tc.want {
				t.Fatalf("got %s (ok %v); want %s", out, ok, tc.want)
			}
		})
	}
}

// TestRewrittenDeviceConnectVerifies builds the connect a device-signed
// 2026.4.27 client sends, rewrites it, and checks that only maxProtocol
// changed and that the gateway's verification (device id, nonce, v3
// signature over the unchanged values) still passes.
func TestRewrittenDeviceConnectVerifies(t *testing.T) {
	t.Parallel()
	id, err := deviceauth.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	const nonce, token, signedAt = "5f0c1f7e-3a4b-4c5d-9e8f-0a1b2c3d4e5f", "s3cret-token", int64(1764460800000)
	scopes := []string{"operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.pairing", "operator.talk.secrets"}
	p := deviceauth.Payload{DeviceID: id.ID(), ClientID: "cli", ClientMode: "cli", Role: "operator", Scopes: scopes,
		SignedAtMs: signedAt, Token: token, Nonce: nonce, Platform: "linux", DeviceFamily: ""}
	scopesJSON, _ := json.Marshal(scopes)
	in := `{"type":"req","id":"4f1e","method":"connect","params":{"minProtocol":3,"maxProtocol":3,` +
		`"client":{"id":"cli","displayName":"CLI","version":"2026.4.27","platform":"linux","mode":"cli","instanceId":"i-1"},` +
		`"caps":[],"role":"operator","scopes":` + string(scopesJSON) + `,"auth":{"token":"` + token + `"},` +
		`"device":{"id":"` + id.ID() + `","publicKey":"` + id.PublicKey() + `","signature":"` + id.Sign(p) +
		`","signedAt":` + "1764460800000" + `,"nonce":"` + nonce + `"},"locale":"en-US","userAgent":"openclaw-cli/2026.4.27"}}`

	out, lc, ok := gwproto.RewriteLegacyConnect([]byte(in))
	if !ok || lc.MinProtocol != 3 || lc.MaxProtocol != 3 || lc.ClientID != "cli" || lc.ClientMode != "cli" {
		t.Fatalf("not rewritten: ok %v %+v", ok, lc)
	}
	i := strings.Index(in, `"maxProtocol":3`) + len(`"maxProtocol":`)
	if want := in[:i] + "4" + in[i+1:]; string(out) != want {
		t.Fatalf("more than maxProtocol changed:\n got %s\nwant %s", out, want)
	}

	// Verify as the gateway does, from the rewritten frame alone.
	var f struct {
		Params struct {
			MinProtocol, MaxProtocol int
			Client                   struct{ ID, Mode, Platform, DeviceFamily string }
			Role                     string
			Scopes                   []string
			Auth                     struct{ Token string }
			Device                   struct {
				ID, PublicKey, Signature, Nonce string
				SignedAt                        int64
			}
		}
	}
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatal(err)
	}
	if f.Params.MinProtocol != 3 || f.Params.MaxProtocol != 4 {
		t.Fatalf("range [%d,%d]; want [3,4]", f.Params.MinProtocol, f.Params.MaxProtocol)
	}
	d := f.Params.Device
	if derived, err := deviceauth.DeviceIDFromPublicKey(d.PublicKey); err != nil || derived != d.ID {
		t.Fatalf("device id: %v", err)
	}
	got := deviceauth.Payload{DeviceID: d.ID, ClientID: f.Params.Client.ID, ClientMode: f.Params.Client.Mode,
		Role: f.Params.Role, Scopes: f.Params.Scopes, SignedAtMs: d.SignedAt, Token: f.Params.Auth.Token,
		Nonce: d.Nonce, Platform: f.Params.Client.Platform, DeviceFamily: f.Params.Client.DeviceFamily}
	if err := deviceauth.Verify(d.PublicKey, d.Signature, got); err != nil {
		t.Fatalf("signature no longer verifies after the rewrite: %v", err)
	}
}

func TestFilterV3(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string // want "" = the same bytes
	}{
		{"event with recipientProfileId", `{"type":"event","event":"tick","payload":{"ts":1},"seq":7,"recipientProfileId":"owner"}`,
			`{"type":"event","event":"tick","payload":{"ts":1},"seq":7}`},
		{"unknown key first, nested keys kept", `{"future":{"a":[1,{"b":"}"}]},"type":"event","event":"chat","payload":{"recipientProfileId":"x","deltaText":"hi"},"seq":1,"stateVersion":{"presence":2}}`,
			`{"type":"event","event":"chat","payload":{"recipientProfileId":"x","deltaText":"hi"},"seq":1,"stateVersion":{"presence":2}}`},
		{"escaped key", `{"type":"event","event":"e","s\u0065q":2,"x\"y":1}`, `{"type":"event","event":"e","s\u0065q":2}`},
		{"only whitelisted", `{"type":"event","event":"health","payload":{"ok":true},"seq":1}`, ""},
		{"event without payload", `{"type":"event","event":"tick","seq":3}`, ""},
		{"res unchanged", `{"type":"res","id":"1","ok":true,"payload":{"type":"hello-ok","protocol":4}}`, ""},
		{"res with new key", `{"type":"res","id":"1","ok":true,"payload":{},"meta":{"x":1}}`, `{"type":"res","id":"1","ok":true,"payload":{}}`},
		{"res error with new key", `{"type":"res","id":"1","ok":false,"error":{"code":"INVALID_REQUEST","message":"m","details":{"code":"X"},"retryable":false,"retryAfterMs":5,"hint":"h"}}`,
			`{"type":"res","id":"1","ok":false,"error":{"code":"INVALID_REQUEST","message":"m","details":{"code":"X"},"retryable":false,"retryAfterMs":5}}`},
		{"res error unchanged", `{"type":"res","id":"1","ok":false,"error":{"code":"UNAVAILABLE","message":"m"}}`, ""},
		{"other type untouched", `{"type":"req","id":"1","method":"m","extra":1}`, ""},
		{"no type untouched", `{"event":"x","extra":1}`, ""},
		{"not an object", `[1,2]`, ""},
		{"invalid JSON untouched", `{"type":"event","event":"x","extra":1,}`, ""},
		{"whitespace", " {\n\"type\" : \"event\" ,\"recipientProfileId\":\"p\", \"event\":\"x\" }\n", `{"type" : "event","event":"x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			out := gwproto.FilterV3(in)
			if tc.want == "" {
				if &out[0] != &in[0] || len(out) != len(in) {
					t.Fatalf("changed to %s; want the frame as it was", out)
				}
				return
			}
			if string(out) != tc.want {
				t.Fatalf("got  %s\nwant %s", out, tc.want)
			}
		})
	}
}

// The keys of protocol 3's closed envelopes (gateway-protocol
// schema/frames.ts as of 2026.4.27), written out here rather than taken
// from the code under test.
var (
	eventKeysV3 = []string{"type", "event", "payload", "seq", "stateVersion"}
	resKeysV3   = []string{"type", "id", "ok", "payload", "error"}
	errorKeysV3 = []string{"code", "message", "details", "retryable", "retryAfterMs"}
)

// FuzzFilterV3 checks the filter against encoding/json: a changed frame was
// a valid event or res, is still valid, and decodes to the original minus
// exactly the keys protocol 3 lacks.
func FuzzFilterV3(f *testing.F) {
	for _, s := range []string{
		`{"type":"event","event":"tick","payload":{"ts":1},"seq":7,"recipientProfileId":"owner"}`,
		`{"type":"res","id":"1","ok":false,"error":{"code":"X","message":"m","hint":1},"x":[]}`,
		`{"type":"event","event":"e","s\u0065q":2,"x\"y":1}`,
		`{"type":"res","id":"1","ok":true,"payload":{"type":"hello-ok"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := append([]byte(nil), in...)
		out := gwproto.FilterV3(in)
		if !bytes.Equal(in, orig) {
			t.Fatal("input modified")
		}
		if bytes.Equal(out, in) {
			return
		}
		var before, after map[string]any
		if json.Unmarshal(in, &before) != nil {
			t.Fatalf("changed an invalid frame %q to %q", in, out)
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("output invalid: %v: %q", err, out)
		}
		keys := map[string][]string{"event": eventKeysV3, "res": resKeysV3}[before["type"].(string)]
		allowed := func(k string, ks []string) bool {
			for _, a := range ks {
				if a == k {
					return true
				}
			}
			return false
		}
		for k := range before {
			if !allowed(k, keys) {
				delete(before, k)
			}
		}
		if e, ok := before["error"].(map[string]any); ok && before["type"] == "res" {
			for k := range e {
				if !allowed(k, errorKeysV3) {
					delete(e, k)
				}
			}
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("filter of %q gave %q", in, out)
		}
	})
}

// FuzzRewriteLegacyConnect checks the rewrite against encoding/json: a
// rewritten frame was valid, is valid, and decodes to the original with
// params.maxProtocol 4 and nothing else changed; the bytes around the number
// are the client's.
func FuzzRewriteLegacyConnect(f *testing.F) {
	for _, s := range []string{
		`{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":3,"client":{"id":"cli","mode":"cli"}}}`,
		`{"params":{"maxProtocol":3.0,"minProtocol":1,"role":"node","client":{"mode":"probe"}}}`,
		`{"params":{"minProtocol":3,"maxProtocol":3,"role":"n\u006fde","client":{"mode":"node"}}}`,
		`{"params":{"minProtocol":2,"maxProtocol":3e0}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := append([]byte(nil), in...)
		out, lc, ok := gwproto.RewriteLegacyConnect(in)
		if !bytes.Equal(in, orig) {
			t.Fatal("input modified")
		}
		if !ok {
			if !bytes.Equal(out, in) {
				t.Fatalf("not rewritten, yet changed: %q → %q", in, out)
			}
			return
		}
		var before, after map[string]any
		if json.Unmarshal(in, &before) != nil || json.Unmarshal(out, &after) != nil {
			t.Fatalf("rewrite of %q gave %q: not both valid", in, out)
		}
		p := before["params"].(map[string]any)
		maxP, minP := p["maxProtocol"].(float64), p["minProtocol"].(float64)
		if maxP >= 4 || minP > 4 || minP > maxP || minP < 1 || int(minP) != lc.MinProtocol || int(maxP) != lc.MaxProtocol {
			t.Fatalf("rewrote %q (range [%v,%v], %+v)", in, minP, maxP, lc)
		}
		if c, _ := p["client"].(map[string]any); p["role"] == "node" && c != nil && c["mode"] == "node" {
			t.Fatalf("rewrote a node connect %q", in)
		}
		p["maxProtocol"] = float64(4)
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("rewrite of %q gave %q", in, out)
		}
		// Only the number's bytes changed.
		i := 0
		for i < len(in) && i < len(out) && in[i] == out[i] {
			i++
		}
		j := 0
		for j < len(in)-i && j < len(out)-i && in[len(in)-1-j] == out[len(out)-1-j] {
			j++
		}
		if n, err := strconv.ParseFloat(string(in[i:len(in)-j]), 64); string(out[i:len(out)-j]) != "4" || err != nil || n != maxP {
			t.Fatalf("%q → %q: %q became %q; want only the maxProtocol literal replaced by 4", in, out, in[i:len(in)-j], out[i:len(out)-j])
		}
	})
}
