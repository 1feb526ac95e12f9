package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// scriptConn is a leg's socket for relay tests: each Read hands out what is
// left of the next scripted piece (at most len(p) of it), then io.EOF, so
// that the stream reaches the relay cut exactly as scripted; writes are
// kept.
type scriptConn struct {
	net.Conn // nil: only the methods below are used
	mu       sync.Mutex
	reads    [][]byte
	wrote    bytes.Buffer
	writes   int
}

// spliced readies src and dst as a splice does before its relays run:
// frame mode, each the other's peer, writes batched.
func spliced(src, dst *Conn) {
	src.FrameMode()
	dst.FrameMode()
	src.peer.Store(dst)
	dst.peer.Store(src)
	src.SetBatching(true, time.Second)
	dst.SetBatching(true, time.Second)
}

func (c *scriptConn) Read(p []byte) (int, error) {
	for len(c.reads) > 0 && len(c.reads[0]) == 0 {
		c.reads = c.reads[1:]
	}
	if len(c.reads) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.reads[0])
	c.reads[0] = c.reads[0][n:]
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.wrote.Write(p)
}

func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }

// clientKey is the mask key of the client frames these tests write.
var clientKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// wsFrame builds a frame: b0 is FIN, RSV and opcode; a masked one uses
// clientKey.
func wsFrame(b0 byte, payload []byte, masked bool) []byte {
	if !masked {
		return testkit.AppendFrame(nil, b0, payload, nil)
	}
	key := clientKey
	return testkit.AppendFrame(nil, b0, payload, &key)
}

// wireFrame is a frame as parsed from what the relay wrote.
type wireFrame struct {
	fin     bool
	opcode  byte
	masked  bool
	key     [4]byte
	payload []byte // unmasked
}

// parseWire parses b into whole frames; it fails the test on anything
// malformed or cut short.
func parseWire(t testing.TB, b []byte) []wireFrame {
	t.Helper()
	var fs []wireFrame
	for len(b) > 0 {
		f, n, err := testkit.ParseFrame(b)
		if err != nil {
			t.Fatalf("%v: % x", err, b[:min(len(b), 16)])
		}
		if f.RSV != 0 {
			t.Fatalf("RSV bits written: %#x", b[0])
		}
		fs = append(fs, wireFrame{fin: f.Fin, opcode: f.Opcode, masked: f.Masked, key: f.Key, payload: f.Payload})
		b = b[n:]
	}
	return fs
}

// events turns frames into what a WebSocket endpoint sees: whole messages
// ("text:…", "binary:…") and control frames ("ping:…", "pong:…",
// "close:…"), in order. It fails the test on broken fragmentation.
func events(t testing.TB, fs []wireFrame) []string {
	t.Helper()
	var out []string
	var msg []byte
	msgType := byte(0)
	for _, f := range fs {
		switch f.opcode {
		case 1, 2:
			if msgType != 0 {
				t.Fatalf("a message began inside another")
			}
			msgType, msg = f.opcode, append([]byte(nil), f.payload...)
		case 0:
			if msgType == 0 {
				t.Fatalf("a continuation with no message")
			}
			msg = append(msg, f.payload...)
		case 8, 9, 10:
			if !f.fin {
				t.Fatalf("a fragmented control frame")
			}
			out = append(out, fmt.Sprintf("%s:%q", map[byte]string{8: "close", 9: "ping", 10: "pong"}[f.opcode], f.payload))
			continue
		default:
			t.Fatalf("opcode %d written", f.opcode)
		}
		if f.fin {
			out = append(out, fmt.Sprintf("%s:%q", map[byte]string{1: "text", 2: "binary"}[msgType], msg))
			msgType, msg = 0, nil
		}
	}
	return out
}

// relayResult is what one relay run did.
type relayResult struct {
	toDst, toSrc []wireFrame
	err          error
	readSide     bool
	msgs, bytes  int64
	// heldChunk: the source leg still held a read chunk at the end.
	heldChunk bool
}

