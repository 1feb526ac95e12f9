package gwproto

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
)

// The legacy bridge (PROTOCOL.md §10) carries protocol-3 clients (OpenClaw
// up to 2026.4.27) to protocol-4 gateways (2026.5.12 on), which refuse
// them. Its two pure halves live here: RewriteLegacyConnect raises a
// legacy connect's maxProtocol, and FilterV3 reduces the gateway's frames
// to protocol 3's envelopes. Deciding which sessions are bridged is
// proxy's.

// BridgeProtocol is the protocol RewriteLegacyConnect raises a legacy
// connect's maxProtocol to.
const BridgeProtocol = 4

// The keys of protocol 3's closed envelopes (gateway-protocol
// schema/frames.ts as of 2026.4.27).
var (
	eventKeysV3 = []string{"type", "event", "payload", "seq", "stateVersion"}
	resKeysV3   = []string{"type", "id", "ok", "payload", "error"}
	errorKeysV3 = []string{"code", "message", "details", "retryable", "retryAfterMs"}
)

// LegacyConnect is what a rewritten connect asked for, for the bridge's
// decision at hello-ok and its logs. It holds no auth field.
type LegacyConnect struct {
	// MinProtocol and MaxProtocol are the range the client offered,
	// before the rewrite: integers, 1 ≤ MinProtocol ≤ MaxProtocol < 4.
	MinProtocol, MaxProtocol int
	// ClientID and ClientMode are params.client.id and .mode ("" when
	// absent or not a string), cut to 64 bytes and quoted when longer, for
	// logs only.
	ClientID, ClientMode string
}

// RewriteLegacyConnect returns a copy of data with params.maxProtocol
// replaced by BridgeProtocol when data is a legacy connect the bridge
// carries, with what it asked for and ok true; otherwise it returns data
// itself (the same slice, unchanged) and ok false.
//
// A legacy connect is valid JSON whose params.minProtocol and
// params.maxProtocol are positive integers (3.0 is one) with maxProtocol <
// 4, minProtocol ≤ 4 and minProtocol ≤ maxProtocol, and which is not a
// node connect (role "node" and client.mode "node": gateways from 2026.7.1
// admit those natively). Only the maxProtocol literal changes; every other
// byte stays as the client wrote it, so a device signature (which does
// not cover the protocol numbers) still verifies. Ambiguous frames (a
// duplicated key on the path, a protocol number that is not a positive
// integer) are left alone: the gateway answers them as they are. data is
// never modified.
func RewriteLegacyConnect(data []byte) (out []byte, lc LegacyConnect, ok bool) {
	if !ValidJSON(data) {
		return data, lc, false
	}
	// The member lists start on the stack (a connect's objects are small).
	var topBuf, paramsBuf, clientBuf [16]member
	top, ok := objectMembers(data, 0, topBuf[:0])
	if !ok {
		return data, lc, false
	}
	params, dup := find(top, "params")
	if params == nil || dup {
		return data, lc, false
	}
	pm, ok := objectMembers(data, params.vstart, paramsBuf[:0])
	if !ok {
		return data, lc, false
	}
	minM, dupMin := find(pm, "minProtocol")
	maxM, dupMax := find(pm, "maxProtocol")
	roleM, dupRole := find(pm, "role")
	clientM, dupClient := find(pm, "client")
	if minM == nil || maxM == nil || dupMin || dupMax || dupRole || dupClient {
		return data, lc, false
	}
	minP, ok1 := protocolNumber(data[minM.vstart:minM.end])
	maxP, ok2 := protocolNumber(data[maxM.vstart:maxM.end])
	if !ok1 || !ok2 || maxP >= BridgeProtocol || minP > BridgeProtocol || minP > maxP {
		return data, lc, false
	}
	lc = LegacyConnect{MinProtocol: minP, MaxProtocol: maxP}
	var role string
	if roleM != nil {
		role, _ = jsonString(data[roleM.vstart:roleM.end])
	}
	if clientM != nil {
		cm, ok := objectMembers(data, clientM.vstart, clientBuf[:0])
		if !ok {
			return data, lc, false
		}
		idM, dupID := find(cm, "id")
		modeM, dupMode := find(cm, "mode")
		if dupID || dupMode {
			return data, lc, false
		}
		if idM != nil {
			lc.ClientID, _ = jsonString(data[idM.vstart:idM.end])
		}
		if modeM != nil {
			lc.ClientMode, _ = jsonString(data[modeM.vstart:modeM.end])
		}
	}
	if role == "node" && lc.ClientMode == "node" {
		return data, lc, false
	}
	out = make([]byte, 0, len(data))
	out = append(out, data[:maxM.vstart]...)
	out = strconv.AppendInt(out, BridgeProtocol, 10)
	out = append(out, data[maxM.end:]...)
	lc.ClientID, lc.ClientMode = logSafe(lc.ClientID), logSafe(lc.ClientMode)
	return out, lc, true
}

