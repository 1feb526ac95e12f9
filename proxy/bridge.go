package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// The legacy bridge carries protocol-3 clients (OpenClaw up to 2026.4.27)
// to protocol-4 gateways (2026.5.12 on), which refuse them with "protocol
// mismatch" and close 1002 (PROTOCOL.md §10):
//
//   - Connect rewrite: a connect with maxProtocol < 4 and minProtocol ≤ 4
//     (and minProtocol ≤ maxProtocol) is sent with maxProtocol 4. Only that
//     number changes; every other byte stays as the client wrote it, so a
//     device signature (which does not cover the protocol numbers) still
//     verifies. Node connects (role and client.mode "node") are left alone:
//     gateways from 2026.7.1 admit them natively. The rewritten frame is
//     the one forwarded, held and replayed.
//   - Envelope filter: once the gateway answers hello-ok with a protocol
//     the client did not offer, the session is bridged. Every text frame
//     the gateway sends it keeps only the keys protocol 3 knows (a
//     whitelist), because the old client drops any frame with an unknown
//     key, and its tick watchdog then closes 4000. No frame is dropped,
//     merged or added, so event seq numbers stay continuous.
//
// Sessions that are not bridged keep the streaming splice untouched.

// bridgeProtocol is the protocol a legacy connect is raised to.
const bridgeProtocol = 4

// The keys of protocol 3's closed envelopes (gateway-protocol
// schema/frames.ts as of 2026.4.27).
var (
	eventKeysV3 = []string{"type", "event", "payload", "seq", "stateVersion"}
	resKeysV3   = []string{"type", "id", "ok", "payload", "error"}
	errorKeysV3 = []string{"code", "message", "details", "retryable", "retryAfterMs"}
)

// legacyConnect is what a rewritten connect asked for, for the bridge's
// decision at hello-ok and its logs.
type legacyConnect struct {
	minProtocol, maxProtocol int
	clientID, clientMode     string // for logs; never auth fields
}

// rewriteLegacyConnect returns data with params.maxProtocol replaced by 4
// when the connect is a legacy one the bridge carries (see above), and ok
// false (data unchanged) otherwise. Ambiguous frames (a duplicated key on
// the path, a protocol number that is not a positive integer) are left
// alone: the gateway answers them as they are.
func rewriteLegacyConnect(data []byte) (out []byte, lc legacyConnect, ok bool) {
	if !validJSON(data) {
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
	if !ok1 || !ok2 || maxP >= bridgeProtocol || minP > bridgeProtocol || minP > maxP {
		return data, lc, false
	}
	lc = legacyConnect{minProtocol: minP, maxProtocol: maxP}
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
			lc.clientID, _ = jsonString(data[idM.vstart:idM.end])
		}
		if modeM != nil {
			lc.clientMode, _ = jsonString(data[modeM.vstart:modeM.end])
		}
	}
	if role == "node" && lc.clientMode == "node" {
		return data, lc, false
	}
	out = make([]byte, 0, len(data))
	out = append(out, data[:maxM.vstart]...)
	out = strconv.AppendInt(out, bridgeProtocol, 10)
	out = append(out, data[maxM.end:]...)
	lc.clientID, lc.clientMode = logSafe(lc.clientID), logSafe(lc.clientMode)
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