// runRelay relays the source stream, cut into pieces as given, from a
// client (fromClient) or a gateway, until the relay ends, and parses what
// it wrote on each leg.
func runRelay(t testing.TB, fromClient bool, limit int64, pieces ...[]byte) relayResult {
	t.Helper()
	pool := NewPool()
	sc := &scriptConn{reads: pieces}
	dc := &scriptConn{}
	src, dst := NewConn(sc, pool), NewConn(dc, pool)
	src.masks, dst.masks = !fromClient, fromClient
	spliced(src, dst)
	var tl Tally
	count := prometheus.NewCounter(prometheus.CounterOpts{Name: "relayed"})
	r := &Relay{src: src, dst: dst, fromClient: fromClient, limit: limit, count: count, t: &tl}
	err, readSide := r.Run()
	if got := testutil.ToFloat64(count); got != float64(tl.Msgs) {
		t.Fatalf("counted %v messages; relayed %d", got, tl.Msgs)
	}
	_ = src.Flush()
	_ = dst.Flush()
	res := relayResult{err: err, readSide: readSide, msgs: tl.Msgs, bytes: tl.Bytes, heldChunk: src.rbuf != nil}
	res.toDst = parseWire(t, dc.wrote.Bytes())
	res.toSrc = parseWire(t, sc.wrote.Bytes())
	for _, f := range res.toDst {
		if f.masked != fromClient {
			t.Fatalf("a frame toward the %s with masked=%v", map[bool]string{true: "gateway", false: "client"}[fromClient], f.masked)
		}
		if f.masked && f.key == clientKey {
			t.Fatal("the client's mask key was forwarded as it is")
		}
		if len(f.payload) > ChunkSize-MaxHeader {
			t.Fatalf("a frame of %d bytes; want at most a chunk", len(f.payload))
		}
	}
	for _, f := range res.toSrc {
		if f.masked == fromClient {
			t.Fatalf("a frame back to the source with masked=%v", f.masked)
		}
	}
	return res
}

