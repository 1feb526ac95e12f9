package proxy

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// chunkSize is the size of the pooled buffers a batchConn borrows while data
// flows: one read gathers every frame the kernel holds, one write sends
// every frame relayed meanwhile.
const chunkSize = 32 << 10

// chunkPool lends chunkSize buffers.
type chunkPool struct{ p sync.Pool }

func newChunkPool() *chunkPool {
	return &chunkPool{p: sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}}
}

func (p *chunkPool) get() *[]byte  { return p.p.Get().(*[]byte) }
func (p *chunkPool) put(b *[]byte) { p.p.Put(b) }

// batchConn is one leg of a session: a net.Conn that lets the splice batch
// frames into few system calls and that holds no buffer while idle.
//
// Reads: between frames, waitData waits for the socket to be readable
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
// next frame with waitData at a shallow stack depth: an idle goroutine then
// fits in the smallest stack. Before frame mode, reads stop at the end of
// each HTTP header block, so that the HTTP parser on top leaves nothing
// buffered when the upgrade completes; each read from the socket then
// takes all it holds (readBlock).
//
// Once a frameRelay reads the leg (relayMode), it takes the pending bytes
// itself, frame by frame, and reads stop nowhere; it still waits holding
// no buffer (readBlock), and the peer is flushed only when the socket has
// nothing to read.
//
// Writes: while batching is on, writes gather in a pooled chunk until Flush,
// or until the chunk is full. With batching off, Write writes through.
//
// One goroutine reads at a time; writes, Flush and Close are safe from any
// goroutine.
type batchConn struct {
	net.Conn
	pool *chunkPool

	// Read side: owned by the reading goroutine.
	raw    syscall.RawConn // for waitData; nil when the socket has none
	rawFn  func(fd uintptr) bool
	rawErr error
	// eof: the socket reported the end of the stream; every later read
	// answers io.EOF without asking it again.
	eof     bool
	rbuf    *[]byte // pooled chunk behind pending, or nil
	pending []byte  // read from the socket, not yet handed out
	gather  bool    // the last socket read filled its buffer
	bounds  streamBounds
	peer    atomic.Pointer[batchConn] // flushed before each socket read
	// flushOnWait (a frameRelay reads): readBlock flushes the peer only
	// when the socket has nothing to read, so that frames relayed from
	// reads that follow each other at once leave in one write.
	flushOnWait bool
	// spare (with flushOnWait) is the chunk the relay drained last, kept
	// for the next read rather than given back to the pool and taken
	// again at once; a read that would block gives it back.
	spare *[]byte

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
	// (RFC 6455 §5.5.1). Set under wmu.
	closed bool
	// wcap, when not zero, is the latest write deadline (UnixNano) any
	// write may get from now on: a closing leg's writes end by then.
	wcap atomic.Int64
}

func newBatchConn(c net.Conn, pool *chunkPool) *batchConn {
	bc := &batchConn{Conn: c, pool: pool}
	if sc, ok := c.(syscall.Conn); ok && rawReadSupported {
		if raw, err := sc.SyscallConn(); err == nil {
			bc.raw = raw
			bc.rawFn = bc.readRaw
		}
	}
	return bc
}

// newUpstreamBatchConn returns the batchConn of an upstream leg, whose
// frames holdfast masks.
func newUpstreamBatchConn(c net.Conn, pool *chunkPool) *batchConn {
	bc := newBatchConn(c, pool)
	bc.masks = true
	return bc
}

