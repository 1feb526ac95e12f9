//go:build !unix

package wire

import "net"

// PeerSpoke cannot look at the socket here: it reports false.
func PeerSpoke(net.Conn) bool { return false }
