package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
	"github.com/holdfast-proxy/holdfast/retry"
)

// group is what the handlers of one holdfast process share across
// configuration reloads: the connections Shutdown reaches and the readiness
// watchers to stop.
//
// Lock order: group.mu is never held while writing to a socket or waiting;
// Shutdown copies what it needs under it and works on the copy.
type group struct {
	refusing atomic.Bool // new upgrades are answered 503
	watcher  atomic.Pointer[retry.Watcher]

	mu         sync.Mutex
	sessions   map[*conn]bool     // spliced sessions: true once sent their close frames
	handshakes map[*conn]struct{} // upgraded clients still in their handshake
	tunnels    map[*tunnel]bool   // passthrough WebSockets: true once sent their close frames
	closing    bool               // sessions spliced from now on are closed at once
	stopped    bool               // stopped at once: whatever is tracked now is closed at once
	watchers   []*retry.Watcher   // every watcher made, for Close

	// wg counts connections being served: handshakes and sessions.
	wg sync.WaitGroup
}

func newGroup() *group {
	return &group{sessions: make(map[*conn]bool), handshakes: make(map[*conn]struct{}), tunnels: make(map[*tunnel]bool)}
}

func (g *group) addWatcher(w *retry.Watcher) {
	g.mu.Lock()
	g.watchers = append(g.watchers, w)
	g.mu.Unlock()
}

func (g *group) setWatcher(w *retry.Watcher)    { g.watcher.Store(w) }
func (g *group) currentWatcher() *retry.Watcher { return g.watcher.Load() }

// Handshakes returns how many upgraded clients are in their handshake,
// across every handler sharing this one's sessions.
func (h *Handler) Handshakes() int {
	h.group.mu.Lock()
	defer h.group.mu.Unlock()
	return len(h.group.handshakes)
}

// Sessions returns how many spliced sessions are open, across every
// handler sharing this one's sessions.
func (h *Handler) Sessions() int {
	h.group.mu.Lock()
	defer h.group.mu.Unlock()
	return len(h.group.sessions)
}

// sameGateway reports whether a and b reach the same gateway the same way,
// so that what one knows of its startup holds for the other.
func sameGateway(a, b Config) bool {
	return a.Upstream.String() == b.Upstream.String() &&
		tlsEqual(a.TLSClientConfig, b.TLSClientConfig) &&
		a.ReadinessPollInterval == b.ReadinessPollInterval &&
		a.ReadinessFreshFor == b.ReadinessFreshFor &&
		a.ReadinessProbeTimeout == b.ReadinessProbeTimeout
}

func tlsEqual(a, b *tls.Config) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.ServerName != b.ServerName || a.InsecureSkipVerify != b.InsecureSkipVerify {
		return false
	}
	if a.RootCAs == nil || b.RootCAs == nil {
		return a.RootCAs == b.RootCAs
	}
	return a.RootCAs.Equal(b.RootCAs)
}

// Ready reports whether the handler takes new connections: true until
// Refuse, Drain or Shutdown.
func (h *Handler) Ready() bool { return !h.group.refusing.Load() }

// Refuse makes the handler, and every handler sharing its sessions, answer
// new control upgrades with 503 and Retry-After. Connections already
// accepted go on.
func (h *Handler) Refuse() { h.group.refusing.Store(true) }

// Close frames holdfast sends when it stops.
const (
	// closeDrain tells a spliced client that holdfast is going away and
	// that it should reconnect: 1012 is what the gateway itself sends on a
	// restart, and what OpenClaw clients reconnect on.
	closeDrain       = 1012
	closeDrainReason = "holdfast restarting"
)

// Shutdown is Drain with no spread: every spliced session is closed at
// once.
func (h *Handler) Shutdown(ctx context.Context) error { return h.Drain(ctx, 0) }

// stopCloseBound is how long a stop at once waits for close frames to be
// written before it closes the sockets under them.
const stopCloseBound = 250 * time.Millisecond