// bytewise cuts b into one-byte pieces.
func bytewise(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func closePayload(code int, text string) []byte { return websocket.FormatCloseMessage(code, text) }

// A mixed stream crosses the relay with its messages, control frames and
// their order intact, however the stream is cut into reads: whole, one byte
// at a time (every frame header and every control frame split), and at
// random points.
func TestFrameRelayAnyCut(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("0123456789abcdef"), 70000/16) // over a chunk: 64-bit length
	mid := bytes.Repeat([]byte{0xa5}, 300)                    // 16-bit length
	ping125 := bytes.Repeat([]byte("p"), 125)
	for _, fromClient := range []bool{true, false} {
		m := fromClient
		stream := cat(
			wsFrame(0x81, []byte("hello"), m),
			wsFrame(0x82, nil, m), // an empty message
			wsFrame(0x01, []byte("frag"), m),
			wsFrame(0x89, ping125, m), // a 125-byte ping inside a message
			wsFrame(0x00, []byte("men"), m),
			wsFrame(0x8a, []byte("pong"), m),
			wsFrame(0x80, []byte("ted"), m),
			wsFrame(0x82, mid, m),
			wsFrame(0x82, big, m),
			wsFrame(0x88, closePayload(4321, "bye"), m),
			wsFrame(0x81, []byte("after the close"), m),
		)
		want := []string{
			`text:"hello"`, `binary:""`, `ping:"` + string(ping125) + `"`, `pong:"pong"`, `text:"fragmented"`,
			fmt.Sprintf("binary:%q", mid), fmt.Sprintf("binary:%q", big),
		}
		r := rand.New(rand.NewPCG(7, 8))
		var random [][]byte
		for off := 0; off < len(stream); {
			n := min(1+r.IntN(40000), len(stream)-off)
			random = append(random, stream[off:off+n])
			off += n
		}
		for name, pieces := range map[string][][]byte{"whole": {stream}, "bytewise": bytewise(stream), "random": random} {
			t.Run(fmt.Sprintf("fromClient=%v/%s", fromClient, name), func(t *testing.T) {
				t.Parallel()
				testkit.Heavy(t)
				res := runRelay(t, fromClient, 0, pieces...)
				if got := events(t, res.toDst); strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("relayed:\n%.300s\nwant:\n%.300s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				var ce *websocket.CloseError
				if !errors.As(res.err, &ce) || ce.Code != 4321 || ce.Text != "bye" || !res.readSide {
					t.Fatalf("ended with %v (read side %v); want the close 4321 \"bye\"", res.err, res.readSide)
				}
				// The close is answered on its own leg with its code.
				if got := events(t, res.toSrc); len(got) != 1 || got[0] != fmt.Sprintf("close:%q", closePayload(4321, "")) {
					t.Fatalf("echo %q; want close 4321", got)
				}
				if res.msgs != 5 || res.bytes != int64(5+0+10+len(mid)+len(big)) {
					t.Fatalf("Tally %d messages, %d bytes", res.msgs, res.bytes)
				}
			})
		}
	}
}

// A message in frames that arrive in separate bursts, a ping between them:
// the fragments leave as they come (nothing waits for the message's end)
// and the ping goes between them.
func TestFrameRelayFragmentsAcrossBursts(t *testing.T) {
	t.Parallel()
	res := runRelay(t, true, 0,
		wsFrame(0x01, []byte("hel"), true),
		wsFrame(0x89, []byte("?"), true),
		wsFrame(0x00, []byte("l"), true)[:3], // a header cut after its length
		wsFrame(0x00, []byte("l"), true)[3:],
		wsFrame(0x80, []byte("o"), true),
	)
	var ops []byte
	for _, f := range res.toDst {
		ops = append(ops, f.opcode)
	}
	if !bytes.Equal(ops, []byte{1, 9, 0, 0}) {
		t.Fatalf("opcodes %v; want text, ping, continuation, continuation", ops)
	}
	if got := events(t, res.toDst); len(got) != 2 || got[1] != `text:"hello"` {
		t.Fatalf("relayed %q", got)
	}
	if res.err != errUnexpectedEOF || !res.readSide {
		t.Fatalf("ended with %v; want 1006 at the end of the stream", res.err)
	}
	if res.heldChunk {
		t.Fatal("the source still holds a read chunk after the end of its stream")
	}
}

// A frame's payload that arrives in pieces leaves as it comes, as frames
// of one message, masked at each piece's own phase.
func TestFrameRelayPayloadAcrossReads(t *testing.T) {
	t.Parallel()
	payload := []byte("abcdefghijklmnopqrstuvwxyz")
	f := wsFrame(0x82, payload, true)
	res := runRelay(t, true, 0, f[:6+1], f[7:12], f[12:13], f[13:])
	if len(res.toDst) != 4 {
		t.Fatalf("%d frames; want one per read", len(res.toDst))
	}
	if got := events(t, res.toDst); len(got) != 1 || got[0] != fmt.Sprintf("binary:%q", payload) {
		t.Fatalf("relayed %q", got)
	}
}

// Broken frames get 1002 on their leg, nothing of them is relayed, and the
// relay ends with an error that is not a close.
func TestFrameRelayProtocolErrors(t *testing.T) {
	t.Parallel()
	long := make([]byte, 10)
	long[0], long[1] = 0x82, 0xff // masked, 64-bit length
	binary.BigEndian.PutUint64(long[2:], 1<<63)
	long = append(long, clientKey[:]...)
	for _, tc := range []struct {
		name       string
		fromClient bool
		stream     []byte
	}{
		{"unmasked client frame", true, wsFrame(0x81, []byte("x"), false)},
		{"masked gateway frame", false, wsFrame(0x81, []byte("x"), true)},
		{"RSV1", true, wsFrame(0xc1, []byte("x"), true)},
		{"RSV3 from the gateway", false, wsFrame(0x91, []byte("x"), false)},
		{"opcode 3", true, wsFrame(0x83, []byte("x"), true)},
		{"opcode 11", false, wsFrame(0x8b, nil, false)},
		{"continuation with no message", true, wsFrame(0x80, []byte("x"), true)},
		{"a message inside another", true, cat(wsFrame(0x01, []byte("a"), true), wsFrame(0x81, []byte("b"), true))},
		{"ping of 126 bytes", true, wsFrame(0x89, make([]byte, 126), true)},
		{"fragmented ping", false, wsFrame(0x09, nil, false)},
		{"close of one byte", true, wsFrame(0x88, []byte{3}, true)},
		{"close 1005 on the wire", true, wsFrame(0x88, []byte{0x03, 0xed}, true)},
		{"close 1006 on the wire", false, wsFrame(0x88, closePayload(1006, ""), false)},
		{"close 2999", true, wsFrame(0x88, closePayload(2999, ""), true)},
		{"close reason not UTF-8", true, wsFrame(0x88, []byte{0x03, 0xe8, 0xff, 0xfe}, true)},
		{"64-bit length with its top bit", true, long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, pieces := range [][][]byte{{tc.stream}, bytewise(tc.stream)} {
				res := runRelay(t, tc.fromClient, 0, pieces...)
				if res.err == nil || !res.readSide || CloseCode(res.err) != 0 {
					t.Fatalf("ended with %v (read side %v); want a protocol error", res.err, res.readSide)
				}
				got := events(t, res.toSrc)
				if len(got) != 1 || !strings.HasPrefix(got[0], `close:"\x03\xea`) {
					t.Fatalf("told the source %q; want close 1002", got)
				}
				if n := len(events(t, res.toDst)); n != 0 {
					t.Fatalf("relayed %q", events(t, res.toDst))
				}
			}
		})
	}
}

