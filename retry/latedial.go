package retry

import "time"

// The late dial (holdfast's proxy package): clients that wait long for
// their challenge are upgraded at once and given it late, once the gateway
// has started or when waiting longer would let the client's own challenge
// timer fire. DecideDial is when.

// DialInput is what the late-dial decision looks at.
type DialInput struct {
	// Browser: the upgrade carries an Origin header.
	Browser bool
	// Subprotocols: the client offered subprotocols, which only the
	// gateway's 101 can settle.
	Subprotocols bool
	// State and Age are the readiness watcher's last observation and how
	// old it is.
	State State
	Age   time.Duration
	// Waited is how long the client has waited for its challenge so far.
	Waited time.Duration
	// Blind: the gateway's readiness endpoints are unusable, so nothing
	// would tell holdfast that it has started.
	Blind bool
}

// DialPolicy is the late dial's configuration.
type DialPolicy struct {
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

// DialReason says why a DialDecision was made (logs and tests).
type DialReason string

const (
	DialBrowser      DialReason = "browser"          // Origin: the 750 ms challenge timer
	DialSubprotocols DialReason = "subprotocols"     // the gateway's 101 settles them
	DialDisabled     DialReason = "disabled"         // MaxWait is 0
	DialStarted      DialReason = "started"          // the gateway has started (or had, last seen)
	DialClientLimit  DialReason = "client-limit"     // waiting longer would break the client
	DialNoReadiness  DialReason = "no-readiness"     // nothing could say the gateway started
	WaitStarting     DialReason = "gateway-starting" // fresh news: starting
	WaitDown         DialReason = "gateway-down"     // fresh news: down
	WaitRefresh      DialReason = "refresh"          // no fresh news: wait for a probe
)

// DialDecision says whether to open the upstream socket now or to wait (at
// most Wait, waking early if the gateway is seen started) and decide again.
type DialDecision struct {
	Dial   bool
	Wait   time.Duration
	Reason DialReason
}

// DecideDial is the late-dial policy, a pure function. A client is dialled
// at once when it is a browser, offered subprotocols, the late dial is off,
// the gateway was seen started within Trust (in the steady state every
// hello-ok renews that), or the client has waited MaxWait. Otherwise it
// waits: until MaxWait while the gateway is freshly known to be starting;
// one Refresh at a time while it is seen down (refused, or probes that
// time out on a busy gateway: the next look decides again); and for one
// probe (Refresh) when nothing fresh is known, such as after a quiet spell
// in which the gateway may have restarted. MaxWait bounds every wait, so a
// gateway whose probes keep failing costs a client at most MaxWait.
func DecideDial(in DialInput, p DialPolicy) DialDecision {
	switch {
	case in.Browser:
		return DialDecision{Dial: true, Reason: DialBrowser}
	case in.Subprotocols:
		return DialDecision{Dial: true, Reason: DialSubprotocols}
	case p.MaxWait <= 0:
		return DialDecision{Dial: true, Reason: DialDisabled}
	case in.Blind:
		return DialDecision{Dial: true, Reason: DialNoReadiness}
	case in.State == Started && in.Age < p.Trust:
		return DialDecision{Dial: true, Reason: DialStarted}
	case in.Waited >= p.MaxWait:
		return DialDecision{Dial: true, Reason: DialClientLimit}
	}
	left := p.MaxWait - in.Waited
	fresh := in.Age < p.Trust
	switch {
	case in.State == Starting && fresh:
		return DialDecision{Wait: left, Reason: WaitStarting}
	case in.State == Down && fresh:
		return DialDecision{Wait: min(p.Refresh, left), Reason: WaitDown}
	}
	return DialDecision{Wait: min(p.Refresh, left), Reason: WaitRefresh}
}
