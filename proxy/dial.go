package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
	"github.com/holdfast-proxy/holdfast/retry"
)

// upstream is one upstream WebSocket that has delivered its challenge and
// not yet authenticated.
type upstream struct {
	ws        *wire.Conn
	challenge []byte        // the challenge frame, as received
	opened    time.Time     // when the upgrade completed: the gateway's pre-auth timer runs from here
	took      time.Duration // from the dial's start to its challenge
	protocol  string        // the subprotocol the gateway chose, if any
	release   func()        // gives back the admission slot
	m         *metrics.Metrics
}

// close writes a close frame, then drops the socket. Safe to call twice.
func (u *upstream) close(code int, reason string) {
	if u == nil || u.ws == nil {
		return
	}
	closeLeg(u.ws, websocket.FormatCloseMessage(code, reason), closeTimeout)
	u.drop()
}

// drop closes the socket (after whatever close frame the caller wrote) and
// releases the slot. Safe to call twice.
//
// The gateway counts an unauthenticated socket until it has seen it end,
// so the slot of one that has not authenticated is given back only then:
// holdfast half-closes the socket (its FIN, after any close frame) and
// waits, on a goroutine of its own, for the gateway to close its end (at
// most dropWait), then closes it and releases the slot. Otherwise a
// socket opened in the freed slot could reach the gateway before it had
// processed the end of the old one, one over the cap as it counts.
func (u *upstream) drop() {
	if u == nil || u.ws == nil {
		return
	}
	if u.release == nil {
		_ = u.ws.Close()
		return
	}
	if u.ws.CloseWrite() != nil {
		_ = u.ws.Close()
		u.authenticated()
		return
	}
	ws, release, m := u.ws, u.release, u.m
	u.release = nil
	go func() {
		ws.DiscardUntilEOF(time.Now().Add(dropWait)) // until the gateway's end closes
		_ = ws.Close()
		release()
		m.UpstreamPending(-1)
	}()
}

// dropWait bounds the wait for the gateway to close its end of a dropped
// unauthenticated socket before its slot is given back anyway.
const dropWait = time.Second

// authenticated gives back the admission slot: the socket no longer counts
// against the gateway's unauthenticated limit.
func (u *upstream) authenticated() {
	if u.release != nil {
		u.release()
		u.release = nil
		u.m.UpstreamPending(-1)
	}
}

// httpError is an upstream upgrade answered with a status other than 101.
type httpError struct {
	status int
	header http.Header
	body   []byte
	// broken: holdfast's own 502 for an answer that was neither a valid
	// 101 nor a refusal.
	broken bool
}

func (e *httpError) Error() string {
	return fmt.Sprintf("upstream refused the upgrade: HTTP %d", e.status)
}

// attributionRequired: the gateway's 403 proxy_attribution_required, its
// refusal of a forwarded client from a proxy it does not trust.
func (e *httpError) attributionRequired() bool {
	return e.status == http.StatusForbidden && strings.Contains(string(e.body), "proxy_attribution_required")
}

// retryable: 5xx means the gateway is not (yet) able to take the socket,
// including 503 "Too many unauthenticated sockets". 4xx is its answer, and
// so is holdfast's own 502 for an upgrade answered with anything but a
// refusal or a valid 101.
func (e *httpError) retryable() bool { return e.status >= 500 && !e.broken }

// budgetError reports that the budget ended before an upstream socket could be
// had; it wraps the last failure.
type budgetError struct{ last error }

func (e *budgetError) Error() string {
	return fmt.Sprintf("handshake budget spent before the gateway took the connection: %v", e.last)
}
func (e *budgetError) Unwrap() error { return e.last }

