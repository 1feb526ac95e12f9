package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy/internal/forwarded"
	"github.com/holdfast-proxy/holdfast/proxy/internal/share"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
	"github.com/holdfast-proxy/holdfast/retry"
)

// maxPendingFrames is how many client frames are held before hello-ok: the
// connect and at most 15 after it, as on the gateway, which closes 1008
// "too many pending handshake frames" on the 16th.
const maxPendingFrames = 1 + 15

// maxConnectSends is how many times holdfast sends one client's connect,
// replays included.
const maxConnectSends = 5

// frame is one client message held before hello-ok.
type frame struct {
	typ  int
	data []byte
}

// conn is one client connection's state machine:
//
//	dial → (upgrade client, relay challenge) → await connect →
//	[hold until started] → forward connect → answer
//	  hello-ok          → splice
//	  startup, replay   → wait, dial a fresh socket (challenge swallowed) → hold/forward again
//	  startup, no replay or budget spent → pass the UNAVAILABLE through, close 1013
//	  anything else     → pass it through with the gateway's close
//
// Every step that ends the connection returns an outcome, and conn.end
// alone acts on it (outcome.go); a spliced session ends through
// conn.endSessionAs. The package documentation states which goroutine owns
// what.
type conn struct {
	h               *Handler
	*handshakeState // nil once spliced: an idle session keeps only what it uses
	// lease is the handshake's hold on h.limits; its context ends the
	// handshake when it is displaced (proxy/internal/share); nil once spliced.
	lease *share.Lease

	client *websocket.Conn
	// cw is the client leg's socket, beneath client: holdfast's frames
	// and closes to the client go through it (wire.Conn).
	cw *wire.Conn
	up *upstream // the current upstream socket; fixed once spliced

	// cancel ends ctx (the handshake's) when the client goes away before
	// the splice; nil after it. Guarded by mu.
	cancel context.CancelFunc

	mu         sync.Mutex
	queue      []frame       // client frames not yet forwarded
	readErr    error         // the client reader's error before the splice
	notify     chan struct{} // signalled (cap 1) when queue or readErr change
	spliced    atomic.Bool   // set once, under mu, after the queue was flushed
	bridged    bool          // gateway frames pass the protocol-3 filter (bridge.go)
	maxPayload int64         // client message limit after hello-ok

	// endMu serialises a spliced session's endings (endSessionAs).
	endMu sync.Mutex

	readerDone chan struct{}
	closeTimer *time.Timer // endClientSide's bound on the gateway's close answer; set by the reader

	// rec is what the connection did, for its one access log line (done).
	rec record
}

// handshakeState is the state only the handshake needs. Only the handler
// goroutine touches it.
type handshakeState struct {
	r      *http.Request
	budget retry.Budget
	attr   forwarded.Attribution
	hdr    http.Header // the upstream upgrade request's headers
	target string      // the upstream URL for this client
	ctx    context.Context
	// connectAt is when the client's first frame arrived: its connect
	// timer runs from about then.
	connectAt time.Time
	// standIn is holdfast's own challenge, handed to a late-dialled client
	// whose challenge was due with no gateway socket to be had
	// (standin.go); c.up is nil until its first frame has come.
	standIn []byte
	// handedOut is when the client got its challenge.
	handedOut time.Time

	// helloFrames are what the gateway sent up to and including hello-ok;
	// they reach the client once the splice is in place.
	helloFrames []frame
	// legacy is set when the connect was rewritten for the bridge.
	legacy *gwproto.LegacyConnect
	// untrack removes the upgraded client from the handshakes a stop at
	// once reaches (drain.go).
	untrack func()
}

