package wire

import (
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Relay moves the frames of one direction of a spliced session from
// its source leg's read chunk into its destination leg's write batch,
// without gorilla's message reader: frame headers are parsed in place and
// each payload is copied once, unmasked and masked again in the same pass.
// Every spliced direction runs one, but a bridged session's gateway→client
// direction, which reads whole messages (NextReader) to filter them.
//
// What it guarantees, as the message path did:
//
//   - Messages keep their type, their bytes, their boundaries and their
//     order. A frame may leave as several (at most one chunk each, or one
//     per read when its payload arrives in pieces), so that every frame is
//     written whole under the destination's write lock and never
//     interleaves with a control frame written by the other direction.
//   - Toward the gateway every frame is masked with a fresh key of
//     holdfast's own (RFC 6455 §5.3, §10.3): the client's key never
//     reaches the gateway. Toward the client frames go unmasked.
//   - Pings and pongs are passed on to the other leg as they come, between
//     the frames of a message too.
//   - A close frame is answered on its own leg with its code (gorilla's
//     echo) and ends the relay with a *websocket.CloseError.
//   - A frame that breaks RFC 6455 (RSV bits, an unknown opcode, a control
//     frame over 125 bytes or fragmented, a continuation with no message or
//     a message inside another, a client frame unmasked or a gateway frame
//     masked, a 64-bit length with its top bit set, a bad close frame) gets
//     close 1002 on its leg and ends the relay with an error that is not a
//     close; a client message over limit gets 1009 and ends it with
//     websocket.ErrReadLimit. The session's ending (outcome.go) then tells
//     the other leg.
//
// Nothing is written on a leg after a close frame (Conn refuses it).
// Between frames, and while a frame's payload is awaited, the relay holds
// no chunk: it waits on the socket's RawConn, or, idle between bursts with
// a Parker (Go), parks holding no goroutine either (park.go).
type Relay struct {
	src, dst *Conn
	// fromClient: src is the client leg, whose frames are masked.
	fromClient bool
	// limit bounds a message's payload (0: none).
	limit int64
	count Counter
	t     *Tally

	// stash assembles a frame header that arrived split over reads, and
	// big, taken only then, a control frame that did; stashN bytes are
	// held. A session keeps this struct for its life: it stays small.
	stash  [MaxHeader]byte
	big    *[MaxHeader + MaxControlPayload]byte
	stashN int
	// inMessage: a data message has begun and its final frame not yet
	// come; msgLen is its payload so far (declared lengths).
	inMessage bool
	msgLen    int64
	// uncounted: messages relayed and not yet added to count, which is
	// added to once per burst (before a read that may block, and at the
	// end) rather than once per message: all sessions share it.
	uncounted int

	// Parking (park.go), with Go: pk is nil when the relay never parks;
	// end receives how the relay ended. waits counts the waits between
	// bursts (nwaits is the relay's own copy), which the Parker's sweep
	// watches: seen is the count it saw last, at since (UnixNano), and
	// askedAt the count at which it last asked the relay to park. The
	// rest is guarded by pmu: ask (the sweep set a past read deadline on
	// the source), parked (the source's socket is in the epoll set, and
	// no goroutine runs the relay), closed (the source is closing or the
	// relay ended: it parks no more).
	pk      *Parker
	poll    *poller
	end     func(err error, readSide bool)
	id      uint32
	waits   atomic.Uint64
	nwaits  uint64
	seen    uint64
	since   int64
	askedAt uint64
	pmu     sync.Mutex
	ask     bool
	parked  bool
	closed  bool
}

// NewRelay returns the relay from src to dst. fromClient says src is the
// client leg (its frames masked, dst's to be masked by holdfast); limit
// bounds a message's payload (0: none); count and t count what is relayed.
func NewRelay(src, dst *Conn, fromClient bool, limit int64, count Counter, t *Tally) *Relay {
	return &Relay{src: src, dst: dst, fromClient: fromClient, limit: limit, count: count, t: t}
}

// Tally counts the messages and payload bytes one direction relayed; one
// goroutine writes it.
type Tally struct{ Msgs, Bytes int64 }

// Counter is what a relay adds its messages to (a prometheus.Counter).
type Counter interface{ Add(float64) }

// errUnexpectedEOF is the end of the stream where a frame was due or under
// way, as gorilla reports it (1006: no close frame).
var errUnexpectedEOF = &websocket.CloseError{Code: websocket.CloseAbnormalClosure, Text: io.ErrUnexpectedEOF.Error()}

// Run relays until a read or a write fails, a close frame arrives or a
// frame breaks the protocol; readSide reports whether the source's side
// ended it. Call it between messages: gorilla's reader on src holds
// nothing, and is not used again. Run never parks.
func (r *Relay) Run() (err error, readSide bool) {
	r.src.relayMode()
	_, readSide, err = r.relay()
	r.stop()
	return err, readSide
}

// Go relays as Run does, then calls end with how the relay ended; with
// pk set, a relay that idles parks (park.go) and Go returns at once, end
// being called later, on a goroutine pk started (or on the one that
// closes the source). Call it between messages, as Run.
func (r *Relay) Go(pk *Parker, end func(err error, readSide bool)) {
	r.end = end
	r.src.relayMode()
	if pk != nil && r.src.raw != nil && pk.add(r) {
		r.pk = pk
		r.src.relay.Store(r)
		if r.src.closing.Load() {
			r.srcClosing() // closed before it could see r: r parks no more
		}
	}
	r.loop()
}

// loop runs the relay until it ends, then calls end, or until it parks.
func (r *Relay) loop() {
	parked, readSide, err := r.relay()
	if parked {
		return // r belongs to whoever resumes it now
	}
	r.stop()
	if r.pk != nil {
		r.retire()
	}
	r.end(err, readSide)
}

// stop ends the relay's reading: what it relayed is counted, and its spare
// chunk is the pool's again.
func (r *Relay) stop() {
	r.addCount()
	r.src.releaseSpare()
}

// relay relays bursts until the relay ends (err), or parks.
func (r *Relay) relay() (parked, readSide bool, err error) {
	for {
		// Between bursts the relay waits here, at the shallowest depth it
		// has, so that an idle session's goroutine keeps a small stack,
		// and so does one flushing the other leg before it blocks.
		if len(r.src.pending) == 0 {
			err, parked := r.wait()
			if err != nil {
				return false, true, r.readErr(err)
			}
			if parked {
				return true, false, nil
			}
			continue
		}
		if err, readSide := r.burst(); err != nil {
			return false, readSide, err
		}
	}
}

// wait reads from the source between bursts, or parks when asked to and
// nothing waits above the socket.
func (r *Relay) wait() (err error, parked bool) {
	r.addCount()
	if r.pk != nil {
		r.nwaits++
		r.waits.Store(r.nwaits)
	}
	for {
		err := r.src.readMore()
		if err == nil || !r.asked(err) {
			return err, false
		}
		if r.src.parkable() && r.park() {
			return nil, true
		}
	}
}

// burst relays frames until what the source delivered is used up at a
// frame's end; a frame that has not arrived whole is waited for.
func (r *Relay) burst() (err error, readSide bool) {
	for len(r.src.pending) > 0 {
		b, err := r.gather(2)
		if err != nil {
			return r.readErr(err), true
		}
		b0, b1 := b[0], b[1]
		if msg := r.check(b0, b1); msg != "" {
			return r.protocolError(msg), true
		}
		h := HeaderLen(b1)
		masked := b1&maskBit != 0
		if b, err = r.gather(h); err != nil {
			return r.readErr(err), true
		}
		n := PayloadLen(b)
		if n>>63 != 0 {
			return r.protocolError("length with its most significant bit set"), true
		}
		var key [4]byte
		if masked {
			key = maskKey(b[:h])
		}
		opcode := b0 & opcodeBits
		fin := b0&finBit != 0

		if opcode >= websocket.CloseMessage {
			// A control frame: at most 125 bytes (check), taken whole.
			if b, err = r.gather(h + int(n)); err != nil {
				return r.readErr(err), true
			}
			payload := b[h:]
			if opcode == websocket.CloseMessage {
				err := r.closeFrame(payload, key, masked)
				r.done(len(b))
				return err, true
			}
			// Ping and pong go on to the other leg. A failed write shows
			// on the next data frame, or the leg is closed already.
			_ = r.dst.writeRelayed(opcode, true, key, masked, payload)
			r.done(len(b))
			continue
		}

		r.done(h)
		r.msgLen += int64(n)
		if r.msgLen < 0 || (r.limit > 0 && r.msgLen > r.limit) {
			r.closeSource(websocket.FormatCloseMessage(websocket.CloseMessageTooBig, ""))
			return websocket.ErrReadLimit, true
		}
		if err, readSide := r.payload(opcode, fin, key, masked, n); err != nil {
			return err, readSide
		}
		r.inMessage = !fin
		if fin {
			r.msgLen = 0
			r.t.Msgs++
			r.uncounted++
		}
	}
	return nil, false
}

// check validates a frame's first two bytes, as gorilla's reader does; it
// returns what is wrong, all of it, or "".
func (r *Relay) check(b0, b1 byte) string {
	return checkHeader(b0, b1, r.inMessage, r.fromClient)
}

// checkHeader validates a frame's first two bytes, as gorilla's reader
// does, for a reader inside a message or not, reading a client (whose
// frames are masked) or the gateway (whose are not). It returns what is
// wrong, all of it, or "".
func checkHeader(b0, b1 byte, inMessage, fromClient bool) string {
	masked := b1&maskBit != 0
	switch op := b0 & (rsvBits | opcodeBits); {
	case masked != fromClient:
	case op == websocket.TextMessage || op == websocket.BinaryMessage:
		if !inMessage {
			return "" // the common case, decided at once
		}
	case op == 0:
		if inMessage {
			return ""
		}
	}
	var errs []string
	if b0&0x40 != 0 { // RSV1
		errs = append(errs, "RSV1 set")
	}
	if b0&0x20 != 0 {
		errs = append(errs, "RSV2 set")
	}
	if b0&0x10 != 0 {
		errs = append(errs, "RSV3 set")
	}
	switch opcode := int(b0 & opcodeBits); opcode {
	case websocket.CloseMessage, websocket.PingMessage, websocket.PongMessage:
		if b1&lenBits > MaxControlPayload {
			errs = append(errs, "len > 125 for control")
		}
		if b0&finBit == 0 {
			errs = append(errs, "FIN not set on control")
		}
	case websocket.TextMessage, websocket.BinaryMessage:
		if inMessage {
			errs = append(errs, "data before FIN")
		}
	case 0:
		if !inMessage {
			errs = append(errs, "continuation after FIN")
		}
	default:
		errs = append(errs, "bad opcode "+strconv.Itoa(opcode))
	}
	if (b1&maskBit != 0) != fromClient {
		errs = append(errs, "bad MASK")
	}
	return strings.Join(errs, ", ")
}

// payload relays n payload bytes of a data frame as one frame or more:
// opcode on the first, continuation after it, fin on the last when the
// frame had it.
func (r *Relay) payload(opcode byte, fin bool, key [4]byte, masked bool, n uint64) (err error, readSide bool) {
	var pos uint64 // bytes of this frame relayed: the phase of key
	for {
		if n > 0 && len(r.src.pending) == 0 {
			if err := r.readMore(); err != nil {
				return r.readErr(err), true
			}
			continue
		}
		k := min(n, uint64(len(r.src.pending)), ChunkSize-MaxHeader)
		// The source key at this piece's phase: byte i of the piece was
		// masked with key[(pos+i)%4].
		phased := key
		if p := pos & 3; masked && p != 0 {
			binary.LittleEndian.PutUint32(phased[:], bits.RotateLeft32(binary.LittleEndian.Uint32(key[:]), -8*int(p)))
		}
		if err := r.dst.writeRelayed(opcode, fin && k == n, phased, masked, r.src.pending[:k]); err != nil {
			return err, false
		}
		r.src.consume(int(k))
		r.t.Bytes += int64(k)
		n -= k
		pos += k
		opcode = 0 // continuation
		if n == 0 {
			return nil, false
		}
	}
}

// closeFrame validates a close frame's payload (readClose), answers it on
// the source leg with its code, and returns it as a *websocket.CloseError,
// or the protocol error.
func (r *Relay) closeFrame(payload []byte, key [4]byte, masked bool) error {
	var p [MaxControlPayload]byte
	n := copy(p[:], payload)
	if masked {
		maskBytes(key, p[:n])
	}
	ce, problem := readClose(p[:n])
	if problem != "" {
		return r.protocolError(problem)
	}
	r.closeSource(websocket.FormatCloseMessage(ce.Code, ""))
	return ce
}

// readClose reads a close frame's unmasked payload as gorilla does (and
// refuses a payload of one byte, which RFC 6455 §5.5.1 does not allow):
// the close it carries, or what is wrong with it.
func readClose(p []byte) (ce *websocket.CloseError, problem string) {
	ce = &websocket.CloseError{Code: websocket.CloseNoStatusReceived}
	switch {
	case len(p) == 1:
		return nil, "close payload of one byte"
	case len(p) >= 2:
		ce.Code = int(binary.BigEndian.Uint16(p))
		if !validReceivedCloseCode(ce.Code) {
			return nil, "bad close code " + strconv.Itoa(ce.Code)
		}
		if !utf8.Valid(p[2:]) {
			return nil, "invalid utf8 payload in close frame"
		}
		ce.Text = string(p[2:])
	}
	return ce, ""
}

// validReceivedCloseCode reports whether a peer may send code (RFC 6455
// §7.4; gorilla's list).
func validReceivedCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	default:
		return code >= 3000 && code <= 4999
	}
}

