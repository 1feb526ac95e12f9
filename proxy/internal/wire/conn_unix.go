//go:build unix

package wire

import (
	"io"
	"syscall"
)

// rawReadSupported: WaitData reads through the socket's RawConn.
const rawReadSupported = true

// readRaw is the read callback of WaitData and readBlock: it reads what the
// socket has into the spare chunk or a pooled one, or reports false (wait
// for readability) without keeping a buffer; with flushOnWait it flushes
// the peer leg first.
func (c *Conn) readRaw(fd uintptr) bool {
	buf := c.spare
	c.spare = nil
	if buf == nil {
		buf = c.pool.Get()
	}
	for {
		n, err := syscall.Read(int(fd), *buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			c.pool.Put(buf)
			if c.flushOnWait {
				// The read would block: what was relayed meanwhile
				// leaves now, in one write.
				if peer := c.peer.Load(); peer != nil {
					_ = peer.Flush()
				}
			}
			return false
		case err != nil:
			c.pool.Put(buf)
			c.rawErr = err
		case n == 0:
			c.pool.Put(buf)
			c.rawErr = io.EOF
			c.eof = true
		default:
			c.rbuf = buf
			c.pending = (*buf)[:n]
			c.gather = n == len(*buf)
		}
		return true
	}
}

// peekRaw is the wait callback of a TLS leg (readTLS): it reports whether
// the socket has anything to read (data, its end or an error, which the
// read that follows reports) without reading it, so that crypto/tls reads
// it whole; false (wait for readability) gives back the spare chunk and,
// with flushOnWait, flushes the peer leg first. Called again once the
// socket became readable, it reports true without a system call.
func (c *Conn) peekRaw(fd uintptr) bool {
	if c.woken {
		return true
	}
	var b [1]byte
	for {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.releaseSpare()
			if c.flushOnWait {
				if peer := c.peer.Load(); peer != nil {
					_ = peer.Flush()
				}
			}
			c.woken = true
			return false
		}
		return true
	}
}

// readNowRaw is the RawConn callback of recordConn.readNow: one read of
// the socket, never a wait (errWouldBlock instead).
func (r *recordConn) readNowRaw(fd uintptr) bool {
	for {
		n, err := syscall.Read(int(fd), r.nbBuf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			r.nbErr = errWouldBlock
		case err != nil:
			r.nbErr = err
		case n == 0:
			r.nbErr = io.EOF
		default:
			r.nbN = n
		}
		return true
	}
}
