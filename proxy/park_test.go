package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/proxy"
)

// parkAfter is the IdleParkAfter of the parking tests: short, so that
// they do not wait long, and the sweep runs often.
const parkAfter = 100 * time.Millisecond

func parkSoon(c *proxy.Config) { c.IdleParkAfter = parkAfter }

// waitParked waits until want relays of hs are parked and no goroutine of
// hs runs a relay. Where relays do not park (not Linux), it waits for them
// to wait on their sockets instead.
func waitParked(t testing.TB, hs *harness, want int) {
	t.Helper()
	if runtime.GOOS != "linux" {
		idleRelaysN(t, hs, want)
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, running := hs.h.ParkedRelays(), hs.relayGoroutines()
		if got == want && running == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d relays parked, %d goroutines run relays; want %d parked, none running", got, running, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// relayGoroutines counts the goroutines of hs that run a frame relay.
func (hs *harness) relayGoroutines() int {
	return hs.countGoroutines(func(rec string) bool { return strings.Contains(rec, "wire.(*Relay)") })
}

// echoBurst sends n messages at once, then reads them back in order.
func echoBurst(t testing.TB, c *rawClient, tag string, n int) {
	t.Helper()
	var want [][]byte
	for i := range n {
		m := []byte(fmt.Sprintf("%s %d %s", tag, i, strings.Repeat("p", i*37%3000)))
		want = append(want, m)
		c.write(websocket.TextMessage, m)
	}
	for i, m := range want {
		if _, got := c.read(); !bytes.Equal(got, m) {
			t.Fatalf("%s: message %d: got %q, want %q", tag, i, trim(got), trim(m))
		}
	}
}

// An idle spliced session parks both directions: no goroutine of holdfast
// runs for it (the harness's count is its base plus the parker's one
// goroutine). Data resumes it, relayed in order both ways, and it parks
// again; once it has ended the parker's goroutine is gone too.
func TestIdleSessionParksAndResumes(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("relays park on Linux only")
	}
	addr := startMiniUpstream(t, echoSession)
	hs := startProxy(t, addr, parkSoon, nil)
	base := hs.goroutines()
	c := dialRaw(t, hs.url, nil)
	c.handshake()
	for round := range 3 {
		waitParked(t, hs, 2)
		if got := hs.goroutines(); got != base+1 {
			t.Fatalf("round %d: %d goroutines with the session parked; want %d (the base and the parker)", round, got, base+1)
		}
		echoBurst(t, c, fmt.Sprintf("round %d", round), 40)
	}
	closeParked(t, hs, c)
	waitGoroutines(t, hs, base)
}

// closeParked waits until both relays of c's session parked, closes the
// session from the client with 1000 and checks that holdfast answers it
// and the session ends.
func closeParked(t *testing.T, hs *harness, c *rawClient) {
	t.Helper()
	waitParked(t, hs, 2)
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	ce, err := nextClose(c.ws)
	if ce == nil || ce.Code != 1000 {
		t.Fatalf("after the client's close: %v; want close 1000 back", err)
	}
	hs.waitMetric(0, "holdfast_sessions_active")
}

func waitGoroutines(t *testing.T, hs *harness, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for hs.goroutines() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after the session ended; want the base %d", hs.goroutines(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A gateway that speaks first wakes a parked session from its side.
func TestParkedSessionWakesOnGatewayData(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("relays park on Linux only")
	}
	ticks := make(chan int)
	addr := startMiniUpstream(t, func(ws *websocket.Conn) {
		for i := range ticks {
			if ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("tick %d", i))) != nil {
				return
			}
		}
		_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "gateway done"))
		_, _, _ = ws.ReadMessage()
	})
	hs := startProxy(t, addr, parkSoon, nil)
	c := dialRaw(t, hs.url, nil)
	c.handshake()
	for i := range 3 {
		waitParked(t, hs, 2)
		ticks <- i
		if _, got := c.read(); string(got) != fmt.Sprintf("tick %d", i) {
			t.Fatalf("got %q; want tick %d", got, i)
		}
	}
	waitParked(t, hs, 2)
	close(ticks) // the gateway closes 4001: the client gets it, as unparked
	ce, err := nextClose(c.ws)
	if ce == nil || ce.Code != 4001 {
		t.Fatalf("after the gateway's close: %v; want close 4001", err)
	}
	hs.waitMetric(0, "holdfast_sessions_active")
}

// A drain reaches parked sessions: each client gets 1012 "holdfast
// restarting", and Shutdown returns once the sessions have ended.
func TestDrainEndsParkedSessions(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("relays park on Linux only")
	}
	addr := startMiniUpstream(t, echoSession)
	hs := startProxy(t, addr, parkSoon, nil)
	const n = 8
	var cs []*rawClient
	for range n {
		c := dialRaw(t, hs.url, nil)
		c.handshake()
		cs = append(cs, c)
	}
	waitParked(t, hs, 2*n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- hs.h.Shutdown(ctx) }()
	for i, c := range cs {
		ce, err := nextClose(c.ws)
		if ce == nil || ce.Code != 1012 || ce.Text != "holdfast restarting" {
			t.Errorf("client %d: %v; want close 1012 \"holdfast restarting\"", i, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown = %v; want nil", err)
	}
	hs.waitMetric(0, "holdfast_sessions_active")
}

// A stop at once reaches parked sessions whose clients do not answer: their
// sockets are closed under the parked relays, which resume and end.
func TestStopAtOnceEndsParkedSessions(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("relays park on Linux only")
	}
	hold := make(chan struct{})
	addr := startMiniUpstream(t, func(ws *websocket.Conn) {
		<-hold // reads nothing: never answers the close
	})
	hs := startProxy(t, addr, parkSoon, nil)
	t.Cleanup(func() { close(hold) })
	base := hs.goroutines()
	c := dialRaw(t, hs.url, nil) // reads nothing until the end: never answers the close
	c.handshake()
	waitParked(t, hs, 2)
	// The drain writes its close frames at once; the grace ends before
	// any peer answers, and the stop closes the sockets.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_ = hs.h.Shutdown(ctx)
	hs.waitMetric(0, "holdfast_sessions_active")
	ce, err := nextClose(c.ws)
	if ce == nil || ce.Code != 1012 {
		t.Fatalf("client: %v; want close 1012", err)
	}
	waitGoroutines(t, hs, base)
}

// A wss session (TLS terminated by holdfast, to a wss gateway) parks and
// resumes like a plain one: its relays park on the TCP sockets below
// crypto/tls only when nothing waits above them.
func TestTLSSessionParksAndResumes(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("relays park on Linux only")
	}
	addr, pool := startTLSEcho(t)
	hs, roots := startTLSProxy(t, addr, func(c *proxy.Config) {
		c.IdleParkAfter = parkAfter
		c.Upstream.Scheme = "wss"
		c.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}, nil)
	c := dialTLS(t, hs.url, roots)
	c.handshake()
	for round := range 3 {
		waitParked(t, hs, 2)
		echoBurst(t, c, fmt.Sprintf("round %d", round), 30)
		// Messages over a TLS record each, so that the relays read
		// records in pieces.
		big := randomBytes(t, 70000)
		c.write(websocket.BinaryMessage, big)
		if _, got := c.read(); !bytes.Equal(got, big) {
			t.Fatal("a 70000-byte message came back altered")
		}
	}
	closeParked(t, hs, c)
}

// nextClose reads ws's next message within 10 s: the close it is, or nil
// and the error the read returned (a data message: nil, nil).
func nextClose(ws *websocket.Conn) (*websocket.CloseError, error) {
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := ws.ReadMessage()
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce, err
	}
	return nil, err
}
