package wire

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// serveScript answers one WebSocket upgrade on a fresh 127.0.0.1 listener
// with a 101, then writes script and reads what the client sends back
// until it closes its end or 5 s pass; what it read is sent on got. It
// returns the ws:// URL.
func serveScript(t *testing.T, script []byte, got chan<- []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			got <- nil
			return
		}
		sum := sha1.Sum([]byte(req.Header.Get("Sec-Websocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		answer := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
			base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n"
		_, _ = c.Write(append([]byte(answer), script...))
		_ = c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		back, _ := io.ReadAll(br)
		got <- back
	}()
	return "ws://" + ln.Addr().String() + "/"
}

// sframe builds a gateway frame: b0 is FIN, RSV and opcode; masked
// (against the rules for a server) uses a fixed key.
func sframe(b0 byte, masked bool, payload []byte) []byte {
	var hdr [MaxHeader]byte
	h := frameHeader(&hdr, b0&opcodeBits, b0&finBit != 0, masked, len(payload))
	hdr[0] = b0
	f := append([]byte{}, hdr[:h]...)
	p := append([]byte{}, payload...)
	if masked {
		maskBytes(maskKey(hdr[:h]), p)
	}
	return append(f, p...)
}

// readResult is what a client made of a script: the messages it read,
// the error it ended with, and the control frames it wrote back.
type readResult struct {
	msgs  []string // "<type>:<payload>"
	err   string   // "close <code>", "read limit", "protocol" or "eof"
	wrote []string // "<opcode>:<payload>" of the frames written back
}

func classify(err error) string {
	var ce *websocket.CloseError
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		return "read limit"
	case errors.As(err, &ce):
		return fmt.Sprintf("close %d", ce.Code)
	default:
		return "protocol"
	}
}

// parseBack reads the client's masked frames.
func parseBack(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for len(b) >= 2 {
		hl := HeaderLen(b[1])
		if len(b) < hl || b[1]&maskBit == 0 {
			t.Fatalf("client frame unmasked or cut: % x", b)
		}
		n := int(PayloadLen(b[:hl]))
		p := append([]byte{}, b[hl:hl+n]...)
		maskBytes(maskKey(b[:hl]), p)
		if op := b[0] & opcodeBits; op == websocket.CloseMessage && len(p) >= 2 {
			out = append(out, fmt.Sprintf("%d:%d", op, binary.BigEndian.Uint16(p)))
		} else {
			out = append(out, fmt.Sprintf("%d:%s", op, p))
		}
		b = b[hl+n:]
	}
	return out
}

func readWithGorilla(t *testing.T, script []byte, limit int64) readResult {
	got := make(chan []byte, 1)
	u := serveScript(t, script, got)
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(limit)
	var res readResult
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			res.err = classify(err)
			break
		}
		res.msgs = append(res.msgs, fmt.Sprintf("%d:%s", typ, data))
	}
	_ = ws.NetConn().(*net.TCPConn).CloseWrite()
	res.wrote = parseBack(t, <-got)
	ws.Close()
	return res
}

