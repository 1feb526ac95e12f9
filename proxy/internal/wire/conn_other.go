//go:build !unix

package wire

// rawReadSupported: elsewhere WaitData reads through net.Conn.Read.
const rawReadSupported = false

// readRaw is not used where rawReadSupported is false.
func (c *Conn) readRaw(uintptr) bool { return true }

// fillRaw is not used where rawReadSupported is false.
func (r *recordConn) fillRaw(uintptr) bool { return true }
