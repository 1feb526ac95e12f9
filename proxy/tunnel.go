package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// tunnel is a passthrough WebSocket (Config.PassthroughPaths), which the
// reverse proxy relays byte for byte once the gateway has answered 101.
// holdfast writes into it only at a stop: each leg's writes go through a
// frameGate, which follows the frames written, so that a drain can put a
// close frame between two of them (1012 to the client and 1001 to the
// gateway, as for control sessions) instead of dropping the sockets
// (1006 at the client).
type tunnel struct {
	client  *frameGate // writes toward the client: the gateway's frames
	gateway *frameGate // writes toward the gateway: the client's (masked)
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
// (ReverseProxy.ModifyResponse): its writes go through a frameGate.
func gatewayLeg(resp *http.Response) {
	t, _ := resp.Request.Context().Value(tunnelKey{}).(*tunnel)
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if t == nil || !ok || resp.StatusCode != http.StatusSwitchingProtocols {
		return
	}
	t.gateway = &frameGate{w: rwc, mask: true}
	t.gatewayConn = rwc
	resp.Body = gatedBody{rwc, t.gateway}
}

// gatedBody is the gateway leg as the reverse proxy sees it.
type gatedBody struct {
	io.ReadWriteCloser
	g *frameGate
}

func (b gatedBody) Write(p []byte) (int, error) { return b.g.Write(p) }

// tunnelWriter is the client's ResponseWriter for a passthrough upgrade:
// its hijacked socket's writes go through a frameGate, and the tunnel is
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
	g := &frameGate{w: conn}
	tw.t.client = g
	tw.t.clientConn = conn
	tw.tracked = true
	tw.h.group.trackTunnel(tw.t, tw.h.cfg.CloseGrace)
	return gatedConn{conn, g}, brw, nil
}

// gatedConn is the client leg as the reverse proxy sees it.
type gatedConn struct {
	net.Conn
	g *frameGate
}

func (c gatedConn) Write(p []byte) (int, error) { return c.g.Write(p) }

// goingAway sends both legs their close frames at their next frame
// boundary, then closes the sockets after grace or when the tunnel has
// ended. It returns when the tunnel has ended.
func (t *tunnel) goingAway(grace time.Duration) {
	// Both legs are armed before either close is written: a peer's answer
	// to the first must not reach the other leg ahead of its own close.
	t.client.arm(websocket.FormatCloseMessage(closeDrain, closeDrainReason))
	t.gateway.arm(websocket.FormatCloseMessage(websocket.CloseGoingAway, "proxy shutting down"))
	t.client.flush()
	t.gateway.flush()
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

// frameGate passes the bytes of one direction of a tunnel to its
// destination while following the WebSocket frames in them (RFC 6455
// §5.2), so that a close frame can be written between two frames: never
// inside one. Once the close frame is written, later writes are dropped
// (nothing follows a close frame, §5.5.1), and the copy goes on reading
// the other side until the sockets close. Safe for concurrent use.
type frameGate struct {
	mu      sync.Mutex
	w       io.Writer
	mask    bool     // the frames go to the gateway: a close frame written is masked
	hdr     [14]byte // the header of the frame under way, as far as seen
	hn      int
	left    uint64 // payload bytes of the frame under way still to pass
	pending []byte // a close payload to write at the next frame boundary
	closed  bool   // a close frame was written
}

// Write passes p on, and the close frame pending at the first frame
// boundary in it.
func (g *frameGate) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	total := len(p)
	for len(p) > 0 && !g.closed {
		if g.pending != nil && g.atBoundary() {
			break
		}
		n := g.consume(p)
		if _, err := g.w.Write(p[:n]); err != nil {
			return total - len(p), err
		}
		p = p[n:]
	}
	if g.pending != nil && g.atBoundary() {
		g.writeClose()
	}
	return total, nil
}

// arm makes the next frame boundary get a close frame with payload: from
// then on, what is written reaches the leg only up to that boundary.
// Nil-safe.
func (g *frameGate) arm(payload []byte) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed && g.pending == nil {
		g.pending = payload
	}
}

// flush writes the armed close frame now when no frame is under way;
// otherwise the write that ends the frame writes it. Nil-safe.
func (g *frameGate) flush() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed && g.pending != nil && g.atBoundary() {
		g.writeClose()
	}
}

func (g *frameGate) atBoundary() bool { return g.hn == 0 && g.left == 0 }

// writeClose writes the pending close frame; nothing is written after it.
func (g *frameGate) writeClose() {
	frame := []byte{0x80 | websocket.CloseMessage, byte(len(g.pending))}
	if g.mask {
		var key [4]byte
		_, _ = rand.Read(key[:])
		frame[1] |= 0x80
		frame = append(frame, key[:]...)
		for i, b := range g.pending {
			frame = append(frame, b^key[i%4])
		}
	} else {
		frame = append(frame, g.pending...)
	}
	if c, ok := g.w.(net.Conn); ok {
		_ = c.SetWriteDeadline(time.Now().Add(closeTimeout))
	}
	_, _ = g.w.Write(frame)
	g.closed = true
	g.pending = nil
}

// consume follows p's bytes through the frames and returns how many
// belong to the frame under way: up to its end, or all of p.
func (g *frameGate) consume(p []byte) int {
	i := 0
	for i < len(p) {
		if g.left > 0 {
			k := uint64(len(p) - i)
			if k > g.left {
				k = g.left
			}
			g.left -= k
			i += int(k)
			if g.left == 0 {
				return i
			}
			continue
		}
		g.hdr[g.hn] = p[i]
		g.hn++
		i++
		if need := frameHeaderLen(g.hdr[:g.hn]); need > 0 && g.hn == need {
			g.left = framePayloadLen(g.hdr[:need])
			g.hn = 0
			if g.left == 0 {
				return i
			}
		}
	}
	return i
}

// frameHeaderLen is the length of a frame header starting with h, or 0
// while fewer than its first two bytes are known.
func frameHeaderLen(h []byte) int {
	if len(h) < 2 {
		return 0
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// framePayloadLen is the payload length a complete frame header states.
func framePayloadLen(h []byte) uint64 {
	switch n := h[1] & 0x7f; n {
	case 126:
		return uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		return binary.BigEndian.Uint64(h[2:10])
	default:
		return uint64(n)
	}
}
