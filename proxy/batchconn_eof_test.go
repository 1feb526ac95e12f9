package proxy

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Once the socket has reported the end of the stream, reads answer io.EOF
// without asking it again: a session's end costs one read of it, not one
// in waitData and another in gorilla's reader.
func TestBatchConnEOFIsSticky(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	bc := newBatchConn(c, newChunkPool())
	defer bc.Close()
	if bc.raw == nil {
		t.Skip("no RawConn on this platform")
	}
	bc.frameMode()
	peer.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := bc.waitData(); err != io.EOF {
		t.Fatalf("waitData after the peer closed: %v; want io.EOF", err)
	}
	// The socket is gone now: only a read that does not ask it can still
	// answer io.EOF.
	_ = c.Close()
	buf := make([]byte, 128)
	if n, err := bc.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end of the stream: %d, %v; want 0, io.EOF", n, err)
	}
	if err := bc.waitData(); !errors.Is(err, io.EOF) {
		t.Fatalf("waitData again: %v; want io.EOF", err)
	}
}
