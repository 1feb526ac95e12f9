//go:build !unix

package wire

// rawReadSupported: elsewhere WaitData reads through net.Conn.Read.
const rawReadSupported = false

// readRaw is not used where rawReadSupported is false.
func (c *Conn) readRaw(uintptr) bool { return true }

// peekRaw is not used where rawReadSupported is false.
func (c *Conn) peekRaw(uintptr) bool { return true }

// readNowRaw is not used where rawReadSupported is false.
func (r *recordConn) readNowRaw(uintptr) bool { return true }
