package proxy

// growStackFrame is the frame growStack takes: with what the HTTP server
// has on the stack below it, enough to make the goroutine's stack 16 KiB,
// which the whole handshake fits in.
const growStackFrame = 12 << 10

// growStack grows the calling goroutine's stack to its handshake size in
// one step, while it is still shallow. A goroutine starts with a small
// stack that the runtime doubles, copying every frame, each time a call
// does not fit; left to itself a handshake's goroutine does that three or
// four times, ever deeper. Copying a shallow stack once is cheap. It
// returns a byte of its frame so that the frame is kept; call it with 0.
//
//go:noinline
func growStack(i int) byte {
	var buf [growStackFrame]byte
	return buf[i&(len(buf)-1)]
}