// protocolError closes the source leg 1002 with msg and returns the error
// the relay ends with.
func (r *Relay) protocolError(msg string) error {
	r.closeSource(protocolClose(msg))
	return errors.New("websocket: " + msg)
}

// protocolClose is the payload of a 1002 close saying msg, cut to fit a
// control frame.
func protocolClose(msg string) []byte {
	payload := websocket.FormatCloseMessage(websocket.CloseProtocolError, msg)
	if len(payload) > MaxControlPayload {
		payload = payload[:MaxControlPayload]
	}
	return payload
}

// closeSource writes a close frame on the source leg, after what is batched
// there, within the leg's write timeout (closeLeg's rules otherwise:
// nothing after it). The session's ending then caps the leg's writes.
func (r *Relay) closeSource(payload []byte) {
	_ = r.src.WriteClose(payload, time.Time{})
}

// readErr is a failed read as gorilla reports it: the end of the stream is
// a 1006 close error.
func (r *Relay) readErr(err error) error {
	if err == io.EOF {
		return errUnexpectedEOF
	}
	return err
}

// gather returns the next n bytes of the source (n ≤ MaxHeader +
// MaxControlPayload) in one slice: in place in the read chunk when it holds
// them, else assembled in stash (or big) over as many reads as it takes,
// so that no chunk is held while the rest is awaited. done(n) then
// consumes them. Successive calls for the same frame ask for more and more
// of it.
func (r *Relay) gather(n int) ([]byte, error) {
	src := r.src
	for {
		if r.stashN == 0 && len(src.pending) >= n {
			return src.pending[:n], nil
		}
		st := r.stash[:]
		if n > len(st) || r.big != nil {
			if r.big == nil {
				r.big = new([MaxHeader + MaxControlPayload]byte)
				copy(r.big[:], r.stash[:r.stashN])
			}
			st = r.big[:]
		}
		k := copy(st[r.stashN:n], src.pending)
		r.stashN += k
		src.consume(k)
		if r.stashN >= n {
			return st[:n], nil
		}
		if err := r.readMore(); err != nil {
			return nil, err
		}
	}
}

