//go:build linux

package proxy

import (
	"net"
	"testing"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// The upstream socket has no TCP keepalive: the protocol keeps a session
// alive end to end (docs/operations.md, "Keepalive"), and the probes would
// cost each dial four system calls.
func TestUpstreamSocketHasNoKeepalive(t *testing.T) {
	t.Parallel()
	ws := openUpgraded(t, "")
	tc, ok := ws.Conn.(*net.TCPConn)
	if !ok {
		t.Fatalf("upstream socket is a %T", ws.Conn)
	}
	if testkit.KeepaliveOn(t, tc) {
		t.Error("SO_KEEPALIVE is set on the upstream socket")
	}
}
