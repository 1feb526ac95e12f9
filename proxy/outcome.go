package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
	"github.com/holdfast-proxy/holdfast/retry"
)

// ending names one way a client connection, or the session it became, can
// end. The step that ends a connection returns an outcome naming its
// ending; conn.end alone turns it into what each leg is told, the
// handshake metric, the log line and the readiness evidence (endings).
type ending int

// The endings. Those before endSessionGatewayClosed end a handshake and
// count in holdfast_handshakes_total; the rest end a spliced session.
const (
	// endOK: hello-ok; the session is spliced.
	endOK ending = iota
	// endNotConnect: the client's first frame is not a connect; it goes
	// to the gateway, which answers it through the splice.
	endNotConnect

	// Before the client's WebSocket exists: HTTP answers.
	endClientLeftDialing
	endUpgradeRefused
	endAttributionRefused
	endUnreachable
	endBadUpstream
	endClientUpgradeFailed
	// A client from an address holding less took this handshake's place
	// in holdfast's limits (proxy/internal/share) before its upgrade.
	endDisplacedDialing

	// The client's WebSocket is open, its handshake not done.
	endClientGone
	endPreauthTooLarge
	endTooManyPending
	endPreauthBudget
	// A client from an address holding less took this handshake's place
	// in holdfast's limits (proxy/internal/share).
	endDisplaced
	endConnectTimeout
	endRejected
	endGatewayClosed
	endStartupUnavailable
	endUpstreamLost
	endUnreachableLate
	endStandInUnavailable
	endUpgradeRefusedLate
	endBadUpstreamLate
	endAttributionRefusedLate
	endNoAnswer
	// holdfast stopped at once (drain.go) while the handshake was in flight.
	endStoppedStarting
	endStopped

	// Spliced sessions.
	endSessionGatewayClosed
	endSessionClientClosed
	endSessionGatewayVanished
	endSessionClientVanished
	endSessionTooBig
	endSessionShutdown

	numEndings
)

// evidence is what an ending says about the gateway's startup.
type evidence int

const (
	noEvidence evidence = iota
	// evStarted: the gateway authenticated a client.
	evStarted
	// evStarting: the gateway answered with its startup UNAVAILABLE.
	evStarting
	// evDown: the gateway's socket went away while the client was still
	// there, or the gateway closed it 1012 (restart) or 1001 (going away).
	evDown
	// evGatewayClose: judged by the gateway's close code: 1012 and 1001
	// mean down, a close frame answered in the ordinary way means
	// started, anything else nothing.
	evGatewayClose
)

// legEnd is what holdfast tells one leg when a connection ends.
type legEnd struct {
	// before describes what the leg gets ahead of its close (README
	// wording), such as the gateway's own answer; "" for nothing.
	before string
	// code and reason are the close frame holdfast writes; code 0: none.
	code   int
	reason string
	// relay: the peer's own close code and reason are passed on
	// (wire.CloseFor); code and reason are the fallback when it sent none.
	relay bool
	// status is the HTTP status answered instead of a WebSocket; -1: the
	// gateway's own HTTP answer, passed on.
	status int
}

// endingSpec is one row of the endings table.
type endingSpec struct {
	// situation is the row's wording in README's close-code table; ""
	// keeps the row out of the table (no close is decided there).
	situation string
	client    legEnd
	gateway   legEnd
	// result is the holdfast_handshakes_total result; "" for a session's
	// ending (its handshake was counted at hello-ok).
	result   metrics.Result
	evidence evidence
	level    slog.Level
	msg      string
}

