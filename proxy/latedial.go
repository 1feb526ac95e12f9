package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/uuid"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
	"github.com/holdfast-proxy/holdfast/retry"
)

// The late dial: the gateway's pre-auth timer starts when holdfast opens the
// upstream socket, and a device-signed connect can be held only on the
// socket whose challenge it signed, so holding alone absorbs windows up to
// that timer (15 s) at most. Clients that wait long for their challenge
// (every non-browser client: 15 s for current Node clients, 10 s for the
// 2026.4.27 CLI, no limit for openclaw-node) can instead be upgraded at
// once and given their challenge late: once the gateway has started, or
// when waiting longer would let the client's own challenge timer fire.
// Meanwhile holdfast keeps a warm upstream socket for the client and
// keeps its challenge (lateDial), replacing the socket before the
// gateway's pre-auth timer closes it, so that after the window only the
// client's connect and hello-ok remain. Browsers send an Origin header and
// give up on the challenge after 750 ms: they are always dialled first.

// dialInputFor describes the client's request and the watcher's state.
func (c *conn) dialInputFor(waited time.Duration) retry.DialInput {
	s, age := c.h.watcher.State()
	return retry.DialInput{
		Browser:      c.r.Header.Get("Origin") != "",
		Subprotocols: len(websocket.Subprotocols(c.r)) > 0,
		State:        s,
		Age:          age,
		Waited:       waited,
		Blind:        c.h.watcher.Blind(),
	}
}

// dialLate reports whether this client is to be upgraded before its
// upstream socket is opened.
func (c *conn) dialLate() bool {
	return !retry.DecideDial(c.dialInputFor(0), c.h.dialPolicy()).Dial
}

