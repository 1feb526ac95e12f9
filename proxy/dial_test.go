package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/retry"
)

func TestUpstreamURL(t *testing.T) {
	t.Parallel()
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

// A gateway whose upgrade answer stops mid-header until the dial's deadline
// is a slow gateway, not a broken one: the failure is a timeout. net/http
// itself reports it as a malformed header (bufio's ReadLine hands out the
// partial line without its error), which dialUpstream would have counted
// as a gateway that is down.
func TestDialCutByDeadlineIsTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConn")
		<-done
	}()

	u, _ := url.Parse("ws://" + ln.Addr().String())
	h, err := New(Config{Upstream: u, DialTimeout: 300 * time.Millisecond}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	budget := retry.NewBudget(retry.SystemClock{}, 5*time.Second)
	up, err := h.dialOnce(context.Background(), u.String(), http.Header{}, "127.0.0.1", budget)
	if err == nil {
		up.drop()
		t.Fatal("dial succeeded on a cut upgrade answer")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial error %q is not a timeout", err)
	}
}
