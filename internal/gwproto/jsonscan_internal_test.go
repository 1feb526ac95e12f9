package gwproto

import (
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// validObjectMembersSeeds are valid and invalid documents whose outermost
// members end every way a value can: scalars, strings with escapes,
// nested and empty containers, space before commas, escaped keys.
var validObjectMembersSeeds = []string{
	`{}`, ` { } `, `[]`, `1`, `"s"`, `{"a":1}`, ` {"a" : 1 , "b":"x\"y" ,"c":{} ,"d":[], "e":{"f":[1,{"g":2}]}} `,
	`{"k\u0065y":true,"k\\":null,"x":-1.5e3}`, `{"a":[1,2],"a":{"b":"}"}}`, `{"a":1,}`, `{"a":1} {}`, `{"a"}`,
	`{"a":{"b":1}`, `{"a":{"b":1}}}`, "{\"a\":\"\x01\"}", `{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","protocol":4,"policy":{"maxPayload":26214400}}}`,
	strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40),
}

// checkValidObjectMembers: one pass says what ValidJSON and then
// objectMembers say.
func checkValidObjectMembers(t *testing.T, data []byte) {
	t.Helper()
	got, ok := validObjectMembers(data, nil)
	want, wantOK := objectMembers(data, 0, nil)
	wantOK = wantOK && ValidJSON(data)
	if ok != wantOK || (ok && !reflect.DeepEqual(got, want)) {
		t.Fatalf("%q: validObjectMembers %v %+v; ValidJSON and objectMembers %v %+v", data, ok, got, wantOK, want)
	}
}

func TestValidObjectMembers(t *testing.T) {
	for _, s := range validObjectMembersSeeds {
		checkValidObjectMembers(t, []byte(s))
	}
}

func FuzzValidObjectMembers(f *testing.F) {
	for _, s := range validObjectMembersSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkValidObjectMembers(t, data)
	})
}

// checkDecodePath: an object read along decodePath's path has the members
// objectMembers finds in it, at every level, duplicates and all.
func checkDecodePath(t *testing.T, data []byte, path ...string) {
	t.Helper()
	var a memberArena
	f, ok := a.decodePath(data, path...)
	want, wantOK := validObjectMembers(data, nil)
	if ok != wantOK {
		t.Fatalf("%q: decodePath %v, validObjectMembers %v", data, ok, wantOK)
	}
	if !ok {
		return
	}
	if got := a.members(f); !reflect.DeepEqual(got, want) && len(got)+len(want) > 0 {
		t.Fatalf("%q: members %+v; want %+v", data, got, want)
	}
	o := f
	for _, k := range path {
		raw, _ := a.get(o, k)
		next, ok := a.object(o, k)
		want, wantOK := objectMembers(raw, 0, nil)
		wantOK = wantOK && len(raw) > 0 && raw[0] == '{'
		if ok != wantOK {
			t.Fatalf("%q: object %q %v; want %v", data, k, ok, wantOK)
		}
		if !ok {
			return
		}
		if got := a.members(next); !reflect.DeepEqual(got, want) && len(got)+len(want) > 0 {
			t.Fatalf("%q: %q's members %+v; want %+v", data, k, got, want)
		}
		o = next
	}
}

var decodePathSeeds = []string{
	`{"type":"res","id":"c1","ok":true,"payload":{"type":"hello-ok","protocol":4,"policy":{"maxPayload":26214400}}}`,
	`{"p":{"q":{"a":1},"q":{"b":2}},"p":{"q":{"c":3},"x":[{"q":{}}]},"z":1}`,
	`{"p":{"q":{"a":1}},"p":1}`, `{"p":{},"p":{"q":{}}}`, `{"p":[{"q":{"a":1}}]}`, `{"p":{"q":[1]}}`,
	`{"p":{"q":{"a":{"b":{}}}}}`, `{"\u0070":{"q":{"a":1}}}`, `{"p":{"q":{"a":1}}`,
	`{"p":{` + strings.Repeat(`"k":1,`, 40) + `"q":{"a":1}},"a":1,"b":2}`,
	`{"p":{"q":{` + strings.Repeat(`"k":1,`, 28) + `"a":1}},"a":1}`,
	`{` + strings.Repeat(`"k":1,`, 28) + `"p":{"q":{"a":1,"b":2,"c":3},"a":1,"b":2},"a":1,"b":2,"c":3}`,
}