// A client message over the limit, counted over its frames, gets 1009 at
// the frame header that crosses it; a message at the limit passes.
func TestFrameRelayMessageLimit(t *testing.T) {
	t.Parallel()
	at := runRelay(t, true, 100, wsFrame(0x01, make([]byte, 60), true), wsFrame(0x80, make([]byte, 40), true))
	if at.err != errUnexpectedEOF || at.msgs != 1 {
		t.Fatalf("a message of exactly the limit: %v, %d messages", at.err, at.msgs)
	}
	over := runRelay(t, true, 100, wsFrame(0x01, make([]byte, 60), true), wsFrame(0x80, make([]byte, 41), true))
	if over.err != websocket.ErrReadLimit || !over.readSide {
		t.Fatalf("ended with %v; want the read limit", over.err)
	}
	if got := events(t, over.toSrc); len(got) != 1 || got[0] != fmt.Sprintf("close:%q", closePayload(1009, "")) {
		t.Fatalf("told the client %q; want close 1009", got)
	}
	if over.bytes != 60 || over.msgs != 0 {
		t.Fatalf("relayed %d bytes in %d messages; want the first fragment only", over.bytes, over.msgs)
	}
	// A declared length far over the limit is refused before its payload.
	huge := runRelay(t, true, 1<<20, wsFrame(0x82, make([]byte, 2<<20), true)[:14])
	if huge.err != websocket.ErrReadLimit || huge.bytes != 0 {
		t.Fatalf("a 2 MiB frame header: %v after %d bytes", huge.err, huge.bytes)
	}
}

// A close without a code is 1005, answered with an empty close; nothing is
// written on either leg after it.
func TestFrameRelayEmptyClose(t *testing.T) {
	t.Parallel()
	res := runRelay(t, false, 0, wsFrame(0x88, nil, false), wsFrame(0x81, []byte("late"), false))
	if CloseCode(res.err) != websocket.CloseNoStatusReceived {
		t.Fatalf("ended with %v; want 1005", res.err)
	}
	if got := events(t, res.toSrc); len(got) != 1 || got[0] != `close:""` {
		t.Fatalf("echo %q; want an empty close", got)
	}
	if len(res.toDst) != 0 {
		t.Fatalf("relayed %q after a close", events(t, res.toDst))
	}
}

// Frames toward the gateway each get a fresh key: over many frames, keys
// vary and none is the client's.
func TestFrameRelayFreshKeys(t *testing.T) {
	t.Parallel()
	var stream []byte
	for range 64 {
		stream = append(stream, wsFrame(0x81, []byte("same payload"), true)...)
	}
	res := runRelay(t, true, 0, stream)
	keys := map[[4]byte]bool{}
	for _, f := range res.toDst {
		keys[f.key] = true
	}
	if len(res.toDst) != 64 || len(keys) < 60 {
		t.Fatalf("%d frames with %d distinct keys", len(res.toDst), len(keys))
	}
}

// MaskCopy equals copy then maskBytes, at every length and alignment.
func TestMaskCopy(t *testing.T) {
	t.Parallel()
	key := [4]byte{1, 2, 3, 4}
	k := binary.LittleEndian.Uint32(key[:])
	src := make([]byte, 300)
	for i := range src {
		src[i] = byte(i * 7)
	}
	for off := range 8 {
		for n := range 200 {
			want := append([]byte(nil), src[off:off+n]...)
			maskBytes(key, want)
			got := make([]byte, n)
			MaskCopy(got, src[off:off+n], k)
			if !bytes.Equal(got, want) {
				t.Fatalf("offset %d, %d bytes: % x; want % x", off, n, got, want)
			}
		}
	}
}