// endings maps every ending to what it means on each leg, in metrics, in
// the log and for readiness. README's close-code table is this table
// (TestREADMECloseCodes).
var endings = [numEndings]endingSpec{
	endOK: {
		result: metrics.ResultOK, evidence: evStarted, level: slog.LevelDebug, msg: "handshake done",
	},
	endNotConnect: {
		result: metrics.ResultRejected, level: slog.LevelInfo,
		msg: "client's first frame is not a connect; passed to the gateway",
	},

	endClientLeftDialing: {
		result: metrics.ResultClientGone, level: slog.LevelInfo,
		msg: "client left while the gateway was unreachable",
	},
	endUpgradeRefused: {
		situation: "gateway refused the upgrade (401, 404, …)",
		client:    legEnd{status: -1},
		result:    metrics.ResultRejected, level: slog.LevelInfo,
		msg: "gateway refused the upgrade",
	},
	endAttributionRefused: {
		situation: "gateway refused a forwarded client (HTTP 403 `proxy_attribution_required`)",
		client:    legEnd{status: -1},
		result:    metrics.ResultAttributionRefused, level: slog.LevelInfo,
		msg: "gateway refused a forwarded client: add holdfast's address to gateway.trustedProxies",
	},
	endUnreachable: {
		situation: "gateway unreachable for the whole budget",
		client:    legEnd{status: http.StatusServiceUnavailable},
		result:    metrics.ResultUnavailable, level: slog.LevelInfo,
		msg: "gateway unreachable within the budget",
	},
	endBadUpstream: {
		situation: "gateway broke the upgrade (no valid 101 nor a refusal, or no challenge first)",
		client:    legEnd{status: http.StatusBadGateway},
		result:    metrics.ResultError, level: slog.LevelInfo,
		msg: "upstream handshake failed",
	},
	endDisplacedDialing: {
		situation: "handshake displaced before its upgrade by a client from an address holding less of `limits.handshakes` (see [Limits](#limits))",
		client:    legEnd{status: http.StatusServiceUnavailable},
		result:    metrics.ResultError, level: slog.LevelInfo,
		msg: "handshake displaced for a client from an address holding less of holdfast's limits",
	},
	endClientUpgradeFailed: {
		gateway: legEnd{code: closeClientGone, reason: "client upgrade failed"},
		result:  metrics.ResultError, level: slog.LevelInfo,
		msg: "client upgrade failed",
	},

	endClientGone: {
		situation: "client left during the handshake",
		gateway:   legEnd{code: closeClientGone, reason: "client gone"},
		result:    metrics.ResultClientGone, level: slog.LevelInfo,
		msg: "client went away during the handshake",
	},
	endPreauthTooLarge: {
		situation: "client frame over 64 KiB before hello-ok",
		client:    legEnd{code: websocket.CloseMessageTooBig, reason: "preauth payload too large"},
		gateway:   legEnd{code: closeClientGone, reason: "client gone"},
		result:    metrics.ResultError, level: slog.LevelInfo,
		msg: "client frame over the pre-auth limit",
	},
	endTooManyPending: {
		situation: "more than 15 frames after the connect, before hello-ok",
		client:    legEnd{code: websocket.ClosePolicyViolation, reason: "too many pending handshake frames"},
		gateway:   legEnd{code: closeClientGone, reason: "client gone"},
		result:    metrics.ResultError, level: slog.LevelInfo,
		msg: "client sent too many frames before hello-ok",
	},
	endPreauthBudget: {
		situation: "a client frame before hello-ok would exceed `limits.preauth_bytes`",
		client:    legEnd{code: websocket.CloseTryAgainLater, reason: "holdfast overloaded; retry shortly"},
		gateway:   legEnd{code: closeClientGone, reason: "client gone"},
		result:    metrics.ResultError, level: slog.LevelInfo,
		msg: "client frame over holdfast's pre-auth buffer (limits.preauth_bytes)",
	},
	endDisplaced: {
		situation: "handshake displaced by a client from an address holding less of `limits.handshakes` or `limits.preauth_bytes` (see [Limits](#limits))",
		client:    legEnd{code: websocket.CloseTryAgainLater, reason: "holdfast overloaded; retry shortly"},
		gateway:   legEnd{code: closeClientGone, reason: "client gone"},
		result:    metrics.ResultError, level: slog.LevelInfo,
		msg: "handshake displaced for a client from an address holding less of holdfast's limits",
	},
	endConnectTimeout: {
		situation: "client sent no connect before the gateway's pre-auth timer",
		client:    legEnd{code: websocket.ClosePolicyViolation, reason: "connect timeout"},
		gateway:   legEnd{code: websocket.CloseNormalClosure},
		result:    metrics.ResultError, level: slog.LevelInfo,
		msg: "client sent no connect before the gateway's pre-auth timeout",
	},
	endRejected: {
		situation: "gateway answered anything but hello-ok or startup",
		client:    legEnd{before: "the gateway's frame", relay: true, code: websocket.ClosePolicyViolation, reason: "connect failed"},
		result:    metrics.ResultRejected, level: slog.LevelInfo,
		msg: "gateway rejected the connect",
	},
	endGatewayClosed: {
		situation: "gateway closed the socket on the connect",
		client:    legEnd{relay: true, code: closeUpstreamLost, reason: "upstream connection lost"},
		result:    metrics.ResultRejected, level: slog.LevelInfo,
		msg: "gateway closed on the connect",
	},
	endStartupUnavailable: {
		situation: "budget spent during startup, or a signed connect refused for startup",
		client:    legEnd{before: "the gateway's last `UNAVAILABLE`", code: gwproto.StartupCloseCode, reason: gwproto.StartupCloseReason},
		result:    metrics.ResultUnavailable, evidence: evStarting, level: slog.LevelInfo,
		msg: "gateway still starting; passed its UNAVAILABLE on",
	},
	endUpstreamLost: {
		situation: "gateway socket lost during the handshake, no attempt left",
		client:    legEnd{code: websocket.CloseTryAgainLater, reason: "gateway unavailable"},
		gateway:   legEnd{code: websocket.CloseNormalClosure},
		result:    metrics.ResultUnavailable, level: slog.LevelInfo,
		msg: "upstream lost during the handshake",
	},
	endUnreachableLate: {
		situation: "gateway unreachable after the client's upgrade (late dial, replay)",
		client:    legEnd{code: websocket.CloseTryAgainLater, reason: "gateway unavailable"},
		result:    metrics.ResultUnavailable, level: slog.LevelInfo,
		msg: "gateway unreachable within the budget",
	},
	endStandInUnavailable: {
		situation: "gateway down when a late-dialled client's challenge was due (holdfast's stand-in challenge; the client's connect cannot reach it)",
		client:    legEnd{before: "`UNAVAILABLE` in the gateway's startup shape", code: gwproto.StartupCloseCode, reason: gwproto.StartupCloseReason},
		result:    metrics.ResultUnavailable, level: slog.LevelInfo,
		msg: "gateway down when the client's challenge was due; answered its connect with the startup UNAVAILABLE",
	},
	endUpgradeRefusedLate: {
		situation: "gateway refused a late-dialled upgrade (4xx)",
		client:    legEnd{code: websocket.ClosePolicyViolation, reason: "gateway refused the upgrade"},
		result:    metrics.ResultRejected, level: slog.LevelInfo,
		msg: "gateway refused the upgrade",
	},
	endBadUpstreamLate: {
		situation: "gateway answered a late-dialled upgrade with neither a valid 101 nor a refusal",
		client:    legEnd{code: closeUpstreamLost, reason: "bad gateway"},
		result:    metrics.ResultError, level: slog.LevelInfo,
		msg: "upstream handshake failed",
	},
	endAttributionRefusedLate: {
		situation: "gateway refused a late-dialled forwarded client (403 `proxy_attribution_required`)",
		client:    legEnd{code: websocket.ClosePolicyViolation, reason: "gateway refused the upgrade"},
		result:    metrics.ResultAttributionRefused, level: slog.LevelInfo,
		msg: "gateway refused a forwarded client: add holdfast's address to gateway.trustedProxies",
	},
	endNoAnswer: {
		situation: "gateway did not answer the connect in time (the budget or `answer_timeout`, whichever ends later)",
		client:    legEnd{code: websocket.CloseTryAgainLater, reason: "gateway unavailable"},
		gateway:   legEnd{code: websocket.CloseNormalClosure},
		result:    metrics.ResultUnavailable, level: slog.LevelInfo,
		msg: "gateway did not answer the connect within the budget",
	},
	endStoppedStarting: {
		situation: "holdfast stopped at once (`shutdown.grace` over, second SIGTERM) during a handshake, the gateway not started",
		client:    legEnd{code: gwproto.StartupCloseCode, reason: gwproto.StartupCloseReason},
		gateway:   legEnd{code: websocket.CloseGoingAway, reason: "proxy shutting down"},
		result:    metrics.ResultUnavailable, level: slog.LevelInfo,
		msg: "holdfast stopped during the handshake; the gateway had not started",
	},
	endStopped: {
		situation: "holdfast stopped at once during a handshake, the gateway started",
		client:    legEnd{code: websocket.CloseGoingAway, reason: "holdfast shutting down"},
		gateway:   legEnd{code: websocket.CloseGoingAway, reason: "proxy shutting down"},
		result:    metrics.ResultUnavailable, level: slog.LevelInfo,
		msg: "holdfast stopped during the handshake",
	},

	endSessionGatewayClosed: {
		situation: "gateway closed the session",
		client:    legEnd{relay: true, code: closeUpstreamLost, reason: "upstream connection lost"},
		evidence:  evGatewayClose, level: slog.LevelDebug,
		msg: "gateway closed the session",
	},
	endSessionClientClosed: {
		situation: "client closed the session",
		gateway:   legEnd{relay: true, code: closeClientGone, reason: "client gone"},
		level:     slog.LevelDebug,
		msg:       "client closed the session",
	},
	endSessionGatewayVanished: {
		situation: "gateway vanished without a close frame",
		client:    legEnd{code: closeUpstreamLost, reason: "upstream connection lost"},
		evidence:  evDown, level: slog.LevelInfo,
		msg: "gateway connection lost",
	},
	endSessionClientVanished: {
		situation: "client vanished without a close frame",
		gateway:   legEnd{code: closeClientGone, reason: "client gone"},
		level:     slog.LevelDebug,
		msg:       "client connection lost",
	},
	endSessionTooBig: {
		situation: "client message over `policy.maxPayload`",
		client:    legEnd{code: websocket.CloseMessageTooBig},
		gateway:   legEnd{code: closeClientGone, reason: "client gone"},
		level:     slog.LevelInfo,
		msg:       "client message over the gateway's maxPayload",
	},
	endSessionShutdown: {
		situation: "holdfast draining (SIGTERM, see [Drain](#drain))",
		client:    legEnd{code: closeDrain, reason: closeDrainReason},
		gateway:   legEnd{code: websocket.CloseGoingAway, reason: "proxy shutting down"},
		level:     slog.LevelDebug,
		msg:       "session closed for shutdown",
	},
}

