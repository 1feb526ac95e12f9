package proxy_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// gatedHandler is a slog handler that holds the record with message msg
// until release is closed (or 10 s pass), after closing reached.
type gatedHandler struct {
	msg     string
	reached chan struct{}
	release chan struct{}
	once    *sync.Once
}

func (h gatedHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h gatedHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h gatedHandler) WithGroup(string) slog.Handler            { return h }
func (h gatedHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != h.msg {
		return nil
	}
	h.once.Do(func() { close(h.reached) })
	select {
	case <-h.release:
	case <-time.After(10 * time.Second):
	}
	return nil
}

// TestGatewayCloseReachesBusyClient: when the gateway closes a session
// whose client is sending, the client gets the gateway's close code. The
// session's ending (the gateway's close, read by the gateway→client
// relay) is held where it logs, before it writes the client's close;
// meanwhile the client's next message fails toward the gateway (whose
// close holdfast has answered), a second ending. Before the fix that
// second ending wrote 1011 "upstream connection lost" to the client ahead
// of the gateway's 1012, which the soak (bench -soak) saw in about 1 of 60
// sessions closed by a gateway restart under load, with the access log
// reading "gateway closed the session", gateway_close_got=1012,
// client_close_sent=1011.
func TestGatewayCloseReachesBusyClient(t *testing.T) {
	t.Parallel()
	testkit.Heavy(t)
	g := startGateway(t, fakegw.Config{Echo: true})
	gate := gatedHandler{msg: "gateway closed the session", reached: make(chan struct{}), release: make(chan struct{}), once: &sync.Once{}}
	var released sync.Once
	release := func() { released.Do(func() { close(gate.release) }) }
	t.Cleanup(release)
	reg := prometheus.NewRegistry()
	h, err := proxy.New(proxy.Config{
		Upstream:   &url.URL{Scheme: "ws", Host: g.Addr()},
		Budget:     8 * time.Second,
		CloseGrace: 500 * time.Millisecond,
	}, proxy.Options{Logger: slog.New(gate), Metrics: metrics.New(reg, false)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(h.WrapListener(ln))
	}()
	t.Cleanup(func() {
		release()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = h.Shutdown(ctx)
		h.Close()
		<-served
	})

	// A deadline for the failure path only: beside the other heavy tests
	// on a loaded host the handshake took over 5 s.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, res, err := testclient.Connect(ctx, testclient.Options{URL: "ws://" + ln.Addr().String(), Timeout: 15 * time.Second})
	if err != nil {
		t.Fatalf("connect: %v (%+v)", err, res)
	}
	defer c.Close()
	ws := c.WS()

	// The client sends without pause until its writes fail, and counts
	// what it wrote once the session's ending is held.
	var afterHeld atomic.Int64
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		msg := []byte(`{"type":"req","id":"x","method":"health"}`)
		for {
			_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if ws.WriteMessage(websocket.TextMessage, msg) != nil {
				return
			}
			select {
			case <-gate.reached:
				afterHeld.Add(1)
			default:
			}
		}
	}()
	closed := make(chan int, 1)
	go func() {
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					closed <- ce.Code
				} else {
					closed <- websocket.CloseAbnormalClosure
				}
				return
			}
		}
	}()
	// Let a few messages flow, then the gateway closes the session.
	deadline := time.Now().Add(5 * time.Second)
	for testutilCounter(t, reg, "holdfast_spliced_messages_total", "to_client") < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no message echoed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	g.CloseSessions(1012, "service restart")
	select {
	case <-gate.reached:
	case <-time.After(5 * time.Second):
		t.Fatal("the session's ending was never logged")
	}
	// The client keeps sending while the ending is held: its messages
	// meet the gateway leg holdfast has already closed. A close that
	// reaches the client now is not the gateway's.
	for deadline := time.Now().Add(5 * time.Second); afterHeld.Load() < 200 && time.Now().Before(deadline); {
		select {
		case code := <-closed:
			t.Fatalf("client got close %d while the gateway's close was being passed on, want the gateway's 1012", code)
		case <-writing:
			deadline = time.Time{}
		case <-time.After(time.Millisecond):
		}
	}
	release()
	select {
	case code := <-closed:
		if code != 1012 {
			t.Fatalf("client got close %d, want the gateway's 1012", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no close reached the client")
	}
}

// testutilCounter returns a counter's value with label direction=dir.
func testutilCounter(t *testing.T, reg *prometheus.Registry, name, dir string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "direction" && l.GetValue() == dir {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