// lateDial runs the late dial, with the client already upgraded: it
// returns nil once the client is to get its challenge now, c.up's (or,
// with c.up nil, c.standIn's), else the connection's outcome (the client
// left, or the gateway refused it).
//
// The client's challenge is what waits, not its upstream socket: while
// retry.DecideDial says wait, holdfast keeps a warm socket open for the client
// (taken in line like any other, so the per-address limit holds), reads
// its challenge and keeps it. The gateway's pre-auth timer runs on that
// socket, so before it nears the timer (warmRenewAge) the socket is closed
// and a fresh one opened in its admission slot; a socket the gateway
// closes first is replaced too (it is looked at every warmCheckEvery, and
// before its challenge is handed out). Nothing has been signed or sent on a
// warm socket, so replacing it sends the gateway no connect. When the
// gateway has started the client gets the warm socket's challenge at once,
// and only its connect and hello-ok remain. When the client's challenge
// is due while the gateway is still starting (MaxWait after its arrival),
// it gets the challenge of a socket opened handOutLead before then (in a
// slot of its own, the warm socket kept until it has its challenge), so
// that its challenge is ready on time and its connect can be held for
// about the whole pre-auth timer; if that socket has no challenge by then,
// the warm socket's is handed out, on time. While the gateway is freshly
// seen down no socket is opened (the readiness watcher's probes say when
// it is back), and a client whose challenge is due with no gateway socket
// to be had gets a stand-in challenge (standin.go).
//
// From the moment the challenge is due (or the gateway has started) the
// client's handshake has handshake.budget, as a client dialled first has
// from its arrival: a late-dialled client is held at most MaxWait +
// Budget.
func (c *conn) lateDial() *outcome {
	pol := c.h.dialPolicy()
	due := c.rec.start.Add(pol.MaxWait)
	counted := false
	kept := false // the challenge was kept back at least once
	var (
		d        retry.DialDecision
		waited   time.Duration
		failures int       // warm dials that failed in a row
		nextWarm time.Time // no warm dial before then
		early    bool      // the socket for the hand-out was tried
	)
	for {
		waited = time.Since(c.rec.start)
		d = retry.DecideDial(c.dialInputFor(waited), pol)
		if d.Dial {
			break
		}
		kept = true
		if (d.Reason == retry.WaitStarting || d.Reason == retry.WaitDown) && !counted {
			counted = true
			c.h.metrics.DialDelayed()
		}
		warmable := c.up == nil && d.Reason != retry.WaitDown
		if warmable && !time.Now().Before(nextWarm) {
			if failures > 0 {
				c.h.metrics.Retry(metrics.RetryDial)
			}
			if o := c.warmDial(pol.MaxWait - waited); o != nil {
				return o
			}
			if c.up != nil {
				failures = 0
			} else {
				failures++
				nextWarm = time.Now().Add(c.h.backoff.Dial(failures))
			}
			continue // the dial took time: decide again
		}
		var handOutAt time.Time // when the socket for the hand-out is to be opened
		if c.up != nil && !early {
			handOutAt = due.Add(-c.handOutLead())
			if !c.up.opened.Before(handOutAt) {
				handOutAt = time.Time{} // the warm socket is that recent already
			} else if !time.Now().Before(handOutAt) {
				early = true
				c.openForHandOut(due)
				continue
			}
		}
		now := time.Now()
		wake := now.Add(d.Wait)
		switch {
		case c.up != nil:
			wake = earliest(wake, c.up.opened.Add(c.h.warmRenewAge()))
			wake = earliest(wake, now.Add(c.h.warmCheckEvery()))
			wake = earliest(wake, handOutAt)
		case warmable:
			wake = earliest(wake, nextWarm)
		}
		started, o := c.waitStarted(wake)
		if o != nil {
			return o
		}
		if started {
			d = retry.DialDecision{Dial: true, Reason: retry.DialStarted}
			break
		}
		if c.up != nil && wire.PeerSpoke(c.up.ws) {
			c.warmLost()
			failures++
			nextWarm = time.Now().Add(c.h.backoff.Dial(failures))
		}
		if c.up != nil && time.Since(c.up.opened) >= c.h.warmRenewAge() {
			c.renewWarm(metrics.RenewPreauthTimer)
		}
	}
	if kept && !counted && c.h.watcher.SeenNotStartedSince(c.rec.start) {
		// Kept back first for want of word of the gateway, which a probe
		// then found starting (or down) and later started, all before
		// this client looked again: it waited for the start all the same.
		c.h.metrics.DialDelayed()
	}
	c.h.log.Debug("late dial", "client", c.rec.clientAddr, "waited", waited.Round(time.Millisecond), "why", string(d.Reason), "warm", c.up != nil)
	c.budget = retry.NewBudget(retry.SystemClock{}, c.h.cfg.Budget)
	if c.up != nil && wire.PeerSpoke(c.up.ws) {
		c.warmLost() // closed since the last look
	}
	if c.up != nil && time.Since(c.up.opened) >= c.h.warmRenewAge() {
		c.renewWarm(metrics.RenewPreauthTimer)
	}
	if c.up != nil {
		return nil
	}
	if d.Reason == retry.DialClientLimit {
		return c.dueWithoutSocket()
	}
	up, err := c.h.dialUpstream(c.ctx, c.target, c.hdr, c.attr.Key(), c.budget)
	if err != nil {
		// The client has its 101 already: an HTTP answer becomes a close.
		o := c.dialFailed(err, true)
		o.args = append(o.args, "waited", waited.Round(time.Millisecond))
		return &o
	}
	c.up = up
	return nil
}

// handOutLead is how long before a client's challenge is due the socket
// whose challenge it is to get is opened: the time the warm socket's dial
// took to deliver its challenge, half as much again (at least min_attempt)
// for a gateway that slows down, at most dial_timeout.
func (c *conn) handOutLead() time.Duration {
	var took time.Duration
	if c.up != nil {
		took = c.up.took
	}
	return min(took+max(took/2, c.h.cfg.MinAttempt), c.h.cfg.DialTimeout)
}

// openForHandOut opens, in an admission slot of its own, the socket whose
// challenge the client is to get at due, with the warm socket still open.
// When it has its challenge by due, the warm socket is closed unused and
// the fresh one takes its place; otherwise the warm socket stays, and its
// challenge is handed out on time.
func (c *conn) openForHandOut(due time.Time) {
	budget := retry.NewBudget(retry.SystemClock{}, max(time.Until(due), c.h.cfg.MinAttempt))
	up, err := c.h.dialOnce(c.ctx, c.target, c.hdr, c.attr.Key(), budget)
	if err != nil {
		if c.ctx.Err() == nil {
			c.h.noteDialFailure(err)
		}
		c.h.log.Debug("upstream socket for the challenge failed; the warm socket's is kept", "client", c.rec.clientAddr, "err", err)
		return
	}
	old := c.up
	old.close(websocket.CloseNormalClosure, "")
	c.up = up
	c.h.metrics.Renewal(metrics.RenewChallengeDue)
	c.h.log.Debug("warm upstream socket renewed", "client", c.rec.clientAddr, "age", time.Since(old.opened).Round(time.Millisecond),
		"why", string(metrics.RenewChallengeDue), "took", up.took.Round(time.Millisecond))
}