// readMore counts what was relayed, then reads from the source (which may
// block), inside a frame: there the relay does not park when asked to.
func (r *Relay) readMore() error {
	r.addCount()
	for {
		err := r.src.readMore()
		if err == nil || !r.asked(err) {
			return err
		}
	}
}

// addCount adds the messages relayed since the last call to count.
func (r *Relay) addCount() {
	if r.uncounted > 0 && r.count != nil {
		r.count.Add(float64(r.uncounted))
	}
	r.uncounted = 0
}

// done consumes the n bytes the last gather returned.
func (r *Relay) done(n int) {
	if r.stashN > 0 {
		r.stashN, r.big = 0, nil
		return
	}
	r.src.consume(n)
}

// relayMode hands the read side over to a Relay: reads no longer stop
// at frame ends (the relay parses frames itself; drain may still read).
// Call it from the reading goroutine, between frames.
func (c *Conn) relayMode() {
	c.bounds = streamBounds{frames: true, free: true}
	c.flushOnWait = c.raw != nil
}

// releaseSpare gives the spare chunk back to the pool. Call it from the
// reading goroutine when it stops reading: a spare left on a leg that is
// then closed is lost to the pool (every session's last relayed read would
// cost a fresh chunk).
func (c *Conn) releaseSpare() {
	if c.spare != nil {
		c.pool.Put(c.spare)
		c.spare = nil
	}
}