// protocolNumber parses a JSON number that is a positive integer (the
// connect schema's "integer ≥ 1"; 3.0 is one).
func protocolNumber(raw []byte) (int, bool) {
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < 1 || f > math.MaxInt32 || f != math.Trunc(f) {
		return 0, false
	}
	return int(f), true
}

// jsonString decodes a raw JSON string value.
func jsonString(raw []byte) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

// logSafe bounds a client-chosen string before it reaches a log line.
func logSafe(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return s
}

// FilterV3 returns frame data reduced to the keys of protocol 3's envelope
// for its type, for a client that drops any frame with an unknown key:
// event frames keep only type, event, payload, seq and stateVersion; res
// frames only type, id, ok, payload and error, and a res's error object
// only code, message, details, retryable and retryAfterMs (ErrorShape v3).
// Keys match exactly (after unescaping); payloads are never looked into.
// Frames that need no change, and anything that is not a valid JSON event
// or res object (a duplicated type key included), are returned as they
// are: the same slice. A changed frame is a new slice; what is kept keeps
// its bytes and order. data is never modified.
func FilterV3(data []byte) []byte {
	var scratch [12]member
	top, ok := objectMembers(data, 0, scratch[:0])
	if !ok {
		return data
	}
	typ, dup := find(top, "type")
	if typ == nil || dup {
		return data
	}
	t, _ := jsonString(data[typ.vstart:typ.end])
	var keys []string
	switch t {
	case "event":
		keys = eventKeysV3
	case "res":
		keys = resKeysV3
	default:
		return data
	}
	drop := false
	var errM *member
	for i := range top {
		switch {
		case !top[i].keyIn(keys):
			drop = true
		case t == "res" && top[i].keyIs("error"):
			errM = &top[i]
		}
	}
	var errMembers []member
	errDrop := false
	if errM != nil {
		if errMembers, ok = objectMembers(data, errM.vstart, nil); ok {
			for i := range errMembers {
				if !errMembers[i].keyIn(errorKeysV3) {
					errDrop = true
				}
			}
		}
	}
	if (!drop && !errDrop) || !ValidJSON(data) {
		return data
	}
	out := make([]byte, 0, len(data))
	out = append(out, '{')
	n := 0
	for i := range top {
		m := &top[i]
		if !m.keyIn(keys) {
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		if m == errM && errDrop {
			out = append(out, data[m.start:m.vstart]...)
			out = appendKept(out, data, errMembers, errorKeysV3)
			continue
		}
		out = append(out, data[m.start:m.end]...)
	}
	return append(out, '}')
}

// appendKept appends an object made of the members of ms whose key is in
// keys.
func appendKept(out, data []byte, ms []member, keys []string) []byte {
	out = append(out, '{')
	n := 0
	for i := range ms {
		if !ms[i].keyIn(keys) {
			continue
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out = append(out, data[ms[i].start:ms[i].end]...)
	}
	return append(out, '}')
}
