package wire

import (
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A relay that ends (here on the gateway's close frame, the last thing a
// session reads) gives the chunk it kept for its next read back to the
// pool: closed with the leg, it would be lost, and every session would
// cost a fresh 32 KiB chunk.
func TestFrameRelayGivesBackItsSpare(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peerc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			peerc <- c
		}
	}()
	sc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	peer := <-peerc
	defer peer.Close()

	pool := NewPool()
	src := NewConn(sc, pool)
	if src.raw == nil {
		t.Skip("no RawConn reads on this platform")
	}
	dc := &scriptConn{}
	dst := NewConn(dc, pool)
	src.masks = true // holdfast is the gateway's client on this leg
	spliced(src, dst)

	_ = peer.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Write(cat(wsFrame(0x81, []byte("hello"), false), wsFrame(0x88, closePayload(1000, ""), false))); err != nil {
		t.Fatal(err)
	}
	_ = sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := &Relay{src: src, dst: dst, fromClient: false, t: &Tally{}}
	err, _ = r.Run()
	if CloseCode(err) != websocket.CloseNormalClosure {
		t.Fatalf("relay ended with %v; want the close", err)
	}
	if src.spare != nil {
		t.Error("the relay ended holding a spare chunk")
	}
}