// consume drops the first n pending bytes; a drained chunk goes back to
// the pool, or is kept as the spare for the next read (flushOnWait).
func (c *Conn) consume(n int) {
	c.pending = c.pending[n:]
	if len(c.pending) == 0 && c.rbuf != nil {
		if c.flushOnWait && c.spare == nil {
			c.spare = c.rbuf
		} else {
			c.pool.Put(c.rbuf)
		}
		c.rbuf = nil
	}
}

// readMore reads what the socket holds next, nothing being pending: it
// waits for readability holding no buffer, flushing the peer leg before it
// blocks, then takes everything into a pooled chunk (readBlock). While
// bursts come one per wait it flushes the peer before the read instead
// (woke, alone). Without a RawConn it flushes the peer and reads into a
// chunk (fill).
func (c *Conn) readMore() error {
	if c.eof {
		return io.EOF
	}
	if c.raw == nil {
		return c.fill()
	}
	// Traffic that comes one burst per wake-up (the last burst came after
	// a wait, and the read after the one before found the socket empty)
	// will most likely find it empty again: the peer leg is flushed before
	// that read rather than after it, one system call sooner per hop.
	if c.woke && c.alone {
		if peer := c.peer.Load(); peer != nil {
			_ = peer.Flush()
		}
	}
	c.waited = false
	err := c.readBlock()
	if c.woke {
		c.alone = c.waited
	}
	c.woke = c.waited
	return err
}

