package main

import (
	"bufio"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/testcert"
)

// TestTunnelForwardFor: with forwardFor, the tunnel hands the gateway the
// client's X-Forwarded-For with its own peer appended, so that a gateway
// trusting the tunnel counts each client at its own address (the
// attributed crowd's floor). httputil's Rewrite starts from an outbound
// request without the inbound header; appending to it alone would leave
// the gateway only 127.0.0.1, an unattributable request.
func TestTunnelForwardFor(t *testing.T) {
	got := make(chan []string, 2)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Values("X-Forwarded-For")
	}))
	defer up.Close()
	for _, tc := range []struct {
		forwardFor bool
		want       string
	}{{true, "198.18.0.1, 127.0.0.1"}, {false, ""}} {
		h, err := proxyHandler("tunnel", up.URL, proxyOptions{forwardFor: tc.forwardFor})
		if err != nil {
			t.Fatal(err)
		}
		px := httptest.NewServer(h)
		req, err := http.NewRequest(http.MethodGet, px.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", "198.18.0.1")
		resp, err := px.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		px.Close()
		xff := <-got
		have := ""
		if len(xff) > 0 {
			have = xff[0]
		}
		if len(xff) > 1 || have != tc.want {
			t.Errorf("forwardFor %v: gateway saw X-Forwarded-For %q, want %q", tc.forwardFor, xff, tc.want)
		}
	}
}

// TestListenProxyTLS: with a certificate, the reference proxy's listener
// serves TLS with it, and a client trusting the run's certificate alone
// (the load generator's configuration) completes the handshake on
// HTTP/1.1.
func TestListenProxyTLS(t *testing.T) {
	pair, err := testcert.New("bench test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := proxyOptions{certFile: filepath.Join(dir, "c.pem"), keyFile: filepath.Join(dir, "k.pem")}
	if err := os.WriteFile(opts.certFile, pair.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(opts.keyFile, pair.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := listenProxy("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.Proto))
	}), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	defer func() { _ = srv.Close(); <-done }()

	rc := &runCert{pair: pair}
	c, err := tls.Dial("tcp", l.Addr().String(), rc.clientConfig())
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d; want 200", resp.StatusCode)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
		t.Fatalf("ALPN %q; want http/1.1 or none", p)
	}

	// A client that does not trust the certificate fails.
	if c2, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS12}); err == nil {
		c2.Close()
		t.Fatal("a client without the run's certificate completed the handshake")
	}
}