func (h *Handler) serveControl(w http.ResponseWriter, r *http.Request, attr forwarded.Attribution, ls *share.Lease) {
	growStack(0)
	h.wg.Add(1)
	defer h.wg.Done()
	if !h.Ready() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "holdfast is shutting down", http.StatusServiceUnavailable)
		return
	}
	c := &conn{
		h:     h,
		lease: ls,
		handshakeState: &handshakeState{
			r:      r,
			budget: retry.NewBudget(retry.SystemClock{}, h.cfg.Budget),
			attr:   attr,
		},
		notify: make(chan struct{}, 1),
		rec:    record{start: time.Now(), clientAddr: r.RemoteAddr, path: r.URL.Path},
	}
	// What the queue held goes back once the handshake is over: by then
	// the queue was flushed or dropped, and the reader queues no more.
	defer ls.FreeBytes()
	c.hdr = forwarded.UpstreamHeader(r)
	c.target = h.upstreamURL(r)
	forwarded.Apply(c.hdr, c.attr, r)
	if !c.run(w) {
		c.release()
		c.done()
		return
	}
	// The session outlives this handler: once spliced, its directions run
	// on goroutines with small stacks, and the HTTP server's connection
	// state and this goroutine's deep handshake stack are freed.
	helloFrames, maxPayload := c.helloFrames, c.maxPayload
	c.handshakeState = nil
	// The handshake context: nothing waits on it any more.
	c.mu.Lock()
	c.cancel()
	c.cancel = nil
	c.mu.Unlock()
	c.splice(maxPayload, helloFrames, func() {
		c.release()
		c.done()
	})
}

// release ends the client reader (its socket is closed by then) and waits
// for it.
func (c *conn) release() {
	c.mu.Lock()
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	if c.readerDone != nil {
		<-c.readerDone
	}
}

// run takes the connection through its handshake. It returns true when the
// session is to be spliced; otherwise the connection has ended (conn.end).
func (c *conn) run(w http.ResponseWriter) bool {
	o := c.handshakeSteps(w)
	c.end(o)
	if c.untrack != nil {
		c.untrack() // after end: a stop at once waits for its close frame
	}
	return o.end == endOK || o.end == endNotConnect
}

// handshakeSteps runs the handshake up to its outcome.
func (c *conn) handshakeSteps(w http.ResponseWriter) outcome {
	// 1. An upstream socket with its challenge, before the client sees a
	// 101: a browser waits only 750 ms for the challenge after open.
	// Clients that wait longer are dialled late while the gateway starts
	// (latedial.go).
	late := c.dialLate()
	var respHdr http.Header
	if !late {
		// The dial ends when the client leaves or the handshake is
		// displaced: the lease's context ends with either
		// (proxy/internal/share), the client's request being its parent.
		up, err := c.h.dialUpstream(c.lease.Context(), c.target, c.hdr, c.attr.Key(), c.budget)
		if err != nil {
			o := c.dialFailed(err, false)
			o.w = w
			return o
		}
		c.up = up
		if up.protocol != "" {
			respHdr = http.Header{"Sec-Websocket-Protocol": {up.protocol}}
		}
	}

	// 2. Upgrade the client and relay the challenge at once. With the
	// challenge in hand, the 101 waits in the client leg's batch for it,
	// and both leave in one write.
	uw, upgrader := w, &c.h.upgrader
	if !late {
		uw, upgrader = batchedUpgrade{w, c.h.cfg.WriteTimeout}, &c.h.batchedUpgrader
	}
	client, err := upgrader.Upgrade(uw, c.r, respHdr)
	if err != nil {
		return outcome{end: endClientUpgradeFailed, err: err}
	}
	c.client = client
	c.cw = wire.ConnOf(client.NetConn()) // keepEarlyData made it one
	c.cw.FrameMode()
	// The handshake's context is its lease's, which already ends when
	// the handshake is displaced; c.cancel ends it too when the client
	// goes away or holdfast stops at once.
	c.mu.Lock()
	c.ctx, c.cancel = c.lease.Context(), c.lease.Cancel
	c.mu.Unlock()
	c.untrack = c.h.trackHandshake(c) // reached by a stop at once (drain.go)
	client.SetReadLimit(c.h.cfg.MaxMessageBytes)
	client.SetPingHandler(c.onClientPing)
	client.SetPongHandler(c.onClientPong)
	c.readerDone = make(chan struct{})
	go func() {
		if !c.readClient() { // else the relay closes readerDone when it ends
			close(c.readerDone)
		}
	}()
	if late {
		if o := c.lateDial(); o != nil {
			return *o
		}
	}

	challenge := c.standIn
	if c.up != nil {
		challenge = c.up.challenge
	}
	if err := c.writeClient(websocket.TextMessage, challenge); err != nil {
		return outcome{end: endClientGone, err: err}
	}
	c.handedOut = time.Now()
	c.logHandOut(late)
	if !late {
		err := c.cw.Flush() // the 101 and the challenge
		c.cw.SetBatching(false, 0)
		if err != nil {
			return outcome{end: endClientGone, err: err}
		}
	}
	if c.up != nil {
		c.up.challenge = nil
	}

	// 3. The client's first frame.
	first, o := c.awaitFirst()
	if o != nil {
		return *o
	}
	c.connectAt = time.Now()
	kind, id, offer := gwproto.ReadConnect(first.data)
	c.rec.kind, c.rec.firstFrame = kind, true
	if kind != gwproto.NotConnect {
		c.rec.protocol, c.rec.mode = connectCensus(offer)
	}
	if c.up == nil {
		// It answered a stand-in challenge.
		if o := c.afterStandIn(kind, id); o != nil {
			return *o
		}
	}
	if kind == gwproto.NotConnect {
		// Not something holdfast understands: the gateway answers it.
		return outcome{end: endNotConnect}
	}

	first = c.bridgeConnect(first, offer)

	// 4. Hold, forward, retry.
	return c.handshake(first, kind, id)
}

