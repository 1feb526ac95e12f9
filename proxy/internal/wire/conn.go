package wire

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// ChunkSize is the size of the pooled buffers a Conn borrows while data
// flows: one read gathers every frame the kernel holds, one write sends
// every frame relayed meanwhile.
const ChunkSize = 32 << 10

// Pool lends ChunkSize buffers.
type Pool struct{ p sync.Pool }

func NewPool() *Pool {
	return &Pool{p: sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }}}
}

func (p *Pool) Get() *[]byte  { return p.p.Get().(*[]byte) }
func (p *Pool) Put(b *[]byte) { p.p.Put(b) }

// Conn is one leg of a session: a net.Conn that lets the splice batch
// frames into few system calls and that holds no buffer while idle.
//
// Reads: between frames, WaitData waits for the socket to be readable
// holding no buffer, then reads everything the kernel has into a pooled
// chunk, which goes back to the pool once drained. Otherwise a read of at
// least minDirectRead bytes lands in the caller's buffer, unless the last
// one suggested more is waiting; other reads land in a chunk. Before any read
// from the socket, the other leg (peer) is flushed: nothing
// relayed waits in a batch while this leg blocks.
//
// Once in frame mode (after the HTTP upgrade), a read never hands out bytes
// past the end of the current WebSocket frame. So when gorilla has finished
// a message its buffered reader is empty, and the splice can wait for the
// next frame with WaitData at a shallow stack depth: an idle goroutine then
// fits in the smallest stack. Before frame mode, reads stop at the end of
// each HTTP header block, so that the HTTP parser on top leaves nothing
// buffered when the upgrade completes; each read from the socket then
// takes all it holds (readBlock).
//
// Once a Relay reads the leg (relayMode), it takes the pending bytes
// itself, frame by frame, and reads stop nowhere; it still waits holding
// no buffer (readBlock), and the peer is flushed only when the socket has
// nothing to read.
//
// Writes: while batching is on, writes gather in a pooled chunk until Flush,
// or until the chunk is full. With batching off, Write writes through.
//
// One goroutine reads at a time; writes, Flush and Close are safe from any
// goroutine.
type Conn struct {
	net.Conn
	pool *Pool

	// Read side: owned by the reading goroutine.
	raw    syscall.RawConn // for WaitData; nil when the socket has none
	rawFn  func(fd uintptr) bool
	rawErr error
	// rec, on a TLS leg (a *tls.Conn over a recordConn), is the layer
	// below crypto/tls; raw is then its socket's, which the recordConn
	// reads (readTLS), and rawFn is unused.
	rec *recordConn
	// eof: the socket reported the end of the stream; every later read
	// answers io.EOF without asking it again.
	eof     bool
	rbuf    *[]byte // pooled chunk behind pending, or nil
	pending []byte  // read from the socket, not yet handed out
	// gather: the last socket read filled its buffer. On a TLS leg the
	// "socket" is the *tls.Conn: when its last read did not fill its
	// buffer, the record's plaintext is drained.
	gather bool
	bounds streamBounds
	peer   atomic.Pointer[Conn] // flushed before each socket read
	// flushOnWait (a Relay reads): readBlock flushes the peer only
	// when the socket has nothing to read, so that frames relayed from
	// reads that follow each other at once leave in one write.
	flushOnWait bool
	// waited: the relay's last read found the socket empty and waited
	// (set where it flushes the peer). woke: the bytes pending came after
	// such a wait; alone: the read that followed the last such bytes
	// found the socket empty. Only the relay's goroutine uses them.
	waited, woke, alone bool
	// spare (with flushOnWait) is the chunk the relay drained last, kept
	// for the next read rather than given back to the pool and taken
	// again at once; a read that would block gives it back.
	spare *[]byte
	// msg is the message reader's state (message.go).
	msg msgState
	// relay is the Relay reading c that may park (park.go), and closing
	// is set by Close before it looks for one.
	relay   atomic.Pointer[Relay]
	closing atomic.Bool
	// imu guards iwait (a WaitData waits on the socket) and ipend (an
	// Interrupt not yet seen by WaitData).
	imu          sync.Mutex
	iwait, ipend bool

	// Write side.
	wmu      sync.Mutex
	batching bool
	wbuf     *[]byte
	wn       int
	werr     error
	// writeTimeout, when set, bounds each flush: a flush gets at least
	// half of it and at most all of it, since the socket's deadline is
	// renewed only once half of it has passed (renewWriteDeadline), not
	// once per flush, let alone per frame.
	writeTimeout time.Duration
	// dlmu guards wdl, the write deadline last set on the socket (zero
	// for none), and setting it, so that wdl is the socket's.
	dlmu sync.Mutex
	wdl  time.Time
	// masks: holdfast is this leg's WebSocket client (the upstream leg),
	// so its frames are masked.
	masks bool
	// wframes: writes are WebSocket frames (after the upgrade). wleft is
	// what remains of the payload of a frame gorilla is writing in more
	// than one Write.
	wframes bool
	wleft   uint64
	// closed: a close frame was written; every later write is refused
	// (RFC 6455 §5.5.1). sent is its unmasked payload once written
	// whole (SentClose). Set under wmu.
	closed bool
	sent   []byte
	// wcap, when not zero, is the latest write deadline (UnixNano) any
	// write may get from now on: a closing leg's writes end by then.
	wcap atomic.Int64
}

