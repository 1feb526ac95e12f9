// Package fakegw is a fake OpenClaw gateway for tests. It listens on real
// sockets on 127.0.0.1 only and reproduces the gateway behaviour a reverse
// proxy depends on: the connect.challenge handshake, the startup window
// (UNAVAILABLE + close 1013), pre-auth limits and timers, token and
// Ed25519 device authentication, ingress attribution of forwarding headers,
// the HTTP probes that share the port, and post-hello events, RPCs and
// keepalive.
//
// The wire behaviour follows the measured protocol of OpenClaw 2026.9.6
// (protocol 4), or of the older release lines that Config.Generation names:
// 2026.5.12–2026.6.x (protocol 4 for everyone, no /startupz) and, also with
// Config.Legacy, 2026.4.29–2026.5.7 (protocol 3, no /startupz).
package fakegw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Protocol constants of the gateway being imitated.
const (
	// ProtocolVersion is the protocol a current gateway speaks.
	ProtocolVersion = 4
	// LegacyProtocolVersion is the protocol of 2026.4.29–2026.5.x gateways,
	// and the minimum a current gateway accepts from probe-mode clients and
	// nodes.
	LegacyProtocolVersion = 3
	// ServerVersion and LegacyServerVersion are reported in hello-ok and probe
	// bodies.
	ServerVersion       = "2026.9.6"
	LegacyServerVersion = "2026.4.29"
	// Protocol4OnlyServerVersion is reported by the Protocol4Only generation.
	Protocol4OnlyServerVersion = "2026.5.12"

	// RecipientProfileID is the recipientProfileId the Current generation
	// adds to every event it sends to an operator connection.
	RecipientProfileID = "owner"

	// DefaultPreauthTimeout is the pre-auth handshake timer.
	DefaultPreauthTimeout = 15 * time.Second
	// DefaultMaxPreauthPerIP is the unauthenticated-socket budget per
	// attributed client IP.
	DefaultMaxPreauthPerIP = 32
	// DefaultTickInterval is the tick event period after hello.
	DefaultTickInterval = 30 * time.Second
	// DefaultPingInterval is the WebSocket ping period after hello.
	DefaultPingInterval = 25 * time.Second
	// DefaultMaxPayload is policy.maxPayload (25 MiB).
	DefaultMaxPayload = 26214400
	// MaxBufferedBytes is policy.maxBufferedBytes.
	MaxBufferedBytes = 52428800
	// MaxPreauthPayload is the largest frame accepted before hello.
	MaxPreauthPayload = 65536

	// StartupCloseCode and StartupCloseReason close a connect rejected during
	// the startup window.
	StartupCloseCode   = 1013
	StartupCloseReason = "gateway starting"

	// closeWait bounds how long a server-initiated close waits for the peer's
	// close frame before the TCP connection is dropped.
	closeWait = time.Second
	// writeWait bounds every write.
	writeWait = 5 * time.Second
)

// Generation is the gateway release line whose protocol admission and
// event envelopes the fake imitates (PROTOCOL.md §10).
type Generation int

const (
	// Current is 2026.9.x, the default. Protocol 4: a connect passes when
	// minProtocol ≤ 4 ≤ maxProtocol, a probe (client.mode "probe") when
	// 3 ≤ maxProtocol and minProtocol ≤ 4, a node (role and client.mode
	// "node") when minProtocol ≤ 3 ≤ maxProtocol (both from 2026.7.1). A
	// refusal's details are {code:"PROTOCOL_MISMATCH", clientMinProtocol,
	// clientMaxProtocol, expectedProtocol:4, minimumProbeProtocol:3}. Events
	// to operator connections carry recipientProfileId (from 2026.9.5).
	Current Generation = iota
	// Protocol4Only is 2026.5.12–2026.6.x: protocol 4 for every client,
	// probes and nodes too; refusal details {expectedProtocol:4,
	// minimumProbeProtocol:4}; events without recipientProfileId; no
	// /startupz (its Control UI page answers that path with 200 text/html,
	// measured on 2026.5.12: PROTOCOL.md §9), /readyz only.
	Protocol4Only
	// Protocol3 is 2026.4.29–2026.5.7 (what Config.Legacy selects): the
	// connect passes unless maxProtocol < 3 or minProtocol > 3; refusal
	// details {expectedProtocol:3}; no /startupz.
	Protocol3
)

