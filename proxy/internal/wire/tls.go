package wire

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"os"
	"syscall"
)

// A TLS leg runs crypto/tls below its Conn, on both legs: TCP, then
// recordConn, then a *tls.Conn, then the Conn that batches frames. So a
// burst of frames leaves in one TLS record, and the frame relay reads the
// plaintext as it reads a plain socket.
//
// recordConn is what lets such a leg idle holding no read buffer, as a
// plain one does. crypto/tls reads its socket into a buffer of its own and
// keeps whatever it read past the record it decrypts; below it, that would
// be the next records of a burst, which no reader above can see. A
// recordConn hands crypto/tls at most the rest of the current record
// (RFC 8446 §5.1, RFC 5246 §6.2: a 5-byte header, type, version and a
// 16-bit length, then that many bytes), keeping what it read beyond in a
// pooled chunk it gives back once drained, as streamBounds does for frames.
// Once a read of the *tls.Conn returned less than its buffer (the record's
// plaintext is drained) and the recordConn holds nothing, nothing waits
// above the socket: the Conn may then wait for the socket to be readable
// holding no buffer, the recordConn reading all the socket holds into its
// chunk in one system call once data came (see readTLS), and read the
// *tls.Conn into a chunk. So a burst of records costs one read of the
// socket, however small crypto/tls's buffer (it is sized by the largest
// record read so far), and no read of the burst may block.

// recordHeaderLen is the length of a TLS record header.
const recordHeaderLen = 5

// recordConn is the socket below a *tls.Conn whose reads never cross the
// end of a TLS record. Its read side belongs to the *tls.Conn's reader;
// writes, deadlines and Close go to the socket unchanged.
type recordConn struct {
	net.Conn
	pool *Pool

	buf     *[]byte // pooled chunk behind pending, or nil
	pending []byte  // read from the socket, not yet handed out
	hdr     [recordHeaderLen]byte
	have    int // header bytes of the current record handed out
	left    int // body bytes of the current record not yet handed out
	// rerr: the socket's end (io.EOF) or failure, seen by fill; handed
	// to crypto/tls once pending is drained, and every time after.
	rerr error

	// beforeRead, when set, runs before a read of the socket that may
	// block (a read crypto/tls asks for, outside readTLS): the Conn above
	// flushes its peer leg there.
	beforeRead func()
	// onWait, when set, runs when fill finds the socket empty, before it
	// waits: the Conn above gives back its spare chunk and, when a relay
	// reads it, flushes its peer leg.
	onWait func()
	// nonblock: a read that finds nothing pending fails with
	// errWouldBlock instead of reading the socket, which crypto/tls
	// passes up without keeping it: the Conn above (readTLS) then gives
	// its chunk back and waits (fill).
	nonblock bool
	raw      syscall.RawConn // the socket's, for fill; nil without
	fillFn   func(fd uintptr) bool
}

// errWouldBlock is a read of a recordConn in nonblock mode that found
// nothing to hand out. It is a temporary net.Error, which crypto/tls
// returns without failing the connection (as it does a read deadline),
// keeping any part of a record it had read.
var errWouldBlock error = wouldBlockError{}

type wouldBlockError struct{}

func (wouldBlockError) Error() string   { return "wire: read would block" }
func (wouldBlockError) Timeout() bool   { return true }
func (wouldBlockError) Temporary() bool { return true }

func newRecordConn(c net.Conn, pool *Pool) *recordConn {
	return &recordConn{Conn: c, pool: pool}
}

// Read implements net.Conn: it hands out bytes of the current record only,
// from what it holds (which readTLS reads into its chunk, fill), else from
// one read of the socket (none in nonblock mode).
func (r *recordConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(r.pending) == 0 {
		if r.rerr != nil {
			return 0, r.rerr
		}
		if r.nonblock {
			return 0, errWouldBlock
		}
		return r.readSocket(p)
	}
	n := copy(p, r.pending[:r.allow(r.pending)])
	r.advance(p[:n])
	r.pending = r.pending[n:]
	if len(r.pending) == 0 {
		r.pool.Put(r.buf)
		r.buf = nil
	}
	return n, nil
}

