package proxy

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
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
// (after unescaping), values are slices of the frame, and the member lists
// of the objects looked into live in a memberArena on the reader's stack,
// so that reading a handshake frame allocates nothing.
//
// An object holds no pointer into its arena (only where its list is), so
// that escape analysis, which does not tell a struct's fields apart, keeps
// the arena on the stack when a value read from the frame escapes.
type object struct {
	data []byte
	// first is the index of the object's first member in its arena, or
	// -1-k for the arena's k-th spilled list; n is how many it has.
	first, n int
}

// memberArena holds the member lists of the objects of one frame. Lists
// that do not fit spill to the heap.
type memberArena struct {
	buf   [arenaMembers]member
	used  int
	spill [][]member
}

// arenaMembers is enough for the objects holdfast reads of a hello-ok
// (its envelope, payload and policy).
const arenaMembers = 32

// decodeObject reads a JSON object; ok is false for anything else,
// invalid JSON included.
func (a *memberArena) decodeObject(data []byte) (object, bool) {
	if !validJSON(data) {
		return object{}, false
	}
	return a.objectIn(data)
}

// objectIn reads the members of data, valid JSON, if it is an object.
func (a *memberArena) objectIn(data []byte) (object, bool) {
	room := len(a.buf) - a.used
	ms, ok := objectMembers(data, 0, a.buf[a.used:a.used:len(a.buf)])
	if !ok {
		return object{}, false
	}
	if len(ms) <= room {
		o := object{data: data, first: a.used, n: len(ms)}
		a.used += len(ms)
		return o, true
	}
	// A copy, though append has already moved ms to the heap: escape
	// analysis cannot tell, and would move the arena there too.
	a.spill = append(a.spill, slices.Clone(ms))
	return object{data: data, first: -len(a.spill), n: len(ms)}, true
}

// members returns o's member list.
func (a *memberArena) members(o object) []member {
	if o.first >= 0 {
		return a.buf[o.first : o.first+o.n]
	}
	return a.spill[-1-o.first]
}

// get returns the raw value of o's member k; of duplicates, the last.
func (a *memberArena) get(o object, k string) (json.RawMessage, bool) {
	ms := a.members(o)
	for i := len(ms) - 1; i >= 0; i-- {
		if mb := &ms[i]; mb.keyIs(k) {
			return o.data[mb.vstart:mb.end], true
		}
	}
	return nil, false
}

// object returns o's member k if it is a JSON object.
func (a *memberArena) object(o object, k string) (object, bool) {
	raw, ok := a.get(o, k)
	if !ok || len(raw) == 0 || raw[0] != '{' {
		return object{}, false
	}
	return a.objectIn(raw)
}

// str returns o's member k if it is a JSON string, decoded.
func (a *memberArena) str(o object, k string) (string, bool) {
	raw, ok := a.get(o, k)
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

// is reports whether o's member k is exactly the JSON literal lit (true,
// false).
func (a *memberArena) is(o object, k, lit string) bool {
	raw, _ := a.get(o, k)
	return string(raw) == lit
}

// num returns o's member k if it is a JSON number (within float64's
// range, as encoding/json decodes it).
func (a *memberArena) num(o object, k string) (float64, bool) {
	raw, ok := a.get(o, k)
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
	var a memberArena
	f, ok := a.decodeObject(data)
	if !ok {
		return notConnect, nil
	}
	typ, _ := a.str(f, "type")
	method, _ := a.str(f, "method")
	idv, _ := a.str(f, "id")
	if typ != "req" || method != "connect" || idv == "" {
		return notConnect, nil
	}
	id, _ = a.get(f, "id")
	if params, ok := a.object(f, "params"); ok {
		if dev, ok := a.get(params, "device"); ok && string(dev) != "null" {
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
	var a memberArena
	f, ok := a.decodeObject(data)
	if !ok {
		return challenge{}, false
	}
	typ, _ := a.str(f, "type")
	event, _ := a.str(f, "event")
	payload, _ := a.object(f, "payload")
	nonce, _ := a.str(payload, "nonce")
	if typ != "event" || event != "connect.challenge" || len(bytes.TrimSpace([]byte(nonce))) == 0 {
		return challenge{}, false
	}
	ts, _ := a.num(payload, "ts")
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
	var arena memberArena
	f, ok := arena.decodeObject(data)
	if !ok {
		return answer{}
	}
	if typ, _ := arena.str(f, "type"); typ != "res" || !sameID(first(arena.get(f, "id")), id) {
		return answer{}
	}
	a := answer{isResponse: true, ok: arena.is(f, "ok", "true")}
	if payload, ok := arena.object(f, "payload"); a.ok && ok {
		if typ, _ := arena.str(payload, "type"); typ == "hello-ok" {
			a.helloOK = true
			if p, ok := arena.num(payload, "protocol"); ok && p >= 1 && p <= math.MaxInt32 && p == math.Trunc(p) {
				a.protocol = int(p)
			}
			policy, _ := arena.object(payload, "policy")
			if mp, ok := arena.num(policy, "maxPayload"); ok && mp >= 1 && mp <= math.MaxInt64/2 {
				a.maxPayload = int64(mp)
			}
		}
	}
	// isRetryableGatewayStartupUnavailableError: all three must hold.
	e, hasError := arena.object(f, "error")
	code, _ := arena.str(e, "code")
	details, _ := arena.object(e, "details")
	reason, _ := arena.str(details, "reason")
	if !a.ok && hasError && code == "UNAVAILABLE" && arena.is(e, "retryable", "true") && reason == startupReason {
		a.startup = true
		a.retryAfterMs = -1
		if ms, ok := arena.num(e, "retryAfterMs"); ok {
			// As clients clamp it: floor, and a negative value is the
			// minimum, not absent.
			a.retryAfterMs = int64(math.Floor(max(0, min(ms, math.MaxInt32))))
		}
	}
	return a
}
