package proxy

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy/internal/share"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
	"github.com/holdfast-proxy/holdfast/retry"
)

// preauthReadLimit is the gateway's limit on a frame before hello-ok
// (MAX_PREAUTH_PAYLOAD_BYTES); holdfast applies it on both legs.
const preauthReadLimit = 64 << 10

// Config is what a Handler needs to know. Zero durations and counts take the
// defaults noted; New never changes the caller's value.
type Config struct {
	// Upstream is the gateway's WebSocket URL (ws or wss). Required.
	Upstream *url.URL
	// TLSClientConfig is used for wss upstreams and their readiness probes.
	TLSClientConfig *tls.Config
	// TrustedProxies are the peers whose forwarding headers holdfast
	// believes (none by default).
	TrustedProxies []netip.Prefix
	// PassthroughResponseHeaderTimeout bounds the wait for the gateway's
	// response header to a reverse-proxied request (default 2m); the dial
	// is bounded by DialTimeout. A request that times out gets 504, one
	// that cannot reach the gateway 502.
	PassthroughResponseHeaderTimeout time.Duration
	// PassthroughPaths are path prefixes whose WebSocket upgrades are not
	// the gateway's control socket and are reverse-proxied unchanged
	// (default DefaultPassthroughPaths).
	PassthroughPaths []string

	// Budget bounds each client's handshake: dials, holds, waits and
	// retries (default 13.5s, hold_margin before clients' 15 s connect
	// timer). It runs from the client's arrival, or, for a late-dialled
	// client, from the moment its challenge is due (LateDialMax after its
	// arrival) or the gateway has started: such a client is held at most
	// LateDialMax + Budget. A held connect is also forwarded at the latest
	// PreauthTimeout - HoldMargin after its socket opened.
	Budget time.Duration
	// DialTimeout bounds one upstream dial, upgrade and challenge (default 5s).
	DialTimeout time.Duration
	// LateDialMax is the longest a client without an Origin header waits
	// for its challenge while the gateway is starting or down (default
	// 9s: the 2026.4.x clients' challenge timer is 10 s, current clients'
	// 15 s; negative: every client is dialled first). Meanwhile its
	// upstream socket is open (a warm socket, renewed at PreauthTimeout -
	// 2 × HoldMargin) and its challenge kept; the client gets it once the
	// gateway has started, or, after LateDialMax, that of a socket opened
	// just before, or a stand-in challenge when the gateway is down. See
	// latedial.go and standin.go.
	LateDialMax time.Duration
	// MinAttempt is the least budget worth starting another attempt with
	// (default 250ms).
	MinAttempt time.Duration
	// NotStartedTrust is how long an observation that the gateway is not
	// started (starting or down) makes holdfast hold replayable connects
	// too, instead of sending them to be refused, and how long the late
	// dial trusts a word of the gateway's state without a fresh probe
	// (default 5s; the configuration file does not set it).
	NotStartedTrust time.Duration
	// PreauthTimeout is the gateway's pre-auth timer (default 15s): it
	// closes a socket that has not authenticated this long after upgrade.
	PreauthTimeout time.Duration
	// HoldMargin is how long before that timer a held connect is forwarded
	// at the latest (default 1.5s).
	HoldMargin time.Duration
	// AnswerTimeout bounds the wait for the gateway's answer to a forwarded
	// connect (default 10s).
	AnswerTimeout time.Duration
	// MaxPreauthPerAddress is how many unauthenticated upstream sockets
	// holdfast opens at once per attributed client address (default 24;
	// the gateway refuses the 33rd).
	MaxPreauthPerAddress int
	// DialBackoffBase and DialBackoffMax shape the back-off between
	// transport attempts (defaults 100ms and 2s).
	DialBackoffBase, DialBackoffMax time.Duration

	// WriteTimeout bounds every write to either leg (default 10s): a
	// write to a peer that does not read fails within it. A spliced
	// session's flushes renew their deadline only once half of it has
	// passed, so such a write gets at least half of it.
	WriteTimeout time.Duration
	// CloseGrace is how long a closing session waits for the peer's close
	// frame before dropping the sockets (default 1s).
	CloseGrace time.Duration
	// IdleParkAfter is how long a direction of a spliced session waits
	// for data before it parks: its goroutine returns, its socket waits in
	// the handler's epoll set, and a goroutine is started once data comes
	// (wire.Parker; Linux only). Default 500ms; negative: never park.
	IdleParkAfter time.Duration
	// MaxHandshakes bounds the clients in their handshake at once, from
	// the upgrade request to hello-ok or refusal (default 2048), shared
	// fairly between attributed client addresses (proxy/internal/share): at the
	// limit, the newest handshake of the address holding the most is
	// refused (HTTP 503 with Retry-After) or displaced (503 before its
	// upgrade, 1013 after) for a client from an address holding less.
	MaxHandshakes int
	// MaxPreauthBytes bounds the bytes of client frames held before
	// hello-ok, counted as the buffers holding them, all clients together
	// (default 64 MiB), shared between addresses as MaxHandshakes is: a
	// frame that does not fit displaces the newest holders of the address
	// holding the most, or is refused (1013) when that is its own.
	MaxPreauthBytes int64
	// MaxMessageBytes limits client messages after hello-ok when hello-ok
	// states no policy.maxPayload (default 25 MiB, the gateway's).
	MaxMessageBytes int64

	// DisableLegacyBridge turns off the bridge that carries protocol-3
	// clients to protocol-4 gateways (bridge.go): connects then reach the
	// gateway as the client sent them, and every session is streamed.
	DisableLegacyBridge bool

	// Readiness tunes the shared readiness watcher.
	ReadinessPollInterval time.Duration // default 25ms
	ReadinessFreshFor     time.Duration // default 1s
	ReadinessProbeTimeout time.Duration // default 1s
}