// handshakeEnd reports whether e ends a handshake (rather than a session).
func (e ending) handshakeEnd() bool { return e < endSessionGatewayClosed }

// payload is the close frame e's spec gives a leg: the peer's own close
// (peerErr, a read error) relayed when the row relays, else the fixed one.
// ok is false when the leg gets no close frame.
func (l legEnd) payload(peerErr error) (payload []byte, ok bool) {
	switch {
	case l.relay:
		return wire.CloseFor(peerErr, l.code, l.reason), true
	case l.code != 0:
		return websocket.FormatCloseMessage(l.code, l.reason), true
	}
	return nil, false
}

// doc renders l as README's close-code table words it.
func (l legEnd) doc() string {
	var s string
	switch {
	case l.status == -1:
		s = "the gateway's HTTP answer, unchanged (no WebSocket)"
	case l.status != 0:
		s = fmt.Sprintf("HTTP %d on the upgrade (no WebSocket)", l.status)
	case l.relay:
		s = fmt.Sprintf("its close code and reason (else %d `%s`)", l.code, l.reason)
	case l.code != 0 && l.reason == "":
		s = fmt.Sprintf("%d (no reason)", l.code)
	case l.code != 0:
		s = fmt.Sprintf("%d `%s`", l.code, l.reason)
	default:
		s = "—"
	}
	if l.before != "" {
		s = l.before + ", then " + s
	}
	return s
}

