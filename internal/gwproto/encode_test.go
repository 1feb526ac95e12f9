package gwproto

import (
	"encoding/json"
	"testing"
	"time"
)

// What holdfast writes in the gateway's name parses as the gateway's own
// frames do.
func TestEncodedFramesParse(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1765000000123)
	for _, caps := range []json.RawMessage{nil, json.RawMessage(`{"tools":true}`)} {
		data := NewChallenge("5f0c2a4e-8a57-4c1e-9d54-1b2c3d4e5f60", now, caps)
		ch, ok := ParseChallenge(data)
		if !ok || !ValidJSON(data) {
			t.Fatalf("%s: not a challenge", data)
		}
		var v struct {
			Payload struct {
				Nonce        string
				Ts           int64
				Capabilities json.RawMessage
			}
		}
		if err := json.Unmarshal(data, &v); err != nil || v.Payload.Nonce != "5f0c2a4e-8a57-4c1e-9d54-1b2c3d4e5f60" ||
			v.Payload.Ts != now.UnixMilli() || string(v.Payload.Capabilities) != string(caps) {
			t.Fatalf("%s: %+v, %v", data, v, err)
		}
		_ = ch
	}
	for _, id := range []string{`"c1"`, `"a\"b"`} {
		data := StartupUnavailable(json.RawMessage(id))
		a := ParseAnswer(data, json.RawMessage(id))
		if !ValidJSON(data) || !a.IsResponse || a.OK || !a.Startup {
			t.Fatalf("%s: %+v", data, a)
		}
	}
}
