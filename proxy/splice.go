package proxy

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-proxy/holdfast/proxy/internal/share"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
	"github.com/holdfast-proxy/holdfast/retry"
)

// splice relays frames both ways until either side closes: the client
// reader copies client→upstream, and a new goroutine upstream→client.
// helloFrames (hello-ok and what preceded it) go to the client first. done
// runs when the session has ended. maxPayload (hello-ok's
// policy.maxPayload, 0 for none) limits client messages.
//
// The setup runs on the caller's goroutine. The new goroutine only copies,
// blocking shallow between messages, so an idle session's goroutines keep
// the smallest stacks.
func (c *conn) splice(maxPayload int64, helloFrames []frame, done func()) {
	c.h.metrics.SessionStarted()
	untrack := func() {}
	c.h.watcher.Live(1)
	end := func() {
		c.endSession()
		c.h.watcher.Live(-1)
		c.h.metrics.SessionEnded()
		untrack()
		done()
	}
	if !c.startSplice(maxPayload, helloFrames) {
		end()
		return
	}
	// Tracked for a drain once hello-ok reached the client: a session
	// spliced during a drain gets its hello-ok, then its close.
	untrack = c.h.track(c)
	// wg counts the session: end runs on the goroutine that ends its relay.
	c.h.wg.Add(1)
	go c.pumpUpstream(func() {
		end()
		c.h.wg.Done()
	})
}

// startSplice sets up the splice and hands the client→upstream direction to
// the reader: queued frames go first, in order, then the reader writes
// directly. It reports false when the session ended already.
func (c *conn) startSplice(maxPayload int64, helloFrames []frame) bool {
	up := c.up.ws
	_ = up.SetReadDeadline(time.Time{})

	c.mu.Lock()
	if maxPayload > 0 {
		c.maxPayload = maxPayload
	}
	var werr error
	for _, f := range c.queue {
		if werr == nil {
			werr = up.WriteMessageBytes(f.typ, f.data, c.h.cfg.WriteTimeout)
		}
	}
	c.queue = nil
	rerr := c.readErr
	c.batch(true)
	c.spliced.Store(true)
	c.lease = nil // and its contexts: an idle session keeps only what it uses
	c.mu.Unlock()
	// A reader waiting for the client's next message hands over to the relay.
	c.cw.Interrupt()

	if rerr == nil && werr == nil {
		for _, f := range helloFrames {
			if werr = c.writeClient(f.typ, f.data); werr != nil {
				break
			}
		}
		if werr == nil {
			// hello-ok leaves now, from this shallow stack, not from the
			// relay's first wait for the gateway: a flush made inside a
			// read (flushOnWait) would grow the stack of a session that
			// then idles.
			werr = c.cw.Flush()
		}
	}
	switch {
	case rerr != nil:
		// The client left (or broke a rule) before the splice began.
		c.endSessionAs(c.clientEnding(rerr), rerr)
		return false
	case werr != nil:
		c.endSessionAs(endSessionGatewayVanished, werr)
		return false
	}
	return true
}

// clientEnding is the session ending for the client side's read error.
func (c *conn) clientEnding(err error) ending {
	switch {
	case errors.Is(err, errPreauthTooLarge):
		return endPreauthTooLarge
	case errors.Is(err, errTooManyPending):
		return endTooManyPending
	case errors.Is(err, share.ErrPreauthBudget):
		return endPreauthBudget
	case errors.Is(err, websocket.ErrReadLimit), errors.Is(err, errTooBig):
		return endSessionTooBig
	}
	if code := wire.CloseCode(err); code != 0 && code != websocket.CloseAbnormalClosure {
		return endSessionClientClosed
	}
	return endSessionClientVanished
}

