package retry

import (
	"context"
	"errors"
	"sync"
	"time"
)

// State is what is known of a gateway's startup.
type State int

// The states a Watcher can hold.
const (
	// Unknown: nothing observed yet, or the last observation has aged out.
	Unknown State = iota
	// Down: the gateway did not accept a connection.
	Down
	// Starting: the gateway answers but its startup gate is still closed.
	Starting
	// Started: the gateway's WebSocket startup gate is open.
	Started
)

func (s State) String() string {
	switch s {
	case Down:
		return "down"
	case Starting:
		return "starting"
	case Started:
		return "started"
	default:
		return "unknown"
	}
}

// Probe asks the gateway once for its state. It must honour ctx. An error
// with Unknown says nothing of the gateway (a timeout, say); one with Down
// says it did not answer (refused); ErrNoReadiness says the endpoints
// cannot tell.
type Probe func(ctx context.Context) (State, error)

// ErrNoReadiness is what a Probe returns when the gateway's readiness
// endpoints are unusable: something in front of the gateway answers them
// with pages that are not the gateway's (a 404 HTML page, say).
var ErrNoReadiness = errors.New("the gateway's readiness endpoints are unusable")

// blindRecheck is how long a watcher trusts that the readiness endpoints
// are unusable before it probes them again.
const blindRecheck = time.Minute

// WatcherConfig configures a Watcher. Zero durations take the defaults noted.
type WatcherConfig struct {
	// Probe is required.
	Probe Probe
	// Clock dates observations; nil means the system clock.
	Clock Clock
	// PollInterval is the pause between probes while someone waits
	// (default 100ms).
	PollInterval time.Duration
	// ProbeTimeout bounds one probe (default 1s).
	ProbeTimeout time.Duration
	// FreshFor is how long an observation of Started counts as confirmed
	// (default 1s). A nonce-bound connect is forwarded only on a fresh one.
	FreshFor time.Duration
	// OnProbe, if set, is called after each probe with its result.
	OnProbe func(State, error)
	// OnChange, if set, is called when an observation changes the state,
	// outside the watcher's lock; calls may overlap.
	OnChange func(from, to State)
	// OnBlind, if set, is called when the readiness endpoints are found
	// unusable (once, until a probe succeeds again).
	OnBlind func(err error)
}