// NewConn wraps c in a Conn borrowing chunks from pool.
//
// c may be a *tls.Conn made by NewTLSListener or TLSClient: the Conn then
// waits on the socket below it, holding no buffer, as on a plain socket.
// Over any other *tls.Conn (or where RawConn reads are not supported) a
// read blocks in crypto/tls holding a chunk.
func NewConn(c net.Conn, pool *Pool) *Conn {
	bc := &Conn{Conn: c, pool: pool}
	if !rawReadSupported {
		return bc
	}
	sock := c
	if tc, ok := c.(*tls.Conn); ok {
		rc, ok := tc.NetConn().(*recordConn)
		if !ok {
			return bc
		}
		sock = rc.Conn
		bc.rec = rc
	}
	sc, ok := sock.(syscall.Conn)
	if !ok {
		return bc
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return bc
	}
	bc.raw = raw
	if bc.rec != nil {
		bc.rec.beforeRead = bc.flushBeforeRecordRead
		bc.rec.onWait = bc.recordWait
		bc.rec.raw = raw
		bc.rec.fillFn = bc.rec.fillRaw
	} else {
		bc.rawFn = bc.readRaw
	}
	return bc
}

// NewUpstreamConn returns the Conn of an upstream leg, whose
// frames holdfast masks.
func NewUpstreamConn(c net.Conn, pool *Pool) *Conn {
	bc := NewConn(c, pool)
	bc.masks = true
	return bc
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 && c.eof {
		return 0, io.EOF
	}
	if len(c.pending) == 0 {
		var err error
		switch {
		case !c.bounds.frames && c.raw != nil:
			err = c.readBlock()
		case !c.gather && len(p) >= minDirectRead:
			return c.readInto(p)
		default:
			err = c.fill()
		}
		if len(c.pending) == 0 {
			return 0, err
		}
	}
	n := c.bounds.take(c.pending, len(p))
	copy(p, c.pending[:n])
	c.pending = c.pending[n:]
	if len(c.pending) == 0 && c.rbuf != nil {
		c.pool.Put(c.rbuf)
		c.rbuf = nil
	}
	return n, nil
}

// minDirectRead is the smallest read that lands in the caller's buffer.
// A smaller one (gorilla's reader refilling its 128 bytes) reads into a
// chunk instead: a frame larger than the caller's buffer, such as the
// gateway's hello-ok, then takes one system call instead of two.
const minDirectRead = 4 << 10

// readInto reads from the socket straight into p. What lies past the
// allowed bound is kept, in a pooled chunk, for the next reads (io.Reader
// lets Read use all of p as scratch).
func (c *Conn) readInto(p []byte) (int, error) {
	if peer := c.peer.Load(); peer != nil {
		_ = peer.Flush()
	}
	n, err := c.Conn.Read(p)
	c.gather = n == len(p)
	if n == 0 {
		c.eof = err == io.EOF
		return 0, err
	}
	k := c.bounds.take(p[:n], n)
	if k < n {
		c.rbuf = c.pool.Get()
		c.pending = (*c.rbuf)[:copy(*c.rbuf, p[k:n])]
	}
	return k, nil
}