// endSessionAs closes a spliced session's legs as the ending e says (err
// is the read error that ended a direction: the peer's close, relayed by
// rows that relay). The first ending is the session's; its evidence about
// the gateway counts. A later one (the other direction ending on the close
// just sent, or on the socket holdfast closed) says nothing of the
// gateway, except a close frame the gateway wrote itself, and writes no
// close to a leg whose peer vanished in the session's ending.
//
// Endings run one at a time (endMu), so the first one's closes are written
// before a later one's: otherwise the client's next message, failing
// toward a gateway whose close holdfast had just answered, wrote 1011 to
// the client ahead of the gateway's own code, which the session's ending
// was still logging. A later ending still waits for a leg's close to be
// written before its own is refused, and only then lets the session be
// torn down.
func (c *conn) endSessionAs(e ending, err error) {
	c.endMu.Lock()
	defer c.endMu.Unlock()
	spec := &endings[e]
	c.mu.Lock()
	first := c.rec.sessionEnd.IsZero()
	if first {
		c.rec.sessionEnd = time.Now()
		c.rec.session = e
	}
	session := c.rec.session
	c.mu.Unlock()
	if s, ok := evidenceOf(spec.evidence, err); ok && (first || s == retry.Started) {
		c.h.watcher.Observe(s)
	}
	if first {
		switch e {
		case endSessionGatewayClosed:
			c.h.metrics.GatewayClose(wire.CloseCode(err))
		case endSessionGatewayVanished:
			c.h.metrics.GatewayClose(websocket.CloseAbnormalClosure)
		}
		if c.h.log.Enabled(context.Background(), spec.level) {
			args := []any{"client", c.rec.clientAddr}
			if err != nil {
				args = append(args, "err", err)
			}
			c.h.log.Log(context.Background(), spec.level, spec.msg, args...)
		}
	}
	// A leg whose peer vanished (its socket ended without a close frame,
	// or a write to it failed) is told nothing more: the session's row
	// gives it no close, and a later ending (the other peer answering the
	// close holdfast sent it) would only write into a dead socket.
	if payload, ok := spec.client.payload(err); ok && session != endSessionClientVanished {
		c.closeClient(payload)
	}
	if payload, ok := spec.gateway.payload(err); ok && session != endSessionGatewayVanished {
		c.closeUpstream(payload)
	}
}

// pumpUpstream copies upstream→client (a frame relay, which may park; a
// bridged session's filter), then propagates how that ended, and ended runs.
func (c *conn) pumpUpstream(ended func()) {
	if c.bridged {
		c.pumpBridged()
		ended()
		return
	}
	// This frame stays on the stack while the session idles unparked:
	// what is set up goes in calls that return first.
	c.relayFrom(c.up.ws, c.cw, false, 0, &c.rec.toClient).Go(c.h.parker, func(err error, readSide bool) {
		c.endUpstreamSide(err, readSide)
		ended()
	})
}

// relayFrom returns the frame relay from src to dst, counted as toward the
// gateway when fromClient.
func (c *conn) relayFrom(src, dst *wire.Conn, fromClient bool, limit int64, t *tally) *wire.Relay {
	toUpstream, toClient := c.h.metrics.MessageCounters()
	count := toClient
	if fromClient {
		count = toUpstream
	}
	return wire.NewRelay(src, dst, fromClient, limit, count, t)
}

// endUpstreamSide propagates the end of the upstream→client direction: the
// gateway's close goes to the client; a failed write to the client is
// reported to the gateway.
func (c *conn) endUpstreamSide(err error, readSide bool) {
	_ = c.up.ws.Flush() // the echo of a close frame
	if !readSide {
		c.endSessionAs(endSessionClientVanished, err)
		return
	}
	c.mu.Lock()
	c.rec.gateway.noteGot(err)
	c.mu.Unlock()
	if code := wire.CloseCode(err); code == 0 || code == websocket.CloseAbnormalClosure {
		c.endSessionAs(endSessionGatewayVanished, err)
		return
	}
	c.endSessionAs(endSessionGatewayClosed, err)
}

// batch turns frame batching on both legs on or off. While on, each leg
// flushes the other before it blocks on a read, so frames relayed in one
// burst leave in one write.
func (c *conn) batch(on bool) {
	cb, ub := c.cw, c.up.ws
	if on {
		cb.SetPeer(ub)
		ub.SetPeer(cb)
	} else {
		cb.SetPeer(nil)
		ub.SetPeer(nil)
	}
	var wt time.Duration
	if on {
		wt = c.h.cfg.WriteTimeout
	}
	cb.SetBatching(on, wt)
	ub.SetBatching(on, wt)
}

// endSession waits up to CloseGrace for the other direction to see its
// close, then drops both sockets and waits for the reader.
func (c *conn) endSession() {
	select {
	case <-c.readerDone:
	default:
		t := time.NewTimer(c.h.cfg.CloseGrace)
		select {
		case <-c.readerDone:
		case <-t.C:
		}
		t.Stop()
	}
	_ = c.client.Close()
	_ = c.up.ws.Close()
	c.up.authenticated()
	<-c.readerDone
	if c.closeTimer != nil {
		c.closeTimer.Stop() // set by the reader, before readerDone closed
	}
}

