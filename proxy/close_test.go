package proxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// wire.CloseFor passes a received close on only when it may legally be sent:
// 1005 as an empty close frame, codes that must not be sent (1004, 1006,
// 1015, below 1000, 1016–2999, above 4999) and read errors as the
// fallback, reasons cut to 123 bytes on a UTF-8 boundary.
func TestWireClose(t *testing.T) {
	t.Parallel()
	ce := func(code int, text string) error { return &websocket.CloseError{Code: code, Text: text} }
	const fb, fbText = closeUpstreamLost, "upstream connection lost"
	fallback := websocket.FormatCloseMessage(fb, fbText)
	long := strings.Repeat("x", 200)
	for _, tc := range []struct {
		name string
		err  error
		want []byte
	}{
		{"read error", io.EOF, fallback},
		{"1000", ce(1000, ""), websocket.FormatCloseMessage(1000, "")},
		{"1001 with reason", ce(1001, "bye"), websocket.FormatCloseMessage(1001, "bye")},
		{"1012", ce(1012, "service restart"), websocket.FormatCloseMessage(1012, "service restart")},
		{"1005 no status", ce(websocket.CloseNoStatusReceived, ""), []byte{}},
		{"1006 abnormal", ce(websocket.CloseAbnormalClosure, ""), fallback},
		{"1015 TLS", ce(websocket.CloseTLSHandshake, ""), fallback},
		{"1004 reserved", ce(1004, "x"), fallback},
		{"999 below range", ce(999, ""), fallback},
		{"1016 unassigned", ce(1016, ""), fallback},
		{"2999 unassigned", ce(2999, ""), fallback},
		{"3000 registered", ce(3000, "r"), websocket.FormatCloseMessage(3000, "r")},
		{"4999 private", ce(4999, "p"), websocket.FormatCloseMessage(4999, "p")},
		{"5000 above range", ce(5000, ""), fallback},
		{"long reason", ce(4000, long), websocket.FormatCloseMessage(4000, long[:123])},
	} {
		got := wire.CloseFor(tc.err, fb, fbText)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %q; want %q", tc.name, got, tc.want)
		}
		if len(got) > 125 {
			t.Errorf("%s: close payload of %d bytes", tc.name, len(got))
		}
		if len(got) >= 2 {
			if code := binary.BigEndian.Uint16(got); code == 1005 || code == 1006 || code == 1015 {
				t.Errorf("%s: %d on the wire", tc.name, code)
			}
		}
	}
}

// wire.TruncateReason keeps at most 123 bytes and never splits a UTF-8
// sequence, whatever its length (2, 3 or 4 bytes) and where it falls.
func TestTruncateReason(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want int // length kept
	}{
		{"short", "gateway starting", 16},
		{"exactly 123", strings.Repeat("a", 123), 123},
		{"124 ASCII", strings.Repeat("a", 124), 123},
		{"2-byte rune across the limit", strings.Repeat("a", 122) + "é", 122},
		{"2-byte rune ending at the limit", strings.Repeat("a", 121) + "é" + "z", 123},
		{"3-byte rune across the limit", strings.Repeat("a", 121) + "€", 121},
		{"4-byte rune across the limit", strings.Repeat("a", 120) + "😀", 120},
		{"4-byte rune one byte in", strings.Repeat("a", 122) + "😀", 122},
		{"all 3-byte runes", strings.Repeat("€", 60), 123},
		{"all 4-byte runes", strings.Repeat("😀", 40), 120},
	} {
		got := wire.TruncateReason(tc.in)
		if len(got) != tc.want || !strings.HasPrefix(tc.in, got) || !utf8.ValidString(got) {
			t.Errorf("%s: kept %d bytes (%q…); want %d, a valid prefix", tc.name, len(got), got[max(0, len(got)-4):], tc.want)
		}
	}
}
