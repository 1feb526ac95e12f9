// Package metrics defines holdfast's Prometheus collectors.
//
// New registers every collector on the registerer it is given; nothing is
// registered globally. Callers record through the semantic methods of
// Metrics, whose label values come from the closed sets below, so no series
// ever carries a client address or connection id.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Result is how a client's handshake through holdfast ended.
type Result string

// The handshake results.
const (
	// ResultOK: the client got hello-ok and its session was spliced.
	ResultOK Result = "ok"
	// ResultRejected: the gateway answered the connect with an error other
	// than startup unavailability (bad token, pairing, protocol…), or
	// closed the socket; the answer was passed through.
	ResultRejected Result = "rejected"
	// ResultUnavailable: the gateway was still unavailable when the budget
	// ran out, or its startup UNAVAILABLE could not be replayed.
	ResultUnavailable Result = "unavailable"
	// ResultAttributionRefused: the gateway refused a forwarded client's
	// upgrade with HTTP 403 proxy_attribution_required: holdfast's address
	// is missing from the gateway's gateway.trustedProxies.
	ResultAttributionRefused Result = "attribution_refused"
	// ResultClientGone: the client left before the handshake finished.
	ResultClientGone Result = "client_gone"
	// ResultError: holdfast or the transport failed (bad client frame,
	// upstream protocol violation, I/O error).
	ResultError Result = "error"
)

// RetryReason is why holdfast made another upstream attempt.
type RetryReason string

// The retry reasons.
const (
	// RetryStartupUnavailable: a replayable connect got the startup UNAVAILABLE.
	RetryStartupUnavailable RetryReason = "startup_unavailable"
	// RetryDial: the upstream dial or upgrade failed (refused, 5xx, timeout,
	// closed before its challenge).
	RetryDial RetryReason = "dial"
)

// RenewReason is why holdfast replaced a warm upstream socket: one opened
// for a client without an Origin while the gateway was starting, whose
// challenge holdfast kept until the gateway had started.
type RenewReason string

// The renewal reasons.
const (
	// RenewPreauthTimer: the socket neared the gateway's pre-auth timer
	// while the gateway was still starting.
	RenewPreauthTimer RenewReason = "preauth_timer"
	// RenewGatewayClosed: the gateway closed the socket (or it broke)
	// first.
	RenewGatewayClosed RenewReason = "gateway_closed"
	// RenewChallengeDue: the client's challenge was due while the gateway
	// was still starting; it got the challenge of a socket opened just
	// before, so that its connect can be held for about the gateway's
	// whole pre-auth timer.
	RenewChallengeDue RenewReason = "challenge_due"
)

// ProbeResult labels readiness probes.
type ProbeResult string

// The readiness probe results.
const (
	ProbeStarted  ProbeResult = "started"
	ProbeStarting ProbeResult = "starting"
	ProbeDown     ProbeResult = "down"
	ProbeError    ProbeResult = "error"
)

// Metrics holds holdfast's collectors. The zero value is not usable; use New.
// A nil *Metrics is valid and records nothing.
type Metrics struct {
	handshakes      *prometheus.CounterVec
	retries         *prometheus.CounterVec
	holds           prometheus.Counter
	dialsDelayed    prometheus.Counter
	standIns        prometheus.Counter
	renewals        *prometheus.CounterVec
	handshakeTime   prometheus.Histogram
	sessionsActive  prometheus.Gauge
	upstreamPending prometheus.Gauge
	probes          *prometheus.CounterVec
	passthrough     prometheus.Counter
	refused         *prometheus.CounterVec
	messages        *prometheus.CounterVec
	bridged         prometheus.Counter
	gatewayState    *prometheus.GaugeVec
	gatewayStateMu  sync.Mutex // the state's series change together
	reloads         *prometheus.CounterVec
	releases        prometheus.Counter
	census          census

	// Series resolved once, so that a handshake costs no label lookup:
	// handshakesBy holds every Result's, toUpstream and toClient the
	// spliced message counters. Read-only after New.
	handshakesBy         map[Result]prometheus.Counter
	toUpstream, toClient prometheus.Counter
}

// The gateway states holdfast reports (retry.State names).
var gatewayStates = []string{"unknown", "down", "starting", "started"}