// fill reads from the socket once, after flushing the other leg, into a
// pooled chunk.
func (c *Conn) fill() error {
	if peer := c.peer.Load(); peer != nil {
		_ = peer.Flush()
	}
	c.rbuf = c.pool.Get()
	n, err := c.Conn.Read(*c.rbuf)
	c.gather = n == len(*c.rbuf)
	c.pending = (*c.rbuf)[:n]
	if n == 0 {
		c.eof = err == io.EOF
		c.pool.Put(c.rbuf)
		c.rbuf = nil
	}
	return err
}

// readBlock is a read before frame mode: it waits for the socket to be
// readable holding no buffer, then takes all it holds into a pooled chunk
// in one system call, so that a header block that arrived whole is handed
// out whole, however small the reads above. Read in pieces of the caller's
// size, the rest would wait in the socket for another system call, which
// a read deadline passed meanwhile fails; and a header block cut short
// does not even fail as a timeout: bufio's ReadLine hands out a partial
// line without its error, so net/http parses the fragment as a header
// line ("malformed MIME header").
func (c *Conn) readBlock() error {
	if c.rec != nil {
		return c.readTLS()
	}
	if peer := c.peer.Load(); peer != nil && !c.flushOnWait {
		_ = peer.Flush()
	}
	c.rawErr = nil
	if err := c.raw.Read(c.rawFn); err != nil {
		return c.readError(err, false)
	}
	if err := c.rawErr; err != nil && err != io.EOF {
		return c.readError(err, true)
	}
	return c.rawErr
}

// readError says a failed raw read as net.Conn's Read says it: err is
// the RawConn's own (a deadline, a closed socket), or with syscall set,
// the read system call's. Kept out of readBlock, whose frame an idle
// session keeps on its stack.
func (c *Conn) readError(err error, syscall bool) error {
	if syscall {
		return &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(),
			Err: os.NewSyscallError("read", err)}
	}
	if oe, ok := err.(*net.OpError); ok {
		e := *oe
		e.Op = "read"
		return &e
	}
	return err
}

// WaitData blocks until the socket has data, unless some is pending, then
// reads what is there into a pooled chunk. While it waits it holds no
// buffer and little stack. Call it only between messages in frame mode,
// where the reader above holds nothing buffered.
func (c *Conn) WaitData() error {
	if len(c.pending) > 0 || !c.bounds.frames || !c.bounds.atFrameStart() {
		return nil
	}
	if c.eof {
		return io.EOF
	}
	if c.raw == nil {
		// No RawConn (TLS over a socket without a recordConn, say):
		// gorilla's read blocks instead. Pre-reading here would hold a
		// chunk for as long as the session idles.
		return nil
	}
	if c.rec != nil && !c.tlsDrained() {
		return nil // data may wait above the socket: the next read takes it
	}
	if peer := c.peer.Load(); peer != nil && c.rec == nil {
		_ = peer.Flush() // (readTLS flushes it itself)
	}
	if !c.waitBegins() {
		return ErrInterrupted
	}
	var err error
	if c.rec != nil {
		err = c.readTLS()
	} else {
		c.rawErr = nil
		if err = c.raw.Read(c.rawFn); err == nil {
			err = c.rawErr
		}
	}
	if c.waitEnds() {
		return ErrInterrupted
	}
	return err
}

// ErrInterrupted is WaitData's answer when Interrupt cut it short (or came
// before it). What it read, if anything, is pending.
var ErrInterrupted = errors.New("wire: wait interrupted")

// Interrupt makes a WaitData under way return ErrInterrupted at once, or
// the next WaitData if none is. Safe from any goroutine; reads other than
// WaitData's are not affected.
func (c *Conn) Interrupt() {
	c.imu.Lock()
	defer c.imu.Unlock()
	c.ipend = true
	if c.iwait {
		_ = c.Conn.SetReadDeadline(aLongTimeAgo)
	}
}

// waitBegins marks a WaitData's wait on the socket, unless an Interrupt
// is pending (false: it is consumed).
func (c *Conn) waitBegins() bool {
	c.imu.Lock()
	defer c.imu.Unlock()
	if c.ipend {
		c.ipend = false
		return false
	}
	c.iwait = true
	return true
}

// waitEnds ends a WaitData's wait and reports whether an Interrupt came
// meanwhile, whose deadline it clears.
func (c *Conn) waitEnds() bool {
	c.imu.Lock()
	defer c.imu.Unlock()
	c.iwait = false
	if !c.ipend {
		return false
	}
	c.ipend = false
	_ = c.Conn.SetReadDeadline(time.Time{})
	return true
}

