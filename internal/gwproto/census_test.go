package gwproto_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
)

func TestReadOffer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, frame string
		want        gwproto.Offer
	}{
		{"current cli", `{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,"client":{"id":"cli","mode":"cli"}}}`,
			gwproto.Offer{MinProtocol: 3, MaxProtocol: 4, Range: true, Mode: "cli"}},
		{"legacy ui", `{"params":{"minProtocol":3,"maxProtocol":3,"client":{"mode":"ui"}}}`, gwproto.Offer{MinProtocol: 3, MaxProtocol: 3, Range: true, Mode: "ui"}},
		{"3.0 is an integer", `{"params":{"minProtocol":3.0,"maxProtocol":4e0}}`, gwproto.Offer{MinProtocol: 3, MaxProtocol: 4, Range: true}},
		{"min above max is read as it is", `{"params":{"minProtocol":4,"maxProtocol":3}}`, gwproto.Offer{MinProtocol: 4, MaxProtocol: 3, Range: true}},
		{"last duplicate counts", `{"params":{"minProtocol":1,"maxProtocol":3,"maxProtocol":4,"client":{"mode":"cli","mode":"node"}}}`,
			gwproto.Offer{MinProtocol: 1, MaxProtocol: 4, Range: true, Mode: "node"}},
		{"escaped mode", `{"params":{"client":{"mode":"n\u006fde"}}}`, gwproto.Offer{Mode: "node"}},
		{"exact case", `{"params":{"MinProtocol":3,"maxProtocol":3,"client":{"Mode":"cli"}}}`, gwproto.Offer{}},
		{"fraction", `{"params":{"minProtocol":3,"maxProtocol":3.5}}`, gwproto.Offer{}},
		{"zero", `{"params":{"minProtocol":0,"maxProtocol":3}}`, gwproto.Offer{}},
		{"string number", `{"params":{"minProtocol":"3","maxProtocol":3}}`, gwproto.Offer{}},
		{"above MaxInt32", `{"params":{"minProtocol":3,"maxProtocol":2147483648}}`, gwproto.Offer{}},
		{"mode not a string", `{"params":{"client":{"mode":7}}}`, gwproto.Offer{}},
		{"no params", `{"type":"req","id":"1","method":"connect"}`, gwproto.Offer{}},
		{"not an object", `[1]`, gwproto.Offer{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gwproto.ReadOffer([]byte(tc.frame)); got != tc.want {
				t.Fatalf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

// ReadOffer agrees with an exact-case decoding of any valid frame, and
// returns on invalid ones.
func FuzzReadOffer(f *testing.F) {
	for _, s := range []string{
		`{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,"client":{"id":"cli","mode":"cli"}}}`,
		`{"params":{"minProtocol":3.0,"maxProtocol":1e1,"client":{"mode":"n\u006fde","mode":"ui"}}}`,
		`{"params":{"minProtocol":-1,"maxProtocol":1e999}}`,
		`{"params":{"minProtocol":3,"maxProtocol":3,}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got := gwproto.ReadOffer(data)
		if !json.Valid(data) {
			return
		}
		m, _ := decodeRef(data)
		p, _ := m["params"].(map[string]any)
		var want gwproto.Offer
		whole := func(v any) (int, bool) {
			n, ok := v.(json.Number)
			if !ok {
				return 0, false
			}
			f, err := n.Float64()
			if err != nil || f < 1 || f > math.MaxInt32 || f != math.Trunc(f) {
				return 0, false
			}
			return int(f), true
		}
		minP, ok1 := whole(p["minProtocol"])
		maxP, ok2 := whole(p["maxProtocol"])
		if ok1 && ok2 {
			want = gwproto.Offer{MinProtocol: minP, MaxProtocol: maxP, Range: true}
		}
		c, _ := p["client"].(map[string]any)
		want.Mode, _ = c["mode"].(string)
		if got != want {
			t.Fatalf("%q: %+v; exact-case decoding says %+v", data, got, want)
		}
	})
}
