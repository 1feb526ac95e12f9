package gwproto

import (
	"encoding/json"
	"strconv"
	"time"
)

// NewChallenge returns a connect.challenge event with nonce, ts now (the
// client's signedAt, in milliseconds) and caps, the capabilities a gateway
// announced (none when nil), as the gateway writes one (PROTOCOL.md §1).
// nonce must be a JSON string's contents that need no escaping (a UUID).
func NewChallenge(nonce string, now time.Time, caps json.RawMessage) []byte {
	b := []byte(`{"type":"event","event":"connect.challenge","payload":{"nonce":"`)
	b = append(b, nonce...)
	b = append(b, `","ts":`...)
	b = strconv.AppendInt(b, now.UnixMilli(), 10)
	if len(caps) > 0 {
		b = append(b, `,"capabilities":`...)
		b = append(b, caps...)
	}
	return append(b, "}}"...)
}

// StartupUnavailable is the gateway's startup answer to the connect whose
// id is id (the id as the client sent it), byte for byte the shape
// rejectGatewayStartupConnect sends (PROTOCOL.md §1): what clients retry
// on.
func StartupUnavailable(id json.RawMessage) []byte {
	b := []byte(`{"type":"res","id":`)
	b = append(b, id...)
	return append(b, `,"ok":false,"error":{"code":"UNAVAILABLE","message":"gateway starting; retry shortly","retryable":true,"retryAfterMs":500,"details":{"reason":"`+StartupReason+`"}}}`...)
}
