package gwproto_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
)

// jsonDepthLimit is encoding/json's nesting limit.
const jsonDepthLimit = 10000

// ValidJSON says what json.Valid says, for any input.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `[]`, `{"a":1}`, ` {"a" : [1, -2.5e+3, true, false, null, "x\u00e9\n"]} `,
		`{"a":}`, `{"a" 1}`, `{,}`, `[1,]`, `[,1]`, `{"a":1,}`, `01`, `-`, `-0`, `1.`, `1.e3`, `1e`, `1e+`, `.5`,
		`"\x"`, `"\u12"`, `"\u12g4"`, "\"\x01\"", "\"\xff\xfe\"", `"abc`, `tru`, `truex`, `nul`, `[1] [2]`,
		`{"a":{"b":[{"c":"}"}]}}`, `[[[[]]]]`, `[[[[]]]`, `{]`, `[}`, `"\/"`, "\t[\r\n]\n",
		strings.Repeat("[", jsonDepthLimit) + strings.Repeat("]", jsonDepthLimit),
		strings.Repeat("[", jsonDepthLimit+1) + strings.Repeat("]", jsonDepthLimit+1),
		strings.Repeat(`{"a":`, jsonDepthLimit) + "1" + strings.Repeat("}", jsonDepthLimit),
		strings.Repeat(`{"a":`, jsonDepthLimit+1) + "1" + strings.Repeat("}", jsonDepthLimit+1),
	} {
		f.Add([]byte(s))
	}
	f.Add(helloOKFrame("c1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := gwproto.ValidJSON(data), json.Valid(data); got != want {
			t.Fatalf("%q: ValidJSON %v, json.Valid %v", data, got, want)
		}
	})
}

func BenchmarkValidJSON(b *testing.B) {
	hello := helloOKFrame("c1")
	b.SetBytes(int64(len(hello)))
	for b.Loop() {
		if !gwproto.ValidJSON(hello) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkJSONValid(b *testing.B) {
	hello := helloOKFrame("c1")
	b.SetBytes(int64(len(hello)))
	for b.Loop() {
		if !json.Valid(hello) {
			b.Fatal("invalid")
		}
	}
}

// Strings are passed eight bytes at a time while no byte needs a look:
// a quote, a backslash or a control character at any offset, and the
// bytes next to them, read as json.Valid reads them.
func TestValidJSONStringBytes(t *testing.T) {
	t.Parallel()
	for off := range 20 {
		for _, c := range []byte{'"', '\\', 0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff} {
			for _, tail := range []string{``, `"`, `bcdefghijklmnopq"`, `n"`, `u00e9xyzxyzxyz"`} {
				data := []byte(`["` + strings.Repeat("a", off) + string([]byte{c}) + tail + `]`)
				if got, want := gwproto.ValidJSON(data), json.Valid(data); got != want {
					t.Fatalf("%q: ValidJSON %v, json.Valid %v", data, got, want)
				}
			}
		}
	}
}