// Config configures a fake gateway. The zero value is a ready gateway on a
// random 127.0.0.1 port with auth mode none.
type Config struct {
	// Addr is the listen address; "" means "127.0.0.1:0". The host must be
	// 127.0.0.1.
	Addr string
	// Token is the shared secret; "" means auth mode none (any or no token
	// is accepted).
	Token string
	// StartupWindow is the time after Start/Restart during which every
	// schema-valid connect gets the startup UNAVAILABLE frame and close
	// 1013 "gateway starting". SetStarted ends it early.
	StartupWindow time.Duration
	// PreauthTimeout closes a socket that has not completed hello with 1000
	// and an empty reason; 0 means DefaultPreauthTimeout.
	PreauthTimeout time.Duration
	// MaxPreauthPerIP limits concurrent unauthenticated sockets per
	// attributed client IP; 0 means DefaultMaxPreauthPerIP, <0 unlimited.
	// The upgrade over the limit gets HTTP 503 "Too many unauthenticated
	// sockets".
	MaxPreauthPerIP int
	// Legacy imitates 2026.4.29–2026.5.x: protocol 3 and no /startupz (the
	// Control UI page answers it with 200 text/html).
	Legacy bool
	// Generation selects the release line (default Current); Legacy true
	// means Protocol3 whatever it says.
	Generation Generation
	// TrustedProxies lists CIDRs (or single IPs) of gateway.trustedProxies.
	TrustedProxies []string
	// PairRemoteDevices treats every device with a valid proof as paired,
	// remote ones included, as a gateway whose operator approved the
	// devices beforehand would. Without it only direct-local devices pair
	// (silently), and a remote device gets NOT_PAIRED / PAIRING_REQUIRED.
	PairRemoteDevices bool
	// TickInterval is the tick event period after hello; 0 means
	// DefaultTickInterval.
	TickInterval time.Duration
	// PingInterval is the WebSocket ping period after hello; a socket that
	// has not answered a ping by the next one is terminated without a close
	// frame. 0 means DefaultPingInterval.
	PingInterval time.Duration
	// Echo makes authenticated sessions echo every data message back
	// verbatim (same message type) instead of handling RPCs; no events are
	// sent to them (pings still are).
	Echo bool
	// MaxPayload is policy.maxPayload and the read limit after hello; 0
	// means DefaultMaxPayload.
	MaxPayload int64
	// ChallengeDelay holds each socket's connect.challenge this long after
	// the upgrade (the pre-auth timer runs from the upgrade), as a gateway
	// whose event loop is busy starting sends it late (measured on
	// 2026.5.12: 1.1 s). Frames a client sends meanwhile are read after
	// the challenge.
	ChallengeDelay time.Duration
	// ReadinessDelay, if set, is called for each /startupz and /readyz
	// request with whether the startup gate is open; the answer is held
	// that long (a gateway too busy to answer its probes promptly).
	ReadinessDelay func(started bool) time.Duration
	// Logf, if set, receives diagnostic messages.
	Logf func(format string, args ...any)
}

// Stats are cumulative counters over the life of a Gateway, across
// restarts.
type Stats struct {
	// Upgrades counts accepted WebSocket upgrades; Rejected503 upgrades
	// refused for the pre-auth budget; Rejected403 upgrades refused for
	// ingress attribution.
	Upgrades, Rejected503, Rejected403 int64
	// ConnectAttempts counts connect requests received, valid or not.
	ConnectAttempts int64
	// StartupRejects counts startup UNAVAILABLE answers.
	StartupRejects int64
	// HelloOK counts successful handshakes.
	HelloOK int64
	// StartupzPolls, ReadyzPolls and HealthzPolls count HTTP requests to
	// /startupz|/startup, /readyz|/ready and /healthz|/health.
	StartupzPolls, ReadyzPolls, HealthzPolls int64
	// MaxPreauthSeen is the highest number of concurrent unauthenticated
	// sockets seen for any one attributed IP.
	MaxPreauthSeen int64
}

