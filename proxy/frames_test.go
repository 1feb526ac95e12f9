package proxy

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// validStatusCode is the ws library's (the gateway's) test of a received
// close code.
func validStatusCode(code int) bool {
	return (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006) || (code >= 3000 && code <= 4999)
}

// Whatever close holdfast received, what it sends on is a close frame a
// peer accepts: a valid code, at most 125 bytes, valid UTF-8; the received
// code and reason (cut on a rune boundary) when they may be sent, 1005 as
// an empty frame, the fallback otherwise.
func FuzzWireClose(f *testing.F) {
	f.Add(1000, "", true)
	f.Add(1005, "", true)
	f.Add(1006, "x", true)
	f.Add(1015, "", true)
	f.Add(4001, strings.Repeat("é", 70), true)
	f.Add(2999, "x", true)
	f.Add(0, "", false)
	f.Fuzz(func(t *testing.T, code int, text string, isClose bool) {
		var err error = errors.New("read: connection reset")
		if isClose {
			err = &websocket.CloseError{Code: code, Text: text}
		}
		out := wire.CloseFor(err, closeUpstreamLost, "upstream connection lost")
		if isClose && code == websocket.CloseNoStatusReceived {
			if len(out) != 0 {
				t.Fatalf("1005 sent as %x; want an empty close frame", out)
			}
			return
		}
		if len(out) < 2 || len(out) > 125 {
			t.Fatalf("close payload of %d bytes", len(out))
		}
		got, reason := int(binary.BigEndian.Uint16(out)), string(out[2:])
		if !validStatusCode(got) {
			t.Fatalf("sent close code %d", got)
		}
		if utf8.ValidString(text) && !utf8.ValidString(reason) {
			t.Fatalf("reason %q is not UTF-8", reason)
		}
		if isClose && validStatusCode(code) {
			if got != code || !strings.HasPrefix(text, reason) || (len(text) <= 123 && reason != text) {
				t.Fatalf("received %d %q, sent %d %q", code, text, got, reason)
			}
		} else if got != closeUpstreamLost {
			t.Fatalf("received %d (close %v), sent %d; want the fallback", code, isClose, got)
		}
	})
}
