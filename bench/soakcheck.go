package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// The soak's messages. Each is a req frame the fake gateway (Echo mode)
// sends back verbatim:
//
//	{"type":"req","id":"SID:SEQ","method":"soak.echo","params":{"sid":"SID","seq":SEQ,"pad":"PAD","crc":"XXXXXXXX"}}
//
// SID names the connection (unique over the run), SEQ numbers its messages
// from 1, PAD is filler of the chosen size, and XXXXXXXX is the CRC-32
// (IEEE) of every byte before `"crc"` in hex: any changed byte, a message of
// another connection or a renumbered one fails the check.

// soakCRCTail is the fixed end of a soak message after its checksum.
const soakCRCTail = `"}}`

// soakMessage returns message seq of connection sid with pad as filler
// (pad must need no JSON escaping).
func soakMessage(sid string, seq int64, pad []byte) []byte {
	b := make([]byte, 0, 96+2*len(sid)+len(pad))
	b = append(b, `{"type":"req","id":"`...)
	b = append(b, sid...)
	b = append(b, ':')
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `","method":"soak.echo","params":{"sid":"`...)
	b = append(b, sid...)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"pad":"`...)
	b = append(b, pad...)
	b = append(b, `",`...)
	sum := crc32.ChecksumIEEE(b)
	b = append(b, `"crc":"`...)
	b = fmt.Appendf(b, "%08x", sum)
	return append(b, soakCRCTail...)
}

// parseSoakMessage checks msg's checksum and returns its connection and
// number; ok is false for anything soakMessage did not make.
func parseSoakMessage(msg []byte) (sid string, seq int64, ok bool) {
	const crcField = `"crc":"`
	n := len(msg) - len(soakCRCTail) - 8 - len(crcField)
	if n <= 0 || !bytes.Equal(msg[n:n+len(crcField)], []byte(crcField)) || !bytes.HasSuffix(msg, []byte(soakCRCTail)) {
		return "", 0, false
	}
	hex := msg[n+len(crcField) : n+len(crcField)+8]
	want, err := strconv.ParseUint(string(hex), 16, 32)
	if err != nil || crc32.ChecksumIEEE(msg[:n]) != uint32(want) {
		return "", 0, false
	}
	var f struct {
		Type   string `json:"type"`
		ID     string `json:"id"`
		Method string `json:"method"`
		Params struct {
			Sid string `json:"sid"`
			Seq int64  `json:"seq"`
		} `json:"params"`
	}
	if err := json.Unmarshal(msg, &f); err != nil || f.Type != "req" || f.Method != "soak.echo" ||
		f.ID != f.Params.Sid+":"+strconv.FormatInt(f.Params.Seq, 10) {
		return "", 0, false
	}
	return f.Params.Sid, f.Params.Seq, true
}

// msgTally holds the run's message counts, all connections together.
type msgTally struct {
	sent, received, lost, duplicated, reordered, corrupted, unanswered atomic.Int64
}

// msgTracker follows the numbered messages of one connection. Its methods
// are safe for concurrent use: one goroutine sends, another receives.
//
// Every message received is counted in received and, when it is not as
// expected, in exactly one of corrupted (checksum, another connection's or
// a number never sent), duplicated (a number already received) or
// reordered (a number below one received before it). When the connection
// ends, each number sent whose echo never came intact is lost, except
// when the connection ended by a close frame with a documented code from
// holdfast (a gateway restart, say): then those above the highest number
// received were still in flight when the gateway closed, and count as
// unanswered, not lost. A number below the highest received that never
// came is lost in any case: echoes return in order, so it was dropped.
type msgTracker struct {
	sid   string
	tally *msgTally

	mu      sync.Mutex
	sent    int64
	got     []bool // got[s-1]: number s received intact
	waiting int64  // numbers sent whose echo has not come intact
	maxGot  int64
	ended   bool
}

// newMsgTracker returns the tracker of connection sid, counting into t.
func newMsgTracker(sid string, t *msgTally) *msgTracker {
	return &msgTracker{sid: sid, tally: t}
}

// next reserves the next number; call unsend if it could not be written.
func (m *msgTracker) next() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent++
	m.waiting++
	m.got = append(m.got, false)
	m.tally.sent.Add(1)
	return m.sent
}

// unsend takes back number seq, the last reserved, whose write failed.
func (m *msgTracker) unsend(seq int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq != m.sent || m.ended {
		return
	}
	m.sent--
	m.waiting--
	m.got = m.got[:m.sent]
	m.tally.sent.Add(-1)
}

// outstanding returns how many numbers sent have not come back.
func (m *msgTracker) outstanding() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.waiting
}

// receive classifies one message received on the connection.
func (m *msgTracker) receive(msg []byte) {
	m.tally.received.Add(1)
	sid, seq, ok := parseSoakMessage(msg)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !ok || sid != m.sid || seq < 1 || seq > m.sent:
		m.tally.corrupted.Add(1)
	case m.got[seq-1]:
		m.tally.duplicated.Add(1)
	case seq < m.maxGot:
		m.got[seq-1] = true
		m.waiting--
		m.tally.reordered.Add(1)
	default:
		m.got[seq-1] = true
		m.waiting--
		m.maxGot = seq
	}
}