// writeRelayed writes one frame whole into the batch, under the write
// lock: opcode, fin, and payload p, which was masked at its source with
// key when srcMasked. The payload is copied once: unmasked, and on a leg
// that masks, masked with a fresh key of this frame's own, in the same
// pass (XOR with both keys). p must not exceed ChunkSize-MaxHeader.
func (c *Conn) writeRelayed(opcode byte, fin bool, key [4]byte, srcMasked bool, p []byte) error {
	var hdr [MaxHeader]byte
	n := len(p)
	h := frameHeader(&hdr, opcode, fin, c.masks, n)
	var k uint32
	if srcMasked {
		k = binary.LittleEndian.Uint32(key[:])
	}
	if c.masks {
		k ^= binary.LittleEndian.Uint32(hdr[h-4 : h])
	}

	c.wmu.Lock()
	err := c.writeRelayedLocked(hdr[:h], p, k)
	c.wmu.Unlock()
	return err
}

func (c *Conn) writeRelayedLocked(hdr, p []byte, k uint32) error {
	if c.werr != nil {
		return c.werr
	}
	if c.closed {
		return websocket.ErrCloseSent
	}
	h, n := len(hdr), len(p)
	if !c.batching || c.wn+h+n > ChunkSize {
		if err := c.flushLocked(); err != nil {
			return err
		}
	}
	if c.wbuf == nil {
		c.wbuf = c.pool.Get()
	}
	b := (*c.wbuf)[c.wn : c.wn+h+n]
	copy(b, hdr)
	if k == 0 {
		copy(b[h:], p)
	} else {
		MaskCopy(b[h:], p, k)
	}
	c.wn += h + n
	if !c.batching {
		return c.flushLocked()
	}
	return nil
}

// MaskCopy copies src into dst (at least as long) XORed with the mask key k
// (little-endian: byte i gets key byte i%4), 8 bytes at a time where it
// can. dst may be src itself: each word is read before it is written.
func MaskCopy(dst, src []byte, k uint32) {
	k64 := uint64(k) | uint64(k)<<32
	dst = dst[:len(src)]
	i := 0
	for ; i+32 <= len(src); i += 32 {
		s := src[i : i+32 : i+32]
		d := dst[i : i+32 : i+32]
		binary.LittleEndian.PutUint64(d[0:], binary.LittleEndian.Uint64(s[0:])^k64)
		binary.LittleEndian.PutUint64(d[8:], binary.LittleEndian.Uint64(s[8:])^k64)
		binary.LittleEndian.PutUint64(d[16:], binary.LittleEndian.Uint64(s[16:])^k64)
		binary.LittleEndian.PutUint64(d[24:], binary.LittleEndian.Uint64(s[24:])^k64)
	}
	for ; i+8 <= len(src); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(src[i:])^k64)
	}
	for ; i < len(src); i++ {
		dst[i] = src[i] ^ byte(k>>(8*(i&3)))
	}
}