// pumpClient copies client→upstream after the splice began, starting with
// first when the reader already holds the next message: gorilla finishes
// that one, then a frame relay takes over, which may park: readerDone is
// closed by whichever goroutine runs it when it ends.
func (c *conn) pumpClient(first *message) {
	limit := c.maxPayload
	if limit <= 0 {
		limit = c.h.cfg.MaxMessageBytes
	}
	c.client.SetReadLimit(limit)
	ended := func(err error, readSide bool) {
		c.endClientSide(err, readSide) // which flushes the echo of a close first
		close(c.readerDone)
	}
	if first != nil {
		// The message was begun under the limit before hello-ok: hold it
		// to hello-ok's policy.maxPayload too.
		first.r = &limitReader{r: first.r, left: limit}
		toUpstream, _ := c.h.metrics.MessageCounters()
		if err, readSide := copyMessage(c.up.ws, first, c.h.cfg.WriteTimeout, toUpstream, &c.rec.toUpstream); err != nil {
			ended(err, readSide)
			return
		}
	}
	c.relayFrom(c.cw, c.up.ws, true, limit, &c.rec.toUpstream).Go(c.h.parker, ended)
}

// endClientSide propagates the end of the client→upstream direction:
// the client's close goes to the gateway; a failed write to the gateway is
// reported to the client. The other direction then ends on the echo, or
// CloseGrace later at most.
func (c *conn) endClientSide(err error, readSide bool) {
	// gorilla's own close frame to the client (its echo, 1002 for a
	// protocol error, 1009) may still sit in the client leg's batch.
	_ = c.cw.Flush()
	if readSide {
		c.mu.Lock()
		c.rec.client.noteGot(err)
		c.mu.Unlock()
	}
	switch e := c.clientEnding(err); {
	case readSide && e == endSessionTooBig:
		// gorilla has sent the client 1009 already when its own limit
		// fired; closeLeg sends nothing after a close.
		c.endSessionAs(e, err)
		drain(c.client, c.h.cfg.CloseGrace)
	case readSide:
		c.endSessionAs(e, err)
	default:
		// The gateway leg failed or closed: the client gets a close (the
		// gateway's, from the other direction, when it came first) and is
		// read to its echo, so that closing the socket on unread data does
		// not reset the connection before the close frame is read.
		c.endSessionAs(endSessionGatewayVanished, err)
		drain(c.client, c.h.cfg.CloseGrace)
	}
	// Unblock the upstream reader if the gateway never answers the close.
	// endSession stops the timer once that reader has returned.
	c.closeTimer = time.AfterFunc(c.h.cfg.CloseGrace, func() { _ = c.up.ws.Close() })
}

// goingAway closes a spliced session because holdfast shuts down. Safe
// from any goroutine; each close is bounded by closeTimeout.
func (c *conn) goingAway() {
	c.endSessionAs(endSessionShutdown, nil)
}

// errTooBig is a client message over hello-ok's policy.maxPayload that
// gorilla's own limit could not catch (it was begun before the splice).
var errTooBig = errors.New("client message over policy.maxPayload")

// limitReader fails with errTooBig once more than left bytes were read.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, errTooBig
	}
	return n, err
}

// message is a message whose reader was obtained but not yet copied.
type message struct {
	typ int
	r   io.Reader
}

// copyMessage relays the message m to dst, streamed, never buffered whole
// (wire.Conn.WriteMessage), and counts it. readSide reports whether m's
// reader failed first.
func copyMessage(dst *wire.Conn, m *message, writeTimeout time.Duration, count prometheus.Counter, t *tally) (err error, readSide bool) {
	rr := recordingReader{r: m.r}
	n, err := dst.WriteMessage(m.typ, &rr, writeTimeout)
	return relayed(t, n, err, rr.err, count)
}

// relayed counts a message relayed with n payload bytes written, or the
// error that cut it: readErr, the source's, when it failed first (readSide),
// else err, the write's.
func relayed(t *tally, n int64, err, readErr error, count prometheus.Counter) (error, bool) {
	t.Bytes += n
	if err != nil {
		if readErr != nil {
			return readErr, true
		}
		return err, false
	}
	t.Msgs++
	if count != nil {
		count.Inc()
	}
	return nil, false
}

// drain ends the client's stream right after the close frame sent to it
// (wire.Conn.EndWrites: browsers wait for that) and discards what it still
// sends for up to d, lest closing reset the connection before it is read.
func drain(ws *websocket.Conn, d time.Duration) {
	bc, until := wire.ConnOf(ws.NetConn()), time.Now().Add(d)
	bc.EndWrites() // after a flush under way, which the ending capped
	bc.DiscardUntilEOF(until)
}

// recordingReader remembers the error of the reader it wraps, so that a
// failed copy can be blamed on the right side.
type recordingReader struct {
	r   io.Reader
	err error
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if err != nil && err != io.EOF {
		rr.err = err
	}
	return n, err
}