// dueWithoutSocket: the client's challenge is due, the gateway has not
// started, and no warm socket is open (the gateway is down, or refused
// them). One dial gets handOutLead to deliver a challenge; when it fails
// for a reason worth retrying, the client gets a stand-in challenge
// (standin.go) rather than none before its own challenge timer.
func (c *conn) dueWithoutSocket() *outcome {
	up, err := c.h.dialOnce(c.ctx, c.target, c.hdr, c.attr.Key(), retry.NewBudget(retry.SystemClock{}, c.handOutLead()))
	if err == nil {
		c.up = up
		return nil
	}
	if c.ctx.Err() != nil {
		o := c.clientOutcome(err)
		return &o
	}
	var he *httpError
	if errors.As(err, &he) && !he.retryable() {
		o := c.dialFailed(err, true)
		return &o
	}
	c.h.noteDialFailure(err)
	c.standIn = gwproto.NewChallenge(uuid.New(), time.Now(), c.h.caps.get())
	c.h.metrics.StandIn()
	c.h.log.Debug("no gateway socket when the challenge was due; stand-in challenge", "client", c.rec.clientAddr, "err", err)
	return nil
}

// afterStandIn answers or carries on a connect that answered a stand-in
// challenge (standin.go): a device-signed one gets the gateway's startup
// UNAVAILABLE at once, since no gateway socket will take it; anything else
// is sent on a gateway socket dialled now within the budget (its challenge
// swallowed), and a replayable connect gets the same UNAVAILABLE when none
// can be had. It returns nil when c.up is ready for the first frame.
func (c *conn) afterStandIn(kind gwproto.ConnectKind, id json.RawMessage) *outcome {
	unavailable := []frame{{websocket.TextMessage, nil}}
	if kind == gwproto.NonceBound {
		unavailable[0].data = gwproto.StartupUnavailable(id)
		return &outcome{end: endStandInUnavailable, frames: unavailable}
	}
	up, err := c.h.dialUpstream(c.ctx, c.target, c.hdr, c.attr.Key(), c.budget)
	if err != nil {
		if c.ctx.Err() != nil {
			o := c.clientOutcome(err)
			return &o
		}
		var be *budgetError
		if kind == gwproto.Replayable && errors.As(err, &be) {
			unavailable[0].data = gwproto.StartupUnavailable(id)
			return &outcome{end: endStandInUnavailable, err: be.last, frames: unavailable}
		}
		o := c.dialFailed(err, true)
		return &o
	}
	up.challenge = nil // the client answered holdfast's
	c.up = up
	return nil
}

