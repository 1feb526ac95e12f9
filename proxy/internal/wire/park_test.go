package wire

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// parkPair readies a relay from a TCP leg to another, as a splice does:
// what srcPeer writes (gateway frames, unmasked) reaches dstPeer.
func parkPair(t testing.TB, pool *Pool) (srcPeer, dstPeer net.Conn, r *Relay) {
	t.Helper()
	srcPeer, srcSock := tcpPair(t)
	dstSock, dstPeer := tcpPair(t)
	src, dst := NewConn(srcSock, pool), NewConn(dstSock, pool)
	if src.raw == nil {
		t.Skip("no RawConn reads on this platform")
	}
	spliced(src, dst)
	t.Cleanup(func() {
		_ = src.Close()
		_ = dst.Close()
	})
	return srcPeer, dstPeer, NewRelay(src, dst, false, 0, nil, &Tally{})
}

// readFrames reads the unmasked frames of small payloads dstPeer receives
// and sends their payloads on out, until the stream ends.
func readFrames(c net.Conn, out chan<- string) {
	defer close(out)
	var hdr [2]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		p := make([]byte, hdr[1]&0x7f)
		if _, err := io.ReadFull(c, p); err != nil {
			return
		}
		out <- string(p)
	}
}

type ending struct {
	err      error
	readSide bool
}

// An idle relay parks: Go returns, the relay's goroutine gone, with the
// relay parked. Data resumes it on a goroutine of the Parker's and is
// relayed in order; closing the source under a parked relay resumes it to
// end with the closed socket's error, once, and the Parker's goroutine
// ends with its last relay.
func TestRelayParksResumesAndEndsOnClose(t *testing.T) {
	t.Parallel()
	if !parkSupported {
		t.Skip("relays park on Linux only")
	}
	pk := NewParker(20 * time.Millisecond)
	srcPeer, dstPeer, r := parkPair(t, NewPool())
	got := make(chan string, 64)
	go readFrames(dstPeer, got)
	ended := make(chan ending, 2)
	returned := make(chan struct{})
	go func() {
		r.Go(pk, func(err error, readSide bool) { ended <- ending{err, readSide} })
		close(returned)
	}()
	waitParked := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for pk.Parked() != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the idle relay did not park")
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitParked()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Go did not return once the relay parked")
	}
	for round := range 3 {
		for i := range 10 {
			m := fmt.Sprintf("r%d m%d", round, i)
			if _, err := srcPeer.Write(wsFrame(0x81, []byte(m), false)); err != nil {
				t.Fatal(err)
			}
			if s := <-got; s != m {
				t.Fatalf("got %q; want %q", s, m)
			}
		}
		waitParked()
	}
	_ = r.src.Close()
	select {
	case e := <-ended:
		if !e.readSide || !errors.Is(e.err, net.ErrClosed) {
			t.Fatalf("the relay ended with %v (read side %v); want the closed socket's read error", e.err, e.readSide)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("closing the source did not end the parked relay")
	}
	if pk.Parked() != 0 {
		t.Fatalf("%d relays parked after the end", pk.Parked())
	}
	waitParkerStopped(t, pk)
	select {
	case e := <-ended:
		t.Fatalf("the relay ended twice: %v", e.err)
	case <-time.After(50 * time.Millisecond):
	}
}

func waitParkerStopped(t *testing.T, pk *Parker) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pk.mu.Lock()
		running := pk.running
		pk.mu.Unlock()
		if !running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the Parker's goroutine outlived its relays")
		}
		time.Sleep(time.Millisecond)
	}
}

// Parking, waking and closing at once, many times over: relays whose
// source sends in bursts with pauses around the park delay (so that they
// park, are asked to park in a burst, and wake, over and over), closed at
// a random moment on either leg, or ended by a close frame. Every relay
// ends exactly once, what it relayed is a prefix of what was sent, in
// order, and nothing stays parked. Run it with -race.
func TestRelayParkWakeCloseRace(t *testing.T) {
	t.Parallel()
	if !parkSupported {
		t.Skip("relays park on Linux only")
	}
	pk := NewParker(2 * time.Millisecond)
	pool := NewPool()
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hammerRelay(t, pk, pool, uint64(i))
		}()
	}
	wg.Wait()
	t.Logf("%d parks", pk.parks.Load())
	if pk.parks.Load() < 24 {
		t.Errorf("%d parks over 24 relays; want them to park", pk.parks.Load())
	}
	if pk.Parked() != 0 {
		t.Fatalf("%d relays still parked", pk.Parked())
	}
	waitParkerStopped(t, pk)
}

func hammerRelay(t *testing.T, pk *Parker, pool *Pool, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	srcPeer, dstPeer, r := parkPair(t, pool)
	got := make(chan string, 1024)
	go readFrames(dstPeer, got)
	var calls atomic.Int32
	ended := make(chan ending, 1)
	go r.Go(pk, func(err error, readSide bool) {
		calls.Add(1)
		ended <- ending{err, readSide}
	})
	const n = 300
	closeAt := rng.IntN(n + n/3) // past n: the stream ends with a close frame
	closeSrc := rng.IntN(2) == 0
	sent := 0
	for k := range n {
		if k == closeAt {
			if closeSrc {
				_ = r.src.Close()
			} else {
				_ = r.dst.Close()
			}
		}
		_ = srcPeer.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := srcPeer.Write(wsFrame(0x82, []byte(strconv.Itoa(k)), false)); err != nil {
			break
		}
		sent++
		switch rng.IntN(8) {
		case 0:
			time.Sleep(time.Duration(rng.IntN(6000)) * time.Microsecond) // around the park delay
		case 1:
			time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		}
	}
	if closeAt >= n {
		_, _ = srcPeer.Write(wsFrame(0x88, closePayload(1000, ""), false))
	}
	var e ending
	select {
	case e = <-ended:
	case <-time.After(10 * time.Second):
		t.Errorf("seed %d: the relay did not end (close at %d of %d, source %v)", seed, closeAt, n, closeSrc)
		_ = r.src.Close()
		<-ended
		return
	}
	if closeAt >= n && CloseCode(e.err) != websocket.CloseNormalClosure {
		t.Errorf("seed %d: ended with %v; want the close frame", seed, e.err)
	}
	_ = r.dst.Close()
	_ = dstPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	want := 0
	for s := range got {
		if s != strconv.Itoa(want) {
			t.Errorf("seed %d: relayed %q after %d in order; want %d", seed, s, want, want)
			break
		}
		want++
	}
	if want > sent {
		t.Errorf("seed %d: relayed %d of %d sent", seed, want, sent)
	}
	_ = srcPeer.Close()
	_ = dstPeer.Close()
	time.Sleep(10 * time.Millisecond)
	if c := calls.Load(); c != 1 {
		t.Errorf("seed %d: end called %d times; want once", seed, c)
	}
}
