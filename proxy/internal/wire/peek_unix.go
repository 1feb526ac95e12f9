//go:build unix

package wire

import (
	"crypto/tls"
	"net"
	"syscall"
)

// PeerSpoke reports whether the peer of the TCP connection beneath c has
// sent anything not yet read, or closed or reset it. It looks at the socket
// without consuming anything and without blocking (MSG_PEEK|MSG_DONTWAIT),
// so it is safe under TLS as well. It reports false when it cannot tell.
// Only the goroutine that reads c may call it.
func PeerSpoke(c net.Conn) bool {
unwrap:
	for {
		switch x := c.(type) {
		case *Conn:
			if len(x.pending) > 0 || x.eof {
				return true
			}
			c = x.Conn
		case *tls.Conn:
			c = x.NetConn()
		case *recordConn:
			if x.holds() {
				return true
			}
			c = x.Conn
		default:
			break unwrap
		}
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	spoke := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err == syscall.EINTR {
				continue
			}
			// Data, the end of the stream (0 bytes, no error) or an
			// error such as a reset: the peer spoke. EAGAIN: nothing.
			spoke = err != syscall.EAGAIN
			return true
		}
	})
	return spoke || err != nil
}
