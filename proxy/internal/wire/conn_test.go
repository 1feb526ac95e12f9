package wire

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// frameBytes builds one WebSocket frame with the given payload length.
func frameBytes(opcode byte, n int, masked bool) []byte {
	var b []byte
	b = append(b, 0x80|opcode)
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch {
	case n <= 125:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126, 0, 0)
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = append(b, m|127, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	if masked {
		b = append(b, 1, 2, 3, 4)
	}
	for i := range n {
		b = append(b, byte(i))
	}
	return b
}

// Reads in frame mode never cross a frame's end, however the stream is cut
// into socket reads, and every byte arrives in order.
func TestBatchConnStopsAtFrameEnds(t *testing.T) {
	t.Parallel()
	var frames [][]byte
	for _, n := range []int{0, 1, 125, 126, 127, 1000, 65535, 65536, 70000} {
		for _, masked := range []bool{false, true} {
			frames = append(frames, frameBytes(2, n, masked))
		}
	}
	var stream []byte
	var ends []int // offsets where a frame ends
	for _, f := range frames {
		stream = append(stream, f...)
		ends = append(ends, len(stream))
	}

	a, b := net.Pipe()
	defer a.Close()
	go func() {
		r := rand.New(rand.NewPCG(1, 2))
		for off := 0; off < len(stream); {
			n := min(1+r.IntN(5000), len(stream)-off)
			if _, err := a.Write(stream[off : off+n]); err != nil {
				return
			}
			off += n
		}
	}()
	bc := NewConn(b, NewPool())
	bc.FrameMode()
	var got []byte
	buf := make([]byte, 100000)
	next := 0
	for len(got) < len(stream) {
		_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := bc.Read(buf[:1+rand.IntN(len(buf)-1)])
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		start := len(got)
		got = append(got, buf[:n]...)
		for next < len(ends) && ends[next] <= start {
			next++
		}
		if next < len(ends) && len(got) > ends[next] {
			t.Fatalf("a read of %d bytes at %d crossed the frame end at %d", n, start, ends[next])
		}
		if next < len(ends) && len(got) == ends[next] && !bc.bounds.atFrameStart() {
			t.Fatalf("at a frame end (%d) the tracker is not at a frame start", ends[next])
		}
	}
	if !bytes.Equal(got, stream) {
		t.Fatal("the stream was altered")
	}
}

// Before frame mode, reads stop right after each HTTP header block, so the
// HTTP parser on top never buffers the bytes that follow the upgrade.
func TestBatchConnStopsAtHeaderEnd(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	msg := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"
	go func() { _, _ = a.Write([]byte(msg)) }()
	bc := NewConn(b, NewPool())
	buf := make([]byte, 4096)
	var got []byte
	for !bytes.HasSuffix(got, []byte("\r\n\r\n")) {
		n, err := bc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
		if len(got) > len(msg)-4 {
			t.Fatalf("read past the header block: %q", got)
		}
	}
	bc.FrameMode()
	n, err := bc.Read(buf)
	if err != nil || string(buf[:n]) != "\x81\x02" {
		t.Fatalf("first frame read %q, %v; want its header alone", buf[:n], err)
	}
}

func TestMaskBytes(t *testing.T) {
	t.Parallel()
	key := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	for n := range 100 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		want := make([]byte, n)
		for i := range want {
			want[i] = b[i] ^ key[i%4]
		}
		maskBytes(key, b)
		if !bytes.Equal(b, want) {
			t.Fatalf("len %d: %x; want %x", n, b, want)
		}
	}
}

// Whatever a peer sends, reads in frame mode hand every byte on in order,
// never stall with data pending, and never panic.
func FuzzBatchConnFrameMode(f *testing.F) {
	f.Add(frameBytes(1, 5, true), uint8(3))
	f.Add(append(frameBytes(2, 300, false), frameBytes(9, 0, true)...), uint8(1))
	f.Add([]byte{0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2}, uint8(7))
	f.Fuzz(func(t *testing.T, stream []byte, step uint8) {
		if len(stream) == 0 {
			return
		}
		a, b := net.Pipe()
		defer b.Close()
		go func() {
			defer a.Close()
			n := int(step%64) + 1
			for off := 0; off < len(stream); off += n {
				if _, err := a.Write(stream[off:min(off+n, len(stream))]); err != nil {
					return
				}
			}
		}()
		bc := NewConn(b, NewPool())
		bc.FrameMode()
		var got []byte
		buf := make([]byte, int(step)+1)
		for len(got) < len(stream) {
			_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := bc.Read(buf)
			if err != nil {
				t.Fatalf("read after %d of %d bytes: %v", len(got), len(stream), err)
			}
			if n == 0 {
				t.Fatal("a read returned nothing and no error")
			}
			got = append(got, buf[:n]...)
		}
		if !bytes.Equal(got, stream) {
			t.Fatal("the stream was altered")
		}
	})
}

