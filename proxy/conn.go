package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/retry"
)

// maxPendingFrames is how many client frames are held before hello-ok: the
// connect and at most 15 after it, as on the gateway, which closes 1008
// "too many pending handshake frames" on the 16th.
const maxPendingFrames = 1 + 15

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
// Before the splice, one goroutine (run) owns every write to the client and
// every read from the upstream; the client reader goroutine only queues the
// client's frames. After the splice, a goroutine of its own copies
// upstream→client and the reader copies client→upstream (splice.go).
type conn struct {
	h               *Handler
	*handshakeState // nil once spliced: an idle session keeps only what it uses

	client *websocket.Conn
	up     *upstream // the current upstream socket; fixed once spliced

	// cancel ends ctx (the handshake's) when the client goes away before
	// the splice; nil after it. Guarded by mu.
	cancel context.CancelFunc

	mu         sync.Mutex
	queue      []frame       // client frames not yet forwarded
	readErr    error         // the client reader's error before the splice
	notify     chan struct{} // signalled (cap 1) when queue or readErr change
	spliced    atomic.Bool   // set once, under mu, after the queue was flushed
	maxPayload int64         // client message limit after hello-ok
	bridged    bool          // gateway frames pass the protocol-3 filter (bridge.go)

	readerDone   chan struct{}
	preauthBytes int // bytes of queued frames reserved in h.limits; guarded by mu
}

// handshakeState is the state only the handshake needs. Only the handler
// goroutine touches it.
type handshakeState struct {
	r          *http.Request
	clientAddr string      // for logs
	kind       connectKind // of the client's first frame
	start      time.Time
	budget     retry.Budget
	attr       attribution
	hdr        http.Header // the upstream upgrade request's headers
	target     string      // the upstream URL for this client
	ctx        context.Context

	// helloFrames are what the gateway sent up to and including hello-ok;
	// they reach the client once the splice is in place.
	helloFrames []frame
	resultSent  bool
	// legacy is set when the connect was rewritten for the bridge.
	legacy *legacyConnect
}

func (h *Handler) serveControl(w http.ResponseWriter, r *http.Request) {
	h.wg.Add(1)
	defer h.wg.Done()
	if !h.Ready() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "holdfast is shutting down", http.StatusServiceUnavailable)
		return
	}
	c := &conn{
		h: h,
		handshakeState: &handshakeState{
			r:      r,
			start:  time.Now(),
			budget: retry.NewBudget(h.clock, h.cfg.Budget),
			attr:   h.attribute(r),
		},
		notify: make(chan struct{}, 1),
	}
	defer c.freePreauth() // the queue is flushed or dropped by the time this returns
	c.clientAddr = r.RemoteAddr
	c.hdr = upstreamHeader(r)
	c.target = h.upstreamURL(r)
	applyForwarding(c.hdr, c.attr, r)
	splice, maxPayload := c.run(w)
	if !splice {
		c.release()
		return
	}
	// The session outlives this handler: once spliced, its directions run
	// on goroutines with small stacks, and the HTTP server's connection
	// state and this goroutine's deep handshake stack are freed.
	helloFrames := c.helloFrames
	c.handshakeState = nil
	// The handshake context: nothing waits on it any more.
	c.mu.Lock()
	c.cancel()
	c.cancel = nil
	c.mu.Unlock()
	c.splice(maxPayload, helloFrames, c.release)
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

// upstreamHeader copies the client's upgrade request headers for the
// upstream dial: end-to-end headers (Origin, Cookie, User-Agent,
// Authorization, subprotocols…) and Host unchanged; hop-by-hop headers and
// the WebSocket key exchange, which the dialer makes itself, dropped.
func upstreamHeader(r *http.Request) http.Header {
	out := r.Header.Clone()
	for _, f := range out.Values("Connection") {
		for _, tok := range splitTokens(f) {
			out.Del(tok)
		}
	}
	for _, k := range []string{
		"Connection", "Upgrade", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding",
		"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Sec-Websocket-Accept",
	} {
		out.Del(k)
	}
	out.Set("Host", r.Host)
	return out
}

func (c *conn) finish(res metrics.Result, msg string, args ...any) {
	if c.resultSent {
		return
	}
	c.resultSent = true
	d := time.Since(c.start)
	c.h.metrics.Handshake(res, d)
	args = append(args, "client", c.clientAddr, "connect", c.kind.String(),
		"result", string(res), "duration", d.Round(time.Millisecond))
	if res == metrics.ResultOK {
		c.h.log.Debug(msg, args...)
	} else {
		c.h.log.Info(msg, args...)
	}
}