// DefaultPassthroughPaths are the gateway's WebSocket routes other than the
// control socket (its other upgrade paths reach the control socket).
var DefaultPassthroughPaths = []string{"/__openclaw__/", "/desktop/observe", "/node-desktop/attach"}

// DefaultConfig returns the value each zero field of Config takes: the one
// set of defaults holdfast has (its configuration file's defaults are built
// from it).
func DefaultConfig() Config {
	return Config{
		Budget:                13500 * time.Millisecond,
		LateDialMax:           9 * time.Second,
		DialTimeout:           5 * time.Second,
		MinAttempt:            250 * time.Millisecond,
		NotStartedTrust:       5 * time.Second,
		PreauthTimeout:        15 * time.Second,
		HoldMargin:            1500 * time.Millisecond,
		AnswerTimeout:         10 * time.Second,
		MaxPreauthPerAddress:  24,
		DialBackoffBase:       100 * time.Millisecond,
		DialBackoffMax:        2 * time.Second,
		WriteTimeout:          10 * time.Second,
		CloseGrace:            time.Second,
		IdleParkAfter:         500 * time.Millisecond,
		MaxMessageBytes:       25 << 20,
		ReadinessPollInterval: 25 * time.Millisecond,
		ReadinessFreshFor:     time.Second,
		ReadinessProbeTimeout: time.Second,
		PassthroughPaths:      append([]string(nil), DefaultPassthroughPaths...),

		PassthroughResponseHeaderTimeout: 2 * time.Minute,
		MaxHandshakes:                    2048,
		MaxPreauthBytes:                  64 << 20,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	def := func(v *time.Duration, dv time.Duration) {
		if *v <= 0 {
			*v = dv
		}
	}
	def(&c.Budget, d.Budget)
	if c.LateDialMax == 0 {
		c.LateDialMax = d.LateDialMax
	}
	def(&c.DialTimeout, d.DialTimeout)
	def(&c.PassthroughResponseHeaderTimeout, d.PassthroughResponseHeaderTimeout)
	def(&c.MinAttempt, d.MinAttempt)
	def(&c.NotStartedTrust, d.NotStartedTrust)
	def(&c.PreauthTimeout, d.PreauthTimeout)
	def(&c.HoldMargin, d.HoldMargin)
	def(&c.AnswerTimeout, d.AnswerTimeout)
	def(&c.DialBackoffBase, d.DialBackoffBase)
	def(&c.DialBackoffMax, d.DialBackoffMax)
	def(&c.WriteTimeout, d.WriteTimeout)
	def(&c.CloseGrace, d.CloseGrace)
	if c.IdleParkAfter == 0 {
		c.IdleParkAfter = d.IdleParkAfter
	}
	def(&c.ReadinessPollInterval, d.ReadinessPollInterval)
	def(&c.ReadinessFreshFor, d.ReadinessFreshFor)
	def(&c.ReadinessProbeTimeout, d.ReadinessProbeTimeout)
	if c.MaxPreauthPerAddress <= 0 {
		c.MaxPreauthPerAddress = d.MaxPreauthPerAddress
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = d.MaxHandshakes
	}
	if c.MaxPreauthBytes <= 0 {
		c.MaxPreauthBytes = d.MaxPreauthBytes
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = d.MaxMessageBytes
	}
	if c.PassthroughPaths == nil {
		c.PassthroughPaths = d.PassthroughPaths
	}
	c.TrustedProxies = append([]netip.Prefix(nil), c.TrustedProxies...)
	c.PassthroughPaths = append([]string(nil), c.PassthroughPaths...)
	return c
}

// Options carries a Handler's collaborators. Every field may be nil.
type Options struct {
	// Logger receives operational logs; nil discards them. Connect params
	// (tokens, passwords, signatures) are never logged.
	Logger *slog.Logger
	// AccessLog receives the access log: one info line per client
	// connection when it has ended (conn.done), in its handler's format.
	// nil writes none. Like Logger, it never sees a token, password,
	// signature or nonce.
	AccessLog *slog.Logger
	// Metrics records what the handler does; nil records nothing.
	Metrics *metrics.Metrics
	// Previous is the handler this one replaces after a configuration
	// reload, or nil. The new handler serves new connections; Previous
	// keeps its spliced sessions. Both share one set of sessions (Shutdown
	// on either reaches every session of both) and their buffer pools, and,
	// when the upstream URL, its TLS settings and the readiness settings are
	// unchanged, the readiness watcher (what holdfast knows of the
	// gateway's startup) and the per-address admission queues.
	Previous *Handler
}

// Handler is holdfast's proxy. Create it with New; it is safe for concurrent
// use. Call Shutdown to close its sessions and Close to stop its watcher.
type Handler struct {
	cfg     Config
	log     *slog.Logger
	access  *slog.Logger // the access log; nil for none
	metrics *metrics.Metrics
	backoff retry.Backoff
	watcher *retry.Watcher

	admission *share.Slots
	limits    *share.Limits
	netDialer *net.Dialer // upstream sockets (openUpstream)
	upgrader  websocket.Upgrader
	// batchedUpgrader is upgrader without its handshake timeout, for a
	// batched upgrade (batchedUpgrade): the 101 waits in the batch, whose
	// flush has a write deadline of its own.
	batchedUpgrader websocket.Upgrader
	passthrough     *httputil.ReverseProxy
	bufPool         *bufferPool
	chunks          *wire.Pool

	// caps are the capabilities of the gateway's last challenge, for
	// stand-in challenges (standin.go).
	caps capsStash

	attributionWarn    everyInterval
	unattributableWarn everyInterval
	limitWarn          everyInterval
	displaceWarn       everyInterval
	// preauthMismatch logs once that the gateway's pre-auth timer is
	// shorter than PreauthTimeout (conn.heldSocketLost).
	preauthMismatch sync.Once
	parker          *wire.Parker // parks idle sessions' relays (nil: none park)

	*group // shared with the handlers that replace or precede this one
}

// New returns a Handler for cfg.
func New(cfg Config, opts Options) (*Handler, error) {
	if cfg.Upstream == nil {
		return nil, errors.New("proxy: no upstream URL")
	}
	switch cfg.Upstream.Scheme {
	case "ws", "wss":
	default:
		return nil, errors.New("proxy: upstream URL scheme must be ws or wss")
	}
	cfg = cfg.withDefaults()
	h := &Handler{
		cfg:     cfg,
		log:     opts.Logger,
		access:  opts.AccessLog,
		metrics: opts.Metrics,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.backoff = retry.Backoff{Base: cfg.DialBackoffBase, Max: cfg.DialBackoffMax}
	h.attributionWarn.every = time.Minute
	h.unattributableWarn.every = time.Minute
	h.limitWarn.every = time.Minute
	h.displaceWarn.every = time.Minute

	if p := opts.Previous; p != nil {
		h.group = p.group
		h.bufPool, h.chunks = p.bufPool, p.chunks
	} else {
		h.group = newGroup()
		h.bufPool, h.chunks = newBufferPool(), wire.NewPool()
	}
	if p := opts.Previous; p != nil && sameGateway(p.cfg, cfg) {
		h.watcher = p.watcher
	} else {
		hp := retry.NewHTTPProbe(cfg.Upstream, cfg.TLSClientConfig)
		probe := hp.Probe
		var w *retry.Watcher
		w = retry.NewWatcher(retry.WatcherConfig{
			Probe:        probe,
			PollInterval: cfg.ReadinessPollInterval,
			ProbeTimeout: cfg.ReadinessProbeTimeout,
			FreshFor:     cfg.ReadinessFreshFor,
			OnChange: func(from, to retry.State) {
				if w != h.group.currentWatcher() {
					return // replaced by a reload: its upstream is no longer served
				}
				h.metrics.GatewayState(to.String())
				h.log.Info("gateway state", "from", from.String(), "to", to.String())
			},
			OnBlind: func(err error) {
				h.log.Warn("the gateway's readiness endpoints are unusable (is only its WebSocket path routed to it?); "+
					"holdfast holds no connect and relies on what connections see", "err", err)
			},
			OnProbe: func(s retry.State, err error) {
				switch {
				case err != nil && s == retry.Down:
					h.metrics.Probe(metrics.ProbeDown)
				case err != nil:
					h.metrics.Probe(metrics.ProbeError)
				case s == retry.Started:
					h.metrics.Probe(metrics.ProbeStarted)
				case s == retry.Down:
					h.metrics.Probe(metrics.ProbeDown)
				default:
					h.metrics.Probe(metrics.ProbeStarting)
				}
			},
		})
		h.watcher = w
		h.group.addWatcher(w)
		if opts.Previous != nil {
			// Nothing is known yet of the gateway now served.
			h.metrics.GatewayState(retry.Unknown.String())
		}
	}
	if p := opts.Previous; p != nil && sameGateway(p.cfg, cfg) && p.cfg.MaxPreauthPerAddress == cfg.MaxPreauthPerAddress {
		h.admission = p.admission
	} else {
		h.admission = share.NewSlots(cfg.MaxPreauthPerAddress)
	}
	h.group.setWatcher(h.watcher)
	if p := opts.Previous; p != nil && p.cfg.MaxHandshakes == cfg.MaxHandshakes && p.cfg.MaxPreauthBytes == cfg.MaxPreauthBytes {
		h.limits = p.limits // one count for the whole process
	} else {
		// New limits count from zero: the handshakes of the handlers
		// before count against their own until they end.
		h.limits = share.New(cfg.MaxHandshakes, cfg.MaxPreauthBytes)
	}
	h.netDialer = &net.Dialer{KeepAlive: -1} // see docs/operations.md, "Keepalive"
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.DialTimeout,
		ReadBufferSize:   readBufferSize,
		WriteBufferPool:  h.bufPool,
		WriteBufferSize:  writeBufferSize,
		// The gateway judges Origin itself (gateway.controlUi.allowedOrigins);
		// holdfast passes it through unchanged.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			http.Error(w, reason.Error(), status)
		},
	}
	h.batchedUpgrader = h.upgrader
	h.batchedUpgrader.HandshakeTimeout = 0
	h.passthrough = h.newPassthrough()
	h.parker = wire.NewParker(cfg.IdleParkAfter)
	return h, nil
}