// readSocket is Read with nothing pending outside readTLS (the handshake,
// the HTTP server's reads, a drain): it reads the socket into p, which may
// block holding no chunk, and keeps what it read past the current record
// in a pooled chunk.
func (r *recordConn) readSocket(p []byte) (int, error) {
	// What lies past the record's end must fit in a chunk.
	if len(p) > ChunkSize {
		p = p[:ChunkSize]
	}
	if r.beforeRead != nil {
		r.beforeRead()
	}
	n, err := r.Conn.Read(p)
	if n == 0 {
		return 0, err
	}
	k := r.allow(p[:n])
	r.advance(p[:k])
	if k < n {
		r.buf = r.pool.Get()
		r.pending = (*r.buf)[:copy(*r.buf, p[k:n])]
		return k, nil
	}
	return n, err
}

// allow returns how many bytes of b, which come next in the stream, belong
// to the current record.
func (r *recordConn) allow(b []byte) int {
	if r.have < recordHeaderLen {
		need := recordHeaderLen - r.have
		if len(b) <= need {
			return len(b)
		}
		var hdr [recordHeaderLen]byte
		copy(hdr[:], r.hdr[:r.have])
		copy(hdr[r.have:], b[:need])
		return min(len(b), need+int(binary.BigEndian.Uint16(hdr[3:])))
	}
	return min(len(b), r.left)
}

// advance records that b, as allowed, was handed out.
func (r *recordConn) advance(b []byte) {
	if r.have < recordHeaderLen {
		k := copy(r.hdr[r.have:], b)
		r.have += k
		b = b[k:]
		if r.have < recordHeaderLen {
			return
		}
		r.left = int(binary.BigEndian.Uint16(r.hdr[3:]))
	}
	r.left -= len(b)
	if r.left == 0 {
		r.have = 0 // the record is whole: the next one starts
	}
}

// fill reads what the socket holds into a pooled chunk, holding none while
// it waits for the socket to be readable (fillFn gives its chunk back and
// runs onWait when the socket is empty). Call it when nothing is pending.
// The socket's end or failure is kept in rerr for crypto/tls to see; fill
// returns only the RawConn's own errors (a deadline, a closed socket).
func (r *recordConn) fill() error {
	if r.rerr != nil {
		return nil
	}
	if err := r.raw.Read(r.fillFn); err != nil {
		if oe, ok := err.(*net.OpError); ok {
			e := *oe
			e.Op = "read"
			return &e
		}
		return err
	}
	return nil
}

// fillFailed keeps the failure of fill's read system call, as net.Conn's
// Read reports it.
func (r *recordConn) fillFailed(err error) {
	if err == io.EOF {
		r.rerr = err
		return
	}
	r.rerr = &net.OpError{Op: "read", Net: r.LocalAddr().Network(), Source: r.LocalAddr(), Addr: r.RemoteAddr(),
		Err: os.NewSyscallError("read", err)}
}

// holds reports whether bytes read from the socket wait here.
func (r *recordConn) holds() bool { return len(r.pending) > 0 }

// NewTLSListener wraps ln so that every connection it accepts is a
// *tls.Conn (so that net/http fills in Request.TLS) over a recordConn
// borrowing chunks from pool, served with cfg (certificates through
// cfg.GetCertificate are looked up per handshake, as tls.NewListener does).
// A Conn made of such a connection after the upgrade (NewConn) waits for
// data holding no read buffer.
func NewTLSListener(ln net.Listener, cfg *tls.Config, pool *Pool) net.Listener {
	return tlsListener{Listener: ln, cfg: cfg, pool: pool}
}

type tlsListener struct {
	net.Listener
	cfg  *tls.Config
	pool *Pool
}

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(newRecordConn(c, l.pool), l.cfg), nil
}

// TLSClient returns the client side of TLS over raw with cfg, as
// tls.Client does, over a recordConn borrowing chunks from pool: a Conn
// made of it (NewUpstreamConn) waits for data holding no read buffer.
func TLSClient(raw net.Conn, cfg *tls.Config, pool *Pool) *tls.Conn {
	return tls.Client(newRecordConn(raw, pool), cfg)
}

// tlsDrained reports, on a TLS leg, that nothing read from the socket
// waits above it: the recordConn holds nothing, and the last read of the
// *tls.Conn did not fill its buffer, so the record it decrypted is drained
// (crypto/tls never holds a record past the one it decrypts over a
// recordConn). A read then needs the socket.
func (c *Conn) tlsDrained() bool { return !c.rec.holds() && !c.gather }