// run takes the connection through its handshake. It returns true when the
// session is to be spliced, with the client message limit to apply.
func (c *conn) run(w http.ResponseWriter) (splice bool, maxPayload int64) {
	// 1. An upstream socket with its challenge, before the client sees a
	// 101: a browser waits only 750 ms for the challenge after open.
	// Clients that wait longer are dialled late while the gateway starts
	// (latedial.go).
	late := c.dialLate()
	var respHdr http.Header
	if !late {
		up, err := c.h.dialUpstream(c.r.Context(), c.target, c.hdr, c.attr.key(), c.budget)
		if err != nil {
			c.failDial(w, err)
			return false, 0
		}
		c.up = up
		if up.protocol != "" {
			respHdr = http.Header{"Sec-Websocket-Protocol": {up.protocol}}
		}
	}

	// 2. Upgrade the client and relay the challenge at once.
	client, err := c.h.upgrader.Upgrade(w, c.r, respHdr)
	if err != nil {
		c.up.close(closeClientGone, "client upgrade failed")
		c.finish(metrics.ResultError, "client upgrade failed", "err", err)
		return false, 0
	}
	c.client = client
	defer c.h.trackHandshake(c)() // reached by a stop at once (drain.go)
	if bc, ok := client.NetConn().(*batchConn); ok {
		bc.frameMode()
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	client.SetReadLimit(c.h.cfg.MaxMessageBytes)
	client.SetPingHandler(c.onClientPing)
	client.SetPongHandler(c.onClientPong)
	c.readerDone = make(chan struct{})
	go c.readClient()
	if late && !c.lateDial() {
		return false, 0
	}

	if err := c.writeClient(websocket.TextMessage, c.up.challenge); err != nil {
		c.abort(metrics.ResultClientGone, "client went away before the challenge", err)
		return false, 0
	}
	c.up.challenge = nil

	// 3. The client's first frame.
	first, err := c.awaitFirst()
	if err != nil {
		return false, 0 // awaitFirst finished the connection
	}
	kind, id := classifyConnect(first.data)
	c.kind = kind
	if kind == notConnect {
		// Not something holdfast understands: the gateway answers it.
		c.finish(metrics.ResultRejected, "client's first frame is not a connect; passed to the gateway")
		return true, 0
	}

	first = c.bridgeConnect(first)

	// 4. Hold, forward, retry.
	if c.handshake(first, kind, id) {
		return true, c.maxPayload
	}
	return false, 0
}

// failDial answers an upgrade that never reached an upstream challenge.
func (c *conn) failDial(w http.ResponseWriter, err error) {
	var he *httpError
	var be *budgetError
	switch {
	case errors.Is(err, context.Canceled) || c.r.Context().Err() != nil:
		c.finish(metrics.ResultClientGone, "client left while the gateway was unreachable", "err", err)
	case errors.As(err, &he):
		// The gateway's own refusal (403 attribution, 401, 404…): pass it on.
		for _, k := range []string{"Content-Type", "Retry-After", "Www-Authenticate", "Cache-Control"} {
			if v := he.header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(he.status)
		_, _ = w.Write(he.body)
		c.finish(metrics.ResultRejected, "gateway refused the upgrade", "status", he.status)
	case errors.As(err, &be):
		w.Header().Set("Retry-After", "1")
		http.Error(w, "holdfast: gateway unavailable", http.StatusServiceUnavailable)
		c.finish(metrics.ResultUnavailable, "gateway unreachable within the budget", "err", be.last)
	default:
		http.Error(w, "holdfast: bad gateway", http.StatusBadGateway)
		c.finish(metrics.ResultError, "upstream handshake failed", "err", err)
	}
}

// abort ends a connection before the splice: both sockets closed, the
// client's with code 1011 unless it is the one that left.
func (c *conn) abort(res metrics.Result, msg string, err error) {
	if res != metrics.ResultClientGone {
		closeLeg(c.client, websocket.FormatCloseMessage(closeUpstreamLost, "holdfast: "+msg), time.Second)
	}
	c.up.close(closeClientGone, "client gone")
	_ = c.client.Close()
	c.finish(res, msg, "err", err)
}

// writeClient writes one message to the client within the write timeout.
// Only run calls it, and only before the splice.
func (c *conn) writeClient(typ int, data []byte) error {
	_ = c.client.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
	return c.client.WriteMessage(typ, data)
}

// awaitFirst waits for the client's first frame. The gateway's pre-auth
// timer runs meanwhile: a client silent until shortly before it fires is
// closed 1008 by holdfast rather than 1000 with no reason by the gateway.
func (c *conn) awaitFirst() (frame, error) {
	deadline := c.up.opened.Add(c.h.cfg.PreauthTimeout - c.h.cfg.HoldMargin)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		c.mu.Lock()
		q, rerr := c.queue, c.readErr
		c.mu.Unlock()
		if len(q) > 0 {
			return q[0], nil
		}
		if rerr != nil {
			c.clientFailed(rerr)
			return frame{}, rerr
		}
		select {
		case <-c.notify:
		case <-t.C:
			closeLeg(c.client, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "connect timeout"), time.Second)
			c.up.close(websocket.CloseNormalClosure, "")
			_ = c.client.Close()
			c.finish(metrics.ResultError, "client sent no connect before the gateway's pre-auth timeout")
			return frame{}, errors.New("connect timeout")
		}
	}
}

