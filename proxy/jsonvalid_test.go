package proxy

import (
	"encoding/json"
	"strings"
	"testing"
)

// validJSON says what json.Valid says, for any input.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `[]`, `{"a":1}`, ` {"a" : [1, -2.5e+3, true, false, null, "x\u00e9\n"]} `,
		`{"a":}`, `{"a" 1}`, `{,}`, `[1,]`, `[,1]`, `{"a":1,}`, `01`, `-`, `-0`, `1.`, `1.e3`, `1e`, `1e+`, `.5`,
		`"\x"`, `"\u12"`, `"\u12g4"`, "\"\x01\"", "\"\xff\xfe\"", `"abc`, `tru`, `truex`, `nul`, `[1] [2]`,
		`{"a":{"b":[{"c":"}"}]}}`, `[[[[]]]]`, `[[[[]]]`, `{]`, `[}`, `"\/"`, "\t[\r\n]\n",
		strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth),
		strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1),
		strings.Repeat(`{"a":`, maxJSONDepth) + "1" + strings.Repeat("}", maxJSONDepth),
		strings.Repeat(`{"a":`, maxJSONDepth+1) + "1" + strings.Repeat("}", maxJSONDepth+1),
	} {
		f.Add([]byte(s))
	}
	f.Add(helloOKFrame("c1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := validJSON(data), json.Valid(data); got != want {
			t.Fatalf("%q: validJSON %v, json.Valid %v", data, got, want)
		}
	})
}

func BenchmarkValidJSON(b *testing.B) {
	hello := helloOKFrame("c1")
	b.SetBytes(int64(len(hello)))
	for b.Loop() {
		if !validJSON(hello) {
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
