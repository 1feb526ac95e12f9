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
				c.waited = true
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

// fillRaw is the RawConn callback of recordConn.fill: it reads what the
// socket has into a pooled chunk, or reports false (wait for readability)
// without keeping a buffer, after onWait.
func (r *recordConn) fillRaw(fd uintptr) bool {
	buf := r.pool.Get()
	for {
		n, err := syscall.Read(int(fd), *buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			r.pool.Put(buf)
			if r.onWait != nil {
				r.onWait()
			}
			return false
		case err != nil:
			r.pool.Put(buf)
			r.fillFailed(err)
		case n == 0:
			r.pool.Put(buf)
			r.fillFailed(io.EOF)
		default:
			r.buf = buf
			r.pending = (*buf)[:n]
		}
		return true
	}
}
