package wire

import (
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// CloseFor turns a received close (or read error) into a close frame that
// may legally be sent on: 1005 becomes an empty close frame, and 1006, 1015
// and anything outside the sendable ranges become fallback.
func CloseFor(err error, fallback int, fallbackText string) []byte {
	ce := AsCloseError(err)
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
		return websocket.FormatCloseMessage(code, TruncateReason(ce.Text))
	}
}

// TruncateReason keeps a close reason within the 123 bytes a close frame
// allows, without splitting a UTF-8 sequence.
func TruncateReason(s string) string {
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

// CloseCode returns the code of a received close, or 0.
func CloseCode(err error) int {
	if ce := AsCloseError(err); ce != nil {
		return ce.Code
	}
	return 0
}

// AsCloseError returns the *websocket.CloseError in err's tree, or nil: it
// is errors.As for that one type, without the allocation errors.As costs
// for its target (every session's ending looks for a close).
func AsCloseError(err error) *websocket.CloseError {
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
				if ce := AsCloseError(e); ce != nil {
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