// After a close frame, written by WriteClose or by gorilla through Write,
// the leg refuses every write: data frames, control frames, a second close.
func TestBatchConnNothingAfterClose(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"WriteClose", "gorilla's close through Write"} {
		t.Run(how, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			got := make(chan []byte, 1)
			go func() {
				var all []byte
				buf := make([]byte, 4096)
				for {
					n, err := b.Read(buf)
					all = append(all, buf[:n]...)
					if err != nil {
						got <- all
						return
					}
				}
			}()
			bc := NewConn(a, NewPool())
			bc.FrameMode()
			bc.SetBatching(true, time.Second)
			// A data frame written by gorilla in two writes (header, then
			// payload), then one of holdfast's.
			f := frameBytes(2, 300, false)
			if _, err := bc.Write(f[:4]); err != nil {
				t.Fatal(err)
			}
			if _, err := bc.Write(f[4:]); err != nil {
				t.Fatal(err)
			}
			if err := bc.WriteFrame(2, true, []byte("relayed")); err != nil {
				t.Fatal(err)
			}
			closeFrame := []byte{0x88, 2, 0x03, 0xe8}
			if how == "WriteClose" {
				if err := bc.WriteClose(closeFrame[2:], time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
			} else {
				if _, err := bc.Write(closeFrame); err != nil {
					t.Fatal(err)
				}
				_ = bc.Flush()
			}
			if err := bc.WriteFrame(2, true, []byte("late")); err == nil {
				t.Error("a data frame was accepted after the close frame")
			}
			if _, err := bc.Write([]byte{0x8a, 0}); err == nil {
				t.Error("a pong was accepted after the close frame")
			}
			if err := bc.WriteClose(nil, time.Now().Add(time.Second)); err == nil {
				t.Error("a second close frame was accepted")
			}
			_ = bc.Flush()
			bc.Close()
			want := append(append(append([]byte{}, f...), 0x82, 7), []byte("relayed")...)
			want = append(want, closeFrame...)
			if out := <-got; !bytes.Equal(out, want) {
				t.Errorf("wire:\n%x\nwant\n%x", out, want)
			}
		})
	}
}

// SentClose reports the close frame written on a leg, whoever wrote it:
// holdfast (WriteClose) or gorilla (through Write, masked or not, after a
// data frame in the same write), and nothing before or for a refused one.
func TestSentClose(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		write      func(*Conn) error
		code       int
		reason     string
		wantClosed bool
	}{
		{"none", func(*Conn) error { return nil }, 0, "", false},
		{"WriteClose", func(bc *Conn) error {
			return bc.WriteClose([]byte{0x0f, 0xa1, 'd', 'o', 'n', 'e'}, time.Time{})
		}, 4001, "done", true},
		{"WriteClose, no payload", func(bc *Conn) error { return bc.WriteClose(nil, time.Time{}) }, 1005, "", true},
		{"gorilla's 1009 after a data frame", func(bc *Conn) error {
			_, err := bc.Write(append(frameBytes(2, 3, false), 0x88, 4, 0x03, 0xf1, 'b', 'i'))
			return err
		}, 1009, "bi", true},
		{"masked", func(bc *Conn) error {
			key := [4]byte{1, 2, 3, 4}
			payload := []byte{0x03, 0xea, 'x'}
			maskBytes(key, payload)
			_, err := bc.Write(append([]byte{0x88, 0x83, 1, 2, 3, 4}, payload...))
			return err
		}, 1002, "x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() { _, _ = io.Copy(io.Discard, b) }()
			bc := NewConn(a, NewPool())
			bc.FrameMode()
			if code, _ := bc.SentClose(); code != 0 {
				t.Fatalf("SentClose = %d before any write", code)
			}
			if err := tc.write(bc); err != nil {
				t.Fatal(err)
			}
			if tc.wantClosed && bc.WriteClose([]byte{0x03, 0xe8}, time.Time{}) == nil {
				t.Fatal("a second close frame was accepted")
			}
			if code, reason := bc.SentClose(); code != tc.code || reason != tc.reason {
				t.Fatalf("SentClose = %d %q; want %d %q", code, reason, tc.code, tc.reason)
			}
		})
	}
}

// A close on a leg whose peer does not read ends by its deadline, a flush
// already blocked included, instead of waiting out the write timeout.
func TestBatchConnCloseHonoursDeadline(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	a, b := net.Pipe() // nobody reads b
	defer a.Close()
	defer b.Close()
	bc := NewConn(a, NewPool())
	bc.FrameMode()
	bc.SetBatching(true, time.Hour)
	blocked := make(chan error, 1)
	go func() {
		_ = bc.WriteFrame(2, true, make([]byte, 1000))
		blocked <- bc.Flush()
	}()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	err := bc.WriteClose([]byte{0x03, 0xe9}, time.Now().Add(100*time.Millisecond))
	if err == nil {
		t.Error("close reported written to a peer that reads nothing")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("close took %v; want about its 100ms deadline", d)
	}
	select {
	case <-blocked:
	case <-time.After(2 * time.Second):
		t.Fatal("the blocked flush did not end by the close's deadline")
	}
}