// clientFailed ends the connection after the client reader failed before
// the splice: the client left, or sent something holdfast must refuse.
func (c *conn) clientFailed(err error) {
	switch {
	case errors.Is(err, errPreauthTooLarge):
		closeLeg(c.client, websocket.FormatCloseMessage(websocket.CloseMessageTooBig, "preauth payload too large"), time.Second)
		c.up.close(closeClientGone, "client gone")
		drain(c.client, c.h.cfg.CloseGrace)
		_ = c.client.Close()
		c.finish(metrics.ResultError, "client frame over the pre-auth limit")
	case errors.Is(err, errTooManyPending):
		closeLeg(c.client, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "too many pending handshake frames"), time.Second)
		c.up.close(closeClientGone, "client gone")
		_ = c.client.Close()
		c.finish(metrics.ResultError, "client sent too many frames before hello-ok")
	case errors.Is(err, errPreauthBudget):
		c.h.metrics.Refused(metrics.LimitPreauthBytes)
		closeLeg(c.client, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "holdfast overloaded; retry shortly"), time.Second)
		c.up.close(closeClientGone, "client gone")
		drain(c.client, c.h.cfg.CloseGrace)
		_ = c.client.Close()
		c.finish(metrics.ResultError, "client frame over holdfast's global pre-auth buffer (limits.preauth_bytes)")
	default:
		c.abort(metrics.ResultClientGone, "client went away during the handshake", err)
	}
}

var (
	errPreauthTooLarge = errors.New("client frame over the pre-auth limit")
	errTooManyPending  = errors.New("too many pending handshake frames")
)

// handshake runs the connect until hello-ok (true: splice) or a final answer
// was passed to the client (false).
func (c *conn) handshake(first frame, kind connectKind, id json.RawMessage) bool {
	held := false
	var lastUnavailable []byte
	for attempt := 1; ; attempt++ {
		if c.mustHold(kind) {
			if !held {
				held = true
				c.h.metrics.Hold()
			}
			until := c.up.opened.Add(c.h.cfg.PreauthTimeout - c.h.cfg.HoldMargin)
			if bd := c.budget.Deadline(); bd.Before(until) {
				until = bd
			}
			if err := c.hold(until); err != nil {
				c.clientFailedOr(err)
				return false
			}
		}
		ans, data, pre, err := c.forwardConnect(first, id)
		if err != nil {
			if !c.upstreamLost(err, kind, attempt, &lastUnavailable) {
				return false
			}
			continue
		}
		switch {
		case ans.helloOK:
			c.h.watcher.Observe(retry.Started)
			c.up.authenticated()
			c.maxPayload = ans.maxPayload
			c.mu.Lock()
			c.queue = c.queue[1:] // the connect itself was sent
			c.mu.Unlock()
			c.helloFrames = append(pre, frame{websocket.TextMessage, data})
			c.startBridge(ans.protocol)
			c.finish(metrics.ResultOK, "handshake done", "attempts", attempt, "held", held)
			return true

		case ans.startup:
			c.h.watcher.Observe(retry.Starting)
			lastUnavailable = data
			delay := c.h.backoff.RetryAfter(retry.ClampRetryAfter(ans.retryAfterMs))
			if kind != replayable || !c.budget.Allows(delay, c.h.cfg.MinAttempt) {
				c.passUnavailable(data, attempt)
				return false
			}
			c.h.metrics.Retry(metrics.RetryStartupUnavailable)
			c.up.close(websocket.CloseNormalClosure, "")
			if !c.redial(delay, lastUnavailable, attempt) {
				return false
			}

		default:
			// The gateway's own answer (auth, pairing, protocol…): pass it
			// through with the close that follows it.
			for _, f := range pre {
				_ = c.writeClient(f.typ, f.data)
			}
			_ = c.writeClient(websocket.TextMessage, data)
			c.relayUpstreamClose()
			c.finish(metrics.ResultRejected, "gateway rejected the connect", "attempts", attempt)
			return false
		}
	}
}