// logHandOut writes the debug line of a challenge handed out: how long
// the client waited for it since its arrival, and how old the gateway
// socket it came from was (-1ms for a stand-in).
func (c *conn) logHandOut(late bool) {
	if !c.h.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	source, age := "stand-in", time.Duration(-1)
	if c.up != nil {
		source, age = "dialled first", time.Since(c.up.opened)
		if late {
			source = "late dial"
		}
	}
	c.h.log.Debug("challenge handed out", "client", c.rec.clientAddr, "source", source,
		"waited", c.handedOut.Sub(c.rec.start).Round(time.Millisecond), "socket_age", age.Round(time.Millisecond))
}

// dialFailed is the outcome of an upstream dial that failed: before the
// client's upgrade was answered (an HTTP answer), or after (late: a close).
func (c *conn) dialFailed(err error, late bool) outcome {
	var he *httpError
	var be *budgetError
	switch {
	case !late && c.lease.Displaced():
		return outcome{end: endDisplacedDialing, err: share.ErrDisplaced}
	case errors.Is(err, context.Canceled) || (!late && c.r.Context().Err() != nil):
		if late {
			return c.clientOutcome(err)
		}
		return outcome{end: endClientLeftDialing, err: err}
	case errors.As(err, &he) && he.attributionRequired():
		if late {
			return outcome{end: endAttributionRefusedLate, err: err}
		}
		return outcome{end: endAttributionRefused, httpErr: he}
	case errors.As(err, &he) && he.broken:
		if late {
			return outcome{end: endBadUpstreamLate, err: err}
		}
		return outcome{end: endBadUpstream, err: err}
	case errors.As(err, &he) && !he.retryable():
		if late {
			return outcome{end: endUpgradeRefusedLate, err: err}
		}
		return outcome{end: endUpgradeRefused, httpErr: he}
	case errors.As(err, &be):
		if late {
			return outcome{end: endUnreachableLate, err: be.last}
		}
		return outcome{end: endUnreachable, err: be.last}
	case late:
		return outcome{end: endUnreachableLate, err: err}
	default:
		return outcome{end: endBadUpstream, err: err}
	}
}