// end closes the books of the connection (once): documented tells whether
// holdfast ended it with a close frame carrying a documented code.
func (m *msgTracker) end(documented bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ended {
		return
	}
	m.ended = true
	for i, g := range m.got {
		switch {
		case g:
		case documented && int64(i+1) > m.maxGot:
			m.tally.unanswered.Add(1)
		default:
			m.tally.lost.Add(1)
		}
	}
}

// Close codes, as the soak's clients see them. closeNone is an ending with
// nothing from holdfast (no close frame, no HTTP answer) before the
// client's deadline; closeNoFrame (1006, as gorilla reports it) a
// connection that ended without a close frame.
const (
	closeNone    = 0
	closeNoFrame = 1006
)

// documentedCloseCodes are the close codes README.md's "Close codes
// holdfast sends" lets a client see: holdfast's own (1008, 1009, 1011,
// 1012, 1013) and the gateway's passed through (1000 from its pre-auth
// timer or in answer to the client's close, 1001, 1002 protocol, 1008,
// 1012 service restart, 1013 gateway starting).
var documentedCloseCodes = []int{1000, 1001, 1002, 1008, 1009, 1011, 1012, 1013}

// documentedClose reports whether code is a documented close code.
func documentedClose(code int) bool { return slices.Contains(documentedCloseCodes, code) }

// spread is the first, last and largest of a series of samples.
type spread struct {
	First int64 `json:"first"`
	Last  int64 `json:"last"`
	Max   int64 `json:"max"`
}

// spreadOf returns the spread of v (zero for none).
func spreadOf(v []int64) spread {
	if len(v) == 0 {
		return spread{}
	}
	return spread{First: v[0], Last: v[len(v)-1], Max: slices.Max(v)}
}

// growth returns last/first - 1 (0 when first is 0).
func (s spread) growth() float64 {
	if s.First == 0 {
		return 0
	}
	return float64(s.Last)/float64(s.First) - 1
}

// problems returns what the soak's result r breaks, one sentence each;
// none means the run passed. Resource growth under load is reported, not
// judged here (a 60-second run is too short for it); a leak is judged
// once the load is over: a holdfast with more goroutines or descriptors
// than before the load.
func (r *soakReport) problems() []string {
	var p []string
	bad := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	for _, c := range []struct {
		name string
		n    int64
	}{{"lost", r.Lost}, {"duplicated", r.Duplicated}, {"reordered", r.Reordered}, {"corrupted", r.Corrupted}} {
		if c.n != 0 {
			bad("%d messages %s", c.n, c.name)
		}
	}
	if r.MessagesReceived == 0 {
		bad("no message relayed")
	}
	if r.HandshakesOK == 0 {
		bad("no handshake got hello-ok")
	}
	codes := make([]int, 0, len(r.CloseCodes))
	for code := range r.CloseCodes {
		codes = append(codes, code)
	}
	slices.Sort(codes)
	for _, code := range codes {
		n := r.CloseCodes[code]
		switch {
		case n == 0:
		case code == closeNone:
			bad("%d connections ended with nothing from holdfast (no close frame, no HTTP answer) before the client's deadline", n)
		case code == closeNoFrame:
			bad("%d connections ended without a close frame (1006)", n)
		case !documentedClose(code):
			bad("%d connections closed with %d, not a documented close code", n, code)
		}
	}
	if r.WindowHandshakes != r.WindowHelloOK {
		bad("%d of %d handshakes begun in a startup window got no hello-ok", r.WindowHandshakes-r.WindowHelloOK, r.WindowHandshakes)
	}
	if r.GatewayRestarts < 1 {
		bad("no gateway restart")
	}
	if r.Reloads < 1 || r.ReloadsInvalid < 1 {
		bad("%d reloads, %d of them invalid: want at least one of each", r.Reloads, r.ReloadsInvalid)
	}
	for name, got := range r.ReloadsCounted {
		if want := [2]int64{r.Reloads - r.ReloadsInvalid, r.ReloadsInvalid}; got != want {
			bad("%s counted %d successful and %d refused reloads, want %d and %d", name, got[0], got[1], want[0], want[1])
		}
	}
	if r.Rotations < 1 {
		bad("no certificate rotation")
	}
	if r.RotationsServed != r.Rotations {
		bad("%d of %d rotated certificates were served to new TLS clients", r.RotationsServed, r.Rotations)
	}
	for _, name := range slices.Sorted(maps.Keys(r.Idle)) {
		if c := r.Idle[name]; !c.back() {
			bad("%s did not come back to its idle counts after the load: %d goroutines and %d descriptors before, %d and %d after",
				name, c.GoroutinesBefore, c.FDsBefore, c.GoroutinesAfter, c.FDsAfter)
		}
	}
	if len(r.Samples) == 0 {
		bad("no resource sample after the warm-up")
	}
	return p
}