// notStartedTrust is how long an observation that the gateway is not started
// makes holdfast hold replayable connects too, instead of sending them to be
// refused.
const notStartedTrust = 5 * time.Second

// mustHold decides whether a connect waits for the gateway to start before
// it is forwarded. A nonce-bound connect is forwarded only on a fresh
// confirmation that the gateway has started: refused once, it cannot be
// replayed. A replayable one waits only while the gateway is known not to
// have started; otherwise it goes at once and is replayed if refused.
func (c *conn) mustHold(kind connectKind) bool {
	if c.h.watcher.Started() {
		return false
	}
	if kind == nonceBound {
		return true
	}
	s, age := c.h.watcher.State()
	return (s == retry.Starting || s == retry.Down) && age < notStartedTrust
}

// hold waits until the gateway is confirmed started or until. It returns an
// error only when the client went away.
func (c *conn) hold(until time.Time) error {
	ctx, cancel := context.WithDeadline(c.ctx, until)
	defer cancel()
	start := time.Now()
	err := c.h.watcher.WaitStarted(ctx)
	if c.ctx.Err() != nil {
		return c.ctx.Err()
	}
	why := "gateway started"
	if err != nil {
		why = "hold deadline; forwarding anyway"
	}
	c.h.log.Debug("hold ended", "client", c.clientAddr, "connect", c.kind.String(),
		"held", time.Since(start).Round(time.Millisecond), "why", why)
	return nil
}

// clientFailedOr finishes the connection after the client went away.
func (c *conn) clientFailedOr(err error) {
	c.mu.Lock()
	rerr := c.readErr
	c.mu.Unlock()
	if rerr == nil {
		rerr = err
	}
	c.clientFailed(rerr)
}

// forwardConnect sends the client's connect on the current upstream socket
// and reads until the gateway answers it. Frames the gateway sends before
// its answer are returned in pre.
func (c *conn) forwardConnect(first frame, id json.RawMessage) (ans answer, data []byte, pre []frame, err error) {
	ws := c.up.ws
	stop := context.AfterFunc(c.ctx, func() { _ = ws.Close() })
	defer stop()
	_ = ws.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
	if err := ws.WriteMessage(first.typ, first.data); err != nil {
		return answer{}, nil, nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(c.h.cfg.AnswerTimeout))
	ws.SetReadLimit(maxUpstreamHandshakeFrame)
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			return answer{}, nil, nil, err
		}
		if a := parseAnswer(data, id); a.isResponse {
			_ = ws.SetReadDeadline(time.Time{})
			return a, data, pre, nil
		}
		if len(pre) >= maxPendingFrames {
			return answer{}, nil, nil, errors.New("gateway sent too many frames before answering connect")
		}
		pre = append(pre, frame{mt, data})
	}
}

// maxUpstreamHandshakeFrame bounds a gateway frame before the splice
// (hello-ok is about 15 KB).
const maxUpstreamHandshakeFrame = 4 << 20

// upstreamLost handles an upstream socket that failed before answering the
// connect. It returns true when a fresh socket is ready for another attempt.
func (c *conn) upstreamLost(err error, kind connectKind, attempt int, lastUnavailable *[]byte) bool {
	if c.ctx.Err() != nil {
		c.clientFailedOr(err)
		return false
	}
	code := closeCode(err)
	switch code {
	case 0, websocket.CloseAbnormalClosure, websocket.CloseServiceRestart, websocket.CloseTryAgainLater:
		// Gone, restarting or draining: nothing was processed.
	default:
		// The gateway closed on the connect with a reason of its own.
		c.up.close(websocket.CloseNormalClosure, "")
		closeLeg(c.client, wireClose(err, closeUpstreamLost, "upstream connection lost"), time.Second)
		c.closeClientGracefully()
		c.finish(metrics.ResultRejected, "gateway closed on the connect", "code", code, "attempts", attempt)
		return false
	}
	c.h.watcher.Observe(retry.Down)
	c.up.close(websocket.CloseNormalClosure, "")
	delay := c.h.backoff.Dial(1)
	if kind == replayable && c.budget.Allows(delay, c.h.cfg.MinAttempt) {
		c.h.metrics.Retry(metrics.RetryDial)
		c.h.log.Debug("upstream lost during the connect; retrying", "client", c.clientAddr, "err", err)
		return c.redial(delay, *lastUnavailable, attempt)
	}
	if *lastUnavailable != nil {
		c.passUnavailable(*lastUnavailable, attempt)
		return false
	}
	payload := websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "gateway unavailable")
	if code == websocket.CloseServiceRestart {
		payload = wireClose(err, websocket.CloseTryAgainLater, "gateway unavailable")
	}
	closeLeg(c.client, payload, time.Second)
	c.closeClientGracefully()
	c.finish(metrics.ResultUnavailable, "upstream lost during the connect", "err", err, "attempts", attempt)
	return false
}