// writeClient writes one message to the client within the write timeout.
// Only the handshake goroutine calls it, and only before the splice.
func (c *conn) writeClient(typ int, data []byte) error {
	_ = c.client.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
	return c.client.WriteMessage(typ, data)
}

// awaitFirst waits for the client's first frame. The gateway's pre-auth
// timer runs meanwhile: a client silent until shortly before it fires is
// closed 1008 by holdfast rather than 1000 with no reason by the gateway.
func (c *conn) awaitFirst() (frame, *outcome) {
	opened := c.handedOut // a stand-in: the client's timers run from it
	if c.up != nil {
		opened = c.up.opened
	}
	deadline := opened.Add(c.h.cfg.PreauthTimeout - c.h.cfg.HoldMargin)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		c.mu.Lock()
		q, rerr := c.queue, c.readErr
		c.mu.Unlock()
		if len(q) > 0 {
			return q[0], nil
		}
		if rerr != nil || c.h.group.isStopped() || c.ctx.Err() != nil {
			o := c.clientOutcome(rerr)
			return frame{}, &o
		}
		select {
		case <-c.notify:
		case <-c.ctx.Done():
		case <-t.C:
			return frame{}, &outcome{end: endConnectTimeout}
		}
	}
}

// clientOutcome is the outcome when the client side failed before the
// splice: the client left, or sent something holdfast must refuse. err is
// what the caller saw; the reader's own error, when it has one, says more.
func (c *conn) clientOutcome(err error) outcome {
	c.mu.Lock()
	left := c.readErr != nil
	if left {
		err = c.readErr
	}
	c.mu.Unlock()
	switch {
	case !left && c.h.group.isStopped():
		// Not the client: holdfast stopped at once and cancelled the wait.
		if s, _ := c.h.watcher.State(); s == retry.Started {
			return outcome{end: endStopped}
		}
		return outcome{end: endStoppedStarting}
	case errors.Is(err, share.ErrDisplaced) || (!left && c.lease.Displaced()):
		return outcome{end: endDisplaced, err: share.ErrDisplaced}
	case errors.Is(err, errPreauthTooLarge):
		return outcome{end: endPreauthTooLarge, err: err}
	case errors.Is(err, errTooManyPending):
		return outcome{end: endTooManyPending, err: err}
	case errors.Is(err, share.ErrPreauthBudget):
		return outcome{end: endPreauthBudget, err: err}
	default:
		return outcome{end: endClientGone, err: err}
	}
}

var (
	errPreauthTooLarge = errors.New("client frame over the pre-auth limit")
	errTooManyPending  = errors.New("too many pending handshake frames")
	errNoAnswer        = errors.New("gateway did not answer the connect within the budget")
	errTooManyFrames   = errors.New("gateway sent too many frames before answering the connect")
)