// unread puts b back in front of what the socket delivers next: bytes the
// HTTP server read past the upgrade request (a client may send its first
// frames in the same packet) are handed out again after the upgrade. Call
// it from the reading goroutine, before FrameMode.
func (c *Conn) Unread(b []byte) {
	if len(b) == 0 {
		return
	}
	p := make([]byte, 0, len(b)+len(c.pending))
	c.pending = append(append(p, b...), c.pending...)
	if c.rbuf != nil {
		c.pool.Put(c.rbuf)
		c.rbuf = nil
	}
}

// FrameMode declares that the next byte of the stream starts a WebSocket
// frame. Call it from the reading goroutine, or before it starts, right
// after the HTTP upgrade.
func (c *Conn) FrameMode() {
	c.bounds = streamBounds{frames: true}
	c.wmu.Lock()
	c.wframes = true
	c.wmu.Unlock()
}

// streamBounds tracks the structure of a byte stream so that reads stop at
// its boundaries: HTTP header blocks before the upgrade, WebSocket frames
// (RFC 6455 §5.2) after it.
type streamBounds struct {
	left      uint64 // frame mode: payload bytes not yet handed out
	hdr       [MaxHeader]byte
	have      uint8 // header bytes seen
	need      uint8 // header length once known, 0 before
	inPayload bool  // the header is complete
	frames    bool
	crlf      uint8 // HTTP mode: how many bytes of "\r\n\r\n" were seen last
	// free: a Relay parses the frames itself; reads stop nowhere.
	free bool
}

// take returns how many of the bytes b, at most limit, may be handed out
// at once, and records that they were (allow, then advance; in HTTP mode
// in one scan).
func (s *streamBounds) take(b []byte, limit int) int {
	if !s.free && !s.frames {
		i, state := crlfScan(s.crlf, b[:min(len(b), limit)], true)
		if state == 4 {
			state = 0 // a header block ends: the next starts afresh
		}
		s.crlf = state
		return i
	}
	n := min(s.allow(b), limit)
	s.advance(b[:n])
	return n
}

// allow returns how many of the bytes b may be handed out at once.
func (s *streamBounds) allow(b []byte) int {
	if s.free {
		return len(b)
	}
	if !s.frames {
		// Stop right after the first "\r\n\r\n".
		if i, state := crlfScan(s.crlf, b, true); state == 4 {
			return i
		}
		return len(b)
	}
	if s.inPayload {
		return int(min(uint64(len(b)), s.left))
	}
	need := s.need
	if need == 0 {
		need = 2
	}
	return min(len(b), int(need-s.have))
}

// crlfScan runs crlfStep over b from state, a "\r\n\r\n" found
// starting over at 0, and returns the state after b. With stop it stops
// right after the first "\r\n\r\n" instead, returning 4 and the bytes
// read through it. From state 0 only a '\r' leads anywhere else, so the
// scan jumps from one '\r' to the next (bytes.IndexByte) rather than
// stepping through a header line byte by byte.
func crlfScan(state uint8, b []byte, stop bool) (int, uint8) {
	i := 0
	for i < len(b) {
		if state == 0 {
			j := bytes.IndexByte(b[i:], '\r')
			if j < 0 {
				return len(b), 0
			}
			i += j
		}
		state = crlfStep(state, b[i])
		i++
		if state == 4 {
			if stop {
				return i, 4
			}
			state = 0
		}
	}
	return i, state
}

func crlfStep(state uint8, ch byte) uint8 {
	switch {
	case ch == '\r' && (state == 0 || state == 2):
		return state + 1
	case ch == '\n' && (state == 1 || state == 3):
		return state + 1
	case ch == '\r':
		return 1
	default:
		return 0
	}
}

// advance records that b, as allowed, was handed out.
func (s *streamBounds) advance(b []byte) {
	if s.free {
		return
	}
	if !s.frames {
		_, s.crlf = crlfScan(s.crlf, b, false)
		return
	}
	for len(b) > 0 {
		if s.inPayload {
			k := int(min(uint64(len(b)), s.left))
			s.left -= uint64(k)
			b = b[k:]
			if s.left == 0 {
				s.inPayload, s.have, s.need = false, 0, 0
			}
			continue
		}
		k := copy(s.hdr[s.have:s.headerLen()], b)
		s.have += uint8(k)
		b = b[k:]
		if s.need == 0 && s.have >= 2 {
			s.need = uint8(HeaderLen(s.hdr[1]))
		}
		if s.need > 0 && s.have == s.need {
			s.left = PayloadLen(s.hdr[:s.need])
			if s.left == 0 {
				s.have, s.need = 0, 0 // an empty frame: the next one starts
			} else {
				s.inPayload = true
			}
		}
	}
}

