package proxy

import (
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestUpstreamURL(t *testing.T) {
	for _, tc := range []struct {
		upstream, request, want string
	}{
		{"ws://127.0.0.1:18789", "/", "ws://127.0.0.1:18789/"},
		{"ws://127.0.0.1:18789/", "/", "ws://127.0.0.1:18789/"},
		{"ws://127.0.0.1:18789", "/chat?x=1", "ws://127.0.0.1:18789/chat?x=1"},
		{"wss://127.0.0.1:443/base/", "/chat", "wss://127.0.0.1:443/base/chat"},
		{"ws://127.0.0.1:18789/base?a=1", "/chat?b=2", "ws://127.0.0.1:18789/base/chat?a=1&b=2"},
	} {
		u, err := url.Parse(tc.upstream)
		if err != nil {
			t.Fatal(err)
		}
		h := &Handler{cfg: Config{Upstream: u}}
		r := httptest.NewRequest("GET", "http://127.0.0.1:18790"+tc.request, nil)
		if got := h.upstreamURL(r); got != tc.want {
			t.Errorf("upstream %s, request %s: %s; want %s", tc.upstream, tc.request, got, tc.want)
		}
	}
}
