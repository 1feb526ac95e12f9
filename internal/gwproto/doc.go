// Package gwproto reads and rewrites the OpenClaw gateway protocol's JSON
// frames, as holdfast needs them: it classifies a client's connect, reads
// the gateway's connect.challenge and its answer to a connect, rewrites a
// legacy (protocol 3) connect for a protocol-4 gateway and reduces the
// gateway's frames to protocol 3's envelopes for a bridged session.
//
// It is pure: bytes in, values out. It holds no sockets, does no I/O, keeps
// no state between calls and imports only the standard library, so that
// both proxy and retry may use it.
//
// # Reading as the gateway reads
//
// The gateway parses frames with JSON.parse and reads properties by their
// exact names: "tYpe" is not "type", and of duplicated keys the last one
// counts. encoding/json's struct decoding matches keys case-insensitively,
// so frames are read with this package's member scanner instead: keys
// compare exactly (after unescaping), and values are slices of the frame.
// Everything that returns a frame changes only what its doc comment says
// and keeps every other byte as the peer wrote it, so that a device
// signature over a connect still verifies after a rewrite.
//
// No function here extracts, keeps or formats an auth field (token,
// password, signature, the nonce of a connect's device proof): a
// rewritten connect carries them as the client wrote them, and the one
// nonce returned on its own is the gateway's challenge nonce, which is
// public.
//
// The facts these functions follow are in PROTOCOL.md; internal/fakegw is
// the independent oracle they are tested against, and must never import
// this package (a test enforces it).
package gwproto
