// Package wire is holdfast's socket layer: everything below the handshake
// policy that touches bytes on a WebSocket leg.
//
//   - Conn wraps one leg's socket (TLS, when there is any, beneath it). It
//     batches writes into pooled chunks until Flush, waits for data holding
//     no buffer (WaitData), hands out reads that stop at HTTP header blocks
//     before the upgrade and at frame ends after it (so gorilla's reader on
//     the client leg holds nothing between messages), and refuses every
//     write after a close frame (WriteClose), bounding a closing leg's
//     writes by the close's deadline. One goroutine reads a Conn; writes,
//     Flush and Close are safe from any goroutine, each frame under the
//     write lock.
//   - Header: one frame header parser (HeaderLen, PayloadLen) and encoder,
//     and masking (RFC 6455 §5.2-5.3).
//   - Close rules: which received closes may be sent on (CloseFor,
//     TruncateReason) and where a close is in an error (CloseCode).
//   - Relay moves one direction of a spliced session frame by frame; with
//     a Parker (Go), an idle relay parks: its socket waits in an epoll set
//     and its goroutine returns, until data comes or its Conn is closed
//     (park.go; Linux).
//   - Upgrade runs the client side of the upstream upgrade; the upstream
//     Conn then reads whole messages (NextReader, ReadMessage) with the
//     relay's frame rules, as a WebSocket client.
//   - Gate lets a passthrough tunnel put a close frame between two frames.
//
// wire knows nothing of the gateway protocol: that is internal/gwproto's,
// and the policy is package proxy's.
package wire