// Read implements net.Conn.
func (c *batchConn) Read(p []byte) (int, error) {
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
	n := min(c.bounds.allow(c.pending), len(p))
	copy(p, c.pending[:n])
	c.bounds.advance(c.pending[:n])
	c.pending = c.pending[n:]
	if len(c.pending) == 0 && c.rbuf != nil {
		c.pool.put(c.rbuf)
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
func (c *batchConn) readInto(p []byte) (int, error) {
	if peer := c.peer.Load(); peer != nil {
		_ = peer.Flush()
	}
	n, err := c.Conn.Read(p)
	c.gather = n == len(p)
	if n == 0 {
		c.eof = err == io.EOF
		return 0, err
	}
	k := c.bounds.allow(p[:n])
	c.bounds.advance(p[:k])
	if k < n {
		c.rbuf = c.pool.get()
		c.pending = (*c.rbuf)[:copy(*c.rbuf, p[k:n])]
	}
	return k, nil
}

// fill reads from the socket once, after flushing the other leg, into a
// pooled chunk.
func (c *batchConn) fill() error {
	if peer := c.peer.Load(); peer != nil {
		_ = peer.Flush()
	}
	c.rbuf = c.pool.get()
	n, err := c.Conn.Read(*c.rbuf)
	c.gather = n == len(*c.rbuf)
	c.pending = (*c.rbuf)[:n]
	if n == 0 {
		c.eof = err == io.EOF
		c.pool.put(c.rbuf)
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
func (c *batchConn) readBlock() error {
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
func (c *batchConn) readError(err error, syscall bool) error {
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

// waitData blocks until the socket has data, unless some is pending, then
// reads what is there into a pooled chunk. While it waits it holds no
// buffer and little stack. Call it only between messages in frame mode,
// where the reader above holds nothing buffered.
func (c *batchConn) waitData() error {
	if len(c.pending) > 0 || !c.bounds.frames || !c.bounds.atFrameStart() {
		return nil
	}
	if c.eof {
		return io.EOF
	}
	if c.raw == nil {
		// No RawConn (TLS, say): gorilla's read blocks instead. Pre-reading
		// here would hold a chunk for as long as the session idles.
		return nil
	}
	if peer := c.peer.Load(); peer != nil {
		_ = peer.Flush()
	}
	c.rawErr = nil
	if err := c.raw.Read(c.rawFn); err != nil {
		return err
	}
	return c.rawErr
}

// unread puts b back in front of what the socket delivers next: bytes the
// HTTP server read past the upgrade request (a client may send its first
// frames in the same packet) are handed out again after the upgrade. Call
// it from the reading goroutine, before frameMode.
func (c *batchConn) unread(b []byte) {
	if len(b) == 0 {
		return
	}
	p := make([]byte, 0, len(b)+len(c.pending))
	c.pending = append(append(p, b...), c.pending...)
	if c.rbuf != nil {
		c.pool.put(c.rbuf)
		c.rbuf = nil
	}
}

// frameMode declares that the next byte of the stream starts a WebSocket
// frame. Call it from the reading goroutine, or before it starts, right
// after the HTTP upgrade.
func (c *batchConn) frameMode() {
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
	hdr       [maxFrameHeader]byte
	have      uint8 // header bytes seen
	need      uint8 // header length once known, 0 before
	inPayload bool  // the header is complete
	frames    bool
	crlf      uint8 // HTTP mode: how many bytes of "\r\n\r\n" were seen last
	// free: a frameRelay parses the frames itself; reads stop nowhere.
	free bool
}

// allow returns how many of the bytes b may be handed out at once.
func (s *streamBounds) allow(b []byte) int {
	if s.free {
		return len(b)
	}
	if !s.frames {
		// Stop right after the first "\r\n\r\n".
		state := s.crlf
		for i, ch := range b {
			state = crlfStep(state, ch)
			if state == 4 {
				return i + 1
			}
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
		for _, ch := range b {
			s.crlf = crlfStep(s.crlf, ch)
			if s.crlf == 4 {
				s.crlf = 0
			}
		}
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
			s.need = 2
			switch s.hdr[1] & 0x7f {
			case 126:
				s.need += 2
			case 127:
				s.need += 8
			}
			if s.hdr[1]&0x80 != 0 {
				s.need += 4
			}
		}
		if s.need > 0 && s.have == s.need {
			switch n := s.hdr[1] & 0x7f; n {
			case 126:
				s.left = uint64(binary.BigEndian.Uint16(s.hdr[2:]))
			case 127:
				s.left = binary.BigEndian.Uint64(s.hdr[2:])
			default:
				s.left = uint64(n)
			}
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
func (c *batchConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.closed && c.wleft == 0 {
		return 0, websocket.ErrCloseSent
	}
	closing := c.wframes && c.trackWrite(p)
	n, err := c.writeLocked(p)
	if closing && err == nil {
		c.closed = true
	}
	return n, err
}

func (c *batchConn) writeLocked(p []byte) (int, error) {
	if !c.batching {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	if c.wn+len(p) > chunkSize {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= chunkSize {
			return c.Conn.Write(p)
		}
	}
	if c.wbuf == nil {
		c.wbuf = c.pool.get()
	}
	c.wn += copy((*c.wbuf)[c.wn:], p)
	return len(p), nil
}

// trackWrite follows the frames in p, written by gorilla (a frame header
// is never split across its writes), and reports whether a close frame
// starts in p. A write it cannot follow stops the tracking.
func (c *batchConn) trackWrite(p []byte) (closeFrame bool) {
	for len(p) > 0 {
		if c.wleft > 0 {
			k := min(c.wleft, uint64(len(p)))
			c.wleft -= k
			p = p[k:]
			continue
		}
		if len(p) < 2 {
			c.wframes = false
			return closeFrame
		}
		h := 2
		n := uint64(p[1] & 0x7f)
		switch n {
		case 126:
			h = 4
		case 127:
			h = 10
		}
		if p[1]&0x80 != 0 {
			h += 4
		}
		if len(p) < h {
			c.wframes = false
			return closeFrame
		}
		switch n {
		case 126:
			n = uint64(binary.BigEndian.Uint16(p[2:]))
		case 127:
			n = binary.BigEndian.Uint64(p[2:])
		}
		if p[0]&0x0f == websocket.CloseMessage {
			closeFrame = true
		}
		p = p[h:]
		c.wleft = n
	}
	return closeFrame
}

// writeClose writes a close frame with payload after what is batched and
// flushes it. It is the one way holdfast closes a leg that batches: from
// then on every write is refused, and every write still under way, a
// flush blocked on a peer that does not read included, ends by deadline.
// It fails when a close frame went out already, when the leg failed
// before, or when a frame is half written (the socket must then just be
// closed). A zero deadline caps nothing: the close and what is batched
// ahead of it get the leg's write timeout, as gorilla's own close frames
// (its echo, 1002, 1009) did; the session's ending caps the leg after.
func (c *batchConn) writeClose(payload []byte, deadline time.Time) error {
	if !deadline.IsZero() {
		c.capWrites(deadline)
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
	if len(payload) > maxControlPayload {
		return errors.New("close payload over 125 bytes")
	}
	var hdr [maxFrameHeader]byte
	h := frameHeader(&hdr, websocket.CloseMessage, true, c.masks, len(payload))
	var frame [maxFrameHeader + maxControlPayload]byte
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
	return c.flushLocked()
}

// maxControlPayload is the largest control frame payload (RFC 6455 §5.5).
const maxControlPayload = 125

// capWrites makes every write from now on end by deadline, one already
// blocked included.
func (c *batchConn) capWrites(deadline time.Time) {
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
func (c *batchConn) SetWriteDeadline(t time.Time) error {
	c.dlmu.Lock()
	defer c.dlmu.Unlock()
	t = c.capped(t)
	c.wdl = t
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline implements net.Conn, through SetWriteDeadline.
func (c *batchConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// renewWriteDeadline gives the socket the deadline writeTimeout from now,
// unless the one it has ends between half of writeTimeout and writeTimeout
// from now: setting a deadline costs more than a flush's other work.
func (c *batchConn) renewWriteDeadline() {
	c.dlmu.Lock()
	defer c.dlmu.Unlock()
	// time.Until reads only the monotonic clock for a deadline that
	// carries it, as those set from time.Now do.
	if left := time.Until(c.wdl); !c.wdl.IsZero() && left >= c.writeTimeout/2 && left <= c.writeTimeout {
		return
	}
	t := c.capped(time.Now().Add(c.writeTimeout))
	c.wdl = t
	_ = c.Conn.SetWriteDeadline(t)
}

// capped returns t, or the write cap when one is set and t is later.
func (c *batchConn) capped(t time.Time) time.Time {
	if limit := c.wcap.Load(); limit != 0 && (t.IsZero() || t.UnixNano() > limit) {
		return time.Unix(0, limit)
	}
	return t
}

// Flush writes what is batched. A failure is also returned by every later
// Write.
func (c *batchConn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *batchConn) flushLocked() error {
	if c.werr != nil || c.wn == 0 {
		return c.werr
	}
	if c.writeTimeout > 0 {
		c.renewWriteDeadline()
	}
	_, err := c.Conn.Write((*c.wbuf)[:c.wn])
	c.pool.put(c.wbuf)
	c.wbuf, c.wn = nil, 0
	if err != nil {
		c.werr = err
	}
	return err
}

// setBatching turns batching on or off; off flushes. writeTimeout bounds
// each flush from then on (0: the caller sets deadlines).
func (c *batchConn) setBatching(on bool, writeTimeout time.Duration) {
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
func (c *batchConn) Close() error {
	// The socket first: that releases a write blocked in a flush, which
	// holds wmu, so that Close never waits for a peer that does not read.
	err := c.Conn.Close()
	c.wmu.Lock()
	if c.wbuf != nil {
		c.pool.put(c.wbuf)
		c.wbuf = nil
	}
	c.werr = net.ErrClosed
	c.wmu.Unlock()
	return err
}

// batchListener wraps accepted connections in batchConns.
type batchListener struct {
	net.Listener
	pool *chunkPool
}

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newBatchConn(c, l.pool), nil
}

// WrapListener wraps the listener holdfast serves clients on, so that spliced
// sessions batch frames into few system calls and hold no buffers while
// idle. Sessions on an unwrapped listener work the same, only slower.
func (h *Handler) WrapListener(ln net.Listener) net.Listener {
	return batchListener{Listener: ln, pool: h.chunks}
}

// flushConn flushes ws's batched writes, if its socket batches.
func flushConn(nc net.Conn) {
	if bc, ok := nc.(*batchConn); ok {
		_ = bc.Flush()
	}
}

// maxFrameHeader is the largest WebSocket frame header: 2 bytes, an 8-byte
// extended length and a 4-byte mask key.
const maxFrameHeader = 14

// writeFrame writes one data frame (RFC 6455 §5.2) into the batch under the
// write lock, so that it never interleaves with a control frame gorilla
// writes from another goroutine. Frames toward the gateway are masked with a
// fresh key (§5.3). With batching off the frame is flushed at once. The
// payload must not exceed chunkSize-maxFrameHeader.
func (c *batchConn) writeFrame(opcode byte, fin, masked bool, payload []byte) error {
	var hdr [maxFrameHeader]byte
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
	if !c.batching || c.wn+h+n > chunkSize {
		if err := c.flushLocked(); err != nil {
			return err
		}
	}
	if c.wbuf == nil {
		c.wbuf = c.pool.get()
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

// frameHeader fills hdr with the header of a frame of n payload bytes and
// returns its length. A masked header ends with a fresh mask key (§5.3).
func frameHeader(hdr *[maxFrameHeader]byte, opcode byte, fin, masked bool, n int) int {
	hdr[0] = opcode
	if fin {
		hdr[0] |= 0x80
	}
	h := 2
	switch {
	case n <= 125:
		hdr[1] = byte(n)
	case n <= 0xffff:
		hdr[1] = 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(n))
		h = 4
	default:
		hdr[1] = 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(n))
		h = 10
	}
	if !masked {
		return h
	}
	hdr[1] |= 0x80
	binary.LittleEndian.PutUint32(hdr[h:], rand.Uint32())
	return h + 4
}

// maskBytes XORs b with the mask key in place (maskCopy onto itself).
func maskBytes(key [4]byte, b []byte) {
	maskCopy(b, b, binary.LittleEndian.Uint32(key[:]))
}