func (s *streamBounds) headerLen() uint8 {
	if s.need == 0 {
		return 2
	}
	return s.need
}

// atFrameStart reports a position between frames (always true before
// frame mode, where nothing is known).
func (s *streamBounds) atFrameStart() bool {
	return !s.frames || (!s.inPayload && s.have == 0)
}

// Write implements net.Conn. In frame mode it watches the frames gorilla
// writes: once one of them is a close frame, every later write is refused.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.closed && c.wleft == 0 {
		return 0, websocket.ErrCloseSent
	}
	closing, payload := false, []byte(nil)
	if c.wframes {
		closing, payload = c.trackWrite(p)
	}
	n, err := c.writeLocked(p)
	if closing && err == nil {
		c.closed, c.sent = true, payload
	}
	return n, err
}

func (c *Conn) writeLocked(p []byte) (int, error) {
	if !c.batching {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	if c.wn+len(p) > ChunkSize {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= ChunkSize {
			return c.Conn.Write(p)
		}
	}
	if c.wbuf == nil {
		c.wbuf = c.pool.Get()
	}
	c.wn += copy((*c.wbuf)[c.wn:], p)
	return len(p), nil
}

// trackWrite follows the frames in p, written by gorilla (a frame header
// is never split across its writes), and reports whether a close frame
// starts in p, with a copy of its payload, unmasked, when p holds it
// whole (gorilla writes a control frame in one write). A write it cannot
// follow stops the tracking.
func (c *Conn) trackWrite(p []byte) (closeFrame bool, payload []byte) {
	for len(p) > 0 {
		if c.wleft > 0 {
			k := min(c.wleft, uint64(len(p)))
			c.wleft -= k
			p = p[k:]
			continue
		}
		if len(p) < 2 {
			c.wframes = false
			return closeFrame, payload
		}
		h := HeaderLen(p[1])
		if len(p) < h {
			c.wframes = false
			return closeFrame, payload
		}
		n := PayloadLen(p[:h])
		if p[0]&opcodeBits == websocket.CloseMessage && !closeFrame {
			closeFrame = true
			if n <= uint64(len(p)-h) {
				payload = bytes.Clone(p[h : h+int(n)])
				if p[1]&maskBit != 0 {
					maskBytes([4]byte(p[h-4:h]), payload)
				}
			}
		}
		p = p[h:]
		c.wleft = n
	}
	return closeFrame, payload
}

// WriteClose writes a close frame with payload after what is batched and
// flushes it. It is the one way holdfast closes a leg that batches: from
// then on every write is refused, and every write still under way, a
// flush blocked on a peer that does not read included, ends by deadline.
// It fails when a close frame went out already, when the leg failed
// before, or when a frame is half written (the socket must then just be
// closed). A zero deadline caps nothing: the close and what is batched
// ahead of it get the leg's write timeout, as gorilla's own close frames
// (its echo, 1002, 1009) did; the session's ending caps the leg after.
func (c *Conn) WriteClose(payload []byte, deadline time.Time) error {
	if !deadline.IsZero() {
		c.CapWrites(deadline)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if c.closed {
		return websocket.ErrCloseSent
	}
	c.closed = true
	if c.wleft > 0 {
		return errors.New("close with a frame half written")
	}
	if len(payload) > MaxControlPayload {
		return errors.New("close payload over 125 bytes")
	}
	var hdr [MaxHeader]byte
	h := frameHeader(&hdr, websocket.CloseMessage, true, c.masks, len(payload))
	var frame [MaxHeader + MaxControlPayload]byte
	n := copy(frame[:], hdr[:h])
	n += copy(frame[n:], payload)
	if c.masks {
		var key [4]byte
		copy(key[:], hdr[h-4:h])
		maskBytes(key, frame[h:n])
	}
	if _, err := c.writeLocked(frame[:n]); err != nil {
		return err
	}
	c.sent = bytes.Clone(payload)
	return c.flushLocked()
}

// SentClose returns the code and reason of the close frame written on c,
// by WriteClose or by gorilla (its echo of the peer's close, 1002, 1009):
// code 0 when none was, 1005 (no status) for an empty payload.
func (c *Conn) SentClose() (code int, reason string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case !c.closed:
		return 0, ""
	case len(c.sent) < 2:
		return websocket.CloseNoStatusReceived, ""
	}
	return int(c.sent[0])<<8 | int(c.sent[1]), string(c.sent[2:])
}

// CapWrites makes every write from now on end by deadline, one already
// blocked included.
func (c *Conn) CapWrites(deadline time.Time) {
	for {
		cur := c.wcap.Load()
		if cur != 0 && cur <= deadline.UnixNano() {
			return
		}
		if c.wcap.CompareAndSwap(cur, deadline.UnixNano()) {
			break
		}
	}
	_ = c.SetWriteDeadline(deadline)
}

// SetWriteDeadline implements net.Conn; a closing leg keeps its cap.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.dlmu.Lock()
	defer c.dlmu.Unlock()
	t = c.capped(t)
	c.wdl = t
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline implements net.Conn: both deadlines in one setting of the
// socket's (one runtime timer serves both when they are equal), unless a
// write cap makes the write deadline earlier.
func (c *Conn) SetDeadline(t time.Time) error {
	c.dlmu.Lock()
	defer c.dlmu.Unlock()
	if w := c.capped(t); !w.Equal(t) {
		if err := c.Conn.SetReadDeadline(t); err != nil {
			return err
		}
		c.wdl = w
		return c.Conn.SetWriteDeadline(w)
	}
	c.wdl = t
	return c.Conn.SetDeadline(t)
}

// renewWriteDeadline gives the socket the deadline writeTimeout from now,
// unless the one it has ends between half of writeTimeout and writeTimeout
// from now: setting a deadline costs more than a flush's other work.
func (c *Conn) renewWriteDeadline() {
	c.dlmu.Lock()
	defer c.dlmu.Unlock()
	// time.Until reads only the monotonic clock for a deadline that
	// carries it, as those set from time.Now do.
	if left := time.Until(c.wdl); !c.wdl.IsZero() && left >= c.writeTimeout/2 && left <= c.writeTimeout {
		return
	}
	t := c.capped(time.Now().Add(c.writeTimeout))
	if t.Equal(c.wdl) {
		return // the cap, set already (a closing leg)
	}
	c.wdl = t
	_ = c.Conn.SetWriteDeadline(t)
}

// capped returns t, or the write cap when one is set and t is later.
func (c *Conn) capped(t time.Time) time.Time {
	if limit := c.wcap.Load(); limit != 0 && (t.IsZero() || t.UnixNano() > limit) {
		return time.Unix(0, limit)
	}
	return t
}

// Flush writes what is batched. A failure is also returned by every later
// Write.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *Conn) flushLocked() error {
	if c.werr != nil || c.wn == 0 {
		return c.werr
	}
	if c.writeTimeout > 0 {
		c.renewWriteDeadline()
	}
	_, err := c.Conn.Write((*c.wbuf)[:c.wn])
	c.pool.Put(c.wbuf)
	c.wbuf, c.wn = nil, 0
	if err != nil {
		c.werr = err
	}
	return err
}