// handshake runs the connect until its outcome: hello-ok (endOK) or the
// end the client is told.
func (c *conn) handshake(first frame, kind gwproto.ConnectKind, id json.RawMessage) outcome {
	var lastUnavailable []byte
	heldLost := 0 // held connects' sockets lost before the connect was sent
	for attempt := 1; ; attempt++ {
		c.rec.attempts = attempt
		if c.mustHold(kind) {
			if !c.rec.held {
				c.rec.held = true
				c.h.metrics.Hold()
			}
			until := c.up.opened.Add(c.h.cfg.PreauthTimeout - c.h.cfg.HoldMargin)
			if bd := c.budget.Deadline(); bd.Before(until) {
				until = bd
			}
			o, upErr := c.hold(until)
			if o != nil {
				return *o
			}
			if upErr != nil {
				// The held connect's socket is gone before the connect was
				// sent: a lost socket, whatever its close said.
				heldLost++
				if o := c.heldSocketLost(upErr, kind, heldLost, lastUnavailable); o != nil {
					return *o
				}
				attempt-- // no connect was sent
				continue
			}
		}
		ans, data, pre, err := c.forwardConnect(first, id)
		if err != nil {
			if o := c.upstreamFailed(err, kind, attempt, lastUnavailable); o != nil {
				return *o
			}
			continue
		}
		switch {
		case ans.HelloOK:
			c.up.authenticated()
			c.maxPayload = ans.MaxPayload
			c.mu.Lock()
			c.queue = c.queue[1:] // the connect itself was sent
			c.mu.Unlock()
			c.helloFrames = append(pre, frame{websocket.TextMessage, data})
			c.startBridge(ans.Protocol)
			return outcome{end: endOK}

		case ans.Startup:
			c.h.watcher.Observe(retry.Starting)
			lastUnavailable = data
			delay := c.h.backoff.RetryAfter(retry.ClampRetryAfter(ans.RetryAfterMs))
			if kind != gwproto.Replayable || attempt >= maxConnectSends || !c.budget.Allows(delay, c.h.cfg.MinAttempt) {
				return outcome{end: endStartupUnavailable, frames: []frame{{websocket.TextMessage, data}}}
			}
			c.h.metrics.Retry(metrics.RetryStartupUnavailable)
			c.closeUpstream(websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			c.up.drop()
			if o := c.redial(delay, lastUnavailable); o != nil {
				return *o
			}

		default:
			// The gateway's own answer (auth, pairing, protocol…): pass it
			// through with the close that follows it.
			return outcome{end: endRejected, frames: append(pre, frame{websocket.TextMessage, data})}
		}
	}
}

// mustHold decides whether a connect waits for the gateway to start before
// it is forwarded. A nonce-bound connect is forwarded only on a fresh
// confirmation that the gateway has started: refused once, it cannot be
// replayed. A replayable one waits only while the gateway is known not to
// have started; otherwise it goes at once and is replayed if refused. When
// the gateway's readiness endpoints are unusable nothing is held: there
// would be nothing to wait for.
func (c *conn) mustHold(kind gwproto.ConnectKind) bool {
	if c.h.watcher.Started() || c.h.watcher.Blind() {
		return false
	}
	if kind == gwproto.NonceBound {
		return true
	}
	s, age := c.h.watcher.State()
	return (s == retry.Starting || s == retry.Down) && age < c.h.cfg.NotStartedTrust
}

// hold waits until the gateway is confirmed started or until. Meanwhile it
// watches the held connect's upstream socket: when the gateway closes it or
// it breaks, hold returns at once with upErr, the socket's end. o is set
// when the client went away.
func (c *conn) hold(until time.Time) (o *outcome, upErr error) {
	ctx, cancel := context.WithDeadline(c.ctx, until)
	defer cancel()
	stopWatch := c.watchUpstream(cancel)
	start := time.Now()
	err := c.h.watcher.WaitStarted(ctx)
	upErr = stopWatch()
	if c.ctx.Err() != nil {
		o := c.clientOutcome(c.ctx.Err())
		return &o, nil
	}
	why := "gateway started"
	switch {
	case upErr != nil:
		why = "upstream socket lost"
	case err != nil:
		why = "hold deadline; forwarding anyway"
	}
	c.h.log.Debug("hold ended", "client", c.rec.clientAddr, "connect", c.rec.connectWord(),
		"held", time.Since(start).Round(time.Millisecond), "why", why)
	return nil, upErr
}

// watchUpstream watches the current upstream socket, on which nothing is
// expected before the connect is sent, and calls wake when something
// arrives or the socket ends. The returned stop ends the watch and
// reports the socket's end (a read error), or nil when nothing came.
// A leg that cannot wait holding no buffer (wire.Conn.CanWait: not on a
// unix system) is not watched.
func (c *conn) watchUpstream(wake func()) (stop func() error) {
	bc := c.up.ws
	if !bc.CanWait() {
		return func() error { return nil }
	}
	var stopped atomic.Bool
	var fired bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := bc.WaitData()
		if err != nil && stopped.Load() {
			return // woken by stop's deadline
		}
		fired = true
		wake()
	}()
	return func() error {
		stopped.Store(true)
		_ = bc.SetReadDeadline(time.Now())
		<-done
		_ = bc.SetReadDeadline(time.Time{})
		if !fired {
			return nil
		}
		// Something arrived: the gateway's close, or the socket's end.
		_ = bc.SetReadDeadline(time.Now().Add(c.h.cfg.CloseGrace))
		_, _, err := bc.ReadMessage(maxUpstreamHandshakeFrame, nil)
		if err == nil {
			err = errors.New("gateway sent a frame before the connect")
		}
		return err
	}
}