// Whatever a client sends, however cut, the relay never panics, writes
// only well-formed frames (masked with keys of its own toward the
// gateway), and does the same whole or cut: the same messages and control
// frames relayed, the same answer on the client's leg, the same ending.
func FuzzFrameRelay(f *testing.F) {
	f.Add(cat(wsFrame(0x01, []byte("ab"), true), wsFrame(0x89, []byte("p"), true), wsFrame(0x80, []byte("c"), true)), uint8(1), uint16(0))
	f.Add(wsFrame(0x82, make([]byte, 300), true), uint8(3), uint16(100))
	f.Add(wsFrame(0x88, closePayload(1000, "x"), true), uint8(2), uint16(0))
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, uint8(5), uint16(0))
	f.Fuzz(func(t *testing.T, stream []byte, step uint8, limit uint16) {
		if len(stream) == 0 {
			return
		}
		whole := runRelay(t, true, int64(limit), stream)
		var pieces [][]byte
		n := int(step%32) + 1
		for off := 0; off < len(stream); off += n {
			pieces = append(pieces, stream[off:min(off+n, len(stream))])
		}
		cut := runRelay(t, true, int64(limit), pieces...)
		if a, b := strings.Join(events(t, whole.toDst), "\n"), strings.Join(events(t, cut.toDst), "\n"); a != b {
			t.Fatalf("relayed whole:\n%s\ncut:\n%s", a, b)
		}
		if a, b := fmt.Sprint(events(t, whole.toSrc)), fmt.Sprint(events(t, cut.toSrc)); a != b {
			t.Fatalf("told the client whole %s, cut %s", a, b)
		}
		if fmt.Sprint(whole.err) != fmt.Sprint(cut.err) || whole.readSide != cut.readSide || whole.msgs != cut.msgs {
			t.Fatalf("ended whole with %v, cut with %v", whole.err, cut.err)
		}
	})
}

// A relay whose bursts each come after a wait, the read after them finding
// the socket empty, flushes the other leg before it reads again, not
// after that read: one system call sooner per hop for sparse traffic. Once
// a read after such a burst finds more at once, frames are batched across
// reads again until the socket is empty.
func TestRelayFlushesFirstWhenBurstsComeAlone(t *testing.T) {
	t.Parallel()
	peerSide, srcSock := tcpPair(t)
	dstSock := &scriptConn{}
	src, dst := NewConn(srcSock, NewPool()), NewConn(dstSock, NewPool())
	spliced(src, dst)
	src.relayMode()
	writes := func() int {
		dstSock.mu.Lock()
		defer dstSock.mu.Unlock()
		return dstSock.writes
	}
	// read runs one read of the relay's; with wait it makes sure the read
	// waited for the byte sent (it retries until one did).
	read := func(wait bool) {
		t.Helper()
		for range 50 {
			done := make(chan error, 1)
			if wait {
				go func() { done <- src.readMore() }()
				time.Sleep(10 * time.Millisecond)
			}
			if _, err := peerSide.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			if !wait {
				time.Sleep(10 * time.Millisecond) // the byte is there
				go func() { done <- src.readMore() }()
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			src.consume(len(src.pending))
			if src.woke == wait {
				return
			}
		}
		t.Fatalf("no read that waited = %v in 50 tries", wait)
	}
	// Two bursts that came alone: each read waited, and the one after the
	// first burst found nothing at once.
	for i := 0; !(src.woke && src.alone); i++ {
		if i == 50 {
			t.Fatal("no two reads in a row that waited in 50 tries")
		}
		read(true)
	}
	if err := dst.WriteFrame(2, true, []byte("relayed")); err != nil {
		t.Fatal(err)
	}
	read(false)
	if n := writes(); n != 1 {
		t.Fatalf("after a burst that came alone, the batched frame was written %d times before the next read; want once", n)
	}
	// That read found a byte at once: the next frame waits in the batch.
	if err := dst.WriteFrame(2, true, []byte("batched")); err != nil {
		t.Fatal(err)
	}
	read(false)
	if n := writes(); n != 1 {
		t.Fatalf("in a burst of reads, the batch was flushed before a read (%d writes); want it kept", n)
	}
	if !bytes.Contains(dstSock.wrote.Bytes(), []byte("relayed")) {
		t.Fatalf("wrote %q; want the first frame", dstSock.wrote.Bytes())
	}
}
