package proxy_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// BenchmarkHandshake makes full handshakes (dial, challenge, connect,
// hello-ok, close) through holdfast in front of a started gateway, from
// 4×GOMAXPROCS clients at once, as the bench's handshake scenario does.
// holdfast runs as in production (log level warn, metrics on), so its
// share of the CPU is what a handshake costs it; the client and the
// minimal upstream share the process.
func BenchmarkHandshake(b *testing.B) {
	addr := startMiniUpstream(b, func(ws *websocket.Conn) {
		for {
			if _, _, err := ws.NextReader(); err != nil {
				return
			}
		}
	})
	h, err := proxy.New(proxy.Config{Upstream: &url.URL{Scheme: "ws", Host: addr}}, proxy.Options{
		Logger:  slog.New(slog.NewTextHandler(&syncBuffer{}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Metrics: metrics.New(prometheus.NewRegistry(), false),
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	wsURL := "ws://" + ln.Addr().String() + "/"
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(h.WrapListener(ln)) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = h.Shutdown(ctx)
		h.Close()
	})

	connect := []byte(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,` +
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":"t"}}}`)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ws, _, err := d.Dial(wsURL, nil)
			if err != nil {
				b.Error(err)
				return
			}
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, ch, err := ws.ReadMessage(); err != nil || !bytes.Contains(ch, []byte("connect.challenge")) {
				b.Errorf("challenge %s: %v", ch, err)
				ws.Close()
				return
			}
			if err := ws.WriteMessage(websocket.TextMessage, connect); err != nil {
				b.Error(err)
				ws.Close()
				return
			}
			if _, res, err := ws.ReadMessage(); err != nil || !bytes.Contains(res, []byte("hello-ok")) {
				b.Errorf("answer %s: %v", res, err)
				ws.Close()
				return
			}
			ws.Close()
		}
	})
}