// ServeHTTP sends control WebSocket upgrades through holdfast's handshake
// and everything else to the reverse proxy.
//
// Refusals come before any upstream socket is opened: a request target
// that is not a path gets 400 (see notOriginForm), a control upgrade that
// could not be upgraded 400 (checkUpgrade), and a request whose forwarding
// headers name no client holdfast can present (see attribute) the
// gateway's own 403 proxy_attribution_required; only the gateway's
// liveness probe passes that one, as on the gateway.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if notOriginForm(r) {
		http.Error(w, "holdfast: the request target must be a path", http.StatusBadRequest)
		return
	}
	if h.isControlUpgrade(r) {
		if status, reason := checkUpgrade(r); status != 0 {
			h.metrics.Handshake(metrics.ResultError, 0)
			w.Header().Set("Sec-Websocket-Version", "13")
			http.Error(w, reason, status)
			return
		}
		attr := h.attribute(r)
		if attr.Unattributable {
			h.metrics.Handshake(metrics.ResultRejected, 0)
			h.attributionRequired(w, r)
			return
		}
		ls, refused, displaced := h.limits.Admit(r.Context(), attr.Key())
		h.displace(displaced)
		if ls == nil {
			h.metrics.Refused(refused.Limit, refused.Scope)
			h.limitWarn.Do(func() {
				h.log.Warn("refused a client: a limit is reached and its address holds the most of it (HTTP 503)",
					"limit", string(refused.Limit), "scope", string(refused.Scope), "client", r.RemoteAddr)
			})
			refuseOverloaded(w)
			return
		}
		defer ls.Release()
		h.serveControl(keepEarlyData{w, h.chunks}, r, attr, ls)
		return
	}
	h.metrics.Passthrough()
	if h.attribute(r).Unattributable && !isLivenessPath(r.URL.Path) {
		h.attributionRequired(w, r)
		return
	}
	if websocket.IsWebSocketUpgrade(r) {
		h.serveTunnel(w, r)
		return
	}
	h.passthrough.ServeHTTP(w, r)
}