type counters struct {
	upgrades, rejected503, rejected403       atomic.Int64
	connectAttempts, startupRejects, helloOK atomic.Int64
	startupzPolls, readyzPolls, healthzPolls atomic.Int64
	maxPreauthSeen                           atomic.Int64
}

// Gateway is a running (or stopped) fake gateway. All methods are safe for
// concurrent use.
type Gateway struct {
	cfg     Config
	addr    string // resolved 127.0.0.1:port, fixed for the Gateway's life
	trusted []*net.IPNet
	stats   counters

	// lifeMu serialises Stop and Restart.
	lifeMu sync.Mutex

	mu        sync.Mutex
	running   bool
	srv       *http.Server
	bootTime  time.Time
	windowEnd time.Time
	started   bool // SetStarted was called in this life
	sessions  map[*session]struct{}
	preauth   map[string]int
	upgrades  []http.Header
	connSeq   int64

	wg sync.WaitGroup // serve loop, upgrade handlers, sessions, keepalives
}

// Start validates cfg, listens and serves. The startup window (if any)
// starts now.
func Start(cfg Config) (*Gateway, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("fakegw: bad Addr %q: %w", cfg.Addr, err)
	}
	if host != "127.0.0.1" {
		return nil, fmt.Errorf("fakegw: Addr %q: only 127.0.0.1 is allowed", cfg.Addr)
	}
	if cfg.PreauthTimeout <= 0 {
		cfg.PreauthTimeout = DefaultPreauthTimeout
	}
	if cfg.MaxPreauthPerIP == 0 {
		cfg.MaxPreauthPerIP = DefaultMaxPreauthPerIP
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	g := &Gateway{cfg: cfg}
	for _, s := range cfg.TrustedProxies {
		n, err := parseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("fakegw: TrustedProxies: %w", err)
		}
		g.trusted = append(g.trusted, n)
	}
	ln, err := net.Listen("tcp4", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("fakegw: listen: %w", err)
	}
	g.addr = ln.Addr().String()
	g.serve(ln, cfg.StartupWindow)
	return g, nil
}

// serve resets per-life state and starts serving ln.
func (g *Gateway) serve(ln net.Listener, window time.Duration) {
	srv := &http.Server{
		Handler:           http.HandlerFunc(g.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	now := time.Now()
	g.mu.Lock()
	g.running = true
	g.srv = srv
	g.bootTime = now
	g.windowEnd = now.Add(window)
	g.started = window <= 0
	g.sessions = make(map[*session]struct{})
	g.preauth = make(map[string]int)
	g.wg.Add(1)
	g.mu.Unlock()
	g.logf("listening on %s (startup window %v)", g.addr, window)
	go func() {
		defer g.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.logf("serve: %v", err)
		}
	}()
}

// Addr returns the listen address, "127.0.0.1:port".
func (g *Gateway) Addr() string { return g.addr }

// URL returns the WebSocket URL, "ws://127.0.0.1:port".
func (g *Gateway) URL() string { return "ws://" + g.addr }

// HTTPURL returns the HTTP base URL, "http://127.0.0.1:port".
func (g *Gateway) HTTPURL() string { return "http://" + g.addr }

// SetStarted ends the startup window now: from this call on, connects are
// admitted and /startupz answers 200.
func (g *Gateway) SetStarted() {
	g.mu.Lock()
	g.started = true
	g.mu.Unlock()
}

// startupPending reports whether the startup window is open.
func (g *Gateway) startupPending() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.started && time.Now().Before(g.windowEnd)
}

func (g *Gateway) uptimeMs() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return time.Since(g.bootTime).Milliseconds()
}

func (g *Gateway) generation() Generation {
	if g.cfg.Legacy {
		return Protocol3
	}
	return g.cfg.Generation
}

// hasStartupz reports whether the imitated release serves /startupz:
// neither 2026.4.29–2026.5.7 nor 2026.5.12 does (PROTOCOL.md §9).
func (g *Gateway) hasStartupz() bool { return g.generation() == Current }

func (g *Gateway) version() string {
	switch g.generation() {
	case Protocol3:
		return LegacyServerVersion
	case Protocol4Only:
		return Protocol4OnlyServerVersion
	}
	return ServerVersion
}

