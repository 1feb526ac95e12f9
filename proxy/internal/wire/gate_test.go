package wire

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// gateFrame builds one unmasked frame with a payload of n bytes (7-bit,
// 16-bit and 64-bit lengths).
func gateFrame(op byte, n int) []byte {
	f := []byte{0x80 | op}
	switch {
	case n < 126:
		f = append(f, byte(n))
	case n < 1<<16:
		f = append(f, 126, byte(n>>8), byte(n))
	default:
		f = append(f, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(f, bytes.Repeat([]byte{'x'}, n)...)
}

// A Gate armed while frames pass in pieces of any size writes its
// close frame at the next frame boundary, never inside a frame, and
// nothing after it.
func TestFrameGateClosesBetweenFrames(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		var stream []byte
		var ends []int // where each frame ends in stream
		for i := 0; i < 6; i++ {
			sizes := []int{0, 5, 125, 126, 300, 70000}
			stream = append(stream, gateFrame(websocket.BinaryMessage, sizes[r.IntN(len(sizes))])...)
			ends = append(ends, len(stream))
		}
		var out bytes.Buffer
		g := NewGate(&out, false, time.Second)
		armAt := r.IntN(len(stream))
		payload := websocket.FormatCloseMessage(websocket.CloseServiceRestart, "holdfast restarting")
		for p := 0; p < len(stream); {
			n := 1 + r.IntN(9000)
			if p+n > len(stream) {
				n = len(stream) - p
			}
			if p <= armAt && armAt < p+n {
				// Arm between two writes, then go on writing.
				if _, err := g.Write(stream[p:armAt]); err != nil {
					t.Fatal(err)
				}
				g.Arm(payload)
				g.Flush()
				p = armAt
				armAt = -1
				continue
			}
			if k, err := g.Write(stream[p : p+n]); err != nil || k != n {
				t.Fatalf("Write = %d, %v; want %d", k, err, n)
			}
			p += n
		}
		// What was written: a prefix of whole frames, then the close.
		got := out.Bytes()
		closeFrame := append([]byte{0x88, byte(len(payload))}, payload...)
		if !bytes.HasSuffix(got, closeFrame) {
			t.Fatalf("round %d: output does not end with the close frame", round)
		}
		prefix := len(got) - len(closeFrame)
		whole := prefix == 0
		for _, e := range ends {
			whole = whole || e == prefix
		}
		if !whole || !bytes.Equal(got[:prefix], stream[:prefix]) {
			t.Fatalf("round %d: close frame after %d bytes, not at a frame end %v", round, prefix, ends)
		}
	}
}

// Toward the gateway the close frame is masked (RFC 6455 §5.3).
func TestFrameGateMasksTowardTheGateway(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	g := NewGate(&out, true, time.Second)
	payload := websocket.FormatCloseMessage(websocket.CloseGoingAway, "proxy shutting down")
	g.Arm(payload)
	g.Flush()
	b := out.Bytes()
	if len(b) != 2+4+len(payload) || b[0] != 0x88 || b[1] != 0x80|byte(len(payload)) {
		t.Fatalf("frame % x", b)
	}
	key := b[2:6]
	for i, c := range b[6:] {
		if c^key[i%4] != payload[i] {
			t.Fatal("payload not masked with the frame's key")
		}
	}
	if n, err := g.Write([]byte("more")); n != 4 || err != nil || out.Len() != len(b) {
		t.Fatal("something was written after the close frame")
	}
}
