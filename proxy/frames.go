package proxy

import (
	"bytes"
	"encoding/json"
	"math"
)

// The gateway's startup-unavailable markers (gateway-protocol
// startup-unavailable.ts): a connect answered with this error may be sent
// again once the gateway has started.
const (
	startupReason      = "startup-sidecars"
	startupCloseCode   = 1013
	startupCloseReason = "gateway starting"
)

// connectKind classifies a client's first frame.
type connectKind int

const (
	// notConnect: not a well-formed connect request. It is forwarded as it
	// is and the gateway gives its own answer.
	notConnect connectKind = iota
	// replayable: a connect without params.device. Its bytes can be sent
	// again on a fresh upstream socket.
	replayable
	// nonceBound: a connect with params.device. Its signature covers this
	// upstream socket's challenge nonce, so it can succeed only there.
	nonceBound
)

func (k connectKind) String() string {
	switch k {
	case replayable:
		return "replayable"
	case nonceBound:
		return "nonce-bound"
	default:
		return "not-connect"
	}
}

// The gateway reads frames with JSON.parse and exact-case property names:
// "tYpe" is not "type", and of duplicated keys the last one counts. Go's
// struct decoding matches keys case-insensitively, so frames are decoded
// into maps instead (which keep exact keys and the last duplicate).
type object map[string]json.RawMessage

// decodeObject decodes a JSON object; ok is false for anything else.
func decodeObject(data []byte) (object, bool) {
	var m object
	if json.Unmarshal(data, &m) != nil || m == nil {
		return nil, false
	}
	return m, true
}

// object returns the member k if it is a JSON object.
func (m object) object(k string) (object, bool) {
	raw, ok := m[k]
	if !ok || len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	return decodeObject(raw)
}

// str returns the member k if it is a JSON string, decoded.
func (m object) str(k string) (string, bool) {
	raw, ok := m[k]
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// is reports whether the member k is exactly the JSON literal lit (true,
// false).
func (m object) is(k, lit string) bool {
	return string(m[k]) == lit
}

// num returns the member k if it is a JSON number.
func (m object) num(k string) (float64, bool) {
	raw, ok := m[k]
	if !ok || len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	var f float64
	if json.Unmarshal(raw, &f) != nil {
		return 0, false
	}
	return f, true
}

// classifyConnect reads only what holdfast needs of a first frame: whether
// it is a connect request, its id, and whether it carries a device proof.
// Keys match exactly, as on the gateway. A connect's id is a non-empty
// string (the gateway refuses anything else as an invalid request frame);
// it is returned as the client sent it, escapes and all: compare it with
// sameID. It never looks at, keeps or logs auth fields.
func classifyConnect(data []byte) (kind connectKind, id json.RawMessage) {
	f, ok := decodeObject(data)
	if !ok {
		return notConnect, nil
	}
	typ, _ := f.str("type")
	method, _ := f.str("method")
	idv, _ := f.str("id")
	if typ != "req" || method != "connect" || idv == "" {
		return notConnect, nil
	}
	id = f["id"]
	if params, ok := f.object("params"); ok {
		if dev, ok := params["device"]; ok && string(dev) != "null" {
			return nonceBound, id
		}
	}
	return replayable, id
}

// sameID reports whether two JSON ids are the same value. The gateway
// re-serialises the connect's id in its answer ("a\/b" comes back as
// "a/b", "caf\u00e9" as "café", Go's "\u003c" as "<"), so ids are
// compared decoded, never as bytes.
func sameID(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 || a[0] != '"' || b[0] != '"' {
		return false
	}
	if bytes.Equal(a, b) {
		return true
	}
	var sa, sb string
	return json.Unmarshal(a, &sa) == nil && json.Unmarshal(b, &sb) == nil && sa == sb
}

// challenge is the gateway's connect.challenge event.
type challenge struct {
	Nonce string
	TS    int64
}

// parseChallenge accepts exactly a connect.challenge event with a non-blank
// nonce (keys match exactly).
func parseChallenge(data []byte) (challenge, bool) {
	f, ok := decodeObject(data)
	if !ok {
		return challenge{}, false
	}
	typ, _ := f.str("type")
	event, _ := f.str("event")
	payload, _ := f.object("payload")
	nonce, _ := payload.str("nonce")
	if typ != "event" || event != "connect.challenge" || len(bytes.TrimSpace([]byte(nonce))) == 0 {
		return challenge{}, false
	}
	ts, _ := payload.num("ts")
	return challenge{Nonce: nonce, TS: int64(ts)}, true
}

// answer is the gateway's response to a connect.
type answer struct {
	// isResponse: a res frame whose id equals the connect's.
	isResponse bool
	ok         bool
	helloOK    bool
	// maxPayload is hello-ok's policy.maxPayload, 0 when absent.
	maxPayload int64
	// protocol is hello-ok's protocol, 0 when absent.
	protocol int
	// startup: the error is the retryable startup UNAVAILABLE.
	startup bool
	// retryAfterMs is a startup error's retryAfterMs, -1 when absent.
	retryAfterMs int64
}

// parseAnswer decodes an upstream frame received while a connect with id is
// in flight. Keys match exactly and ids are compared as values (sameID).
func parseAnswer(data []byte, id json.RawMessage) answer {
	f, ok := decodeObject(data)
	if !ok {
		return answer{}
	}
	if typ, _ := f.str("type"); typ != "res" || !sameID(f["id"], id) {
		return answer{}
	}
	a := answer{isResponse: true, ok: f.is("ok", "true")}
	if payload, ok := f.object("payload"); a.ok && ok {
		if typ, _ := payload.str("type"); typ == "hello-ok" {
			a.helloOK = true
			if p, ok := payload.num("protocol"); ok && p >= 1 && p <= math.MaxInt32 && p == math.Trunc(p) {
				a.protocol = int(p)
			}
			policy, _ := payload.object("policy")
			if mp, ok := policy.num("maxPayload"); ok && mp >= 1 && mp <= math.MaxInt64/2 {
				a.maxPayload = int64(mp)
			}
		}
	}
	// isRetryableGatewayStartupUnavailableError: all three must hold.
	e, hasError := f.object("error")
	code, _ := e.str("code")
	details, _ := e.object("details")
	reason, _ := details.str("reason")
	if !a.ok && hasError && code == "UNAVAILABLE" && e.is("retryable", "true") && reason == startupReason {
		a.startup = true
		a.retryAfterMs = -1
		if ms, ok := e.num("retryAfterMs"); ok {
			// As clients clamp it: floor, and a negative value is the
			// minimum, not absent.
			a.retryAfterMs = int64(math.Floor(max(0, min(ms, math.MaxInt32))))
		}
	}
	return a
}