// closeTable renders the endings that decide a close as README's table.
func closeTable() string {
	var b strings.Builder
	b.WriteString("| situation | to the client | to the gateway | `holdfast_handshakes_total` result |\n")
	b.WriteString("|---|---|---|---|\n")
	for _, s := range endings {
		if s.situation == "" {
			continue
		}
		res := "— (session)"
		if s.result != "" {
			res = "`" + string(s.result) + "`"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.situation, s.client.doc(), s.gateway.doc(), res)
	}
	return b.String()
}

// outcome is how one step ended a connection: the ending, and what
// conn.end needs to act on it.
type outcome struct {
	end ending
	// err is the cause, for the log; for rows that relay, the peer's
	// close (a read error holding a *websocket.CloseError).
	err error
	// frames are the gateway's frames the client gets before its close.
	frames []frame
	// httpErr is the gateway's HTTP answer, passed on (status -1 rows).
	httpErr *httpError
	// w answers the client's upgrade (HTTP rows).
	w http.ResponseWriter
	// args are extra log attributes.
	args []any
}

// evidenceOf turns an ending's evidence into a gateway state to observe,
// if any. gatewayErr is the gateway leg's read error.
func evidenceOf(ev evidence, gatewayErr error) (retry.State, bool) {
	switch ev {
	case evStarted:
		return retry.Started, true
	case evStarting:
		return retry.Starting, true
	case evDown:
		return retry.Down, true
	case evGatewayClose:
		switch wire.CloseCode(gatewayErr) {
		case websocket.CloseServiceRestart, websocket.CloseGoingAway:
			return retry.Down, true
		case websocket.CloseNormalClosure, websocket.CloseNoStatusReceived:
			// An authenticated session closed in the ordinary way: the
			// gateway is up and past its startup.
			return retry.Started, true
		}
	}
	return retry.Unknown, false
}

