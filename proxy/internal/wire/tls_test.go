//go:build unix

package wire

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/testcert"
)

// tcpPair returns both ends of a TCP connection on 127.0.0.1.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// record builds a TLS record header for a body of n bytes, then the body.
func record(typ byte, body []byte) []byte {
	b := []byte{typ, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(b[3:], uint16(len(body)))
	return append(b, body...)
}

// The record layer never hands crypto/tls a byte past the end of the
// record under way, however the socket cuts and coalesces records and
// whatever buffer the reader offers, and every byte arrives in order; its
// chunk goes back to the pool whenever it holds nothing.
func TestRecordConnStopsAtRecordEnds(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 11))
	var stream []byte
	var ends []int
	for _, n := range []int{0, 1, 4, 5, 6, 100, 16384, 16384 + 256, 0, 65535, 2} {
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(r.IntN(256))
		}
		stream = append(stream, record(23, body)...)
		ends = append(ends, len(stream))
	}
	for range 300 {
		n := r.IntN(600)
		if r.IntN(10) == 0 {
			n = r.IntN(20000)
		}
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(r.IntN(256))
		}
		stream = append(stream, record(byte(20+r.IntN(4)), body)...)
		ends = append(ends, len(stream))
	}

	cl, sv := tcpPair(t)
	go func() {
		w := rand.New(rand.NewPCG(3, 5))
		for off := 0; off < len(stream); {
			n := min(1+w.IntN(9000), len(stream)-off)
			if w.IntN(4) == 0 {
				n = min(1+w.IntN(7), len(stream)-off) // header pieces
			}
			if _, err := sv.Write(stream[off : off+n]); err != nil {
				return
			}
			off += n
			if w.IntN(8) == 0 {
				time.Sleep(time.Millisecond) // let a piece arrive alone
			}
		}
	}()
	rc := newRecordConn(cl, NewPool())
	_ = cl.SetReadDeadline(time.Now().Add(20 * time.Second))
	var got []byte
	next := 0
	buf := make([]byte, 70000)
	for len(got) < len(stream) {
		n, err := rc.Read(buf[:1+r.IntN(len(buf)-1)])
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		for next < len(ends) && ends[next] <= len(got) {
			next++
		}
		if len(got)+n > ends[next] {
			t.Fatalf("a read of %d bytes at %d crosses the record end at %d", n, len(got), ends[next])
		}
		got = append(got, buf[:n]...)
		if !rc.holds() && rc.buf != nil {
			t.Fatal("the record layer keeps a chunk while holding nothing")
		}
	}
	if !bytes.Equal(got, stream) {
		t.Fatal("bytes altered or reordered")
	}
}

// batchWriter holds what is written while batch is set, until flush: TLS
// records written one by one then leave in one socket write.
type batchWriter struct {
	net.Conn
	mu    sync.Mutex
	batch bool
	buf   []byte
}

