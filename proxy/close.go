package proxy

import (
	"time"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// Close codes holdfast itself sends.
const (
	// closeUpstreamLost tells a client its gateway connection ended without
	// a close frame (1006 must never go on the wire).
	closeUpstreamLost = websocket.CloseInternalServerErr // 1011
	// closeClientGone tells the gateway its client went away.
	closeClientGone = websocket.CloseGoingAway // 1001
)

// closeLeg writes a close frame on ws, after what is batched, and flushes
// it, all within timeout. It is the one way holdfast closes a leg, and safe
// from any goroutine. After it nothing more is written on ws (RFC 6455
// §5.5.1): a wire.Conn refuses every later write, a relayed frame or a
// pong included, and gorilla refuses its own writes after a close it wrote.
// A write blocked on a peer that does not read ends by the same deadline.
// It reports whether the frame went out; it does not when a close frame
// was written on ws before, or the leg failed.
func closeLeg(leg *wire.Conn, payload []byte, timeout time.Duration) bool {
	return leg.WriteClose(payload, time.Now().Add(timeout)) == nil
}