// end ends a handshake as o says, in this order: the handshake metric,
// the readiness evidence and the log line first, so that a scrape made as
// soon as the client has seen its answer counts it; then the client's
// answer and close, and the gateway's close. It is the only place a
// handshake's result is recorded. Ends after the splice go through
// endSession.
func (c *conn) end(o outcome) {
	spec := &endings[o.end]
	if c.rec.result == "" {
		c.rec.result = spec.result
		c.rec.handshakeEnd = time.Now()
		d := c.rec.handshakeEnd.Sub(c.rec.start)
		c.h.metrics.Handshake(spec.result, d)
		if c.rec.protocol != "" {
			c.h.metrics.ClientHandshake(c.rec.protocol, c.rec.mode, c.bridged)
		}
		if s, ok := evidenceOf(spec.evidence, o.err); ok {
			c.h.watcher.Observe(s)
		}
		if c.h.log.Enabled(context.Background(), spec.level) {
			// Built only for a line that is written: most handshakes end
			// at debug level.
			args := append([]any{"client", c.rec.clientAddr, "connect", c.rec.connectWord(),
				"result", string(spec.result), "attempts", c.rec.attempts, "held", c.rec.held,
				"duration", d.Round(time.Millisecond)}, o.args...)
			if o.err != nil {
				args = append(args, "err", o.err)
			}
			if o.httpErr != nil {
				args = append(args, "status", o.httpErr.status)
			}
			c.h.log.Log(context.Background(), spec.level, spec.msg, args...)
		}
		if spec.result == metrics.ResultAttributionRefused {
			c.h.noteRefusal()
		}
	}
	if o.end == endOK || o.end == endNotConnect {
		return // the splice takes over
	}

	// The client.
	switch {
	case spec.client.status == -1 && o.w != nil && o.httpErr != nil:
		he := o.httpErr
		for _, k := range []string{"Content-Type", "Retry-After", "Www-Authenticate", "Cache-Control"} {
			if v := he.header.Get(k); v != "" {
				o.w.Header().Set(k, v)
			}
		}
		o.w.WriteHeader(he.status)
		_, _ = o.w.Write(he.body)
	case o.end == endDisplacedDialing && o.w != nil:
		refuseOverloaded(o.w)
	case spec.client.status == http.StatusServiceUnavailable && o.w != nil:
		o.w.Header().Set("Retry-After", "1")
		http.Error(o.w, "holdfast: gateway unavailable", http.StatusServiceUnavailable)
	case spec.client.status != 0 && o.w != nil:
		http.Error(o.w, "holdfast: bad gateway", spec.client.status)
	case c.client != nil:
		ok := true
		for _, f := range o.frames {
			if ok = c.writeClient(f.typ, f.data) == nil; !ok {
				break
			}
		}
		peerErr := o.err
		if spec.client.relay && o.end == endRejected {
			// The gateway closes right after its answer: wait for it.
			peerErr = c.readUpstreamClose()
		}
		c.noteGotBeforeSplice(o.end, peerErr)
		if payload, has := spec.client.payload(peerErr); has && ok {
			c.closeClient(payload)
		}
	}

	// The gateway.
	if c.up != nil {
		payload, has := spec.gateway.payload(o.err)
		if has {
			c.closeUpstream(payload)
		}
		c.up.drop()
	}

	// The client's socket, once it has answered the close (or gone).
	if c.client != nil {
		if o.end == endPreauthTooLarge || o.end == endPreauthBudget {
			drain(c.client, c.h.cfg.CloseGrace)
		}
		if spec.client.code != 0 || spec.client.relay {
			c.closeClientGracefully()
		}
		_ = c.client.Close()
	}
}

