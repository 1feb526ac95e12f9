package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A reverse-proxied request whose chunked body is malformed gets 400 from
// holdfast: the client's fault, not the gateway's. Before, it got 502
// "gateway unreachable" with Retry-After, as if the gateway were down.
func TestPassthroughMalformedChunkedBody(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	hs := startProxy(t, ln.Addr().String(), nil, nil)

	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"well-formed", "5\r\nhello\r\n0\r\n\r\n", http.StatusNoContent},
		{"bad chunk size", "zz\r\nhello\r\n0\r\n\r\n", http.StatusBadRequest},
		{"chunk longer than said", "2\r\nhello\r\n0\r\n\r\n", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", strings.TrimPrefix(hs.http, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			req := "POST /api/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + tc.body
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("HTTP %d; want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