// forwardConnect sends the client's connect on the current upstream socket
// and reads until the gateway answers it, at the latest at answerDeadline:
// a slow answer is waited for, never sent for again. Frames the gateway sends before its answer are returned
// in pre.
func (c *conn) forwardConnect(first frame, id json.RawMessage) (ans gwproto.Answer, data []byte, pre []frame, err error) {
	ws := c.up.ws
	stop := context.AfterFunc(c.ctx, func() { _ = ws.Close() })
	defer stop()
	if err := ws.WriteMessageBytes(first.typ, first.data, c.h.cfg.WriteTimeout); err != nil {
		return gwproto.Answer{}, nil, nil, err
	}
	_ = ws.SetReadDeadline(c.answerDeadline(time.Now()))
	for {
		mt, data, err := ws.ReadMessage(maxUpstreamHandshakeFrame, nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = errNoAnswer
			}
			return gwproto.Answer{}, nil, nil, err
		}
		if a := gwproto.ParseAnswer(data, id); a.IsResponse {
			if !a.HelloOK {
				_ = ws.SetReadDeadline(time.Time{})
			} // else the splice clears it (startSplice)
			return a, data, pre, nil
		}
		if len(pre) >= maxPendingFrames {
			return gwproto.Answer{}, nil, nil, errTooManyFrames
		}
		pre = append(pre, frame{mt, data})
	}
}

// clientConnectTimeout is how long current clients wait for hello-ok after
// sending their connect before they give up (4000 "connect timeout").
const clientConnectTimeout = 15 * time.Second

// answerDeadline is how long the gateway has to answer a connect sent at
// sent: until the budget ends or AnswerTimeout after sending, whichever is
// later, so that a gateway slow to answer within the budget is waited for
// (never sent the connect again); but never past the client's own connect
// timer, after which no answer is of use.
func (c *conn) answerDeadline(sent time.Time) time.Time {
	d := c.budget.Deadline()
	if t := sent.Add(c.h.cfg.AnswerTimeout); t.After(d) {
		d = t
	}
	if limit := c.connectAt.Add(clientConnectTimeout); d.After(limit) {
		d = limit
	}
	if floor := sent.Add(c.h.cfg.MinAttempt); d.Before(floor) {
		d = floor
	}
	return d
}

// maxUpstreamHandshakeFrame bounds a gateway frame before the splice
// (hello-ok is about 15 KB).
const maxUpstreamHandshakeFrame = 4 << 20

