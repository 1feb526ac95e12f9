package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// tunnel is a passthrough WebSocket (Config.PassthroughPaths), which the
// reverse proxy relays byte for byte once the gateway has answered 101.
// holdfast writes into it only at a stop: each leg's writes go through a
// wire.Gate, which follows the frames written, so that a drain can put a
// close frame between two of them (1012 to the client and 1001 to the
// gateway, as for control sessions) instead of dropping the sockets
// (1006 at the client).
type tunnel struct {
	client  *wire.Gate // writes toward the client: the gateway's frames
	gateway *wire.Gate // writes toward the gateway: the client's (masked)
	// clientConn and gatewayConn are the legs' sockets, closed when a
	// drain's close frames have had CloseGrace to be answered.
	clientConn  io.Closer
	gatewayConn io.Closer
	ended       chan struct{} // closed when the reverse proxy is done with it
}

type tunnelKey struct{}

// serveTunnel reverse-proxies a passthrough WebSocket upgrade, and keeps
// the tunnel it becomes where a drain reaches it.
func (h *Handler) serveTunnel(w http.ResponseWriter, r *http.Request) {
	t := &tunnel{ended: make(chan struct{})}
	r = r.WithContext(context.WithValue(r.Context(), tunnelKey{}, t))
	tw := &tunnelWriter{ResponseWriter: w, t: t, h: h}
	defer func() {
		close(t.ended)
		if tw.tracked {
			h.group.untrackTunnel(t)
		}
	}()
	h.passthrough.ServeHTTP(tw, r)
}

// gatewayLeg wraps the gateway's side of an upgraded passthrough response
// (ReverseProxy.ModifyResponse): its writes go through a wire.Gate.
func gatewayLeg(resp *http.Response) {
	t, _ := resp.Request.Context().Value(tunnelKey{}).(*tunnel)
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if t == nil || !ok || resp.StatusCode != http.StatusSwitchingProtocols {
		return
	}
	t.gateway = wire.NewGate(rwc, true, closeTimeout)
	t.gatewayConn = rwc
	resp.Body = gatedBody{rwc, t.gateway}
}

// gatedBody is the gateway leg as the reverse proxy sees it.
type gatedBody struct {
	io.ReadWriteCloser
	g *wire.Gate
}

func (b gatedBody) Write(p []byte) (int, error) { return b.g.Write(p) }

// tunnelWriter is the client's ResponseWriter for a passthrough upgrade:
// its hijacked socket's writes go through a wire.Gate, and the tunnel is
// tracked for a drain once both legs are known.
type tunnelWriter struct {
	http.ResponseWriter
	t       *tunnel
	h       *Handler
	tracked bool
}

// Unwrap lets http.ResponseController reach the writer's other methods.
func (tw *tunnelWriter) Unwrap() http.ResponseWriter { return tw.ResponseWriter }

// Hijack hijacks the client's socket and wraps it.
func (tw *tunnelWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(tw.ResponseWriter).Hijack()
	if err != nil || tw.t.gateway == nil {
		return conn, brw, err
	}
	g := wire.NewGate(conn, false, closeTimeout)
	tw.t.client = g
	tw.t.clientConn = conn
	tw.tracked = true
	tw.h.group.trackTunnel(tw.t, tw.h.cfg.CloseGrace)
	return gatedConn{conn, g}, brw, nil
}

// gatedConn is the client leg as the reverse proxy sees it.
type gatedConn struct {
	net.Conn
	g *wire.Gate
}

func (c gatedConn) Write(p []byte) (int, error) { return c.g.Write(p) }

// goingAway sends both legs their close frames at their next frame
// boundary, then closes the sockets after grace or when the tunnel has
// ended. It returns when the tunnel has ended.
func (t *tunnel) goingAway(grace time.Duration) {
	// Both legs are armed before either close is written: a peer's answer
	// to the first must not reach the other leg ahead of its own close.
	t.client.Arm(websocket.FormatCloseMessage(closeDrain, closeDrainReason))
	t.gateway.Arm(websocket.FormatCloseMessage(websocket.CloseGoingAway, "proxy shutting down"))
	t.client.Flush()
	t.gateway.Flush()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-t.ended:
	case <-timer.C:
		t.closeSockets()
		<-t.ended
	}
}

// closeSockets drops both legs at once.
func (t *tunnel) closeSockets() {
	_ = t.clientConn.Close()
	_ = t.gatewayConn.Close()
}
