//go:build !unix

package proxy

// rawReadSupported: elsewhere waitData reads through net.Conn.Read.
const rawReadSupported = false

// readRaw is not used where rawReadSupported is false.
func (c *batchConn) readRaw(uintptr) bool { return true }