// upstreamFailed handles an upstream socket that failed before answering
// the connect. It returns nil when a fresh socket is ready for another
// attempt: a replayable connect is replayed after the socket was lost,
// with the dial back-off, at most maxConnectSends times in all.
func (c *conn) upstreamFailed(err error, kind gwproto.ConnectKind, attempt int, lastUnavailable []byte) *outcome {
	if c.ctx.Err() != nil {
		o := c.clientOutcome(err)
		return &o
	}
	if errors.Is(err, errNoAnswer) {
		return &outcome{end: endNoAnswer, err: err}
	}
	code := wire.CloseCode(err)
	switch {
	case errors.Is(err, errTooManyFrames):
		// A gateway that misbehaves once may not again: like a lost
		// socket, but no evidence that it is down.
		c.closeUpstream(websocket.FormatCloseMessage(websocket.CloseProtocolError, "too many frames before the connect's answer"))
	case code == 0, code == websocket.CloseAbnormalClosure, code == websocket.CloseServiceRestart, code == websocket.CloseGoingAway:
		// Gone, restarting or going away: nothing was processed, and the
		// client is still there: the gateway is down.
		c.h.watcher.Observe(retry.Down)
	case code == websocket.CloseTryAgainLater:
		// Draining: nothing was processed.
	default:
		// The gateway closed on the connect with a reason of its own.
		return &outcome{end: endGatewayClosed, err: err, args: []any{"code", code}}
	}
	c.up.drop()
	delay := c.h.backoff.Dial(attempt)
	if kind == gwproto.Replayable && attempt < maxConnectSends && c.budget.Allows(delay, c.h.cfg.MinAttempt) {
		c.h.metrics.Retry(metrics.RetryDial)
		c.h.log.Debug("upstream lost during the connect; retrying", "client", c.rec.clientAddr, "err", err, "delay", delay)
		return c.redial(delay, lastUnavailable)
	}
	if lastUnavailable != nil {
		return &outcome{end: endStartupUnavailable, err: err, frames: []frame{{websocket.TextMessage, lastUnavailable}}}
	}
	return &outcome{end: endUpstreamLost, err: err}
}

// heldSocketLost handles the socket of a held connect that ended before
// the connect was sent: nothing of the client's reached the gateway, so it
// is a lost socket, never the gateway's answer. The gateway closes an
// unauthenticated socket (1000, no reason) at its pre-auth timer, and
// holdfast forwards a held connect HoldMargin before PreauthTimeout; a
// close before then means the gateway's timer is shorter than
// handshake.preauth_timeout, a configuration mismatch logged once per
// handler. A replayable connect waits on a fresh socket (the dial
// back-off after the n-th loss, within the budget); a nonce-bound one,
// signed for this socket's challenge, cannot be sent on another: the
// client gets 1013 and reconnects.
func (c *conn) heldSocketLost(err error, kind gwproto.ConnectKind, n int, lastUnavailable []byte) *outcome {
	if c.ctx.Err() != nil {
		o := c.clientOutcome(err)
		return &o
	}
	age := time.Since(c.up.opened)
	if wire.CloseCode(err) == websocket.CloseNormalClosure && age < c.h.cfg.PreauthTimeout-c.h.cfg.HoldMargin {
		c.h.preauthMismatch.Do(func() {
			c.h.log.Warn("the gateway closed a held socket before holdfast sent its connect: its pre-auth timer "+
				"is shorter than handshake.preauth_timeout; set handshake.preauth_timeout to the gateway's",
				"closed_after", age.Round(time.Millisecond), "preauth_timeout", c.h.cfg.PreauthTimeout)
		})
	}
	c.up.drop()
	delay := c.h.backoff.Dial(n)
	if kind == gwproto.Replayable && c.budget.Allows(delay, c.h.cfg.MinAttempt) {
		c.h.log.Debug("held connect's socket lost before the connect; renewing", "client", c.rec.clientAddr, "err", err, "delay", delay)
		return c.redial(delay, lastUnavailable)
	}
	if lastUnavailable != nil {
		return &outcome{end: endStartupUnavailable, err: err, frames: []frame{{websocket.TextMessage, lastUnavailable}}}
	}
	return &outcome{end: endUpstreamLost, err: err}
}

// redial waits delay, then opens a fresh upstream socket for the next
// attempt. Its challenge is swallowed: the client has answered one already
// and ignores a second. It returns nil when the socket is ready.
func (c *conn) redial(delay time.Duration, lastUnavailable []byte) *outcome {
	if err := sleep(c.ctx, delay); err != nil {
		o := c.clientOutcome(err)
		return &o
	}
	up, err := c.h.dialUpstream(c.ctx, c.target, c.hdr, c.attr.Key(), c.budget)
	if err != nil {
		if c.ctx.Err() != nil {
			o := c.clientOutcome(err)
			return &o
		}
		if lastUnavailable != nil {
			return &outcome{end: endStartupUnavailable, err: err, frames: []frame{{websocket.TextMessage, lastUnavailable}}}
		}
		o := c.dialFailed(err, true)
		return &o
	}
	c.up = up
	return nil
}

