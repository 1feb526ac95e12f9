package gwproto

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The gateway's startup-unavailable markers (gateway-protocol
// startup-unavailable.ts, PROTOCOL.md §1): a connect answered with an
// UNAVAILABLE error whose details.reason is StartupReason may be sent again
// once the gateway has started; the gateway then closes the socket with
// StartupCloseCode and StartupCloseReason.
const (
	// StartupReason is details.reason of the startup UNAVAILABLE answer,
	// and the name /readyz lists in "failing" while the gateway starts.
	StartupReason = "startup-sidecars"
	// StartupCloseCode is the close code (1013, try again later) that
	// follows the startup answer.
	StartupCloseCode = 1013
	// StartupCloseReason is the close reason that follows the startup
	// answer.
	StartupCloseReason = "gateway starting"
)

// ConnectKind classifies a client's first frame (ClassifyConnect).
type ConnectKind int

const (
	// NotConnect: not a well-formed connect request. holdfast forwards it
	// as it is and the gateway gives its own answer.
	NotConnect ConnectKind = iota
	// Replayable: a connect without params.device. Its bytes can be sent
	// again on a fresh upstream socket.
	Replayable
	// NonceBound: a connect with params.device. Its signature covers the
	// challenge nonce of the upstream socket it answers, so it can succeed
	// only there.
	NonceBound
)

// String returns the kind's name as logs show it: "replayable",
// "nonce-bound" or "not-connect".
func (k ConnectKind) String() string {
	switch k {
	case Replayable:
		return "replayable"
	case NonceBound:
		return "nonce-bound"
	default:
		return "not-connect"
	}
}

// An object is one JSON object of a frame, read into a memberArena: values
// are slices of the frame and the member lists live in the arena, on the
// reader's stack, so that finding members allocates nothing.
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
	buf [arenaMembers]member
	// used members are taken at the front of buf, back at its back.
	used, back int
	spill      [][]member
	// nested are objects a decodePath read along its path (the zero
	// object where there was none), their members at the back of buf.
	nested [pathDepth]object
}

// end is where the arena's free room ends.
func (a *memberArena) end() int { return len(a.buf) - a.back }

// arenaMembers is enough for the objects holdfast reads of a hello-ok
// (its envelope, payload and policy).
const arenaMembers = 32

// decodePath reads a JSON object; ok is false for anything else, invalid
// JSON included. The check and the members come from one pass (scanJSON),
// which also reads the members of the object that is the value of the
// outermost object's member path[0], and of that object's member path[1],
// so that object finds them without reading those objects again: a
// hello-ok's payload is most of it. At most pathDepth keys.
func (a *memberArena) decodePath(data []byte, path ...string) (object, bool) {
	ms, ok, isObject := scanJSON(data, a.buf[a.used:a.used:a.end()], true, a, path)
	if !ok || !isObject {
		return object{}, false
	}
	return a.place(data, ms)
}

// objectIn reads the members of data, valid JSON, if it is an object.
func (a *memberArena) objectIn(data []byte) (object, bool) {
	ms, ok := objectMembers(data, 0, a.buf[a.used:a.used:a.end()])
	if !ok {
		return object{}, false
	}
	return a.place(data, ms)
}