// SetBatching turns batching on or off; off flushes. writeTimeout bounds
// each flush from then on (0: the caller sets deadlines).
func (c *Conn) SetBatching(on bool, writeTimeout time.Duration) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.batching = on
	c.writeTimeout = writeTimeout
	if !on {
		_ = c.flushLocked()
	}
}

// Close closes the socket; what is still batched is dropped (closing paths
// flush their close frame explicitly, and a peer that no longer reads must
// not hold Close up). Buffers go back to the pool.
func (c *Conn) Close() error {
	// A parked relay leaves the epoll set before the socket is closed
	// (its fd number may be reused at once), and resumes to end.
	c.closing.Store(true)
	if r := c.relay.Load(); r != nil {
		r.srcClosing()
	}
	// The socket first: that releases a write blocked in a flush, which
	// holds wmu, so that Close never waits for a peer that does not read.
	err := c.Conn.Close()
	c.wmu.Lock()
	if c.wbuf != nil {
		c.pool.Put(c.wbuf)
		c.wbuf = nil
	}
	c.werr = net.ErrClosed
	c.wmu.Unlock()
	return err
}

// listener wraps accepted connections in Conns.
type listener struct {
	net.Listener
	pool *Pool
}

// NewListener wraps ln so that every connection it accepts is a *Conn
// borrowing chunks from pool.
func NewListener(ln net.Listener, pool *Pool) net.Listener {
	return listener{Listener: ln, pool: pool}
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c, l.pool), nil
}