func TestDecodePath(t *testing.T) {
	for _, s := range append(decodePathSeeds, validObjectMembersSeeds...) {
		checkDecodePath(t, []byte(s), "p", "q")
		checkDecodePath(t, []byte(s), "payload", "policy")
		checkDecodePath(t, []byte(s), "a")
	}
}

// A hello-ok's payload and policy come from the one pass that checks the
// frame: its members are not read again.
func TestDecodePathReadsOnce(t *testing.T) {
	var a memberArena
	f, ok := a.decodePath([]byte(decodePathSeeds[0]), "payload", "policy")
	if !ok {
		t.Fatal("hello-ok not read")
	}
	p, _ := a.object(f, "payload")
	pol, _ := a.object(p, "policy")
	if p.first != a.nested[0].first || pol.first != a.nested[1].first || p.n != 3 || pol.n != 1 {
		t.Fatalf("payload %+v, policy %+v; read along the path %+v", p, pol, a.nested)
	}
	if used := a.used; used != 4 {
		t.Fatalf("%d members at the front; want the envelope's 4, nothing read again", used)
	}
}

func FuzzDecodePath(f *testing.F) {
	for _, s := range append(decodePathSeeds, validObjectMembersSeeds...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodePath(t, data, "p", "q")
		checkDecodePath(t, data, "payload", "policy")
	})
}

// strIs and nonEmptyStr say what comparing str's string says, escapes,
// invalid UTF-8 and non-strings included.
func checkStrIs(t *testing.T, data []byte, lit string) {
	t.Helper()
	var a memberArena
	f, ok := a.decodePath(data)
	if !ok {
		return
	}
	s, ok := a.str(f, "k")
	if got, want := a.strIs(f, "k", lit), ok && s == lit; got != want {
		t.Fatalf("%q: strIs %q %v; str says %q %v", data, lit, got, s, ok)
	}
	if got, want := a.nonEmptyStr(f, "k"), s != ""; got != want {
		t.Fatalf("%q: nonEmptyStr %v; str says %q", data, got, s)
	}
}

var strIsSeeds = []struct{ data, lit string }{
	{`{"k":"res"}`, "res"}, {`{"k":"r\u0065s"}`, "res"}, {`{"k":"r\\es"}`, `r\es`}, {`{"k":"res "}`, "res"},
	{`{"k":""}`, ""}, {`{"k":"\u0000"}`, "\x00"}, {"{\"k\":\"\xff\"}", "\ufffd"}, {"{\"k\":\"\xff\"}", "\xff"},
	{`{"k":1}`, "1"}, {`{"k":null}`, ""}, {`{"j":"res"}`, "res"}, {`{"k":"a","k":"res"}`, "res"}, {`{"k":"\"\""}`, `""`},
}

func TestStrIs(t *testing.T) {
	for _, c := range strIsSeeds {
		checkStrIs(t, []byte(c.data), c.lit)
	}
}

func FuzzStrIs(f *testing.F) {
	for _, c := range strIsSeeds {
		f.Add([]byte(c.data), c.lit)
	}
	f.Fuzz(checkStrIs)
}

// num reads an integer of up to 15 digits itself, and says what
// strconv.ParseFloat says of it and of every other number.
func TestNum(t *testing.T) {
	for _, n := range []string{"0", "-0", "1", "-1", "4", "30000", "26214400", "1764489600000",
		"999999999999999", "-999999999999999", "1000000000000000", "9007199254740993", "12345678901234567890",
		"1.5", "-2.5e3", "1e400", "0.1", `"1"`, "null"} {
		var a memberArena
		f, ok := a.decodePath([]byte(`{"n":` + n + `}`))
		if !ok {
			t.Fatalf("%s: not read", n)
		}
		got, gotOK := a.num(f, "n")
		want, err := strconv.ParseFloat(n, 64)
		wantOK := err == nil
		if gotOK != wantOK || (wantOK && (got != want || math.Signbit(got) != math.Signbit(want))) {
			t.Errorf("%s: num %v %v; ParseFloat %v %v", n, got, gotOK, want, err)
		}
	}
}