func (g *Gateway) protocol() int {
	if g.generation() == Protocol3 {
		return LegacyProtocolVersion
	}
	return ProtocolVersion
}

// Stop shuts the gateway down the way SIGTERM does: authenticated sessions
// get event shutdown{reason:"gateway stopping"} (not in Echo mode) and then
// close 1012 "service restart"; unauthenticated sockets get the close only.
// Each close waits up to 1 s for the peer's close frame. Stop closes the
// listener, releasing the port, and returns once every goroutine of the
// gateway has exited. Stopping a stopped gateway does nothing.
func (g *Gateway) Stop() {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	g.stop()
}

func (g *Gateway) stop() {
	g.mu.Lock()
	if !g.running {
		g.mu.Unlock()
		return
	}
	g.running = false
	srv := g.srv
	sessions := make([]*session, 0, len(g.sessions))
	for s := range g.sessions {
		sessions = append(sessions, s)
	}
	g.mu.Unlock()

	// Closing sockets first mirrors the gateway: clients see the shutdown
	// event and 1012 while the port is still bound.
	for _, s := range sessions {
		if s.isAuthed() && !g.cfg.Echo {
			s.sendEvent("shutdown", map[string]any{"reason": "gateway stopping"})
		}
		s.closeWith(1012, "service restart")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
	cancel()
	g.wg.Wait()
	g.logf("stopped")
}

// Close is Stop; it is idempotent.
func (g *Gateway) Close() { g.Stop() }

// Restart stops the gateway if it is running, then listens again on the same
// address with a fresh startup window. Sessions, pre-auth counts and the
// started flag are reset; Stats and Upgrades are cumulative.
func (g *Gateway) Restart(window time.Duration) error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	g.stop()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(3 * time.Second)
	for {
		ln, err = net.Listen("tcp4", g.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("fakegw: relisten on %s: %w", g.addr, err)
	}
	g.serve(ln, window)
	return nil
}

// PreauthSockets returns how many unauthenticated sockets are open now, all
// attributed addresses together.
func (g *Gateway) PreauthSockets() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, v := range g.preauth {
		n += v
	}
	return n
}

// Stats returns a snapshot of the cumulative counters.
func (g *Gateway) Stats() Stats {
	c := &g.stats
	return Stats{
		Upgrades:        c.upgrades.Load(),
		Rejected503:     c.rejected503.Load(),
		Rejected403:     c.rejected403.Load(),
		ConnectAttempts: c.connectAttempts.Load(),
		StartupRejects:  c.startupRejects.Load(),
		HelloOK:         c.helloOK.Load(),
		StartupzPolls:   c.startupzPolls.Load(),
		ReadyzPolls:     c.readyzPolls.Load(),
		HealthzPolls:    c.healthzPolls.Load(),
		MaxPreauthSeen:  c.maxPreauthSeen.Load(),
	}
}

// Upgrades returns clones of the request headers of every WebSocket upgrade
// request seen (accepted or refused), in arrival order, across restarts.
func (g *Gateway) Upgrades() []http.Header {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]http.Header, len(g.upgrades))
	for i, h := range g.upgrades {
		out[i] = h.Clone()
	}
	return out
}

// CloseSessions sends a close frame with code and reason to every
// authenticated session (for close-propagation tests). Each session then
// waits up to 1 s for the peer's close frame before dropping the socket.
func (g *Gateway) CloseSessions(code int, reason string) {
	for _, s := range g.liveSessions() {
		if s.isAuthed() {
			s.closeWith(code, reason)
		}
	}
}

func (g *Gateway) liveSessions() []*session {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*session, 0, len(g.sessions))
	for s := range g.sessions {
		out = append(out, s)
	}
	return out
}

func (g *Gateway) logf(format string, args ...any) {
	if g.cfg.Logf != nil {
		g.cfg.Logf("fakegw "+format, args...)
	}
}

