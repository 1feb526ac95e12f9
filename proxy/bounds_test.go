package proxy_test

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// blackhole is a gateway that accepts TCP connections, reads what it is
// sent and never answers. It counts the connections it holds.
type blackhole struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startBlackhole(t testing.TB) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *blackhole) addr() string { return b.ln.Addr().String() }

func (b *blackhole) close() {
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// A gateway that accepts the connection and never answers gets a request
// answered 504 once the response header timeout has passed, not never.
func TestPassthroughResponseHeaderTimeout(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	bh := startBlackhole(t)
	hs := startProxy(t, bh.addr(), func(c *proxy.Config) {
		c.PassthroughResponseHeaderTimeout = 300 * time.Millisecond
	}, nil)
	wantTimeout504(t, hs.http+"/v1/models", 300*time.Millisecond)
}

// wantTimeout504 asserts that a passthrough GET of url is answered 504 by
// holdfast, well within a few seconds of bound.
func wantTimeout504(t *testing.T, url string, bound time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("request: %v; want holdfast's 504", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("HTTP %d; want 504", resp.StatusCode)
	}
	if d := time.Since(start); d > bound+3*time.Second {
		t.Errorf("answered after %v; the bound is %v", d, bound)
	}
}

// A gateway that is not there gets a request answered 502 at once.
func TestPassthroughUnreachable(t *testing.T) {
	t.Parallel()
	hs := startProxy(t, freeAddr(t), nil, nil)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(hs.http + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Retry-After") == "" {
		t.Errorf("HTTP %d Retry-After %q; want 502 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