// New creates the collectors and registers them on reg, together with the Go
// and process collectors when withRuntime is true. It panics if a collector
// is already registered on reg, as promauto does.
func New(reg prometheus.Registerer, withRuntime bool) *Metrics {
	if withRuntime {
		reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
	}
	f := promauto.With(reg)
	m := &Metrics{
		handshakes: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "handshakes_total",
			Help:      "Client handshakes through holdfast, by how they ended.",
		}, []string{"result"}),
		retries: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "upstream_retries_total",
			Help:      "Upstream attempts made again after a failed one, by reason.",
		}, []string{"reason"}),
		holds: f.NewCounter(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "connect_holds_total",
			Help:      "Client connects held on their upstream socket until the gateway had started.",
		}),
		dialsDelayed: f.NewCounter(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "upstream_dials_delayed_total",
			Help:      "Clients without an Origin header whose challenge holdfast delayed while the gateway started (handshake.late_dial).",
		}),
		standIns: f.NewCounter(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "standin_challenges_total",
			Help:      "Late-dialled clients given a challenge of holdfast's own because no gateway socket could be had when theirs was due (the gateway down).",
		}),
		renewals: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "upstream_renewals_total",
			Help:      "Warm upstream sockets, opened while the gateway started and not yet used, that holdfast replaced with fresh ones, by reason.",
		}, []string{"reason"}),
		handshakeTime: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "holdfast",
			Name:      "handshake_duration_seconds",
			Help:      "Time from the client's upgrade request to the end of its handshake, whatever the result.",
			Buckets:   []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 3, 5, 8, 12, 15, 20},
		}),
		sessionsActive: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "holdfast",
			Name:      "sessions_active",
			Help:      "Client sessions currently spliced to the gateway.",
		}),
		upstreamPending: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "holdfast",
			Name:      "upstream_handshakes_in_flight",
			Help:      "Unauthenticated upstream sockets currently open (each counts against the gateway's per-address limit).",
		}),
		probes: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "readiness_probes_total",
			Help:      "Readiness probes of the gateway, by what they found.",
		}, []string{"result"}),
		passthrough: f.NewCounter(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "passthrough_requests_total",
			Help:      "Requests reverse-proxied unchanged (everything but control WebSocket upgrades).",
		}),
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "limit_refusals_total",
			Help:      "Handshakes refused because a limit was reached: handshakes (HTTP 503 to an upgrade) or preauth_bytes (503 to an upgrade, or 1013 to a client whose frame would not fit), by limit and scope: global (the refused client's address held all of it) or address (other addresses held part of it: the heaviest address's newest handshake was refused or displaced, HTTP 503 before its upgrade, 1013 after).",
		}, []string{"limit", "scope"}),
		messages: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "spliced_messages_total",
			Help:      "Messages relayed between spliced clients and the gateway, by direction.",
		}, []string{"direction"}),
		bridged: f.NewCounter(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "bridged_sessions_total",
			Help:      "Sessions of protocol-3 clients carried to a protocol-4 gateway (connect raised to maxProtocol 4, gateway frames reduced to protocol-3 envelopes).",
		}),
	}
	m.gatewayState = f.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "holdfast",
		Name:      "gateway_state",
		Help:      "What holdfast last saw of the gateway's startup: 1 for the current state (unknown, down, starting, started), 0 for the others.",
	}, []string{"state"})
	m.GatewayState("unknown")
	m.handshakesBy = make(map[Result]prometheus.Counter)
	for _, r := range []Result{ResultOK, ResultRejected, ResultUnavailable, ResultAttributionRefused, ResultClientGone, ResultError} {
		m.handshakesBy[r] = m.handshakes.WithLabelValues(string(r))
	}
	for _, r := range []RetryReason{RetryStartupUnavailable, RetryDial} {
		m.retries.WithLabelValues(string(r))
	}
	for _, r := range []RenewReason{RenewPreauthTimer, RenewGatewayClosed, RenewChallengeDue} {
		m.renewals.WithLabelValues(string(r))
	}
	for _, r := range []ProbeResult{ProbeStarted, ProbeStarting, ProbeDown, ProbeError} {
		m.probes.WithLabelValues(string(r))
	}
	for _, l := range []Limit{LimitHandshakes, LimitPreauthBytes} {
		for _, sc := range []Scope{ScopeGlobal, ScopeAddress} {
			m.refused.WithLabelValues(string(l), string(sc))
		}
	}
	m.toUpstream = m.messages.WithLabelValues("to_upstream")
	m.toClient = m.messages.WithLabelValues("to_client")
	m.reloads = f.NewCounterVec(prometheus.CounterOpts{
		Namespace: "holdfast",
		Name:      "config_reloads_total",
		Help:      "Configuration reloads (SIGHUP), by result: success (applied to new connections) or failure (invalid file; the running configuration was kept).",
	}, []string{"result"})
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.releases = f.NewCounter(prometheus.CounterOpts{
		Namespace: "holdfast",
		Name:      "memory_releases_total",
		Help:      "Times the heap's free pages were returned to the operating system after a burst of requests ended (memory.release_after).",
	})
	m.census = newCensus(f)
	return m
}

// Limit names a global limit (limits.* in the configuration).
type Limit string

