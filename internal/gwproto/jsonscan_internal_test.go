package gwproto

import (
	"reflect"
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