// passUnavailable gives the client the gateway's own startup UNAVAILABLE
// frame and closes 1013 "gateway starting", on which current clients
// reconnect.
func (c *conn) passUnavailable(data []byte, attempt int) {
	c.up.close(websocket.CloseNormalClosure, "")
	if err := c.writeClient(websocket.TextMessage, data); err == nil {
		closeLeg(c.client, websocket.FormatCloseMessage(startupCloseCode, startupCloseReason), time.Second)
	}
	c.closeClientGracefully()
	c.finish(metrics.ResultUnavailable, "gateway still starting; passed its UNAVAILABLE on", "attempts", attempt)
}

// redial waits delay, then opens a fresh upstream socket for the next
// attempt. Its challenge is swallowed: the client has answered one already
// and ignores a second. It returns false when the connection ended.
func (c *conn) redial(delay time.Duration, lastUnavailable []byte, attempt int) bool {
	if err := sleep(c.ctx, delay); err != nil {
		c.clientFailedOr(err)
		return false
	}
	up, err := c.h.dialUpstream(c.ctx, c.target, c.hdr, c.attr.key(), c.budget)
	if err != nil {
		if c.ctx.Err() != nil {
			c.clientFailedOr(err)
			return false
		}
		if lastUnavailable != nil {
			c.passUnavailable(lastUnavailable, attempt)
			return false
		}
		closeLeg(c.client, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "gateway unavailable"), time.Second)
		c.closeClientGracefully()
		c.finish(metrics.ResultUnavailable, "gateway unreachable within the budget", "err", err, "attempts", attempt)
		return false
	}
	c.up = up
	return true
}

// relayUpstreamClose passes on the close the gateway sends after refusing a
// connect.
func (c *conn) relayUpstreamClose() {
	ws := c.up.ws
	_ = ws.SetReadDeadline(time.Now().Add(2 * c.h.cfg.CloseGrace))
	var err error
	for err == nil {
		_, _, err = ws.ReadMessage()
	}
	c.up.close(websocket.CloseNormalClosure, "")
	closeLeg(c.client, wireClose(err, websocket.ClosePolicyViolation, "connect failed"), time.Second)
	c.closeClientGracefully()
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
func (c *conn) readClient() {
	defer close(c.readerDone)
	bc, _ := c.client.NetConn().(*batchConn)
	for {
		if bc != nil {
			_ = bc.waitData() // block shallow; NextReader reports errors
		}
		mt, r, err := c.client.NextReader()
		if c.spliced.Load() {
			// A message that arrives after hello-ok was sent is streamed,
			// whatever its size; pipelined ones came before and are small.
			if err != nil {
				c.endClientSide(err, true)
				return
			}
			c.pumpClient(&message{typ: mt, r: r})
			return
		}
		var data []byte
		if err == nil {
			data, err = io.ReadAll(io.LimitReader(r, preauthReadLimit+1))
			if err == nil && len(data) > preauthReadLimit {
				err = errPreauthTooLarge
			}
		}
		c.mu.Lock()
		if c.spliced.Load() {
			// The splice began while this frame was read: the queue is
			// flushed, so this frame goes straight after it.
			c.mu.Unlock()
			if err != nil {
				c.endClientSide(err, true)
				return
			}
			_ = c.up.ws.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteTimeout))
			if werr := c.up.ws.WriteMessage(mt, data); werr != nil {
				c.endClientSide(werr, false)
				return
			}
			c.pumpClient(nil)
			return
		}
		if err == nil && len(c.queue) >= maxPendingFrames {
			err = errTooManyPending
		}
		if err == nil {
			err = c.reservePreauth(len(data))
		}
		if err != nil {
			c.readErr = err
			if c.cancel != nil {
				c.cancel()
			}
			c.mu.Unlock()
			c.signal()
			return
		}
		c.queue = append(c.queue, frame{mt, data})
		c.mu.Unlock()
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