// earliest returns the earlier of a and b, ignoring a zero b.
func earliest(a, b time.Time) time.Time {
	if !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// warmRenewAge is the age at which a warm socket is replaced while the
// gateway is still starting: 2 × hold_margin before the gateway's
// pre-auth timer (12 s by default), at least half of it. A socket released
// just before that age leaves the client hold_margin to answer its
// challenge (awaitFirst) and its connect hold_margin to be answered.
func (h *Handler) warmRenewAge() time.Duration {
	return max(h.cfg.PreauthTimeout-2*h.cfg.HoldMargin, h.cfg.PreauthTimeout/2)
}

// warmDial makes one attempt at a warm socket for a client whose challenge
// is due in left. Waiting in line for an admission slot may take until the
// client's budget after that ends, as a dial at that moment would. A
// retryable failure leaves c.up nil (the caller tries again later); an
// answer the gateway would give this client anyway (a refusal of its
// upgrade), a budget spent in line or the client leaving end the
// connection with their outcome.
func (c *conn) warmDial(left time.Duration) *outcome {
	budget := retry.NewBudget(retry.SystemClock{}, max(left, 0)+c.h.cfg.Budget)
	up, err := c.h.dialOnce(c.ctx, c.target, c.hdr, c.attr.Key(), budget)
	if err == nil {
		c.up = up
		return nil
	}
	if c.ctx.Err() != nil {
		o := c.clientOutcome(err)
		return &o
	}
	var he *httpError
	var be *budgetError
	if (errors.As(err, &he) && !he.retryable()) || errors.As(err, &be) {
		o := c.dialFailed(err, true)
		return &o
	}
	c.h.noteDialFailure(err)
	c.h.log.Debug("warm upstream dial failed", "client", c.rec.clientAddr, "err", err)
	return nil
}

// warmCheckEvery is how often a waiting client's warm socket is looked at
// (wire.PeerSpoke): hold_margin, at most a second. A look costs one system
// call, and nothing runs for the socket in between: a warm socket the
// gateway closes is replaced within that time, and in any case before its
// challenge is handed out.
func (h *Handler) warmCheckEvery() time.Duration {
	return min(h.cfg.HoldMargin, time.Second)
}

// waitStarted waits until the gateway is confirmed started (started) or
// until. o is set when the client went away.
func (c *conn) waitStarted(until time.Time) (started bool, o *outcome) {
	ctx, cancel := context.WithDeadline(c.ctx, until)
	defer cancel()
	err := c.h.watcher.WaitStarted(ctx)
	if err != nil && ctx.Err() == nil && !errors.Is(err, retry.ErrNoReadiness) {
		<-ctx.Done() // a closed watcher answers at once: no spinning
	}
	if c.ctx.Err() != nil {
		o := c.clientOutcome(c.ctx.Err())
		return false, &o
	}
	return err == nil, nil
}

// warmLost drops a warm socket that the gateway closed, sent something on
// (nothing is expected before the connect) or that broke. Its close is not
// read, so it is no evidence of the gateway's state: the readiness probes
// tell.
func (c *conn) warmLost() {
	c.h.log.Debug("warm upstream socket lost", "client", c.rec.clientAddr, "age", time.Since(c.up.opened).Round(time.Millisecond))
	c.h.metrics.Renewal(metrics.RenewGatewayClosed)
	c.up.drop()
	c.up = nil
}

// renewWarm closes the warm socket and opens a fresh one in its admission
// slot. Nothing was sent on the old one, so the gateway never sees a
// connect twice. The fresh socket is opened once the gateway has answered
// the old one's close (waiting at most min_attempt), so that it has
// counted the old socket out of its per-address limit first. When the
// fresh dial fails, c.up is nil and the slot is given back.
func (c *conn) renewWarm(r metrics.RenewReason) {
	old := c.up
	slot := old.release
	old.release = nil // the slot passes to the fresh socket
	if closeLeg(old.ws, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), closeTimeout) {
		_ = old.ws.SetReadDeadline(time.Now().Add(c.h.cfg.MinAttempt))
		for {
			if _, _, err := old.ws.ReadMessage(maxUpstreamHandshakeFrame, nil); err != nil {
				break
			}
		}
	}
	_ = old.ws.Close()
	c.up = nil
	c.h.metrics.Renewal(r)
	c.h.log.Debug("warm upstream socket renewed", "client", c.rec.clientAddr, "age", time.Since(old.opened).Round(time.Millisecond), "why", string(r))
	up, err := c.h.dialOnceSlot(c.ctx, c.target, c.hdr, c.attr.Key(), retry.NewBudget(retry.SystemClock{}, c.h.cfg.DialTimeout), slot)
	if err != nil {
		if c.ctx.Err() == nil {
			c.h.noteDialFailure(err)
		}
		c.h.log.Debug("warm upstream renewal failed", "client", c.rec.clientAddr, "err", err)
		return
	}
	c.up = up
}

// dialPolicy is the handler's late-dial configuration.
func (h *Handler) dialPolicy() retry.DialPolicy {
	return retry.DialPolicy{
		MaxWait: h.cfg.LateDialMax,
		Trust:   h.cfg.NotStartedTrust,
		Refresh: h.cfg.ReadinessPollInterval + h.cfg.ReadinessProbeTimeout,
	}
}