// reservePreauth takes one unit of the pre-auth budget of ip. It reports
// false if the budget is exhausted or the gateway is stopping.
func (g *Gateway) reservePreauth(ip string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.running {
		return false
	}
	n := g.preauth[ip]
	if g.cfg.MaxPreauthPerIP > 0 && n >= g.cfg.MaxPreauthPerIP {
		return false
	}
	n++
	g.preauth[ip] = n
	for {
		cur := g.stats.maxPreauthSeen.Load()
		if int64(n) <= cur || g.stats.maxPreauthSeen.CompareAndSwap(cur, int64(n)) {
			break
		}
	}
	return true
}

func (g *Gateway) releasePreauth(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.preauth == nil {
		return
	}
	if n := g.preauth[ip]; n <= 1 {
		delete(g.preauth, ip)
	} else {
		g.preauth[ip] = n - 1
	}
}

func (g *Gateway) handleUpgrade(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.upgrades = append(g.upgrades, r.Header.Clone())
	if !g.running {
		g.mu.Unlock()
		http.Error(w, "gateway stopping", http.StatusServiceUnavailable)
		return
	}
	g.wg.Add(1)
	g.mu.Unlock()
	defer g.wg.Done()

	att := g.attribute(r)
	if !att.ok {
		g.stats.rejected403.Add(1)
		g.logf("upgrade from %s refused: proxy attribution required", r.RemoteAddr)
		writeAttributionRequired(w)
		return
	}
	if !g.reservePreauth(att.ip) {
		g.stats.rejected503.Add(1)
		g.logf("upgrade from %s refused: pre-auth budget", att.ip)
		http.Error(w, "Too many unauthenticated sockets", http.StatusServiceUnavailable)
		return
	}
	hdr := http.Header{}
	if protos := websocket.Subprotocols(r); len(protos) > 0 {
		hdr.Set("Sec-WebSocket-Protocol", protos[0])
	}
	up := websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	ws, err := up.Upgrade(w, r, hdr)
	if err != nil {
		g.releasePreauth(att.ip)
		g.logf("upgrade failed: %v", err)
		return
	}
	g.stats.upgrades.Add(1)
	s := newSession(g, ws, att)
	if !g.register(s) {
		// Stop began between the reservation and now.
		s.closeWith(1012, "service restart")
	}
	s.run()
}

func (g *Gateway) register(s *session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.running {
		return false
	}
	g.connSeq++
	s.connID = fmt.Sprintf("conn-%d-%d", g.bootTime.UnixMilli(), g.connSeq)
	g.sessions[s] = struct{}{}
	return true
}

func (g *Gateway) unregister(s *session) {
	g.mu.Lock()
	delete(g.sessions, s)
	g.mu.Unlock()
}

// ---- HTTP ----------------------------------------------------------------