// Drain stops the handler gracefully. New upgrades are refused (see
// Refuse). The spliced sessions open now are closed one after the other,
// spread evenly over spread, each with 1012 "holdfast restarting" toward the
// client (on which clients reconnect) and 1001 toward the gateway; a session
// spliced later, from a handshake that was in flight, is closed as soon as
// it is spliced. Handshakes in flight finish within their budget.
//
// Drain returns nil once every connection has ended, or ctx's error when
// ctx ends first. Then it stops at once: every session still open gets the
// close frames it has not had yet (within stopCloseBound) and its sockets
// are closed without waiting for the peers; Drain returns at most
// stopCloseBound after ctx ends. It never holds the handler's lock while it
// writes or waits.
func (h *Handler) Drain(ctx context.Context, spread time.Duration) error {
	g := h.group
	g.refusing.Store(true)
	g.mu.Lock()
	g.closing = true
	list := make([]*conn, 0, len(g.sessions))
	for c := range g.sessions {
		list = append(list, c)
	}
	tunnels := make([]*tunnel, 0, len(g.tunnels))
	for t := range g.tunnels {
		tunnels = append(tunnels, t)
	}
	g.mu.Unlock()
	for _, t := range tunnels {
		g.startTunnelDrain(t, h.cfg.CloseGrace)
	}

	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()

	start := time.Now()
	for i, c := range list {
		if spread > 0 {
			at := start.Add(spread * time.Duration(i) / time.Duration(len(list)))
			if !sleepUntil(ctx, at) {
				return h.stopNow(ctx.Err())
			}
		}
		g.startDrain(c)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return h.stopNow(ctx.Err())
	}
}

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// startDrain sends a spliced session its drain close frames, once, on a
// goroutine of its own: a client that does not read must not hold the
// others up. It reports whether it started them.
func (g *group) startDrain(c *conn) bool {
	g.mu.Lock()
	sent, ok := g.sessions[c]
	if ok && !sent {
		g.sessions[c] = true
	}
	g.mu.Unlock()
	if !ok || sent {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		c.goingAway()
	}()
	return true
}

// trackTunnel registers a passthrough WebSocket for Drain (counted in wg
// until untrackTunnel); one that starts while holdfast drains is closed at
// once.
func (g *group) trackTunnel(t *tunnel, grace time.Duration) {
	g.mu.Lock()
	g.tunnels[t] = false
	g.wg.Add(1)
	closing := g.closing
	g.mu.Unlock()
	if closing {
		g.startTunnelDrain(t, grace)
	}
}

// untrackTunnel removes a tunnel that has ended.
func (g *group) untrackTunnel(t *tunnel) {
	g.mu.Lock()
	delete(g.tunnels, t)
	g.mu.Unlock()
	g.wg.Done()
}

// startTunnelDrain sends a tunnel its close frames, once, on a goroutine
// of its own, and closes its sockets CloseGrace later if the peers have
// not.
func (g *group) startTunnelDrain(t *tunnel, grace time.Duration) {
	g.mu.Lock()
	sent, ok := g.tunnels[t]
	if ok && !sent {
		g.tunnels[t] = true
	}
	g.mu.Unlock()
	if !ok || sent {
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		t.goingAway(grace)
	}()
}

