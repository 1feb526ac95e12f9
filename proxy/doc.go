// Package proxy is holdfast's WebSocket reverse proxy for OpenClaw gateways.
//
// A Handler accepts client WebSocket upgrades on the gateway's control path,
// runs the upstream handshake itself, holds or retries the client's connect
// until the gateway has finished starting (within a per-connection budget),
// then splices frames both ways. Every other request is reverse-proxied
// unchanged.
//
// # How a connection ends
//
// Every step of a handshake that ends a connection returns an outcome
// naming one ending; conn.end alone turns it into the client's answer and
// close, the gateway's close, the holdfast_handshakes_total result, the log
// line and the readiness evidence, from the endings table (outcome.go),
// which README's close-code table reproduces. The result is recorded before
// anything reaches the client. A spliced session ends through
// conn.endSessionAs and the same table; conn.done runs once per connection
// when everything has ended, with its record.
//
// # Layers
//
// Imports run one way: proxy (the handshake policy: admission, hold,
// replay, late dial, drain, the endings table, splice orchestration,
// forwarding, passthrough) uses proxy/internal/wire (sockets and frames)
// and the pure gateway-protocol code; wire knows nothing of the gateway.
//
//   - wire.Conn is every leg's socket: the client leg's (WrapListener, or
//     the hijack, makes every accepted socket one) and the gateway leg's
//     (openUpstream). TLS, when there is any, sits beneath it. It batches
//     writes, waits for data holding no buffer, refuses every write after
//     a close frame, and bounds a closing leg's writes.
//   - The gateway leg is holdfast's own from the upgrade (wire.Upgrade) to
//     the close: its handshake frames are read whole by wire.Conn's message
//     reader (ReadMessage), which applies the frame relay's rules and
//     answers pings and closes as a WebSocket client does.
//   - gorilla serves the client leg only, through its public API: the
//     upgrade (Upgrader), the client's frames until the splice, and the
//     rest of a message it had begun when the splice came.
//
// # Concurrency
//
// Per connection (conn):
//
//   - Before the splice, the handler goroutine (serveControl, run) owns the
//     handshake: it alone writes to the client, reads and writes the
//     upstream socket, and touches handshakeState. The client reader
//     goroutine (readClient) only reads the client and queues its frames
//     under conn.mu, signalling notify; it never writes to either leg
//     itself before the splice, except gorilla's own pong and close
//     answers.
//   - The splice hands the directions over under conn.mu: the queue is
//     flushed to the gateway, spliced is set (the reader's wait is
//     interrupted), and from then on the reader goroutine copies
//     client→gateway and a goroutine of its own gateway→client, each until
//     its direction idles and parks (wire.Parker: the socket waits in the
//     handler's epoll set); a goroutine the parker starts goes on once data
//     comes or a leg is closed. A direction's end (endClientSide, readerDone;
//     endUpstreamSide, the session's end, group.wg) runs on the goroutine
//     running its relay then: Shutdown waits for sessions, not goroutines. Both legs are wire.Conns, TLS on either below it,
//     over wire's record layer (WrapTLSListener, wire.TLSClient), so a
//     wss leg batches and idles holding no read buffer as a ws one does.
//     Each direction is a wire.Relay, which parses the
//     frames itself (once gorilla has finished the message under way, on
//     the client's side): it passes pings and pongs on between data
//     frames, answers a close on its own leg, and writes every frame whole
//     under the destination leg's write lock, so each direction is the
//     only writer of data frames on its destination leg and the only
//     reader of its source leg. A bridged session's gateway→client
//     direction reads whole messages, to filter them, and never parks.
//   - handshakeState is dropped at the splice; what outlives it is the two
//     legs, the record and the message limit.
//   - The record (conn.rec) is written by the handshake goroutine until the
//     splice, by each direction for its own tally, and under conn.mu for
//     the peers' closes and the session's end; conn.done reads it under
//     conn.mu once both directions have finished, with the close frame
//     each leg's wire.Conn says went out on it (SentClose).
//
// Per leg: every close frame holdfast sends of its own goes through
// closeLeg, safe from any goroutine (a drain closes sessions from its
// own); the relay's answer to a peer's close and gorilla's own closes
// (1009, 1002, its answer) go through the same wire.Conn. After a close
// frame has been written on a leg nothing more is written on it: the
// leg's wire.Conn refuses every later write, relayed frames and gorilla's
// own pongs and closes included. A close, and any write blocked under it,
// ends by the close's deadline. Writes into a wire.Conn hold its write
// lock per frame, so frames never interleave; one goroutine at a time
// reads it.
//
// Shared by connections: the readiness watcher (retry.Watcher, its own
// lock; it calls back outside it), the admission queues and limits (their
// own locks), the buffer pools, the metrics (safe for concurrent use) and
// the session group (its lock guards only the set of sessions; closes are
// written outside it).
package proxy