const controlUIPage = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>OpenClaw Control</title></head>
<body><div id="app">OpenClaw Control UI</div></body>
</html>
`

func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if websocket.IsWebSocketUpgrade(r) {
		g.handleUpgrade(w, r)
		return
	}
	path := r.URL.Path
	switch path {
	case "/healthz", "/health":
		g.stats.healthzPolls.Add(1)
		if !probeMethod(w, r) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "status": "live"})
		return
	case "/startupz", "/startup":
		g.stats.startupzPolls.Add(1)
	case "/readyz", "/ready":
		g.stats.readyzPolls.Add(1)
	}
	att := g.attribute(r)
	if !att.ok {
		writeAttributionRequired(w)
		return
	}
	if d := g.readinessDelay(path); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	switch path {
	case "/startupz", "/startup":
		if !g.hasStartupz() {
			g.serveControlUI(w, r)
			return
		}
		if !probeMethod(w, r) {
			return
		}
		pending := g.startupPending()
		body := map[string]any{"ok": !pending, "status": "started"}
		code := http.StatusOK
		if pending {
			body["status"] = "starting"
			code = http.StatusServiceUnavailable
		}
		if att.local {
			body["version"] = g.version()
			body["uptimeMs"] = g.uptimeMs()
			if pending {
				body["pendingReason"] = "startup-sidecars"
			}
		}
		writeJSON(w, code, body)
	case "/readyz", "/ready":
		if !probeMethod(w, r) {
			return
		}
		pending := g.startupPending()
		code := http.StatusOK
		if pending {
			code = http.StatusServiceUnavailable
		}
		body := map[string]any{"ready": !pending}
		if att.local {
			failing := []string{}
			if pending {
				failing = append(failing, "startup-sidecars")
			}
			body["failing"] = failing
			body["uptimeMs"] = g.uptimeMs()
		}
		writeJSON(w, code, body)
	case "/":
		g.serveControlUI(w, r)
	default:
		if g.startupPending() {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "Plugin runtime is starting", http.StatusServiceUnavailable)
			return
		}
		http.NotFound(w, r)
	}
}

// readinessDelay is how long to hold a readiness probe's answer.
func (g *Gateway) readinessDelay(path string) time.Duration {
	if g.cfg.ReadinessDelay == nil {
		return 0
	}
	switch path {
	case "/startupz", "/startup", "/readyz", "/ready":
		return g.cfg.ReadinessDelay(!g.startupPending())
	}
	return 0
}

func (g *Gateway) serveControlUI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(controlUIPage))
	}
}

// probeMethod answers 405 to anything but GET and HEAD and reports whether
// the request may proceed.
func probeMethod(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": map[string]any{"message": "Method Not Allowed", "type": "method_not_allowed"}})
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeAttributionRequired(w http.ResponseWriter) {
	writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]any{
		"message": "Proxy client attribution is required: add the proxy to gateway.trustedProxies and forward X-Forwarded-For",
		"type":    "proxy_attribution_required",
	}})
}

// ---- attribution ------------------------------------------------------------

type attribution struct {
	ok    bool   // false: unattributable proxy, answer 403
	local bool   // direct-local
	ip    string // attributed client IP
}

func parseCIDR(s string) (*net.IPNet, error) {
	if strings.Contains(s, "/") {
		_, n, err := net.ParseCIDR(s)
		return n, err
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, fmt.Errorf("bad address %q", s)
	}
	bits := 128
	if ip4 := ip.To4(); ip4 != nil {
		ip, bits = ip4, 32
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
}

func (g *Gateway) isTrusted(ip net.IP) bool {
	for _, n := range g.trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// hasForwardingHeaders reports Forwarded, X-Real-IP, X-Forwarded-* or
// Tailscale-* headers.
func hasForwardingHeaders(h http.Header) bool {
	for k := range h {
		ck := http.CanonicalHeaderKey(k)
		if ck == "Forwarded" || ck == "X-Real-Ip" || strings.HasPrefix(ck, "X-Forwarded-") || strings.HasPrefix(ck, "Tailscale-") {
			return true
		}
	}
	return false
}

func parseHop(s string) net.IP {
	s = strings.TrimSpace(s)
	if ip := net.ParseIP(s); ip != nil {
		return ip
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		return net.ParseIP(host)
	}
	return net.ParseIP(strings.Trim(s, "[]"))
}

// attribute classifies a request the way the gateway's ingress attribution
// does: direct-local (loopback peer, no forwarding headers), trusted-proxy
// (peer in TrustedProxies; client is the right-most X-Forwarded-For hop that
// is neither loopback nor trusted), unattributable (forwarding headers from
// an untrusted peer, or a trusted proxy without a usable hop), or
// direct-remote.
func (g *Gateway) attribute(r *http.Request) attribution {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer := net.ParseIP(host)
	fwd := hasForwardingHeaders(r.Header)
	if peer != nil && peer.IsLoopback() && !fwd {
		return attribution{ok: true, local: true, ip: peer.String()}
	}
	if peer != nil && g.isTrusted(peer) {
		var hops []string
		for _, v := range r.Header.Values("X-Forwarded-For") {
			hops = append(hops, strings.Split(v, ",")...)
		}
		for i := len(hops) - 1; i >= 0; i-- {
			if strings.TrimSpace(hops[i]) == "" {
				continue
			}
			ip := parseHop(hops[i])
			if ip == nil {
				return attribution{}
			}
			if ip.IsLoopback() || g.isTrusted(ip) {
				continue
			}
			return attribution{ok: true, ip: ip.String()}
		}
		return attribution{}
	}
	if fwd {
		return attribution{}
	}
	return attribution{ok: true, ip: host}
}
