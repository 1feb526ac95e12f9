package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// frameLog is the sequence of frame opcodes one side read off the wire.
type frameLog struct {
	mu     sync.Mutex
	ops    []byte
	first  chan struct{} // closed on the first frame
	closed chan struct{} // closed on the first close frame
}

func newFrameLog() *frameLog {
	return &frameLog{first: make(chan struct{}), closed: make(chan struct{})}
}

func (l *frameLog) add(op byte) {
	l.mu.Lock()
	if len(l.ops) == 0 {
		close(l.first)
	}
	if op == websocket.CloseMessage && !l.hasClose() {
		close(l.closed)
	}
	l.ops = append(l.ops, op)
	l.mu.Unlock()
}

func (l *frameLog) hasClose() bool {
	for _, op := range l.ops {
		if op == websocket.CloseMessage {
			return true
		}
	}
	return false
}

// afterClose describes what followed the first close frame, "" for nothing.
func (l *frameLog) afterClose() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, op := range l.ops {
		if op == websocket.CloseMessage {
			if rest := l.ops[i+1:]; len(rest) > 0 {
				return fmt.Sprintf("%d frame(s) after the close frame (frame %d of %d), opcodes %v…", len(rest), i+1, len(l.ops), rest[:min(len(rest), 8)])
			}
			return ""
		}
	}
	return ""
}

func (l *frameLog) sawClose() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hasClose()
}

// readFrames parses raw WebSocket frames off nc until it fails, recording
// each opcode, so that a frame sent after a close frame is seen (gorilla's
// reader stops at the close).
func readFrames(nc net.Conn, log *frameLog) {
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(nc)
	for {
		f, err := testkit.ReadFrame(br, 0)
		if err != nil {
			return
		}
		log.add(f.Opcode)
	}
}

// stream writes small binary messages on ws until a write fails, stop is
// closed or the peer's close frame arrived, which it answers as Node's ws
// does: its own close frame, then the end of its sending side (FIN), while
// readFrames still reads what holdfast sends until holdfast closes. So the
// session ends without waiting out holdfast's close grace. One message of
// 2 MiB once big is closed.
func stream(ws *websocket.Conn, stop, peerClosed, big <-chan struct{}) {
	msg := make([]byte, 200)
	for {
		select {
		case <-stop:
			return
		case <-peerClosed:
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			if tc, ok := ws.NetConn().(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		case <-big:
			big = nil
			_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_ = ws.WriteMessage(websocket.BinaryMessage, make([]byte, 2<<20))
		default:
		}
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if ws.WriteMessage(websocket.BinaryMessage, msg) != nil {
			return
		}
	}
}

// While data streams both ways, a session is closed by the client, by the
// gateway, by holdfast's shutdown, or for a client message over
// policy.maxPayload: on neither leg does any frame follow the close frame
// holdfast writes (RFC 6455 §5.5.1).
func TestNothingFollowsACloseFrame(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// end closes the session; client and gateway are the two ends'
		// sockets as the test's peers hold them.
		end func(t *testing.T, e *ends)
	}{
		{"client closes", func(t *testing.T, e *ends) {
			_ = e.client.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(time.Second))
		}},
		{"gateway closes", func(t *testing.T, e *ends) {
			_ = e.gateway.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1012, "service restart"), time.Now().Add(time.Second))
		}},
		{"holdfast shuts down", func(t *testing.T, e *ends) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := e.hs.h.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		}},
		{"client message over maxPayload", func(t *testing.T, e *ends) {
			close(e.clientBig)
		}},
	}
	// holdfast's close frame follows everything already queued toward
	// the client: with the gateway streaming, the relay fills both
	// sockets' buffers (megabytes of 200-byte frames), which a client
	// under the race detector on a busy host may take longer than 300 ms
	// to read (seen in every case but the client's own close). The client
	// keeps sending until it reads the close, so holdfast drains it for
	// CloseGrace, then closes a socket with unread data: the reset
	// discards what was not sent, the close frame with it. That bound is
	// holdfast's to keep; what this test checks is the order of frames,
	// so the grace is long enough for any reader here: 5 s was not, once
	// in 20 runs of the package at load 3 (a client under the race
	// detector had read 7 295 frames when holdfast's grace ran out). The
	// peers answer holdfast's close at once, so a case takes the grace
	// only when a reader is that slow.
	const grace = 10 * time.Second
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for i := range 3 {
				t.Run(fmt.Sprint(i), func(t *testing.T) {
					t.Parallel()
					testkit.Heavy(t)
					runCloseDiscipline(t, grace, tc.end)
				})
			}
		})
	}
}

// ends are what a close-discipline case can act on.
type ends struct {
	hs              *harness
	client, gateway *websocket.Conn
	clientBig       chan struct{} // closed: the client sends 2 MiB
}

func runCloseDiscipline(t *testing.T, grace time.Duration, end func(t *testing.T, e *ends)) {
	t.Helper()
	stop := make(chan struct{})
	clientBig := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)

	upLog := newFrameLog() // what holdfast wrote to the gateway
	gateways := make(chan *websocket.Conn, 1)
	upDone := make(chan struct{})
	addr := startMiniUpstream(t, func(ws *websocket.Conn) {
		defer close(upDone)
		gateways <- ws
		wg.Add(1)
		go func() { defer wg.Done(); stream(ws, stop, upLog.closed, nil) }()
		readFrames(ws.NetConn(), upLog)
	})
	hs := startProxy(t, addr, func(c *proxy.Config) { c.CloseGrace = grace }, nil)

	c := dialRaw(t, hs.url, nil)
	c.read() // the challenge; nothing else is sent before the connect
	c.write(websocket.TextMessage, []byte(`{"type":"req","id":"c1","method":"connect","params":{"minProtocol":3,"maxProtocol":4,`+
		`"client":{"id":"cli","version":"1.0.0","platform":"linux","mode":"cli"},"auth":{"token":"t"}}}`))
	gateway := <-gateways
	clientLog := newFrameLog() // what holdfast wrote to the client
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		readFrames(c.ws.NetConn(), clientLog)
	}()
	select { // hello-ok: the session is spliced
	case <-clientLog.first:
	case <-time.After(10 * time.Second):
		t.Fatal("no hello-ok")
	}
	wg.Add(1)
	go func() { defer wg.Done(); stream(c.ws, stop, clientLog.closed, clientBig) }()

	// Let data flow both ways, then end the session.
	time.Sleep(50 * time.Millisecond)
	end(t, &ends{hs: hs, client: c.ws, gateway: gateway, clientBig: clientBig})
	for _, done := range []chan struct{}{clientDone, upDone} {
		select {
		case <-done:
		case <-time.After(2*grace + 5*time.Second):
			t.Fatal("a leg did not end")
		}
	}
	var problems []string
	if s := clientLog.afterClose(); s != "" {
		problems = append(problems, "client leg: "+s)
	}
	if s := upLog.afterClose(); s != "" {
		problems = append(problems, "gateway leg: "+s)
	}
	if !clientLog.sawClose() {
		problems = append(problems, fmt.Sprintf("client leg: no close frame in %d frames", len(clientLog.ops)))
	}
	if len(problems) > 0 {
		t.Fatal(strings.Join(problems, "; "))
	}
}
