package proxy_test

import (
	"strings"
	"testing"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
)

// A client that vanishes without a close frame, in its handshake or in its
// session, is recorded with no close got (code 0, as docs/monitoring.md's access log
// section says), not gorilla's 1006, which is never on the wire; and the
// handshake's log line names the connect kind with the access line's word
// ("none" for a client that sent no frame). Before, the access line said 1006,
// and the handshake line said "not-connect" where the access line said
// "none".
func TestAccessLogVanishedClient(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token})
	hs := startProxy(t, gw.Addr(), nil, nil)

	// In its handshake: the challenge read, then the socket dropped.
	c := dialRaw(t, hs.url, nil)
	c.read()
	c.ws.NetConn().Close()
	line := waitAccess(t, hs, 1)[0]
	if got := field(line, "client_close_got"); got != "0" {
		t.Errorf("vanished in the handshake: client_close_got=%s; want 0\n%s", got, line)
	}
	if got := field(line, "connect"); got != "none" {
		t.Errorf("access connect=%s; want none", got)
	}
	for _, l := range strings.Split(hs.logs.String(), "\n") {
		if strings.Contains(l, "client went away during the handshake") {
			if got := field(l, "connect"); got != "none" {
				t.Errorf("handshake line connect=%s; want the access line's none\n%s", got, l)
			}
		}
	}

	// In its session.
	s := dialRaw(t, hs.url, nil)
	s.handshake()
	s.ws.NetConn().Close()
	line = waitAccess(t, hs, 2)[1]
	if got := field(line, "client_close_got"); got != "0" {
		t.Errorf("vanished in the session: client_close_got=%s; want 0\n%s", got, line)
	}
	if got := field(line, "session"); got != "client connection lost" {
		t.Errorf("session=%s; want \"client connection lost\"", got)
	}
}
