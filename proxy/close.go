package proxy

import (
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Close codes holdfast itself sends.
const (
	// closeUpstreamLost tells a client its gateway connection ended without
	// a close frame (1006 must never go on the wire).
	closeUpstreamLost = websocket.CloseInternalServerErr // 1011
	// closeClientGone tells the gateway its client went away.
	closeClientGone = websocket.CloseGoingAway // 1001
)

// wireClose turns a received close (or read error) into a close frame that
// may legally be sent on: 1005 becomes an empty close frame, and 1006, 1015
// and anything outside the sendable ranges become fallback.
func wireClose(err error, fallback int, fallbackText string) []byte {
	ce := asCloseError(err)
	if ce == nil {
		return websocket.FormatCloseMessage(fallback, fallbackText)
	}
	switch code := ce.Code; {
	case code == websocket.CloseNoStatusReceived:
		return []byte{}
	case code == websocket.CloseAbnormalClosure, code == websocket.CloseTLSHandshake,
		code == 1004, code < 1000, code > 4999, code >= 1016 && code < 3000:
		return websocket.FormatCloseMessage(fallback, fallbackText)
	default:
		return websocket.FormatCloseMessage(code, truncateReason(ce.Text))
	}
}

// truncateReason keeps a close reason within the 123 bytes a close frame
// allows, without splitting a UTF-8 sequence.
func truncateReason(s string) string {
	if len(s) <= 123 {
		return s
	}
	s = s[:123]
	// Drop the last rune only when the cut went through it.
	for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if !utf8.FullRuneInString(s[i:]) {
				s = s[:i]
			}
			break
		}
	}
	return s
}

// closeLeg writes a close frame on ws, after what is batched, and flushes
// it, all within timeout. It is the one way holdfast closes a leg, and safe
// from any goroutine. After it nothing more is written on ws (RFC 6455
// §5.5.1): a batchConn refuses every later write, a relayed frame or a
// pong included, and gorilla refuses its own writes after a close it wrote.
// A write blocked on a peer that does not read ends by the same deadline.
// It reports whether the frame went out; it does not when a close frame
// was written on ws before, or the leg failed.
func closeLeg(ws *websocket.Conn, payload []byte, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	if bc, ok := ws.NetConn().(*batchConn); ok {
		return bc.writeClose(payload, deadline) == nil
	}
	return ws.WriteControl(websocket.CloseMessage, payload, deadline) == nil
}

// closeCode returns the code of a received close, or 0.
func closeCode(err error) int {
	if ce := asCloseError(err); ce != nil {
		return ce.Code
	}
	return 0
}

// asCloseError returns the *websocket.CloseError in err's tree, or nil: it
// is errors.As for that one type, without the allocation errors.As costs
// for its target (every session's ending looks for a close).
func asCloseError(err error) *websocket.CloseError {
	for err != nil {
		if ce, ok := err.(*websocket.CloseError); ok {
			return ce
		}
		if x, ok := err.(interface{ As(any) bool }); ok {
			var ce *websocket.CloseError
			if x.As(&ce) {
				return ce
			}
		}
		switch x := err.(type) {
		case interface{ Unwrap() error }:
			err = x.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				if ce := asCloseError(e); ce != nil {
					return ce
				}
			}
			return nil
		default:
			return nil
		}
	}
	return nil
}