// SetPeer makes peer the leg flushed before each read of c that may block
// (nil: none), so that frames relayed in one burst leave in one write.
func (c *Conn) SetPeer(peer *Conn) { c.peer.Store(peer) }

// CanWait reports whether c waits for data holding no buffer (WaitData);
// without that, WaitData returns at once and the read that follows blocks.
func (c *Conn) CanWait() bool { return c.raw != nil }

// ConnOf returns nc as a *Conn, or nil when it is not one.
func ConnOf(nc net.Conn) *Conn {
	c, _ := nc.(*Conn)
	return c
}

// WriteFrame writes one data frame (RFC 6455 §5.2) into the batch under the
// write lock, so that it never interleaves with a control frame gorilla
// writes from another goroutine. Frames toward the gateway are masked with a
// fresh key (§5.3). With batching off the frame is flushed at once. The
// payload must not exceed ChunkSize-MaxHeader.
func (c *Conn) WriteFrame(opcode byte, fin bool, payload []byte) error {
	masked := c.masks
	var hdr [MaxHeader]byte
	n := len(payload)
	h := frameHeader(&hdr, opcode, fin, masked, n)
	var key [4]byte
	if masked {
		copy(key[:], hdr[h-4:h])
	}

	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if c.closed {
		return websocket.ErrCloseSent
	}
	if !c.batching || c.wn+h+n > ChunkSize {
		if err := c.flushLocked(); err != nil {
			return err
		}
	}
	if c.wbuf == nil {
		c.wbuf = c.pool.Get()
	}
	b := (*c.wbuf)[c.wn:]
	copy(b, hdr[:h])
	copy(b[h:], payload)
	if masked {
		maskBytes(key, b[h:h+n])
	}
	c.wn += h + n
	if !c.batching {
		return c.flushLocked()
	}
	return nil
}

// WriteMessage streams one message of type typ, read from r to its end, into
// frames of at most one chunk each (WriteFrame), and returns the payload
// bytes written. Unless the leg batches with a write timeout of its own,
// the message's writes get writeTimeout from now.
func (c *Conn) WriteMessage(typ int, r io.Reader, writeTimeout time.Duration) (total int64, err error) {
	scratch := c.pool.Get()
	defer c.pool.Put(scratch)
	buf := (*scratch)[:ChunkSize-MaxHeader]
	c.wmu.Lock()
	own := c.writeTimeout == 0
	c.wmu.Unlock()
	if own {
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	opcode := byte(typ)
	for {
		n, err := io.ReadFull(r, buf)
		fin := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !fin {
			return total, err
		}
		if werr := c.WriteFrame(opcode, fin, buf[:n]); werr != nil {
			return total, werr
		}
		total += int64(n)
		if fin {
			return total, nil
		}
		opcode = 0 // continuation
	}
}

// CloseWrite half-closes the socket beneath c (its FIN, or TLS's
// close_notify, after whatever close frame was written), where it can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// EndWrites ends c's write side once its close frame is out: it flushes
// what c holds and half-closes the socket beneath (its FIN, or TLS's
// close_notify), so that the peer sees its stream end right after the
// close frame while c may still read what the peer sends. It does nothing
// and reports false when no close frame was written on c; it reports false
// too when the flush fails or the socket cannot be half-closed.
func (c *Conn) EndWrites() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.closed || c.flushLocked() != nil {
		return false
	}
	return c.CloseWrite() == nil
}

// DiscardUntilEOF reads and drops what the socket beneath c still
// delivers, below what c may hold pending, until the peer ends the stream
// or deadline passes. Call it from the goroutine that reads c, once
// nothing more is to be read from it.
func (c *Conn) DiscardUntilEOF(deadline time.Time) {
	_ = c.Conn.SetReadDeadline(deadline)
	_, _ = io.Copy(io.Discard, c.Conn)
}
