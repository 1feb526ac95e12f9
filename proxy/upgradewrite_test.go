package proxy_test

import (
	"bytes"
	"net"
	"sync"
	"testing"

	"github.com/gorilla/websocket"
)

// writeRecorder records every write holdfast makes on its client sockets.
type writeRecorder struct {
	mu     sync.Mutex
	writes [][]byte
}

func (r *writeRecorder) wrap(ln net.Listener) net.Listener { return recordingListener{ln, r} }

func (r *writeRecorder) first() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.writes) == 0 {
		return nil
	}
	return r.writes[0]
}

type recordingListener struct {
	net.Listener
	r *writeRecorder
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return recordingConn{c, l.r}, nil
}

type recordingConn struct {
	net.Conn
	r *writeRecorder
}

func (c recordingConn) Write(p []byte) (int, error) {
	c.r.mu.Lock()
	c.r.writes = append(c.r.writes, bytes.Clone(p))
	c.r.mu.Unlock()
	return c.Conn.Write(p)
}

// With the challenge in hand before the client's upgrade is answered, the
// 101 and the challenge leave in one write: one packet, and the client has
// its challenge with the answer to its upgrade.
func TestUpgradeAnswerAndChallengeInOneWrite(t *testing.T) {
	t.Parallel()
	addr := startMiniUpstream(t, func(ws *websocket.Conn) {
		for {
			if _, _, err := ws.NextReader(); err != nil {
				return
			}
		}
	})
	rec := &writeRecorder{}
	hs := startProxy(t, addr, nil, rec.wrap)
	c := dialRaw(t, hs.url, nil)
	c.handshake()
	w := rec.first()
	if !bytes.Contains(w, []byte("101 Switching Protocols")) || !bytes.Contains(w, []byte(`"connect.challenge"`)) {
		t.Fatalf("first write to the client %q; want the 101 and the challenge together", w)
	}
}