// readTLS is readBlock on a TLS leg: it reads the *tls.Conn once into a
// chunk (fillTLS), from what the recordConn holds. When that is not a
// whole record (nothing waits above the socket: tlsDrained, or the rest of
// a record is awaited), crypto/tls keeps what it has of the record and the
// chunk goes back to the pool; then the recordConn waits for the socket
// to be readable holding no buffer, the peer leg flushed as readBlock
// flushes it, and reads all the socket holds in one system call (fill),
// and the *tls.Conn is read again.
//
// A record that is not application data (a TLS 1.3 key update or session
// ticket) is decrypted like data; crypto/tls handles it and goes on
// reading, and the read finds nothing more and waits like any other.
// Peers send those right after the handshake, before the upgrade's answer,
// if at all.
func (c *Conn) readTLS() error {
	if !c.tlsDrained() {
		if err := c.fillTLSNow(); err != errWouldBlock {
			return err
		}
	}
	if peer := c.peer.Load(); peer != nil && !c.flushOnWait {
		_ = peer.Flush()
	}
	for {
		if err := c.rec.fill(); err != nil {
			return err
		}
		if err := c.fillTLSNow(); err != errWouldBlock {
			return err
		}
	}
}

// fillTLSNow reads the *tls.Conn once into the spare chunk or a pooled
// one, the recordConn in nonblock mode: it decrypts what the recordConn
// holds, and fails with errWouldBlock, holding no chunk, when that is not
// a whole record.
func (c *Conn) fillTLSNow() error {
	buf := c.spare
	c.spare = nil
	if buf == nil {
		buf = c.pool.Get()
	}
	c.rec.nonblock = true
	n, err := c.Conn.Read(*buf)
	c.rec.nonblock = false
	c.gather = n == len(*buf)
	if n == 0 {
		c.pool.Put(buf)
		c.eof = err == io.EOF
		return err
	}
	c.rbuf = buf
	c.pending = (*buf)[:n]
	c.eof = err == io.EOF
	return nil
}

// flushBeforeRecordRead runs before the recordConn below a TLS leg reads
// its socket outside readTLS (the reads of a message reader, the
// handshake's, a drain's): that read may block, so what was relayed to the
// peer leg meanwhile leaves now.
func (c *Conn) flushBeforeRecordRead() {
	if peer := c.peer.Load(); peer != nil {
		_ = peer.Flush()
	}
}

// recordWait runs when the recordConn below a TLS leg finds the socket
// empty in readTLS, before it waits: the spare chunk goes back to the pool
// and, when a relay reads (flushOnWait), what was relayed to the peer leg
// leaves now, in one write.
func (c *Conn) recordWait() {
	c.releaseSpare()
	if c.flushOnWait {
		c.waited = true
		if peer := c.peer.Load(); peer != nil {
			_ = peer.Flush()
		}
	}
}

// TakeBuffered moves into c's pending bytes, after any already there, the
// plaintext crypto/tls still holds of the records it decrypted for a reader
// before c (the HTTP server's, whose 4 KiB reader may stop inside a record
// that carries the upgrade request and frames behind it), and that of the
// whole records the recordConn holds. Without it a wait would see nothing
// above the socket while a frame waits in crypto/tls. It reads nothing
// from the socket (the recordConn's nonblock mode). Call it from the
// reading goroutine, right after the hijack; on a leg that is not TLS over
// a recordConn it does nothing.
func (c *Conn) TakeBuffered() {
	if c.rec == nil {
		return
	}
	c.rec.nonblock = true
	defer func() { c.rec.nonblock = false }()
	var taken []byte
	buf := c.pool.Get()
	defer c.pool.Put(buf)
	for {
		// crypto/tls hands out what it holds, then decrypts what the
		// recordConn holds, then fails on errWouldBlock: a temporary
		// error it does not keep as the connection's.
		n, err := c.Conn.Read(*buf)
		taken = append(taken, (*buf)[:n]...)
		if err != nil || n == 0 {
			if err == io.EOF {
				c.eof = true
			}
			break
		}
	}
	if len(taken) > 0 {
		c.pending = append(c.pending, taken...)
	}
	c.gather = false
}
