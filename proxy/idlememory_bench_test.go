package proxy_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"runtime"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/proxy"
)

// BenchmarkIdleSessionMemory measures the memory an idle spliced session
// costs holdfast, ws and wss (TLS terminated by holdfast, and a wss
// gateway): b.N sessions are opened, each relays one message each way and
// then idles; the heap (after collection, so pooled chunks are gone) and
// the goroutine stacks in use are compared with what they were before. The
// client and the gateway run in this process too, so the same b.N sessions
// opened straight to the gateway are measured as well and subtracted:
// holdfast-B/session is holdfast's own share. Run it with a fixed count:
//
//	go test -run X -bench IdleSessionMemory -benchtime 200x ./proxy
func BenchmarkIdleSessionMemory(b *testing.B) {
	for _, tlsLegs := range []bool{false, true} {
		name := "ws"
		if tlsLegs {
			name = "wss"
		}
		b.Run(name, func(b *testing.B) {
			var addr string
			var gwRoots *x509.CertPool
			var tweak func(*proxy.Config)
			if tlsLegs {
				addr, gwRoots = startTLSEcho(b)
				tweak = func(c *proxy.Config) {
					c.Upstream.Scheme = "wss"
					c.TLSClientConfig = &tls.Config{RootCAs: gwRoots, MinVersion: tls.VersionTLS12}
				}
			} else {
				addr = startMiniUpstream(b, echoSession)
			}
			var hs *harness
			var roots *x509.CertPool
			if tlsLegs {
				hs, roots = startTLSProxy(b, addr, tweak, nil)
			} else {
				hs = startProxy(b, addr, tweak, nil)
			}
			dial := func(url string, roots *x509.CertPool) *rawClient {
				if roots != nil {
					return dialTLS(b, url, roots)
				}
				return dialRaw(b, url, nil)
			}
			direct := "ws://" + addr
			if tlsLegs {
				direct = "wss://" + addr
			}
			n := b.N
			straight := idleCost(b, n, func() *rawClient { return dial(direct, gwRoots) }, nil)
			through := idleCost(b, n, func() *rawClient { return dial(hs.url, roots) }, hs)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(through-straight, "holdfast-B/session")
			b.ReportMetric(straight, "peers-B/session")
		})
	}
}

// idleCost opens n sessions with dial, relays one message each way on
// each, lets them idle and returns the heap and stack bytes they hold, per
// session. With hs set it waits for holdfast's relays to park (Linux; else
// for them to wait on their sockets).
func idleCost(b *testing.B, n int, dial func() *rawClient, hs *harness) float64 {
	b.Helper()
	before := inUse()
	clients := make([]*rawClient, 0, n)
	msg := bytes.Repeat([]byte("m"), 512)
	for range n {
		c := dial()
		c.handshake()
		c.write(websocket.TextMessage, msg)
		if _, got := c.read(); !bytes.Equal(got, msg) {
			b.Fatal("echo altered")
		}
		clients = append(clients, c)
	}
	if hs != nil {
		waitParked(b, hs, 2*n) // every relay parked, its goroutine gone
	}
	after := inUse()
	for _, c := range clients {
		_ = c.ws.Close()
	}
	return float64(after-before) / float64(n)
}

// inUse returns the live heap and stack bytes, after two collections (the
// second empties the pools' victim caches).
func inUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc) + int64(m.StackInuse)
}