// place records ms, the members of data read into the arena's free room,
// as an object of the arena.
func (a *memberArena) place(data []byte, ms []member) (object, bool) {
	room := a.end() - a.used
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
	for _, n := range a.nested {
		if len(n.data) == len(raw) && &n.data[0] == &raw[0] {
			return n, true // read along the path
		}
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

// strIs reports whether o's member k is a JSON string that decodes to
// lit, as str would decode it, without making a string of it.
func (a *memberArena) strIs(o object, k, lit string) bool {
	raw, ok := a.get(o, k)
	if !ok || len(raw) < 2 || raw[0] != '"' {
		return false
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 {
		// Without escapes a string decodes to its bytes, invalid UTF-8
		// to U+FFFD: the same bytes are lit when they are valid, and
		// other bytes can be only with a U+FFFD in lit.
		if string(inner) == lit {
			return utf8.Valid(inner)
		}
		if !strings.Contains(lit, "\ufffd") {
			return false
		}
	}
	s, ok := a.str(o, k)
	return ok && s == lit
}

// nonEmptyStr reports whether o's member k is a JSON string that does not
// decode to "" (as str would decode it).
func (a *memberArena) nonEmptyStr(o object, k string) bool {
	raw, _ := a.get(o, k)
	if len(raw) > 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		return true // bytes without escapes decode to at least one rune
	}
	s, _ := a.str(o, k)
	return s != ""
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
	if f, ok := smallInt(raw); ok {
		return f, true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

// smallInt reads raw, a JSON number, when it is an integer of at most 15
// digits: exact in a float64, so ParseFloat would give the same.
func smallInt(raw []byte) (float64, bool) {
	digits := raw
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if raw[0] == '-' {
		return -float64(n), true
	}
	return float64(n), true
}

// ClassifyConnect reads only what holdfast needs of a client's first
// frame: whether it is a connect request, its id, and whether it carries a
// device proof. Keys match exactly, as on the gateway. A connect's id is a
// non-empty string (the gateway refuses anything else as an invalid
// request frame); it is returned as the client sent it, escapes and all,
// as a slice of data: compare it with SameID. For NotConnect the id is
// nil. It never looks at, keeps or returns auth fields.
func ClassifyConnect(data []byte) (kind ConnectKind, id json.RawMessage) {
	kind, id, _ = readConnect(data, false)
	return kind, id
}

// ReadConnect is ClassifyConnect and, for a connect, ReadOffer in one
// reading of the frame: what ClassifyConnect returns, and the connect's
// Offer (the zero Offer for NotConnect).
func ReadConnect(data []byte) (kind ConnectKind, id json.RawMessage, o Offer) {
	return readConnect(data, true)
}

// readConnect is ReadConnect, its Offer read only withOffer.
func readConnect(data []byte, withOffer bool) (kind ConnectKind, id json.RawMessage, o Offer) {
	var a memberArena
	f, ok := a.decodePath(data, "params", "client")
	if !ok {
		return NotConnect, nil, Offer{}
	}
	if !a.strIs(f, "type", "req") || !a.strIs(f, "method", "connect") || !a.nonEmptyStr(f, "id") {
		return NotConnect, nil, Offer{}
	}
	id, _ = a.get(f, "id")
	kind = Replayable
	params, ok := a.object(f, "params")
	if ok {
		if dev, ok := a.get(params, "device"); ok && string(dev) != "null" {
			kind = NonceBound
		}
	}
	if withOffer {
		o = a.offer(params)
	}
	return kind, id, o
}

// first returns its first argument.
func first(raw json.RawMessage, _ bool) json.RawMessage { return raw }

// SameID reports whether two raw JSON ids are the same string. The gateway
// re-serialises the connect's id in its answer ("a\/b" comes back as
// "a/b", "caf\u00e9" as "café", Go's "\u003c" as "<"), so ids are
// compared decoded, never as bytes. Anything that is not a JSON string is
// the same as nothing.
func SameID(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 || a[0] != '"' || b[0] != '"' {
		return false
	}
	if bytes.Equal(a, b) {
		return true
	}
	var sa, sb string
	return json.Unmarshal(a, &sa) == nil && json.Unmarshal(b, &sb) == nil && sa == sb
}

// Challenge is the gateway's connect.challenge event.
type Challenge struct {
	// Nonce is payload.nonce, never blank.
	Nonce string
	// TS is payload.ts (Unix milliseconds), 0 when absent or not a number.
	TS int64
}

// ParseChallenge accepts exactly a connect.challenge event with a
// non-blank nonce (keys match exactly); ok is false for anything else,
// invalid JSON included.
func ParseChallenge(data []byte) (c Challenge, ok bool) {
	var a memberArena
	f, ok := a.decodePath(data, "payload")
	if !ok {
		return Challenge{}, false
	}
	if !a.strIs(f, "type", "event") || !a.strIs(f, "event", "connect.challenge") {
		return Challenge{}, false
	}
	payload, _ := a.object(f, "payload")
	nonce, _ := a.str(payload, "nonce")
	if len(bytes.TrimSpace([]byte(nonce))) == 0 {
		return Challenge{}, false
	}
	ts, _ := a.num(payload, "ts")
	return Challenge{Nonce: nonce, TS: int64(ts)}, true
}

// IsChallenge reports what ParseChallenge's ok reports, without decoding
// the nonce and ts.
func IsChallenge(data []byte) bool {
	var a memberArena
	f, ok := a.decodePath(data, "payload")
	if !ok || !a.strIs(f, "type", "event") || !a.strIs(f, "event", "connect.challenge") {
		return false
	}
	payload, _ := a.object(f, "payload")
	raw, _ := a.get(payload, "nonce")
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		// Bytes without escapes decode to themselves, invalid UTF-8 to
		// U+FFFD, which is not space: blank exactly when the bytes are.
		return len(bytes.TrimSpace(raw[1:len(raw)-1])) > 0
	}
	nonce, _ := a.str(payload, "nonce")
	return len(strings.TrimSpace(nonce)) > 0
}

// ChallengeCapabilities returns the raw payload.capabilities of a
// challenge frame (whatever JSON value it is; of duplicates, the last), as
// a slice of data; ok is false when data is not a valid JSON object with
// an object payload holding that key. It does not check that data is a
// connect.challenge: ParseChallenge does.
func ChallengeCapabilities(data []byte) (caps json.RawMessage, ok bool) {
	var a memberArena
	f, ok := a.decodePath(data, "payload")
	if !ok {
		return nil, false
	}
	payload, ok := a.object(f, "payload")
	if !ok {
		return nil, false
	}
	return a.get(payload, "capabilities")
}

// Answer is what holdfast reads of the gateway's response to a connect.
// The zero Answer is a frame that is not that response.
type Answer struct {
	// IsResponse: a res frame whose id is the connect's (SameID).
	IsResponse bool
	// OK is the res frame's ok, true only for the JSON literal true.
	OK bool
	// HelloOK: OK and a payload of type hello-ok.
	HelloOK bool
	// MaxPayload is hello-ok's policy.maxPayload, 0 when absent or not a
	// number in [1, MaxInt64/2] (a fraction is truncated).
	MaxPayload int64
	// Protocol is hello-ok's protocol, 0 when absent or not an integer in
	// [1, MaxInt32].
	Protocol int
	// Startup: the error is the retryable startup UNAVAILABLE (code
	// UNAVAILABLE, retryable true, details.reason StartupReason).
	Startup bool
	// RetryAfterMs is a startup error's retryAfterMs as clients clamp it
	// (floored, negative as 0, at most MaxInt32), -1 when absent; 0 unless
	// Startup.
	RetryAfterMs int64
}

// ParseAnswer decodes an upstream frame received while a connect whose id
// is id (as ClassifyConnect returned it) is in flight. Keys match exactly
// and ids are compared as values (SameID). Any frame that is not the
// connect's response, invalid JSON included, gives the zero Answer.
func ParseAnswer(data []byte, id json.RawMessage) Answer {
	var arena memberArena
	f, ok := arena.decodePath(data, "payload", "policy")
	if !ok {
		return Answer{}
	}
	if !arena.strIs(f, "type", "res") || !SameID(first(arena.get(f, "id")), id) {
		return Answer{}
	}
	a := Answer{IsResponse: true, OK: arena.is(f, "ok", "true")}
	if payload, ok := arena.object(f, "payload"); a.OK && ok {
		if arena.strIs(payload, "type", "hello-ok") {
			a.HelloOK = true
			if p, ok := arena.num(payload, "protocol"); ok && p >= 1 && p <= math.MaxInt32 && p == math.Trunc(p) {
				a.Protocol = int(p)
			}
			policy, _ := arena.object(payload, "policy")
			if mp, ok := arena.num(policy, "maxPayload"); ok && mp >= 1 && mp <= math.MaxInt64/2 {
				a.MaxPayload = int64(mp)
			}
		}
	}
	if a.OK {
		return a
	}
	// isRetryableGatewayStartupUnavailableError: all three must hold.
	e, hasError := arena.object(f, "error")
	code, _ := arena.str(e, "code")
	details, _ := arena.object(e, "details")
	reason, _ := arena.str(details, "reason")
	if hasError && code == "UNAVAILABLE" && arena.is(e, "retryable", "true") && reason == StartupReason {
		a.Startup = true
		a.RetryAfterMs = -1
		if ms, ok := arena.num(e, "retryAfterMs"); ok {
			// As clients clamp it: floor, and a negative value is the
			// minimum, not absent.
			a.RetryAfterMs = int64(math.Floor(max(0, min(ms, math.MaxInt32))))
		}
	}
	return a
}