func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batch {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

func (b *batchWriter) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// tlsPair returns the two ends of a TLS connection on 127.0.0.1, their
// handshake done: the client over the record layer (TLSClient), the server
// over a batchWriter.
func tlsPair(t testing.TB, pool *Pool) (client *tls.Conn, server *tls.Conn, bw *batchWriter) {
	t.Helper()
	p, err := testcert.New("wire test")
	if err != nil {
		t.Fatal(err)
	}
	raw, sv := tcpPair(t)
	bw = &batchWriter{Conn: sv}
	// Full-size records, as OpenSSL writes them.
	server = tls.Server(bw, &tls.Config{Certificates: []tls.Certificate{p.TLS}, DynamicRecordSizingDisabled: true})
	client = TLSClient(raw, &tls.Config{RootCAs: p.Pool(), ServerName: "127.0.0.1"}, pool)
	t.Cleanup(func() { client.Close(); server.Close() })
	_ = client.SetDeadline(time.Now().Add(10 * time.Second))
	_ = server.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	_ = client.SetDeadline(time.Time{})
	_ = server.SetDeadline(time.Time{})
	return client, server, bw
}

// parkedStack waits until the goroutine whose stack holds marker blocks on
// I/O, and returns its stack.
func parkedStack(t *testing.T, marker string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		buf = buf[:runtime.Stack(buf[:cap(buf)], true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, marker) && strings.Contains(g, "[IO wait") {
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine running %s blocked on I/O:\n%s", marker, buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A Conn over TLS (the record layer below crypto/tls) waits for data
// holding no buffer, as over a plain socket: between bursts its reader
// blocks on the socket's readability, not inside crypto/tls with a chunk,
// and holds no chunk, no pending byte, no spare. Records that arrive
// coalesced in one socket write and a write crypto/tls splits over many
// records arrive intact.
func TestTLSConnWaitsHoldingNothing(t *testing.T) {
	t.Parallel()
	pool := NewPool()
	client, server, bw := tlsPair(t, pool)
	c := NewConn(client, pool)
	if c.raw == nil {
		t.Skip("no RawConn reads on this platform")
	}
	c.FrameMode()
	c.bounds.free = true // not WebSocket frames: reads stop nowhere
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))

	waited := make(chan error)
	proceed := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range proceed {
			waited <- c.WaitData()
		}
	}()
	defer func() { close(proceed); wg.Wait() }()

	var many [][]byte
	for i := range 200 {
		many = append(many, bytes.Repeat([]byte{byte(i)}, 1+i*37%700))
	}
	bursts := [][][]byte{
		{[]byte("one record")},
		many, // one record each, in one socket write
		{bytes.Repeat([]byte("0123456789"), 10000)}, // over seven records
		many[:3],
	}
	for i, burst := range bursts {
		if c.rbuf != nil || len(c.pending) > 0 || c.spare != nil || c.rec.holds() || c.rec.buf != nil {
			t.Fatalf("burst %d: the idle Conn holds rbuf %v, %d pending bytes, spare %v, record layer %v",
				i, c.rbuf != nil, len(c.pending), c.spare != nil, c.rec.buf != nil)
		}
		proceed <- struct{}{}
		g := parkedStack(t, "TestTLSConnWaitsHoldingNothing.func")
		if strings.Contains(g, "crypto/tls.(*Conn).Read") || !strings.Contains(g, "readTLS") {
			t.Fatalf("burst %d: the idle reader does not wait on the socket's readability:\n%s", i, g)
		}
		var want []byte
		bw.mu.Lock()
		bw.batch = true
		bw.mu.Unlock()
		for _, m := range burst {
			want = append(want, m...)
			if _, err := server.Write(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := bw.flush(); err != nil {
			t.Fatal(err)
		}
		if err := <-waited; err != nil {
			t.Fatalf("burst %d: WaitData: %v", i, err)
		}
		var got []byte
		buf := make([]byte, 64<<10)
		for len(got) < len(want) {
			k := 1 + rand.IntN(len(buf)-1)
			if left := len(want) - len(got); k > left {
				k = left + 1 // the last read does not fill its buffer
			}
			n, err := c.Read(buf[:k])
			if err != nil {
				t.Fatalf("burst %d: read after %d bytes: %v", i, len(got), err)
			}
			got = append(got, buf[:n]...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("burst %d: %d bytes altered", i, len(want))
		}
	}
}

// A read that finds half a record in the socket gives its chunk back and
// waits on readability like an idle one, crypto/tls keeping the half it
// read; the record then arrives whole.
func TestTLSConnWaitsHoldingNothingMidRecord(t *testing.T) {
	t.Parallel()
	pool := NewPool()
	client, server, bw := tlsPair(t, pool)
	c := NewConn(client, pool)
	if c.raw == nil {
		t.Skip("no RawConn reads on this platform")
	}
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))
	msg := bytes.Repeat([]byte("half a record "), 700)
	bw.mu.Lock()
	bw.batch = true
	bw.mu.Unlock()
	if _, err := server.Write(msg); err != nil {
		t.Fatal(err)
	}
	bw.mu.Lock()
	rec := bytes.Clone(bw.buf)
	bw.buf = bw.buf[:0]
	bw.mu.Unlock()
	if _, err := bw.Conn.Write(rec[:len(rec)/2]); err != nil {
		t.Fatal(err)
	}
	// The half is in the client's socket before the read starts.
	waitReadable(t, c.rec.Conn.(*net.TCPConn), min(len(rec)/2, 4096))
	done := make(chan error, 1)
	go func() { done <- c.readTLS() }()
	g := parkedStack(t, "TestTLSConnWaitsHoldingNothingMidRecord.func")
	if strings.Contains(g, "crypto/tls.(*Conn).Read") || !strings.Contains(g, "readTLS") {
		t.Fatalf("the read waits inside crypto/tls:\n%s", g)
	}
	if _, err := bw.Conn.Write(rec[len(rec)/2:]); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.pending, msg) {
		t.Fatalf("got %d bytes; want the record's %d", len(c.pending), len(msg))
	}
}

// A relay reading a TLS leg sends a burst of records, which the socket
// delivered at once, on to the other leg in one write: the record layer
// reads the whole burst in one system call, however small crypto/tls's own
// buffer, so no read of the burst waits on the socket, and the other leg
// is flushed only once the socket is empty.
func TestTLSRelayBurstInOneWrite(t *testing.T) {
	t.Parallel()
	pool := NewPool()
	client, server, bw := tlsPair(t, pool)
	src := NewConn(client, pool)
	if src.raw == nil {
		t.Skip("no RawConn reads on this platform")
	}
	dc := &scriptConn{}
	dst := NewConn(dc, pool)
	src.masks = true // holdfast is the gateway's client on this leg
	spliced(src, dst)
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))

	done := make(chan error, 1)
	go func() {
		r := &Relay{src: src, dst: dst, fromClient: false, t: &Tally{}}
		err, _ := r.Run()
		done <- err
	}()

	// One record per frame, all in one socket write: 64 records of 100 to
	// 500 bytes, about 20 KiB, many times what crypto/tls's buffer holds
	// after the handshake and less than a chunk.
	var want []byte
	bw.mu.Lock()
	bw.batch = true
	bw.mu.Unlock()
	for i := range 64 {
		f := wsFrame(0x81, bytes.Repeat([]byte{'a' + byte(i%26)}, 100+i*997%400), false)
		want = append(want, f...)
		if _, err := server.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		dc.mu.Lock()
		got, writes := dc.wrote.Len(), dc.writes
		dc.mu.Unlock()
		if got >= len(want) {
			if writes != 1 {
				t.Errorf("the burst of 64 records left in %d writes; want 1", writes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes relayed", got, len(want))
		}
		time.Sleep(time.Millisecond)
	}
	dc.mu.Lock()
	relayed := parseWire(t, dc.wrote.Bytes())
	dc.mu.Unlock()
	if len(relayed) != 64 {
		t.Fatalf("%d frames relayed; want 64", len(relayed))
	}
	bw.mu.Lock()
	bw.batch = false
	bw.mu.Unlock()
	if _, err := server.Write(wsFrame(0x88, closePayload(1000, ""), false)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; CloseCode(err) != 1000 {
		t.Fatalf("relay ended with %v; want the close", err)
	}
}
