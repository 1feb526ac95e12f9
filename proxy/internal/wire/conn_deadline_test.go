//go:build unix

package wire

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// expireAfterFirstRead is a socket whose read deadline passes right after
// its first read returns data: a reader descheduled between two reads on
// a loaded host, its dial deadline spent meanwhile.
type expireAfterFirstRead struct {
	*net.TCPConn
	expired bool
}

func (c *expireAfterFirstRead) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if n > 0 && !c.expired {
		c.expired = true
		_ = c.TCPConn.SetReadDeadline(time.Now().Add(-time.Second))
	}
	return n, err
}

// An upgrade response that reached the socket whole is read whole, in one
// system call, whatever buffer the HTTP parser above offers: a deadline
// that passes between the parser's reads cannot cut it. A cut header block
// does not even read as a timeout: bufio's ReadLine hands out a partial
// line without its error, so net/http saw a header line "\r" (gorilla's
// 101 without a subprotocol is 129 bytes, holdfast's upstream readers 128:
// the last "\n" was left in the socket) and failed the dial with
// `malformed MIME header: missing colon: "\r"`.
func TestBatchConnReadsHeaderBlockWhole(t *testing.T) {
	t.Parallel()
	// gorilla's 101 to a request without a subprotocol, then the gateway's
	// challenge frame, as the gateway writes them.
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	frame := append([]byte{0x81, 0x7e, 0x00, 0x90}, bytes.Repeat([]byte("c"), 0x90)...)
	stream := append([]byte(resp), frame...)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pool := NewPool()
	for size := 16; size <= len(stream)+8; size++ {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(stream); err != nil {
			t.Fatal(err)
		}
		// Wait until the whole stream is in c's receive queue.
		waitReadable(t, c.(*net.TCPConn), len(stream))
		bc := NewUpstreamConn(&expireAfterFirstRead{TCPConn: c.(*net.TCPConn)}, pool)
		br := bufio.NewReaderSize(bc, size)
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("reader of %d bytes: %v", size, err)
			bc.Close()
			peer.Close()
			continue
		}
		if r.StatusCode != 101 || br.Buffered() != 0 {
			t.Fatalf("reader of %d bytes: status %d, %d bytes buffered past the header", size, r.StatusCode, br.Buffered())
		}
		bc.FrameMode()
		_ = c.SetReadDeadline(time.Time{})
		got, err := io.ReadAll(io.LimitReader(bc, int64(len(frame))))
		if err != nil || !bytes.Equal(got, frame) {
			t.Fatalf("reader of %d bytes: the frame after the header read %q, %v", size, got, err)
		}
		bc.Close()
		peer.Close()
	}
}

// waitReadable waits until c has n bytes to read, without reading them.
func waitReadable(t *testing.T, c *net.TCPConn, n int) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var have int
		_ = raw.Control(func(fd uintptr) { have = pendingBytes(fd) })
		if have >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes arrived", have, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// pendingBytes peeks at how many bytes the socket fd holds (up to 4 KiB).
func pendingBytes(fd uintptr) int {
	var buf [4096]byte
	n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if err != nil {
		return 0
	}
	return n
}