func readWithWire(t *testing.T, script []byte, limit int64) readResult {
	got := make(chan []byte, 1)
	u := serveScript(t, script, got)
	target, err := SplitTarget(u)
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	nc, err := d.DialContext(context.Background(), "tcp", target.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewUpstreamConn(nc, NewPool())
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := Upgrade(c, target, http.Header{}, NewPool()); err != nil {
		t.Fatal(err)
	}
	var res readResult
	for {
		typ, data, err := c.ReadMessage(limit, nil)
		if err != nil {
			res.err = classify(err)
			break
		}
		res.msgs = append(res.msgs, fmt.Sprintf("%d:%s", typ, data))
	}
	_ = c.CloseWrite()
	res.wrote = parseBack(t, <-got)
	c.Close()
	return res
}

// randomScript is a gateway's stream of frames: messages, fragmented or
// not, with pings and pongs between their frames, then an ending: a close,
// the end of the stream, or a frame that breaks a rule.
func randomScript(r *rand.Rand) []byte {
	var s []byte
	payload := func(max int) []byte {
		return []byte(strings.Repeat(string(rune('a'+r.IntN(26))), r.IntN(max+1)))
	}
	control := func() []byte {
		op := []byte{websocket.PingMessage, websocket.PongMessage}[r.IntN(2)]
		return sframe(0x80|op, false, payload(125))
	}
	for range r.IntN(5) {
		typ := []byte{websocket.TextMessage, websocket.BinaryMessage}[r.IntN(2)]
		parts := 1 + r.IntN(3)
		for i := range parts {
			if r.IntN(3) == 0 {
				s = append(s, control()...)
			}
			b0 := byte(0)
			if i == 0 {
				b0 = typ
			}
			if i == parts-1 {
				b0 |= 0x80
			}
			sizes := []int{0, 3, 125, 126, 300, 70000}
			s = append(s, sframe(b0, false, payload(sizes[r.IntN(len(sizes))]))...)
		}
	}
	switch r.IntN(12) {
	case 0: // the end of the stream
	case 1:
		s = append(s, sframe(0x80|websocket.TextMessage, true, []byte("masked"))...)
	case 2:
		s = append(s, sframe(0xc0|websocket.TextMessage, false, []byte("rsv1"))...)
	case 3:
		s = append(s, sframe(0x80|3, false, nil)...) // a reserved opcode
	case 4:
		s = append(s, sframe(0x80|websocket.PingMessage, false, make([]byte, 126))...)
	case 5:
		s = append(s, sframe(websocket.PingMessage, false, nil)...) // fragmented control
	case 6:
		s = append(s, sframe(0x80, false, []byte("lone continuation"))...)
	case 7:
		s = append(s, sframe(websocket.TextMessage, false, []byte("a"))...)
		s = append(s, sframe(0x80|websocket.BinaryMessage, false, []byte("b"))...)
	case 8:
		s = append(s, sframe(0x80|websocket.CloseMessage, false, websocket.FormatCloseMessage(1004, ""))...)
	case 9:
		s = append(s, sframe(0x80|websocket.CloseMessage, false, []byte{0x03, 0xe8, 0xff})...) // bad UTF-8
	case 10:
		s = append(s, sframe(0x80|websocket.CloseMessage, false, nil)...)
	default:
		code := []int{1000, 1001, 1011, 1012, 1013, 4000}[r.IntN(6)]
		s = append(s, sframe(0x80|websocket.CloseMessage, false, websocket.FormatCloseMessage(code, "bye"))...)
	}
	if r.IntN(4) == 0 { // a frame cut short
		f := sframe(0x80|websocket.TextMessage, false, payload(300))
		s = append(s, f[:r.IntN(len(f))]...)
	}
	return s
}

// The upstream leg's message reader reads what gorilla's client reads
// from the same stream, ends with the same error, and writes back the same
// pongs and closes (codes compared; gorilla's 1002 reasons differ).
func TestReadMessageAsGorilla(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for round := range 120 {
		script := randomScript(r)
		limit := []int64{1 << 20, 200}[r.IntN(2)]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			want := readWithGorilla(t, script, limit)
			got := readWithWire(t, script, limit)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("round %d (limit %d):\nwire    %.400v\ngorilla %.400v", round, limit, got, want)
			}
		}()
	}
	wg.Wait()
}

// ReadMessage needs a limit; a message read whole is one allocation of
// its own size when it is one frame.
func TestReadMessageLimitAndSize(t *testing.T) {
	t.Parallel()
	got := make(chan []byte, 1)
	u := serveScript(t, sframe(0x80|websocket.TextMessage, false, make([]byte, 1000)), got)
	target, _ := SplitTarget(u)
	nc, err := net.Dial("tcp", target.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewUpstreamConn(nc, NewPool())
	defer c.Close()
	if _, err := Upgrade(c, target, http.Header{}, NewPool()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(0, nil); err == nil {
		t.Fatal("ReadMessage without a limit succeeded")
	}
	_, data, err := c.ReadMessage(1000, nil)
	if err != nil || len(data) != 1000 || cap(data) != 1000 {
		t.Fatalf("len %d cap %d, %v", len(data), cap(data), err)
	}
}