const (
	// LimitHandshakes: clients in their handshake at once.
	LimitHandshakes Limit = "handshakes"
	// LimitPreauthBytes: client bytes held before hello-ok, all clients.
	LimitPreauthBytes Limit = "preauth_bytes"
)

// Scope says whose use of a limit a refusal enforced.
type Scope string

const (
	// ScopeGlobal: the refused client's address held the whole of the
	// limit; no other address was using it.
	ScopeGlobal Scope = "global"
	// ScopeAddress: other addresses held part of the limit, and the
	// refused handshake was the newest of the address holding the most
	// (refused, or displaced in favour of a client from an address
	// holding less).
	ScopeAddress Scope = "address"
)

// Refused records a handshake refused or displaced because limit was
// reached, in scope.
func (m *Metrics) Refused(limit Limit, scope Scope) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(string(limit), string(scope)).Inc()
}

// ConfigReload records a configuration reload: applied (ok) or refused.
func (m *Metrics) ConfigReload(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("success").Inc()
	} else {
		m.reloads.WithLabelValues("failure").Inc()
	}
}

// MemoryReleased records a return of the heap's free pages to the
// operating system after a burst of requests.
func (m *Metrics) MemoryReleased() {
	if m == nil {
		return
	}
	m.releases.Inc()
}

// Handshake records a finished handshake and its duration.
func (m *Metrics) Handshake(r Result, d time.Duration) {
	if m == nil {
		return
	}
	c, ok := m.handshakesBy[r]
	if !ok {
		c = m.handshakes.WithLabelValues(string(r))
	}
	c.Inc()
	m.handshakeTime.Observe(d.Seconds())
}

// Retry records one more upstream attempt.
func (m *Metrics) Retry(r RetryReason) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(string(r)).Inc()
}

// Hold records a connect held until the gateway started.
func (m *Metrics) Hold() {
	if m == nil {
		return
	}
	m.holds.Inc()
}

// DialDelayed records a client whose upstream dial waited for the gateway
// to start.
func (m *Metrics) DialDelayed() {
	if m == nil {
		return
	}
	m.dialsDelayed.Inc()
}

// StandIn records a client given a stand-in challenge.
func (m *Metrics) StandIn() {
	if m == nil {
		return
	}
	m.standIns.Inc()
}

// Renewal records a warm upstream socket replaced with a fresh one.
func (m *Metrics) Renewal(r RenewReason) {
	if m == nil {
		return
	}
	m.renewals.WithLabelValues(string(r)).Inc()
}

// SessionStarted and SessionEnded track spliced sessions.
func (m *Metrics) SessionStarted() {
	if m == nil {
		return
	}
	m.sessionsActive.Inc()
}

// SessionEnded is the counterpart of SessionStarted.
func (m *Metrics) SessionEnded() {
	if m == nil {
		return
	}
	m.sessionsActive.Dec()
}

// UpstreamPending adds delta to the unauthenticated upstream sockets.
func (m *Metrics) UpstreamPending(delta int) {
	if m == nil {
		return
	}
	m.upstreamPending.Add(float64(delta))
}

// Probe records a readiness probe.
func (m *Metrics) Probe(r ProbeResult) {
	if m == nil {
		return
	}
	m.probes.WithLabelValues(string(r)).Inc()
}

// Passthrough records a reverse-proxied request.
func (m *Metrics) Passthrough() {
	if m == nil {
		return
	}
	m.passthrough.Inc()
}

// BridgedSession records a session spliced through the legacy bridge.
func (m *Metrics) BridgedSession() {
	if m == nil {
		return
	}
	m.bridged.Inc()
}

// MessageCounters returns the counters of relayed messages, to upstream and
// to the client, so the splice can hold them without a label lookup per
// message. With a nil receiver both are nil.
func (m *Metrics) MessageCounters() (toUpstream, toClient prometheus.Counter) {
	if m == nil {
		return nil, nil
	}
	return m.toUpstream, m.toClient
}

// GatewayState records the gateway's current state: one of unknown, down,
// starting, started.
func (m *Metrics) GatewayState(state string) {
	if m == nil {
		return
	}
	m.gatewayStateMu.Lock()
	defer m.gatewayStateMu.Unlock()
	for _, s := range gatewayStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.gatewayState.WithLabelValues(s).Set(v)
	}
}

// RegisterBuildInfo registers holdfast_build_info{version,goversion}, whose
// value is always 1, on reg.
func RegisterBuildInfo(reg prometheus.Registerer, version, goVersion string) {
	g := promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "holdfast",
		Name:      "build_info",
		Help:      "Always 1; the labels say which holdfast build runs and the Go version that built it.",
	}, []string{"version", "goversion"})
	g.WithLabelValues(version, goVersion).Set(1)
}
