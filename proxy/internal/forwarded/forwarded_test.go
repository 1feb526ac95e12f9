package forwarded

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestAttribute(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}
	for _, tc := range []struct {
		name   string
		peer   string
		xff    []string
		other  string // another forwarding header
		want   Attribution
		key    string
		local  bool
		header bool // HasHeaders
	}{
		{name: "loopback, no headers: local", peer: "127.0.0.1:5000",
			want: Attribution{TrustedPeer: true}, key: LocalKey, local: true},
		{name: "untrusted loopback, no headers: local", peer: "[::1]:5000",
			want: Attribution{}, key: LocalKey, local: true},
		{name: "trusted proxy: right-most hop not trusted", peer: "10.1.2.3:80", xff: []string{"203.0.113.9, 10.9.9.9"},
			want: Attribution{ClientIP: netip.MustParseAddr("203.0.113.9"), TrustedPeer: true}, key: "203.0.113.9", header: true},
		{name: "trusted proxy: hops over two headers", peer: "10.1.2.3:80", xff: []string{"198.51.100.1", "203.0.113.9"},
			want: Attribution{ClientIP: netip.MustParseAddr("203.0.113.9"), TrustedPeer: true}, key: "203.0.113.9", header: true},
		{name: "trusted proxy: a malformed hop ends the chain", peer: "10.1.2.3:80", xff: []string{"198.51.100.1, junk, 10.0.0.7"},
			want: Attribution{TrustedPeer: true, Unattributable: true}, key: "invalid IP", header: true},
		{name: "trusted proxy: only loopback and trusted hops", peer: "10.1.2.3:80", xff: []string{"127.0.0.1, 10.0.0.7"},
			want: Attribution{TrustedPeer: true, Unattributable: true}, key: "invalid IP", header: true},
		{name: "trusted proxy, mapped IPv4 hop unmapped", peer: "10.1.2.3:80", xff: []string{"::ffff:203.0.113.9"},
			want: Attribution{ClientIP: netip.MustParseAddr("203.0.113.9"), TrustedPeer: true}, key: "203.0.113.9", header: true},
		{name: "trusted non-loopback peer without headers", peer: "10.1.2.3:80",
			want: Attribution{TrustedPeer: true, Unattributable: true}, key: "invalid IP"},
		{name: "untrusted peer: its headers count for nothing", peer: "198.51.100.7:80", xff: []string{"203.0.113.9"},
			want: Attribution{ClientIP: netip.MustParseAddr("198.51.100.7")}, key: "198.51.100.7", header: true},
		{name: "untrusted loopback proxy: never local", peer: "[::1]:80", other: "X-Real-Ip",
			want: Attribution{Unattributable: true}, key: "invalid IP", header: true},
		{name: "a peer without an address", peer: "pipe",
			want: Attribution{Unattributable: true}, key: "invalid IP"},
	} {
		r := &http.Request{RemoteAddr: tc.peer, Header: http.Header{}}
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if tc.other != "" {
			r.Header.Set(tc.other, "203.0.113.1")
		}
		got := Attribute(r, trusted)
		if got != tc.want {
			t.Errorf("%s: %+v; want %+v", tc.name, got, tc.want)
		}
		if got.Key() != tc.key || got.Local() != tc.local || HasHeaders(r.Header) != tc.header {
			t.Errorf("%s: key %q local %v headers %v", tc.name, got.Key(), got.Local(), HasHeaders(r.Header))
		}
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	in := http.Header{"X-Forwarded-For": {"1.2.3.4"}, "Forwarded": {"for=1.2.3.4"}, "Tailscale-User-Login": {"x"}, "Cookie": {"c"}}
	r := &http.Request{Host: "gw.example", Header: in}

	out := in.Clone()
	Apply(out, Attribution{ClientIP: netip.MustParseAddr("198.51.100.7")}, r)
	want := http.Header{"X-Forwarded-For": {"198.51.100.7"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"gw.example"}, "Cookie": {"c"}}
	if len(out) != len(want) {
		t.Fatalf("untrusted peer: %v; want %v", out, want)
	}
	for k, v := range want {
		if out.Get(k) != v[0] {
			t.Fatalf("untrusted peer: %v; want %v", out, want)
		}
	}

	out = in.Clone()
	out.Set("X-Forwarded-Proto", "https")
	Apply(out, Attribution{ClientIP: netip.MustParseAddr("203.0.113.9"), TrustedPeer: true}, r)
	if out.Get("X-Forwarded-For") != "203.0.113.9" || out.Get("X-Forwarded-Proto") != "https" || out.Get("Forwarded") == "" {
		t.Fatalf("trusted peer: %v", out)
	}

	for _, a := range []Attribution{{TrustedPeer: true}, {TrustedPeer: true, Unattributable: true}} {
		out = in.Clone()
		Apply(out, a, r)
		if len(out) != 1 || out.Get("Cookie") != "c" {
			t.Fatalf("%+v: %v; want no forwarding header", a, out)
		}
	}
}

