package proxy

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
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
// struct decoding matches keys case-insensitively, so frames are read
// with the member scanner of jsonscan.go instead: keys compare exactly
// (after unescaping), values are slices of the frame, and reading a frame
// allocates one slice of members per object looked into.
type object struct {
	data    []byte
	members []member
}

// objectMembersHint is how many members an object's slice starts with:
// enough for the frames holdfast reads.
const objectMembersHint = 8

// decodeObject reads a JSON object; ok is false for anything else,
// invalid JSON included.
func decodeObject(data []byte) (object, bool) {
	if !json.Valid(data) {
		return object{}, false
	}
	return objectIn(data)
}

// objectIn reads the members of data, valid JSON, if it is an object.
func objectIn(data []byte) (object, bool) {
	ms, ok := objectMembers(data, 0, make([]member, 0, objectMembersHint))
	if !ok {
		return object{}, false
	}
	return object{data: data, members: ms}, true
}

// get returns the raw value of the member k; of duplicates, the last.
func (m object) get(k string) (json.RawMessage, bool) {
	for i := len(m.members) - 1; i >= 0; i-- {
		if mb := &m.members[i]; mb.keyIs(k) {
			return m.data[mb.vstart:mb.end], true
		}
	}
	return nil, false
}

// object returns the member k if it is a JSON object.
func (m object) object(k string) (object, bool) {
	raw, ok := m.get(k)
	if !ok || len(raw) == 0 || raw[0] != '{' {
		return object{}, false
	}
	return objectIn(raw)
}

// str returns the member k if it is a JSON string, decoded.
func (m object) str(k string) (string, bool) {
	raw, ok := m.get(k)
	if !ok || len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true // nothing to unescape or replace
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
	raw, _ := m.get(k)
	return string(raw) == lit
}

// num returns the member k if it is a JSON number (within float64's range,
// as encoding/json decodes it).
func (m object) num(k string) (float64, bool) {
	raw, ok := m.get(k)
	if !ok || len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
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
	id, _ = f.get("id")
	if params, ok := f.object("params"); ok {
		if dev, ok := params.get("device"); ok && string(dev) != "null" {
			return nonceBound, id
		}
	}
	return replayable, id
}

// first returns its first argument.
func first(raw json.RawMessage, _ bool) json.RawMessage { return raw }

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
	if typ, _ := f.str("type"); typ != "res" || !sameID(first(f.get("id")), id) {
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