// filterV3 returns frame data reduced to the keys of protocol 3's envelope
// for its type: event and res frames lose every other top-level key, and a
// res's error object every key ErrorShape v3 lacks. Frames that need no
// change, and anything that is not a valid JSON event or res object, are
// returned as they are (the same slice). What is kept keeps its bytes and
// order.
func filterV3(data []byte) []byte {
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
	if (!drop && !errDrop) || !validJSON(data) {
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

// bridgeConnect applies the connect rewrite to the client's first frame
// when the bridge is on, and remembers what the client asked for.
func (c *conn) bridgeConnect(first frame) frame {
	if c.h.cfg.DisableLegacyBridge {
		return first
	}
	out, lc, ok := rewriteLegacyConnect(first.data)
	if !ok {
		return first
	}
	c.legacy = &lc
	c.h.log.Debug("legacy connect: maxProtocol raised to 4", "client", c.rec.clientAddr, "connect", c.rec.connectWord(),
		"client_id", lc.clientID, "client_mode", lc.clientMode, "min_protocol", lc.minProtocol, "max_protocol", lc.maxProtocol)
	return frame{typ: first.typ, data: out}
}

// startBridge decides at hello-ok whether the session is bridged: its
// connect was rewritten and the gateway chose a protocol the client did not
// offer (a hello-ok without a protocol counts as such). A bridged session's
// hello frames are filtered like every later frame.
func (c *conn) startBridge(protocol int) {
	lc := c.legacy
	if lc == nil {
		return
	}
	if protocol >= lc.minProtocol && protocol <= lc.maxProtocol {
		c.h.log.Debug("legacy connect: the gateway speaks the client's protocol; not bridged",
			"client", c.rec.clientAddr, "protocol", protocol)
		return
	}
	c.bridged = true
	c.h.metrics.BridgedSession()
	for i, f := range c.helloFrames {
		if f.typ == websocket.TextMessage {
			c.helloFrames[i].data = filterV3(f.data)
		}
	}
	c.h.log.Debug("legacy session bridged: gateway frames reduced to protocol 3 envelopes",
		"client", c.rec.clientAddr, "client_id", lc.clientID, "client_mode", lc.clientMode, "protocol", protocol)
}

// pumpBridged copies upstream→client on a bridged session: each message is
// read whole (up to the session's message limit), filtered and written.
// A larger message cannot be held; it is passed on unchanged rather than
// dropped.
func (c *conn) pumpBridged() {
	limit := c.maxPayload
	if limit <= 0 {
		limit = c.h.cfg.MaxMessageBytes
	}
	_, toClient := c.h.metrics.MessageCounters()
	err, readSide := copyFiltered(c.cw, c.up.ws, limit, c.h.cfg.WriteTimeout, toClient, &c.rec.toClient)
	c.endUpstreamSide(err, readSide)
}

// filterBufs holds the buffers bridged sessions read messages into. A
// buffer is taken once a message has begun to arrive and given back once
// it is written, so an idle bridged session holds none.
var filterBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledFilterBuf is the largest buffer given back to filterBufs.
const maxPooledFilterBuf = 1 << 20

// copyFiltered relays the gateway's messages from src to the client leg
// dst with the envelope filter: messages of up to limit bytes are read
// whole and text ones pass through filterV3; a larger one is streamed on
// unchanged. The gateway's pings and pongs go on to the client as they
// come, between the frames of a message too.
func copyFiltered(dst, src *wire.Conn, limit int64, writeTimeout time.Duration, count prometheus.Counter, t *tally) (err error, readSide bool) {
	rr := &recordingReader{}
	forward := func(opcode byte, payload []byte) {
		_ = dst.WriteControl(opcode, payload, time.Now().Add(writeTimeout))
	}
	for {
		typ, r, err := src.NextReader(forward)
		if err != nil {
			return err, true
		}
		rr.r, rr.err = r, nil
		buf := filterBufs.Get().(*bytes.Buffer)
		buf.Reset()
		n, err := buf.ReadFrom(io.LimitReader(rr, limit+1))
		if err != nil {
			putFilterBuf(buf)
			return err, true
		}
		var body io.Reader
		if n <= limit {
			data := buf.Bytes()
			if typ == websocket.TextMessage {
				data = filterV3(data)
			}
			body = bytes.NewReader(data)
		} else {
			body = io.MultiReader(bytes.NewReader(buf.Bytes()), rr)
		}
		sent, err := dst.WriteMessage(typ, body, writeTimeout)
		putFilterBuf(buf)
		if err, readSide := relayed(t, sent, err, rr.err, count); err != nil {
			return err, readSide
		}
	}
}

func putFilterBuf(b *bytes.Buffer) {
	if b.Cap() <= maxPooledFilterBuf {
		filterBufs.Put(b)
	}
}