// HasHeaders finds a forwarding header whatever the case of its key (a
// Header built by hand need not be canonical), and UpstreamHeader drops
// the hop-by-hop and key-exchange headers it names in canonical form.
func TestHeaderKeysCanonical(t *testing.T) {
	for _, k := range droppedHeaders {
		if c := http.CanonicalHeaderKey(k); c != k {
			t.Errorf("dropped header %q is not canonical (%q): a map delete would miss it", k, c)
		}
		if !dropped(k) {
			t.Errorf("dropped misses %q", k)
		}
	}
	for _, k := range []string{"Origin", "Cookie", "Host", "Sec-Websocket-Protocol", "User-Agent", "connection"} {
		if dropped(k) {
			t.Errorf("dropped takes %q", k)
		}
	}
	for _, k := range []string{"forwarded", "x-forwarded-for", "X-FORWARDED-HOST", "x-real-ip", "tailscale-user-login", "Forwarded"} {
		if !HasHeaders(http.Header{k: {"v"}}) {
			t.Errorf("HasHeaders misses %q", k)
		}
	}
	for _, k := range []string{"", "Origin", "Sec-Websocket-Key", "x-forwarded", "xforwarded-for", "tailscale", "Te", "Forwardedx"} {
		if HasHeaders(http.Header{k: {"v"}}) {
			t.Errorf("HasHeaders takes %q for a forwarding header", k)
		}
	}
	r, _ := http.NewRequest(http.MethodGet, "http://gw.example/", nil)
	r.Host = "gw.example"
	r.Header = http.Header{
		"Connection": {"Upgrade, x-hop"}, "Upgrade": {"websocket"}, "X-Hop": {"1"}, "Te": {"trailers"},
		"Sec-Websocket-Key": {"k"}, "Sec-Websocket-Version": {"13"}, "Origin": {"https://ui.example"},
	}
	out := UpstreamHeader(r)
	want := http.Header{"Origin": {"https://ui.example"}, "Host": {"gw.example"}}
	if len(out) != len(want) || out.Get("Origin") != want.Get("Origin") || out.Get("Host") != "gw.example" {
		t.Fatalf("UpstreamHeader: %v; want %v", out, want)
	}
}

func TestTokens(t *testing.T) {
	for v, want := range map[string]string{
		"Upgrade":                  "Upgrade",
		" keep-alive ,Upgrade,, x": "keep-alive|Upgrade|x",
		"":                         "",
		" , ":                      "",
	} {
		var got []string
		for tok := range Tokens(v) {
			got = append(got, tok)
		}
		if strings.Join(got, "|") != want {
			t.Errorf("Tokens(%q) = %q; want %q", v, got, want)
		}
	}
	n := 0
	for range Tokens("a,b,c") {
		n++
		break
	}
	if n != 1 {
		t.Fatal("Tokens went on after the loop broke")
	}
}

// UpstreamHeader copies every value of the headers it keeps, several
// values included, into slices of its own: appending to one changes
// neither the request's headers nor another header's values.
func TestUpstreamHeaderCopies(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "http://gw.example/", nil)
	r.Host = "gw.example"
	r.Header = http.Header{
		"Cookie": {"a=1", "b=2"}, "X-Multi": {"1", "2", "3"}, "Origin": {"https://ui.example"},
		"Upgrade": {"websocket"}, "X-Nil": nil,
	}
	out := UpstreamHeader(r)
	if got := out["Cookie"]; len(got) != 2 || got[0] != "a=1" || got[1] != "b=2" {
		t.Fatalf("Cookie %q", got)
	}
	if got := out["X-Multi"]; len(got) != 3 || got[2] != "3" {
		t.Fatalf("X-Multi %q", got)
	}
	if v, ok := out["X-Nil"]; !ok || v != nil {
		t.Fatalf("X-Nil %q %v; want kept as nil", v, ok)
	}
	if _, ok := out["Upgrade"]; ok || out.Get("Host") != "gw.example" || len(out) != 5 {
		t.Fatalf("headers %v", out)
	}
	out["Cookie"] = append(out["Cookie"], "c=3")
	out["Origin"][0] = "changed"
	if len(r.Header["Cookie"]) != 2 || r.Header.Get("Origin") != "https://ui.example" || out.Get("X-Multi") != "1" {
		t.Fatalf("the copy shares values: request %v, copy %v", r.Header, out)
	}
}
