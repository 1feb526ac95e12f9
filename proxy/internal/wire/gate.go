package wire

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Gate passes the bytes of one direction of a tunnel to its
// destination while following the WebSocket frames in them (RFC 6455
// §5.2), so that a close frame can be written between two frames: never
// inside one. Once the close frame is written, later writes are dropped
// (nothing follows a close frame, §5.5.1), and the copy goes on reading
// the other side until the sockets close. Safe for concurrent use.
type Gate struct {
	mu      sync.Mutex
	w       io.Writer
	mask    bool            // the frames go to the gateway: a close frame written is masked
	hdr     [MaxHeader]byte // the header of the frame under way, as far as seen
	hn      int
	left    uint64 // payload bytes of the frame under way still to pass
	pending []byte // a close payload to write at the next frame boundary
	closed  bool   // a close frame was written
	// closeTimeout bounds the close frame's write on a net.Conn.
	closeTimeout time.Duration
}

// NewGate returns the gate of writes to w; mask: w is the gateway leg,
// whose frames are masked. closeTimeout bounds the write of the close
// frame when w is a net.Conn.
func NewGate(w io.Writer, mask bool, closeTimeout time.Duration) *Gate {
	return &Gate{w: w, mask: mask, closeTimeout: closeTimeout}
}

// Write passes p on, and the close frame pending at the first frame
// boundary in it.
func (g *Gate) Write(p []byte) (int, error) {
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

// Arm makes the next frame boundary get a close frame with payload: from
// then on, what is written reaches the leg only up to that boundary.
// Nil-safe.
func (g *Gate) Arm(payload []byte) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed && g.pending == nil {
		g.pending = payload
	}
}

// Flush writes the armed close frame now when no frame is under way;
// otherwise the write that ends the frame writes it. Nil-safe.
func (g *Gate) Flush() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed && g.pending != nil && g.atBoundary() {
		g.writeClose()
	}
}

func (g *Gate) atBoundary() bool { return g.hn == 0 && g.left == 0 }

// writeClose writes the pending close frame; nothing is written after it.
func (g *Gate) writeClose() {
	var frame [MaxHeader + MaxControlPayload]byte
	var hdr [MaxHeader]byte
	h := frameHeader(&hdr, websocket.CloseMessage, true, g.mask, len(g.pending))
	n := copy(frame[:], hdr[:h])
	n += copy(frame[n:], g.pending)
	if g.mask {
		maskBytes(maskKey(hdr[:h]), frame[h:n])
	}
	if c, ok := g.w.(net.Conn); ok {
		_ = c.SetWriteDeadline(time.Now().Add(g.closeTimeout))
	}
	_, _ = g.w.Write(frame[:n])
	g.closed = true
	g.pending = nil
}

// consume follows p's bytes through the frames and returns how many
// belong to the frame under way: up to its end, or all of p.
func (g *Gate) consume(p []byte) int {
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
		if g.hn >= 2 && g.hn == HeaderLen(g.hdr[1]) {
			g.left = PayloadLen(g.hdr[:g.hn])
			g.hn = 0
			if g.left == 0 {
				return i
			}
		}
	}
	return i
}
