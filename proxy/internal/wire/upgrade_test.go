package wire

import "testing"

func TestSplitTarget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Target
	}{
		{"ws://127.0.0.1:18789/", Target{Addr: "127.0.0.1:18789", Host: "127.0.0.1:18789", RequestURI: "/"}},
		{"ws://gw/chat?x=1", Target{Addr: "gw:80", Host: "gw", RequestURI: "/chat?x=1"}},
		{"wss://gw?x=1", Target{TLS: true, Addr: "gw:443", Host: "gw", RequestURI: "/?x=1"}},
		{"wss://[::1]/a%20b", Target{TLS: true, Addr: "[::1]:443", Host: "[::1]", RequestURI: "/a%20b"}},
		{"ws://[::1]:9/#f", Target{Addr: "[::1]:9", Host: "[::1]:9", RequestURI: "/"}},
	} {
		got, err := SplitTarget(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"http://gw/", "ws:///x", "ws://user:pw@gw/"} {
		if _, err := SplitTarget(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// isTokenChar is RFC 9110's tchar: letters, digits and
// !#$%&'*+-.^_`|~, nothing else.
func TestIsTokenChar(t *testing.T) {
	const tchar = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for c := range 256 {
		want := false
		for i := range len(tchar) {
			want = want || tchar[i] == byte(c)
		}
		if got := isTokenChar(byte(c)); got != want {
			t.Errorf("isTokenChar(%q) = %v", byte(c), got)
		}
	}
}
