package proxy

import (
	"context"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/retry"
)

// The late dial: the gateway's pre-auth timer starts when holdfast opens the
// upstream socket, and a device-signed connect can be held only on the
// socket whose challenge it signed, so holding alone absorbs windows up to
// that timer (15 s) at most. Clients that wait long for their challenge
// (every non-browser client: 15 s for current Node clients, 10 s for the
// 2026.4.27 CLI, no limit for openclaw-node) can instead be upgraded at
// once and given their challenge late: holdfast opens their upstream
// socket only once the gateway has started, or when waiting longer would
// let the client's own challenge timer fire. Browsers send an Origin header
// and give up on the challenge after 750 ms: they are always dialled first.

// dialInput is what the late-dial decision looks at.
type dialInput struct {
	// Browser: the upgrade carries an Origin header.
	Browser bool
	// Subprotocols: the client offered subprotocols, which only the
	// gateway's 101 can settle.
	Subprotocols bool
	// State and Age are the readiness watcher's last observation and how
	// old it is.
	State retry.State
	Age   time.Duration
	// Waited is how long the client has waited for its challenge so far.
	Waited time.Duration
	// Blind: the gateway's readiness endpoints are unusable, so nothing
	// would tell holdfast that it has started.
	Blind bool
}

// dialPolicy is the late dial's configuration.
type dialPolicy struct {
	// MaxWait is the longest a client waits for its challenge before
	// holdfast dials; 0 disables the late dial.
	MaxWait time.Duration
	// Trust is how long an observation that the gateway is down or
	// starting is believed without a new probe.
	Trust time.Duration
	// Refresh is how long to wait for a probe when what holdfast knows is
	// missing or stale.
	Refresh time.Duration
}

// dialReason says why a dialDecision was made (logs and tests).
type dialReason string

const (
	dialBrowser      dialReason = "browser"          // Origin: the 750 ms challenge timer
	dialSubprotocols dialReason = "subprotocols"     // the gateway's 101 settles them
	dialDisabled     dialReason = "disabled"         // MaxWait is 0
	dialStarted      dialReason = "started"          // the gateway has started (or had, last seen)
	dialClientLimit  dialReason = "client-limit"     // waiting longer would break the client
	dialNoReadiness  dialReason = "no-readiness"     // nothing could say the gateway started
	waitStarting     dialReason = "gateway-starting" // fresh news: starting
	waitDown         dialReason = "gateway-down"     // fresh news: down
	waitRefresh      dialReason = "refresh"          // no fresh news: wait for a probe
)

// dialDecision says whether to open the upstream socket now or to wait (at
// most Wait, waking early if the gateway is seen started) and decide again.
type dialDecision struct {
	Dial   bool
	Wait   time.Duration
	Reason dialReason
}

// decideDial is the late-dial policy, a pure function. A client is dialled
// at once when it is a browser, offered subprotocols, the late dial is off,
// the gateway was seen started within Trust (in the steady state every
// hello-ok renews that), or the client has waited MaxWait. Otherwise it
// waits: until MaxWait while the gateway is freshly known to be starting;
// one Refresh at a time while it is seen down (refused, or probes that
// time out on a busy gateway: the next look decides again); and for one
// probe (Refresh) when nothing fresh is known, such as after a quiet spell
// in which the gateway may have restarted. MaxWait bounds every wait, so a
// gateway whose probes keep failing costs a client at most MaxWait.
func decideDial(in dialInput, p dialPolicy) dialDecision {
	switch {
	case in.Browser:
		return dialDecision{Dial: true, Reason: dialBrowser}
	case in.Subprotocols:
		return dialDecision{Dial: true, Reason: dialSubprotocols}
	case p.MaxWait <= 0:
		return dialDecision{Dial: true, Reason: dialDisabled}
	case in.Blind:
		return dialDecision{Dial: true, Reason: dialNoReadiness}
	case in.State == retry.Started && in.Age < p.Trust:
		return dialDecision{Dial: true, Reason: dialStarted}
	case in.Waited >= p.MaxWait:
		return dialDecision{Dial: true, Reason: dialClientLimit}
	}
	left := p.MaxWait - in.Waited
	fresh := in.Age < p.Trust
	switch {
	case in.State == retry.Starting && fresh:
		return dialDecision{Wait: left, Reason: waitStarting}
	case in.State == retry.Down && fresh:
		return dialDecision{Wait: min(p.Refresh, left), Reason: waitDown}
	}
	return dialDecision{Wait: min(p.Refresh, left), Reason: waitRefresh}
}

// dialInputFor describes the client's request and the watcher's state.
func (c *conn) dialInputFor(waited time.Duration) dialInput {
	s, age := c.h.watcher.State()
	return dialInput{
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
	return !decideDial(c.dialInputFor(0), c.h.dialPolicy()).Dial
}

// lateDial waits, with the client already upgraded, until decideDial says
// dial, then opens the upstream socket with a fresh budget: the client's
// own connect timer starts when it gets its challenge. It returns nil once
// the socket is open, else the connection's outcome (the client left, or
// no upstream could be had).
func (c *conn) lateDial() *outcome {
	pol := c.h.dialPolicy()
	counted := false
	var waited time.Duration
	for {
		waited = time.Since(c.rec.start)
		d := decideDial(c.dialInputFor(waited), pol)
		if d.Dial {
			c.h.log.Debug("late dial", "client", c.rec.clientAddr, "waited", waited.Round(time.Millisecond), "why", string(d.Reason))
			break
		}
		if (d.Reason == waitStarting || d.Reason == waitDown) && !counted {
			counted = true
			c.h.metrics.DialDelayed()
		}
		ctx, cancel := context.WithTimeout(c.ctx, d.Wait)
		err := c.h.watcher.WaitStarted(ctx)
		cancel()
		if c.ctx.Err() != nil {
			o := c.clientOutcome(c.ctx.Err())
			return &o
		}
		if err == nil {
			c.h.log.Debug("late dial", "client", c.rec.clientAddr, "waited", time.Since(c.rec.start).Round(time.Millisecond), "why", string(dialStarted))
			break
		}
	}
	c.budget = retry.NewBudget(c.h.clock, c.h.lateBudget())
	up, err := c.h.dialUpstream(c.ctx, c.target, c.hdr, c.attr.key(), c.budget)
	if err != nil {
		// The client has its 101 already: an HTTP answer becomes a close.
		o := c.dialFailed(err, true)
		o.args = append(o.args, "waited", waited.Round(time.Millisecond))
		return &o
	}
	c.up = up
	return nil
}

// dialPolicy is the handler's late-dial configuration.
func (h *Handler) dialPolicy() dialPolicy {
	return dialPolicy{
		MaxWait: h.cfg.LateDialMax,
		Trust:   notStartedTrust,
		Refresh: h.cfg.ReadinessPollInterval + h.cfg.ReadinessProbeTimeout,
	}
}

// lateBudget is a late-dialled client's budget, counted from its dial:
// handshake.budget plus hold_margin, at most preauth_timeout - hold_margin
// (13.5 s by default). The budget's margin before a client's 15 s connect
// timer also covers the upgrade and dial retries a browser's timer sees;
// after a late dial the client gets its challenge as the socket opens and
// answers it at once, so its connect timer and the gateway's pre-auth timer
// start together, and a hold may last until hold_margin before either.
func (h *Handler) lateBudget() time.Duration {
	return max(h.cfg.Budget, min(h.cfg.Budget+h.cfg.HoldMargin, h.cfg.PreauthTimeout-h.cfg.HoldMargin))
}