// readUpstreamClose reads what the gateway still sends after refusing a
// connect, up to its close, and returns how the socket ended.
func (c *conn) readUpstreamClose() error {
	ws := c.up.ws
	_ = ws.SetReadDeadline(time.Now().Add(2 * c.h.cfg.CloseGrace))
	var err error
	for err == nil {
		_, _, err = ws.ReadMessage(maxUpstreamHandshakeFrame, nil)
	}
	return err
}

// closeClientGracefully waits up to CloseGrace for the client to answer the
// close frame already sent, then drops its socket.
func (c *conn) closeClientGracefully() {
	t := time.NewTimer(c.h.cfg.CloseGrace)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-t.C:
	}
	_ = c.client.Close()
}

func (c *conn) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// readClient reads the client's frames. Before the splice it queues them
// (at most maxPendingFrames, each within the pre-auth limit) for run; from
// the splice on it streams them to the upstream.
func (c *conn) readClient() (pumped bool) {
	for {
		if c.spliced.Load() { // between messages: the relay takes over
			c.pumpClient(nil)
			return true
		}
		// Block shallow; NextReader reports errors. The splice
		// interrupts the wait, for the relay to take over.
		if c.cw.WaitData() == wire.ErrInterrupted {
			continue
		}
		mt, r, err := c.client.NextReader()
		if c.spliced.Load() {
			// A message that arrives after hello-ok was sent is streamed,
			// whatever its size; pipelined ones came before and are small.
			if err != nil {
				c.endClientSide(err, true)
				return false
			}
			c.pumpClient(&message{typ: mt, r: r})
			return true
		}
		var data []byte
		if err == nil {
			data, err = wire.ReadAll(io.LimitReader(r, preauthReadLimit+1), c.h.chunks)
			if err == nil && len(data) > preauthReadLimit {
				err = errPreauthTooLarge
			}
		}
		c.mu.Lock()
		if c.spliced.Load() {
			// The splice began while this frame was read: the queue is
			// flushed, so this frame goes straight after it.
			c.mu.Unlock()
			if err == nil && c.maxPayload > 0 && int64(len(data)) > c.maxPayload {
				err = errTooBig
			}
			if err != nil {
				c.endClientSide(err, true)
				return false
			}
			if werr := c.up.ws.WriteMessageBytes(mt, data, c.h.cfg.WriteTimeout); werr != nil {
				c.endClientSide(werr, false)
				return false
			}
			c.pumpClient(nil)
			return true
		}
		if err == nil && len(c.queue) >= maxPendingFrames {
			err = errTooManyPending
		}
		var displaced []share.Displacement
		if err == nil {
			// What is held is the frame's allocation, not its length:
			// a frame read in pieces has room to spare, which a copy of
			// its own size gives back (size classes waste at most 1/8).
			if cap(data) > len(data)+len(data)/8 {
				data = bytes.Clone(data)
			}
			displaced, err = c.reservePreauth(cap(data))
		}
		if err != nil {
			c.readErr = err
			if c.cancel != nil {
				c.cancel()
			}
			c.mu.Unlock()
			c.h.displace(displaced)
			c.signal()
			return false
		}
		c.queue = append(c.queue, frame{mt, data})
		c.mu.Unlock()
		c.h.displace(displaced)
		c.signal()
	}
}

func (c *conn) onClientPing(data string) error {
	if c.spliced.Load() {
		_ = c.up.ws.WriteControl(websocket.PingMessage, []byte(data), time.Now().Add(c.h.cfg.WriteTimeout))
		return nil
	}
	_ = c.client.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.h.cfg.WriteTimeout))
	return nil
}

func (c *conn) onClientPong(data string) error {
	if c.spliced.Load() {
		_ = c.up.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.h.cfg.WriteTimeout))
	}
	return nil
}
