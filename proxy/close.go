package proxy

import (
	"errors"
	"time"

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
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
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
	for len(s) > 0 && s[len(s)-1]&0xC0 == 0x80 {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xC0 {
		s = s[:len(s)-1]
	}
	return s
}

// sendClose writes a close frame, best effort, within timeout, and flushes
// it out of any batch.
func sendClose(ws *websocket.Conn, payload []byte, timeout time.Duration) {
	_ = ws.WriteControl(websocket.CloseMessage, payload, time.Now().Add(timeout))
	flushConn(ws.NetConn())
}

// closeCode returns the code of a received close, or 0.
func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}