// A flush renews the socket's write deadline only when less than half of
// the write timeout is left or more than all of it: every flush gets at
// least half the timeout, and a flush to a peer that reads nothing still
// ends by it.
func TestBatchConnWriteDeadlineRenewal(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	a, b := net.Pipe() // nobody reads b
	defer a.Close()
	defer b.Close()
	bc := NewConn(a, NewPool())
	bc.FrameMode()
	const wt = 300 * time.Millisecond
	bc.SetBatching(true, wt)

	_ = bc.SetWriteDeadline(time.Now().Add(time.Hour)) // more than wt: renewed
	bc.renewWriteDeadline()
	first := bc.wdl
	if left := time.Until(first); left > wt || left < wt/2 {
		t.Fatalf("deadline %v away after a renewal; want about %v", left, wt)
	}
	bc.renewWriteDeadline() // most of it left: kept
	if bc.wdl != first {
		t.Fatal("a deadline with most of its time left was set again")
	}
	_ = bc.SetWriteDeadline(time.Time{}) // none: renewed
	bc.renewWriteDeadline()
	if bc.wdl.IsZero() {
		t.Fatal("a flush left the socket without a write deadline")
	}
	bc.CapWrites(time.Now().Add(50 * time.Millisecond)) // a closing leg keeps its cap
	bc.renewWriteDeadline()
	if left := time.Until(bc.wdl); left > 50*time.Millisecond {
		t.Fatalf("deadline %v away past the cap", left)
	}

	bc2 := NewConn(b, NewPool())
	bc2.FrameMode()
	bc2.SetBatching(true, wt)
	_ = bc2.WriteFrame(2, true, make([]byte, 1000))
	start := time.Now()
	if err := bc2.Flush(); err == nil {
		t.Fatal("a flush to a peer that reads nothing succeeded")
	}
	if d := time.Since(start); d > 5*wt {
		t.Fatalf("the flush took %v; want about the write timeout %v", d, wt)
	}
}

// SetDeadline sets both deadlines in one step, but a closing leg keeps its
// write cap: reads get the later deadline, writes end by the cap.
func TestBatchConnSetDeadlineKeepsCap(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	a, b := net.Pipe() // nobody reads b, nobody writes to it
	defer a.Close()
	defer b.Close()
	bc := NewConn(a, NewPool())
	bc.FrameMode()
	_ = bc.SetDeadline(time.Now().Add(80 * time.Millisecond)) // no cap: both
	start := time.Now()
	if _, err := bc.Read(make([]byte, 1)); err == nil {
		t.Fatal("a read from a silent peer succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("read ended after %v; want its 80ms deadline", d)
	}
	if _, err := bc.Conn.Write([]byte{1}); err == nil {
		t.Fatal("a write to a peer that reads nothing succeeded past the deadline")
	}

	bc.CapWrites(time.Now().Add(50 * time.Millisecond))
	_ = bc.SetDeadline(time.Now().Add(time.Hour))
	if left := time.Until(bc.wdl); left > 50*time.Millisecond {
		t.Fatalf("write deadline %v away past the cap", left)
	}
	start = time.Now()
	if _, err := bc.Conn.Write([]byte{1}); err == nil {
		t.Fatal("a write to a peer that reads nothing succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("write ended after %v; want the 50ms cap", d)
	}
	_ = bc.SetDeadline(time.Time{}) // none for reads, still the cap for writes
	if bc.wdl.IsZero() {
		t.Fatal("clearing the deadlines lifted the write cap")
	}
}

// EndWrites ends the stream toward the peer right after the close frame,
// what was batched ahead of it included, and only once a close frame is
// out; the Conn still reads what the peer sends after it.
func TestEndWrites(t *testing.T) {
	t.Parallel()
	raw, peer := tcpPair(t)
	bc := NewConn(raw, NewPool())
	bc.FrameMode()
	bc.SetBatching(true, time.Second)
	if bc.EndWrites() {
		t.Fatal("EndWrites half-closed a leg on which no close frame was written")
	}
	if err := bc.WriteFrame(2, true, []byte("batched")); err != nil {
		t.Fatal(err)
	}
	closeFrame := []byte{0x88, 2, 0x03, 0xf1} // gorilla's 1009, through Write: batched
	if _, err := bc.Write(closeFrame); err != nil {
		t.Fatal(err)
	}
	if !bc.EndWrites() {
		t.Fatal("EndWrites did not half-close the leg after its close frame")
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatalf("peer: %v; want the stream to end after the close frame", err)
	}
	want := append(append([]byte{0x82, 7}, "batched"...), closeFrame...)
	if !bytes.Equal(got, want) {
		t.Fatalf("peer read %x; want %x, then the end", got, want)
	}
	answer := []byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xf1} // masked with a zero key
	if _, err := peer.Write(answer); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len(answer))
	if _, err := io.ReadFull(raw, buf); err != nil || !bytes.Equal(buf, answer) {
		t.Fatalf("after EndWrites the leg read %x, %v; want the peer's answer", buf, err)
	}
}