// record is what one client connection did, from its upgrade request to
// the end of its session: what its access log line reports. The handshake
// goroutine fills it until the splice; after it, each direction adds its
// own tally, and the closes the peers sent and the session's end are
// noted under conn.mu (a drain may end a session from its own goroutine).
// The close frames holdfast sent are read from the legs themselves
// (legRecord.sentOn). conn.done reads it once everything has ended.
type record struct {
	clientAddr string
	path       string
	kind       gwproto.ConnectKind
	firstFrame bool           // kind is known: the client sent its first frame
	result     metrics.Result // the handshake's
	attempts   int            // connects sent
	held       bool
	start      time.Time // the upgrade request
	// handshakeEnd is when the result was decided: hello-ok's arrival for
	// a spliced session.
	handshakeEnd time.Time
	// sessionEnd is when a spliced session ended, and session how
	// (its first ending); zero without a session.
	sessionEnd time.Time
	session    ending
	// toUpstream and toClient count relayed messages and their payload
	// bytes after the splice.
	toUpstream, toClient tally
	// client and gateway are the close frames each leg was sent and sent.
	client, gateway legRecord

	// protocol and mode are the connect's, for the census (census.go);
	// protocol is "" when the first frame was not a connect.
	protocol metrics.ClientProtocol
	mode     metrics.ClientMode
}

// tally counts relayed messages; one goroutine writes it.
type tally = wire.Tally

// legRecord is the close frames seen on one leg: code 0 for none.
type legRecord struct {
	sentCode, gotCode     int
	sentReason, gotReason string
}

// connectWord names the connection's connect kind, as both its handshake
// log line and its access line write it: "none" until its first frame.
func (r *record) connectWord() string {
	if !r.firstFrame {
		return "none"
	}
	return r.kind.String()
}

// sentOn records the close frame written on leg, whoever wrote it:
// closeLeg, the relay (its echo of the peer's close) or gorilla (its echo,
// 1009, 1002).
func (l *legRecord) sentOn(leg *wire.Conn) {
	if leg != nil {
		l.sentCode, l.sentReason = leg.SentClose()
	}
}

// noteGot records the close a leg's peer sent (a read error). A socket
// that ended without a close frame, which gorilla reports as 1006, is
// none: 1006 is never on the wire (RFC 6455 §7.4.1).
func (l *legRecord) noteGot(err error) {
	if ce := wire.AsCloseError(err); l.gotCode == 0 && ce != nil && ce.Code != websocket.CloseAbnormalClosure {
		l.gotCode, l.gotReason = ce.Code, ce.Text
	}
}

