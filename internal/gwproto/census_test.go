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

// readConnectSeeds are frames where one reading and three could differ:
// duplicated keys on the protocols' path, numbers that are whole only as
// floats, a node connect, and connects that are not legacy at all.
var readConnectSeeds = []string{
	`{"type":"req","id":"1","method":"connect","params":{"minProtocol":4,"maxProtocol":4,"client":{"id":"cli","mode":"cli"}}}`,
	`{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":3,"client":{"id":"cli","mode":"ui"}}}`,
	`{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,"maxProtocol":3}}`,
	`{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":3,"maxProtocol":4}}`,
	`{"type":"req","id":"1","method":"connect","params":{"minProtocol":1,"maxProtocol":4},"params":{"minProtocol":1,"maxProtocol":3}}`,
	`{"type":"req","id":"1","method":"connect","params":{"minProtocol":3.0,"maxProtocol":3e0,"role":"node","client":{"mode":"node"}}}`,
	`{"type":"req","id":"1","method":"connect","params":{"minProtocol":3,"maxProtocol":3.5}}`,
	`{"type":"req","id":"1","method":"connect","params":{"minProtocol":"3","maxProtocol":3,"device":{"id":"d"}}}`,
	`{"type":"req","id":"1","method":"connect","params":{"minProtocol":2,"maxProtocol":3,"device":null}}`,
	`{"type":"req","id":"","method":"connect","params":{"minProtocol":3,"maxProtocol":3}}`,
	`{"type":"req","id":"1","method":"connect","params":[3]}`,
	`{"type":"req","id":"1","method":"connect"}`,
	`{"type":"event","event":"connect.challenge"}`,
	`{"params":{"minProtocol":3,"maxProtocol":3}`,
}

// checkReadConnect: ReadConnect says what ClassifyConnect and ReadOffer
// say, and a connect RewriteLegacyConnect rewrites is never one whose
// Offer rules the rewrite out (holdfast does not try it on those).
func checkReadConnect(t *testing.T, data []byte) {
	t.Helper()
	kind, id, o := gwproto.ReadConnect(data)
	wantKind, wantID := gwproto.ClassifyConnect(data)
	var wantOffer gwproto.Offer
	if wantKind != gwproto.NotConnect {
		wantOffer = gwproto.ReadOffer(data)
	}
	if kind != wantKind || string(id) != string(wantID) || o != wantOffer {
		t.Fatalf("%q: ReadConnect %v %q %+v; ClassifyConnect and ReadOffer %v %q %+v", data, kind, id, o, wantKind, wantID, wantOffer)
	}
	if kind == gwproto.NotConnect {
		return
	}
	if _, _, ok := gwproto.RewriteLegacyConnect(data); ok && !o.MayBeLegacy() {
		t.Fatalf("%q is rewritten, yet its offer %+v says it cannot be", data, o)
	}
}

func TestReadConnect(t *testing.T) {
	t.Parallel()
	for _, s := range readConnectSeeds {
		checkReadConnect(t, []byte(s))
	}
	for _, tc := range []struct {
		frame string
		may   bool
	}{
		{readConnectSeeds[0], false},
		{readConnectSeeds[1], true},
		{readConnectSeeds[2], true}, // the last maxProtocol counts
		{readConnectSeeds[3], false},
		{readConnectSeeds[6], false},
	} {
		if _, _, o := gwproto.ReadConnect([]byte(tc.frame)); o.MayBeLegacy() != tc.may {
			t.Errorf("%s: MayBeLegacy %v; want %v", tc.frame, o.MayBeLegacy(), tc.may)
		}
	}
}

func FuzzReadConnect(f *testing.F) {
	for _, s := range readConnectSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkReadConnect(t, data)
	})
}
