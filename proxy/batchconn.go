package proxy

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
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
// Reads: a read that returns as much as the caller asked for suggests more
// is waiting, so the next one gathers into a pooled chunk; the chunk goes
// back to the pool once drained. A blocking read therefore normally lands
// in the caller's small buffer (gorilla's 256-byte reader), not in a chunk.
// Before any read from the socket, beforeRead (the flush of the other leg)
// runs: nothing relayed waits in a batch while this leg blocks.
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
	rbuf       *[]byte
	rpos, rend int
	gather     bool // the last socket read filled the caller's buffer
	beforeRead atomic.Pointer[func()]

	// Write side.
	wmu      sync.Mutex
	batching bool
	wbuf     *[]byte
	wn       int
	werr     error
}

func newBatchConn(c net.Conn, pool *chunkPool) *batchConn {
	return &batchConn{Conn: c, pool: pool}
}

// Read implements net.Conn.
func (c *batchConn) Read(p []byte) (int, error) {
	if c.rpos < c.rend {
		n := copy(p, (*c.rbuf)[c.rpos:c.rend])
		c.rpos += n
		if c.rpos == c.rend {
			c.pool.put(c.rbuf)
			c.rbuf, c.rpos, c.rend = nil, 0, 0
		}
		return n, nil
	}
	if f := c.beforeRead.Load(); f != nil {
		(*f)()
	}
	if !c.gather || len(p) >= chunkSize {
		n, err := c.Conn.Read(p)
		c.gather = n == len(p)
		return n, err
	}
	buf := c.pool.get()
	n, err := c.Conn.Read(*buf)
	c.gather = n == len(*buf)
	if n == 0 {
		c.pool.put(buf)
		return 0, err
	}
	m := copy(p, (*buf)[:n])
	if m < n {
		c.rbuf, c.rpos, c.rend = buf, m, n
	} else {
		c.pool.put(buf)
	}
	return m, err
}

// Write implements net.Conn.
func (c *batchConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
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
	_, err := c.Conn.Write((*c.wbuf)[:c.wn])
	c.pool.put(c.wbuf)
	c.wbuf, c.wn = nil, 0
	if err != nil {
		c.werr = err
	}
	return err
}

// setBatching turns batching on or off; off flushes.
func (c *batchConn) setBatching(on bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.batching = on
	if !on {
		_ = c.flushLocked()
	}
}

// Close closes the socket; what is still batched is dropped (closing paths
// flush their close frame explicitly, and a peer that no longer reads must
// not hold Close up). Buffers go back to the pool.
func (c *batchConn) Close() error {
	c.wmu.Lock()
	if c.wbuf != nil {
		c.pool.put(c.wbuf)
		c.wbuf = nil
	}
	c.werr = net.ErrClosed
	c.wmu.Unlock()
	return c.Conn.Close()
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
	hdr[0] = opcode
	if fin {
		hdr[0] |= 0x80
	}
	n := len(payload)
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
	var key [4]byte
	if masked {
		hdr[1] |= 0x80
		binary.LittleEndian.PutUint32(key[:], rand.Uint32())
		copy(hdr[h:], key[:])
		h += 4
	}

	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
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

// maskBytes XORs b with the mask key, 8 bytes at a time where it can.
func maskBytes(key [4]byte, b []byte) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k)
	}
	for ; i < len(b); i++ {
		b[i] ^= key[i&3]
	}
}