// noteGotBeforeSplice records, for the access log, the close frame a peer
// sent that ended a handshake: err is the read error of the leg the ending
// names.
func (c *conn) noteGotBeforeSplice(e ending, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e {
	case endClientGone, endTooManyPending, endPreauthTooLarge:
		c.rec.client.noteGot(err)
	case endRejected, endGatewayClosed, endUpstreamLost, endStartupUnavailable, endNoAnswer:
		c.rec.gateway.noteGot(err)
	}
}

// closeTimeout bounds writing a close frame, with whatever is batched
// ahead of it: a peer that cannot take that much within it is not reading.
const closeTimeout = time.Second

// closeClient writes a close frame to the client (closeLeg).
func (c *conn) closeClient(payload []byte) { closeLeg(c.cw, payload, closeTimeout) }

// closeUpstream writes a close frame to the gateway (closeLeg).
func (c *conn) closeUpstream(payload []byte) {
	if c.up != nil && c.up.ws != nil {
		closeLeg(c.up.ws, payload, closeTimeout)
	}
}

// done runs once per client connection, when everything about it has
// ended: its handshake, and its session if it had one. It writes the
// connection's access log line (accessArgs), at info level in the log's
// configured format, when the handler has an access log whose level lets
// info lines through; otherwise it builds nothing.
func (c *conn) done() {
	if c.h.access == nil || !c.h.access.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	c.mu.Lock()
	rec := c.rec
	c.mu.Unlock()
	rec.client.sentOn(c.cw)
	if c.up != nil {
		rec.gateway.sentOn(c.up.ws)
	}
	c.h.access.Info("access", rec.accessArgs()...)
}

// accessArgs is the access log line of a finished connection, always the
// same keys in the same order: the client's address and request path (not
// its query string), its connect kind, the handshake's result, connects
// sent and whether one was held, the handshake's duration and, on
// hello-ok, the time to it (else -1); for a spliced session how it ended
// and its duration (else "" and -1); messages and payload bytes relayed
// each way after hello-ok (up: client to gateway); then the close frame
// holdfast sent and the one it got on each leg, code 0 for none. Durations
// are in milliseconds. "connect" is "none" when the client sent no frame. Nothing of a
// frame's content is read into it: no token, password, signature or nonce
// can appear.
func (r *record) accessArgs() []any {
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	handshake := int64(0)
	if !r.handshakeEnd.IsZero() {
		handshake = ms(r.handshakeEnd.Sub(r.start))
	}
	helloOK := int64(-1)
	if r.result == metrics.ResultOK {
		helloOK = handshake
	}
	session, sessionMS := "", int64(-1)
	if !r.sessionEnd.IsZero() {
		session, sessionMS = endings[r.session].msg, ms(r.sessionEnd.Sub(r.handshakeEnd))
	}
	return []any{
		"client", r.clientAddr,
		"path", r.path,
		"connect", r.connectWord(),
		"result", string(r.result),
		"attempts", r.attempts,
		"held", r.held,
		"handshake_ms", handshake,
		"hello_ok_ms", helloOK,
		"session", session,
		"session_ms", sessionMS,
		"msgs_up", r.toUpstream.Msgs,
		"bytes_up", r.toUpstream.Bytes,
		"msgs_down", r.toClient.Msgs,
		"bytes_down", r.toClient.Bytes,
		"client_close_sent", r.client.sentCode,
		"client_close_sent_reason", r.client.sentReason,
		"client_close_got", r.client.gotCode,
		"client_close_got_reason", r.client.gotReason,
		"gateway_close_sent", r.gateway.sentCode,
		"gateway_close_sent_reason", r.gateway.sentReason,
		"gateway_close_got", r.gateway.gotCode,
		"gateway_close_got_reason", r.gateway.gotReason,
	}
}
