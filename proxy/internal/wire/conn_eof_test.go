package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Once the socket has reported the end of the stream, reads answer io.EOF
// without asking it again: a session's end costs one read of it, not one
// in WaitData and another in gorilla's reader.
func TestBatchConnEOFIsSticky(t *testing.T) {
	t.Parallel()
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
	bc := NewConn(c, NewPool())
	defer bc.Close()
	if bc.raw == nil {
		t.Skip("no RawConn on this platform")
	}
	bc.FrameMode()
	peer.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := bc.WaitData(); err != io.EOF {
		t.Fatalf("WaitData after the peer closed: %v; want io.EOF", err)
	}
	// The socket is gone now: only a read that does not ask it can still
	// answer io.EOF.
	_ = c.Close()
	buf := make([]byte, 128)
	if n, err := bc.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end of the stream: %d, %v; want 0, io.EOF", n, err)
	}
	if err := bc.WaitData(); !errors.Is(err, io.EOF) {
		t.Fatalf("WaitData again: %v; want io.EOF", err)
	}
}

// countingConn counts the reads that reach the socket.
type countingConn struct {
	net.Conn
	reads int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	return c.Conn.Read(p)
}

// A frame larger than the small buffer of the reader above (gorilla's 128
// bytes), already whole in the socket, takes one socket read: the first
// read lands in a chunk, not in the caller's buffer.
func TestBatchConnSmallReadsTakeOneSocketRead(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	frame := frameBytes(1, 300, false)
	go func() { _, _ = a.Write(frame) }()
	cc := &countingConn{Conn: b}
	bc := NewConn(cc, NewPool())
	bc.FrameMode()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 128)
	for len(got) < len(frame) {
		n, err := bc.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, frame) {
		t.Fatal("the frame was altered")
	}
	if cc.reads != 1 {
		t.Errorf("%d socket reads for a %d-byte frame read 128 bytes at a time; want 1", cc.reads, len(frame))
	}
}