// refuseOverloaded answers an upgrade refused for one of holdfast's limits.
func refuseOverloaded(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, "holdfast: too many clients in their handshake; retry shortly", http.StatusServiceUnavailable)
}

// displace tells the handshakes displaced for a client from an address
// holding less (limits), counts them and logs it at most once a minute.
func (h *Handler) displace(ds []share.Displacement) {
	if len(ds) == 0 {
		return
	}
	share.Displace(ds, h.metrics)
	h.displaceWarn.Do(func() {
		h.log.Warn("displaced the newest handshake of the address holding the most of a limit, "+
			"for a client from an address holding less", "limit", string(ds[0].Limit), "address", ds[0].Lease.Key())
	})
}

// isLivenessPath: the gateway answers its liveness probe whatever the
// forwarding headers.
func isLivenessPath(p string) bool { return p == "/healthz" || p == "/health" }

func (h *Handler) isControlUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || !websocket.IsWebSocketUpgrade(r) {
		return false
	}
	for _, p := range h.cfg.PassthroughPaths {
		if strings.HasPrefix(r.URL.Path, p) {
			return false
		}
	}
	return true
}

// everyInterval runs a function at most once per interval.
type everyInterval struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
}

// Do runs f unless it ran less than every ago.
func (e *everyInterval) Do(f func()) {
	e.mu.Lock()
	now := time.Now()
	run := e.last.IsZero() || now.Sub(e.last) >= e.every
	if run {
		e.last = now
	}
	e.mu.Unlock()
	if run {
		f()
	}
}