// stopNow ends every connection still open: spliced sessions get the
// close frames not sent yet; clients still in their handshake are stopped
// where they wait and end as the endings table says (endStoppedStarting:
// 1013 "gateway starting" while the gateway has not started, on which
// current clients retry; endStopped: 1001 after). Within stopCloseBound,
// then the sockets still open are closed without waiting for the peers.
// It returns why, with what was still open.
func (h *Handler) stopNow(why error) error {
	g := h.group
	g.mu.Lock()
	g.stopped = true
	err := fmt.Errorf("%w: %d sessions and %d handshakes still open", why, len(g.sessions), len(g.handshakes))
	rest := make([]*conn, 0, len(g.sessions))
	var unsent []*conn
	for c, sent := range g.sessions {
		rest = append(rest, c)
		if !sent {
			unsent = append(unsent, c)
			g.sessions[c] = true
		}
	}
	shakes := make([]*conn, 0, len(g.handshakes))
	for c := range g.handshakes {
		shakes = append(shakes, c)
	}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range unsent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.goingAway()
		}()
	}
	for _, c := range shakes {
		c.stopWaiting()
	}
	written := make(chan struct{})
	go func() {
		wg.Wait()
		close(written)
	}()
	deadline := time.Now().Add(stopCloseBound)
	for (!isClosed(written) || h.Handshakes() > 0) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// Closing releases any write still blocked, in the close frames above
	// or in the splice. A handshake that has not ended by now gets its
	// close frame here, and its socket closed: its goroutine then unwinds.
	for _, c := range rest {
		_ = c.client.Close()
		_ = c.up.ws.Close()
	}
	g.mu.Lock()
	tunnels := make([]*tunnel, 0, len(g.tunnels))
	for t := range g.tunnels {
		tunnels = append(tunnels, t)
	}
	g.mu.Unlock()
	for _, t := range tunnels {
		t.closeSockets()
	}
	g.mu.Lock()
	shakes = shakes[:0]
	for c := range g.handshakes {
		shakes = append(shakes, c)
	}
	g.mu.Unlock()
	for _, c := range shakes {
		c.stopHandshake()
		_ = c.client.Close()
	}
	<-written
	return err
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (g *group) isStopped() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopped
}

// stopWaiting cancels what a client's handshake waits on (a hold, a late
// dial, the gateway's answer, a back-off), so that it ends at once as
// endStoppedStarting or endStopped.
func (c *conn) stopWaiting() {
	c.mu.Lock()
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	c.signal()
}

// stopHandshake closes the client leg of a handshake that did not end by
// itself in time (see stopNow), as endStoppedStarting or endStopped would.
// Its close frame is the last frame on the leg.
func (c *conn) stopHandshake() {
	code, reason := gwproto.StartupCloseCode, gwproto.StartupCloseReason
	if s, _ := c.h.watcher.State(); s == retry.Started {
		code, reason = websocket.CloseGoingAway, "holdfast shutting down"
	}
	closeLeg(c.cw, websocket.FormatCloseMessage(code, reason), stopCloseBound)
}

// trackHandshake registers an upgraded client in its handshake, for a stop
// at once; the returned function removes it.
func (h *Handler) trackHandshake(c *conn) (untrack func()) {
	g := h.group
	g.mu.Lock()
	g.handshakes[c] = struct{}{}
	stopped := g.stopped
	g.mu.Unlock()
	if stopped {
		c.stopWaiting()
	}
	return func() {
		g.mu.Lock()
		delete(g.handshakes, c)
		g.mu.Unlock()
	}
}

// track registers a spliced session for Drain; the returned function
// removes it. A session spliced while holdfast drains is closed at once.
func (h *Handler) track(c *conn) (untrack func()) {
	g := h.group
	g.mu.Lock()
	closing, stopped := g.closing, g.stopped
	g.sessions[c] = stopped
	g.mu.Unlock()
	switch {
	case stopped:
		c.goingAway() // bounded: a second per leg
		_ = c.client.Close()
		_ = c.up.ws.Close()
	case closing:
		g.startDrain(c)
	}
	return func() {
		g.mu.Lock()
		delete(g.sessions, c)
		g.mu.Unlock()
	}
}

// Close stops the readiness watchers of this handler and of every handler
// sharing its sessions. Call it after Shutdown or Drain.
func (h *Handler) Close() {
	h.group.mu.Lock()
	ws := append([]*retry.Watcher(nil), h.group.watchers...)
	h.group.mu.Unlock()
	for _, w := range ws {
		w.Close()
	}
}
