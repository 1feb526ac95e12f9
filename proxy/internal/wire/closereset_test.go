//go:build unix

package wire

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// upstreamPair returns an upstream leg over TCP on 127.0.0.1 and the
// gateway's end of it.
func upstreamPair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	nc, gw := tcpPair(t)
	return NewUpstreamConn(nc, NewPool()), gw.(*net.TCPConn)
}

// readFrame reads one frame holdfast wrote (masked) and returns its opcode.
func readFrame(t *testing.T, gw net.Conn) byte {
	t.Helper()
	_ = gw.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(gw, h[:]); err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, 4+int(h[1]&0x7f)) // mask key and a short payload
	if _, err := io.ReadFull(gw, rest); err != nil {
		t.Fatal(err)
	}
	return h[0] & opcodeBits
}

// waitEnded waits until a read on c's socket would find the end of the
// stream.
func waitEnded(t *testing.T, c net.Conn) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		ended := false
		_ = raw.Control(func(fd uintptr) {
			var b [1]byte
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			ended = n == 0 && err == nil
		})
		if ended {
			return
		}
	}
	t.Fatal("the peer's end never arrived")
}

// howEnded reads gw to its end: "fin" or "reset".
func howEnded(t *testing.T, gw net.Conn) string {
	t.Helper()
	_ = gw.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, gw)
	switch {
	case err == nil:
		return "fin"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	}
	t.Fatalf("reading to the end: %v", err)
	return ""
}

// The upstream leg resets its socket only once the close handshake is
// over and the gateway has ended its side: holdfast's close frame was
// answered and the gateway closed, so the reset loses nothing and spares
// the gateway a TIME_WAIT. Every other end is a FIN.
func TestUpstreamCloseResetsOnlyAfterTheHandshake(t *testing.T) {
	t.Parallel()
	closeFrame := sframe(0x88, false, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""))
	for _, tc := range []struct {
		name string
		// answer: the gateway answers holdfast's close with its own;
		// end: then half-closes its side.
		answer, end bool
		want        string
	}{
		{"answered and ended", true, true, "reset"},
		{"answered, not ended", true, false, "fin"},
		{"ended unanswered", false, true, "fin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up, gw := upstreamPair(t)
			if err := up.WriteClose(websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if op := readFrame(t, gw); op != websocket.CloseMessage {
				t.Fatalf("the gateway read opcode %d; want a close", op)
			}
			if tc.answer {
				if _, err := gw.Write(closeFrame); err != nil {
					t.Fatal(err)
				}
				_ = up.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _, err := up.ReadMessage(1<<20, nil)
				if ce := (*websocket.CloseError)(nil); !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
					t.Fatalf("ReadMessage: %v; want the gateway's close 1001", err)
				}
			}
			if tc.end {
				if err := gw.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				waitEnded(t, up.Conn)
			}
			if err := up.Close(); err != nil {
				t.Fatal(err)
			}
			if got := howEnded(t, gw); got != tc.want {
				t.Fatalf("the gateway saw a %s; want a %s", got, tc.want)
			}
		})
	}
}

// A gateway that closes first is answered by the relay: that completes
// the handshake as well.
func TestRelayNotesTheGatewaysClose(t *testing.T) {
	t.Parallel()
	pool := NewPool()
	src := NewUpstreamConn(&scriptConn{reads: [][]byte{sframe(0x88, false, closePayload(websocket.CloseServiceRestart, ""))}}, pool)
	dst := NewConn(&scriptConn{}, pool)
	spliced(src, dst)
	if src.closeHandshakeOver() {
		t.Fatal("the handshake is over before any close")
	}
	r := &Relay{src: src, dst: dst, count: prometheus.NewCounter(prometheus.CounterOpts{Name: "relayed"}), t: &Tally{}}
	err, _ := r.Run()
	if ce := (*websocket.CloseError)(nil); !errors.As(err, &ce) || ce.Code != websocket.CloseServiceRestart {
		t.Fatalf("relay ended with %v; want the gateway's close 1012", err)
	}
	if !src.closeHandshakeOver() {
		t.Fatal("the relay answered the gateway's close, and the handshake is not over")
	}
}

// A client leg (holdfast is the server) keeps its FIN: the server is the
// side that closes first and keeps the TIME_WAIT (RFC 6455 §7.1.1).
func TestClientLegCloseKeepsItsFIN(t *testing.T) {
	t.Parallel()
	up, gw := upstreamPair(t)
	up.masks = false // the server's side of a leg
	if err := up.WriteClose(websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	up.noteCloseRead()
	if err := gw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, up.Conn)
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	if got := howEnded(t, gw); got != "fin" {
		t.Fatalf("the client saw a %s; want a fin", got)
	}
}