// Watcher tracks one upstream gateway's startup state for every connection
// to it. Connections report what they see (Observe): only evidence about
// the gateway, never a client leaving or holdfast closing a socket itself.
// Those that must wait for the gateway call WaitStarted. The watcher probes
// the gateway only while at least one caller waits and the start is not
// confirmed, once per PollInterval whatever the number of waiters, so N
// clients waiting through one startup cost the gateway a handful of probes,
// not N. A probe that times out changes nothing: the next one decides.
// When the readiness endpoints are unusable (ErrNoReadiness), the watcher
// stops probing for blindRecheck, WaitStarted returns ErrNoReadiness at
// once, and what connections observe is all it knows.
type Watcher struct {
	cfg WatcherConfig

	mu         sync.Mutex
	state      State
	at         time.Time     // when state was observed
	notStarted time.Time     // when Starting or Down was last observed
	changed    chan struct{} // closed and replaced on every observation of Started that someone waits for
	waiters    int
	live       int // sessions spliced to the gateway now
	polling    bool
	closed     bool
	blindUntil time.Time // readiness endpoints unusable until then
	blind      bool      // OnBlind was called and no probe succeeded since

	ctx    context.Context // cancelled by Close; parent of every probe
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewWatcher returns a watcher in state Unknown. Call Close when done.
func NewWatcher(cfg WatcherConfig) *Watcher {
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = time.Second
	}
	if cfg.FreshFor <= 0 {
		cfg.FreshFor = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Watcher{cfg: cfg, changed: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// Observe records evidence a connection or probe saw of the gateway.
func (w *Watcher) Observe(s State) {
	w.mu.Lock()
	from := w.state
	w.state = s
	w.at = w.cfg.Clock.Now()
	if s == Starting || s == Down {
		w.notStarted = w.at
	}
	if s == Started && w.waiters > 0 {
		// Wake the waiters. With none (a started gateway, where every
		// hello-ok lands here) there is nothing to replace.
		close(w.changed)
		w.changed = make(chan struct{})
	}
	w.mu.Unlock()
	if from != s && w.cfg.OnChange != nil {
		w.cfg.OnChange(from, s)
	}
}

// State returns the last observation and its age.
func (w *Watcher) State() (State, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.at.IsZero() {
		return Unknown, 0
	}
	return w.state, w.cfg.Clock.Now().Sub(w.at)
}

// SeenNotStartedSince reports whether Starting or Down was observed at t
// or later, whatever has been observed since.
func (w *Watcher) SeenNotStartedSince(t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.notStarted.IsZero() && !w.notStarted.Before(t)
}

// Started reports whether Started is confirmed: observed within FreshFor,
// or observed last while sessions are open. An open session is the
// gateway still up: a gateway that restarts closes its sessions (1012),
// one that dies breaks them, and either is observed at once.
func (w *Watcher) Started() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.startedLocked()
}

func (w *Watcher) startedLocked() bool {
	return w.state == Started && (w.live > 0 || w.cfg.Clock.Now().Sub(w.at) <= w.cfg.FreshFor)
}

// Live adds delta (1 or -1) to the sessions open to the gateway.
func (w *Watcher) Live(delta int) {
	w.mu.Lock()
	w.live += delta
	w.mu.Unlock()
}

// Blind reports whether the readiness endpoints were found unusable
// (within blindRecheck): waiting for the gateway to start is pointless.
func (w *Watcher) Blind() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.blindLocked()
}

func (w *Watcher) blindLocked() bool {
	return !w.blindUntil.IsZero() && w.cfg.Clock.Now().Before(w.blindUntil)
}

// WaitStarted returns nil as soon as Started is confirmed fresh, probing the
// gateway meanwhile, ctx's error when ctx ends first, or ErrNoReadiness
// at once while the readiness endpoints are unusable. It returns
// immediately when a fresh Started is already known.
func (w *Watcher) WaitStarted(ctx context.Context) error {
	w.mu.Lock()
	if w.startedLocked() {
		w.mu.Unlock()
		return nil
	}
	if w.closed {
		w.mu.Unlock()
		return context.Canceled
	}
	if w.blindLocked() {
		w.mu.Unlock()
		return ErrNoReadiness
	}
	w.waiters++
	// A waiter that arrives while the poller sleeps waits for its next
	// probe (at most PollInterval) rather than triggering one: that keeps
	// the probe rate independent of the arrival rate.
	if !w.polling {
		w.polling = true
		w.wg.Add(1)
		go w.poll()
	}
	defer func() {
		w.mu.Lock()
		w.waiters--
		w.mu.Unlock()
	}()
	for {
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.ctx.Done():
			return context.Canceled
		case <-ch:
		}
		w.mu.Lock()
		if w.startedLocked() {
			w.mu.Unlock()
			return nil
		}
		if w.blindLocked() {
			w.mu.Unlock()
			return ErrNoReadiness
		}
	}
}

// poll probes until nobody waits any more, or the start is confirmed, or
// the endpoints turn out unusable. Exactly one poll goroutine runs at a
// time (guarded by w.polling).
func (w *Watcher) poll() {
	defer w.wg.Done()
	timer := time.NewTimer(w.cfg.PollInterval)
	defer timer.Stop()
	for {
		ctx, cancel := context.WithTimeout(w.ctx, w.cfg.ProbeTimeout)
		s, err := w.cfg.Probe(ctx)
		timedOut := ctx.Err() == context.DeadlineExceeded
		cancel()
		if w.cfg.OnProbe != nil {
			w.cfg.OnProbe(s, err)
		}
		if w.ctx.Err() != nil {
			w.stopPolling()
			return
		}
		switch {
		case errors.Is(err, ErrNoReadiness):
			w.goBlind(err)
		case err != nil && (timedOut || s == Unknown):
			// Says nothing of the gateway: the next probe decides.
		default:
			w.seeing()
			w.Observe(s)
		}
		w.mu.Lock()
		if w.waiters == 0 || w.closed || w.startedLocked() || w.blindLocked() {
			w.polling = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		timer.Reset(w.cfg.PollInterval)
		select {
		case <-timer.C:
		case <-w.ctx.Done():
		}
	}
}

func (w *Watcher) stopPolling() {
	w.mu.Lock()
	w.polling = false
	w.mu.Unlock()
}

// goBlind notes that the readiness endpoints are unusable and releases the
// waiters: there is nothing to wait for. The first time, OnBlind hears of
// it before any waiter is released.
func (w *Watcher) goBlind(err error) {
	w.mu.Lock()
	w.blindUntil = w.cfg.Clock.Now().Add(blindRecheck)
	first := !w.blind
	w.blind = true
	w.mu.Unlock()
	if first && w.cfg.OnBlind != nil {
		w.cfg.OnBlind(err)
	}
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// seeing notes that a probe got an answer: the endpoints work (again).
func (w *Watcher) seeing() {
	w.mu.Lock()
	w.blind = false
	w.blindUntil = time.Time{}
	w.mu.Unlock()
}

// Close stops the poller and releases every waiter with context.Canceled.
func (w *Watcher) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}