// dialUpstream opens an upstream socket and reads its challenge, retrying
// transport failures (refused, timeout, 5xx, a close before the challenge)
// with capped, fully jittered exponential back-off within budget. It returns
// an *httpError for a non-retryable upgrade answer, a *budgetError when the
// budget ran out, or ctx's error.
func (h *Handler) dialUpstream(ctx context.Context, target string, hdr http.Header, key string, budget retry.Budget) (*upstream, error) {
	for attempt := 1; ; attempt++ {
		u, err := h.dialOnce(ctx, target, hdr, key, budget)
		if err == nil {
			return u, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var he *httpError
		if errors.As(err, &he) && !he.retryable() {
			return nil, err
		}
		var be *budgetError
		if errors.As(err, &be) {
			return nil, err
		}
		h.noteDialFailure(err)
		delay := h.backoff.Dial(attempt)
		if !budget.Allows(delay, h.cfg.MinAttempt) {
			return nil, &budgetError{last: err}
		}
		h.metrics.Retry(metrics.RetryDial)
		h.log.Debug("upstream dial failed; retrying", "attempt", attempt, "delay", delay, "err", err)
		if err := sleep(ctx, delay); err != nil {
			return nil, err
		}
	}
}

// noteDialFailure records what a retryable dial failure says of the
// gateway: a refused, reset or dropped socket that it is down; a 503 (its
// per-address limit, or a gateway that answers) and a timeout (a gateway
// busy starting can be slow to upgrade) say nothing.
func (h *Handler) noteDialFailure(err error) {
	var he *httpError
	var ne net.Error
	switch {
	case errors.As(err, &he) && he.status == http.StatusServiceUnavailable:
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
	default:
		h.watcher.Observe(retry.Down)
	}
}

// dialOnce makes one attempt. It holds an admission slot for key from before
// the upgrade; on success the slot stays with the returned upstream.
func (h *Handler) dialOnce(ctx context.Context, target string, hdr http.Header, key string, budget retry.Budget) (*upstream, error) {
	return h.dialOnceSlot(ctx, target, hdr, key, budget, nil)
}

// dialOnceSlot is dialOnce with the admission slot slot, when not nil,
// handed over by the caller (the release function of a socket it gave up,
// see renewWarm) instead of one taken in line. Either way the slot is
// released when the attempt fails.
func (h *Handler) dialOnceSlot(ctx context.Context, target string, hdr http.Header, key string, budget retry.Budget, slot func()) (*upstream, error) {
	release := slot
	if release == nil {
		var err error
		release, err = h.admission.Acquire(ctx, budget.Deadline(), key)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, &budgetError{last: errors.New("waiting for an upstream handshake slot")}
		}
		h.metrics.UpstreamPending(1)
	}
	u := &upstream{release: release, m: h.metrics}
	ok := false
	defer func() {
		if !ok {
			u.authenticated()
		}
	}()

	began := time.Now()
	deadline := began.Add(min(h.cfg.DialTimeout, budget.Remaining()))
	ws, protocol, err := h.openUpstream(ctx, target, hdr, deadline)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return nil, err
		}
		var ne net.Error
		if !time.Now().Before(deadline) && (!errors.As(err, &ne) || !ne.Timeout()) {
			// An answer cut short by the deadline: bufio's ReadLine hands
			// net/http a partial line without the read's error, and the
			// fragment then fails as a malformed header. A slow gateway,
			// not a broken one.
			err = fmt.Errorf("%w (the upgrade answer was cut short: %v)", os.ErrDeadlineExceeded, err)
		}
		return nil, fmt.Errorf("dial upstream: %w", err)
	}
	u.ws = ws
	u.opened = time.Now()
	u.protocol = protocol

	// The gateway sends its challenge at once on upgrade; an event loop busy
	// with startup can delay it, so it gets the rest of the dial timeout:
	// the deadline openUpstream left on the socket.
	mt, data, err := ws.ReadMessage(preauthReadLimit, nil)
	if err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("upstream closed before its challenge: %w", err)
	}
	if mt != websocket.TextMessage || !gwproto.IsChallenge(data) {
		u.close(websocket.CloseProtocolError, "expected connect.challenge")
		return nil, errors.New("upstream sent something other than connect.challenge first")
	}
	_ = ws.SetDeadline(time.Time{})
	u.challenge = data
	u.took = time.Since(began)
	h.caps.note(data)
	ok = true
	return u, nil
}

// noteRefusal logs, at most once a minute, the refusal an operator must act
// on: the gateway does not trust holdfast's forwarding headers.
func (h *Handler) noteRefusal() {
	h.attributionWarn.Do(func() {
		h.log.Error("the gateway refused a forwarded client (HTTP 403 proxy_attribution_required): " +
			"add holdfast's address to gateway.trustedProxies in the gateway's config, " +
			"so that it accepts the X-Forwarded-For holdfast sets for remote clients")
	})
}

// upstreamURL is where a client's upgrade goes: the configured gateway URL
// with the client's path appended to its path and the client's query
// added, so that the gateway sees the request as the client made it.
func (h *Handler) upstreamURL(r *http.Request) string {
	u := *h.cfg.Upstream
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + strings.TrimPrefix(r.URL.Path, "/")
	u.RawPath = ""
	switch {
	case u.RawQuery == "":
		u.RawQuery = r.URL.RawQuery
	case r.URL.RawQuery != "":
		u.RawQuery += "&" + r.URL.RawQuery
	}
	return u.String()
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
