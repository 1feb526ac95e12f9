package fakegw

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/uuid"
)

// Error codes and detail codes used by the fake (a subset of the gateway's).
const (
	codeInvalidRequest = "INVALID_REQUEST"
	codeUnavailable    = "UNAVAILABLE"
	codeNotPaired      = "NOT_PAIRED"

	deviceSignatureSkewMs = 120000
)

// session is one WebSocket connection. The run goroutine is the only reader;
// writes are serialised by wmu (control frames may be written concurrently,
// as gorilla/websocket allows).
type session struct {
	g      *Gateway
	ws     *websocket.Conn
	att    attribution
	nonce  string
	connID string

	wmu sync.Mutex // serialises data writes and orders seq
	seq int64

	mu            sync.Mutex
	authed        bool
	closeSent     bool
	closeDeadline time.Time // when the wait for the peer's close frame ends
	preauthHeld   bool
	preauthTimer  *time.Timer
	keepaliveStop chan struct{}
	peerClosed    atomic.Bool
	awaitingPong  atomic.Bool
	role          string
	scopes        []string
}

func newSession(g *Gateway, ws *websocket.Conn, att attribution) *session {
	return &session{g: g, ws: ws, att: att, nonce: uuid.New(), preauthHeld: true}
}

func (s *session) isAuthed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authed
}

func (s *session) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeSent
}

// releasePreauth returns the socket's pre-auth budget unit, once.
func (s *session) releasePreauth() {
	s.mu.Lock()
	held := s.preauthHeld
	s.preauthHeld = false
	s.mu.Unlock()
	if held {
		s.g.releasePreauth(s.att.ip)
	}
}

// run serves the connection until it ends, then cleans up. It is called on
// the upgrade handler's goroutine, which the Gateway's WaitGroup tracks.
func (s *session) run() {
	g := s.g
	defer func() {
		s.mu.Lock()
		if s.preauthTimer != nil {
			s.preauthTimer.Stop()
		}
		if s.keepaliveStop != nil {
			close(s.keepaliveStop)
			s.keepaliveStop = nil
		}
		s.mu.Unlock()
		s.releasePreauth()
		g.unregister(s)
		_ = s.ws.Close()
	}()

	s.ws.SetReadLimit(MaxPreauthPayload)
	s.ws.SetCloseHandler(func(code int, _ string) error {
		s.peerClosed.Store(true)
		s.mu.Lock()
		echo := !s.closeSent
		s.closeSent = true
		s.mu.Unlock()
		if echo {
			msg := []byte{}
			if code != websocket.CloseNoStatusReceived {
				msg = websocket.FormatCloseMessage(code, "")
			}
			_ = s.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait))
		}
		return nil
	})
	s.ws.SetPongHandler(func(string) error {
		s.awaitingPong.Store(false)
		return nil
	})

	s.mu.Lock()
	s.preauthTimer = time.AfterFunc(g.cfg.PreauthTimeout, func() {
		if !s.isAuthed() {
			g.logf("%s pre-auth timeout", s.connID)
			s.closeWith(websocket.CloseNormalClosure, "")
		}
	})
	s.mu.Unlock()

	if d := g.cfg.ChallengeDelay; d > 0 {
		// Nothing is read meanwhile: frames the peer sends wait in the
		// socket, and a Stop waits for this delay to pass.
		time.Sleep(d)
	}
	s.writeFrame(map[string]any{
		"type":  "event",
		"event": "connect.challenge",
		"payload": map[string]any{
			"nonce":        s.nonce,
			"ts":           time.Now().UnixMilli(),
			"capabilities": []string{"model-catalog-snapshot"},
		},
	})

	var readErr error
	for {
		mt, data, err := s.ws.ReadMessage()
		if err != nil {
			readErr = err
			break
		}
		if s.closing() {
			continue // frames after our close frame are discarded
		}
		if s.isAuthed() {
			s.handleAuthed(mt, data)
		} else {
			s.handlePreauth(data)
		}
	}

	if errors.Is(readErr, websocket.ErrReadLimit) {
		// gorilla/websocket has already sent close 1009 with an empty
		// reason, as the ws library does for the gateway.
		s.mu.Lock()
		s.closeSent = true
		s.closeDeadline = time.Now().Add(closeWait)
		s.mu.Unlock()
		g.logf("%s frame over the read limit: closed 1009", s.connID)
	}
	s.mu.Lock()
	drainUntil := s.closeDeadline
	s.mu.Unlock()
	var ce *websocket.CloseError
	if !drainUntil.IsZero() && time.Now().Before(drainUntil) && !s.peerClosed.Load() && !errors.As(readErr, &ce) {
		// Give the peer the rest of closeWait to answer our close frame;
		// the websocket reader is unusable now, so drain the raw connection.
		nc := s.ws.NetConn()
		_ = nc.SetReadDeadline(drainUntil)
		_, _ = io.Copy(io.Discard, nc)
	}
}

// closeWith sends a close frame (once) and bounds the wait for the peer's
// answer to closeWait.
func (s *session) closeWith(code int, reason string) {
	s.mu.Lock()
	if s.closeSent {
		s.mu.Unlock()
		return
	}
	s.closeSent = true
	dl := time.Now().Add(closeWait)
	s.closeDeadline = dl
	s.mu.Unlock()
	_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, truncateCloseReason(reason)), time.Now().Add(writeWait))
	_ = s.ws.SetReadDeadline(dl)
}

// terminate drops the TCP connection without a close frame.
func (s *session) terminate() {
	_ = s.ws.NetConn().Close()
}

// truncateCloseReason keeps a close reason within the 123 bytes a close
// frame allows, cutting on a rune boundary.
func truncateCloseReason(r string) string {
	const max = 120
	if len(r) <= max {
		return r
	}
	cut := max
	for cut > 0 && (r[cut]&0xC0) == 0x80 {
		cut--
	}
	return r[:cut]
}

func (s *session) writeRaw(b []byte) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.writeLocked(websocket.TextMessage, b)
}

func (s *session) writeLocked(mt int, b []byte) {
	_ = s.ws.SetWriteDeadline(time.Now().Add(writeWait))
	if err := s.ws.WriteMessage(mt, b); err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		s.g.logf("%s write: %v", s.connID, err)
	}
}

func (s *session) writeFrame(v any) {
	b, err := marshalJS(v)
	if err != nil {
		panic(err) // frames are built from plain maps; cannot fail
	}
	s.writeRaw(b)
}

// marshalJS encodes v as the gateway's JSON.stringify does: strings are
// re-serialised from their values, so a request id sent as "a\/b" or
// "caf\u00e9" comes back as "a/b" or "café", and <, > and & are not
// escaped. (Go still escapes U+2028 and U+2029, which JSON.stringify keeps
// literal; both decode to the same value.)
func marshalJS(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// eventFrame is an event in the gateway's key order (frameWithSequence).
type eventFrame struct {
	Type               string `json:"type"`
	Event              string `json:"event"`
	Payload            any    `json:"payload"`
	Seq                int64  `json:"seq"`
	RecipientProfileID string `json:"recipientProfileId,omitempty"`
}

// sendEvent sends an event with the next per-connection seq (starting at 1).
// The Current generation adds recipientProfileId on operator connections.
func (s *session) sendEvent(name string, payload any) {
	f := eventFrame{Type: "event", Event: name, Payload: payload}
	if s.g.generation() == Current {
		s.mu.Lock()
		if s.role == "operator" {
			f.RecipientProfileID = RecipientProfileID
		}
		s.mu.Unlock()
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.seq++
	f.Seq = s.seq
	b, err := marshalJS(f)
	if err != nil {
		panic(err)
	}
	s.writeLocked(websocket.TextMessage, b)
}

// errorShape is the gateway's ErrorShape; field order matches the gateway's
// JSON (code, message, retryable, retryAfterMs, details).
type errorShape struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	Retryable    *bool  `json:"retryable,omitempty"`
	RetryAfterMs *int   `json:"retryAfterMs,omitempty"`
	Details      any    `json:"details,omitempty"`
}

type resFrame struct {
	Type    string      `json:"type"`
	ID      string      `json:"id"`
	OK      bool        `json:"ok"`
	Payload any         `json:"payload,omitempty"`
	Error   *errorShape `json:"error,omitempty"`
}

func (s *session) sendError(id, code, message string, details any) {
	s.writeFrame(resFrame{Type: "res", ID: id, OK: false, Error: &errorShape{Code: code, Message: message, Details: details}})
}

func (s *session) sendOK(id string, payload any) {
	s.writeFrame(resFrame{Type: "res", ID: id, OK: true, Payload: payload})
}

// StartupFrame returns the exact frame a gateway sends to a connect with
// request id during its startup window.
func StartupFrame(id string) []byte {
	idJSON, err := marshalJS(id)
	if err != nil {
		panic(err)
	}
	return []byte(`{"type":"res","id":` + string(idJSON) +
		`,"ok":false,"error":{"code":"UNAVAILABLE","message":"gateway starting; retry shortly","retryable":true,"retryAfterMs":500,"details":{"reason":"startup-sidecars"}}}`)
}

// reject answers the connect with an error and closes the socket.
func (s *session) reject(id string, closeCode int, code, message string, details any) {
	s.g.logf("%s connect rejected: %s %s (close %d)", s.connID, code, message, closeCode)
	s.sendError(id, code, message, details)
	s.closeWith(closeCode, message)
}

// handlePreauth handles a frame received before hello, in the gateway's
// check order.
func (s *session) handlePreauth(data []byte) {
	g := s.g
	if !json.Valid(data) {
		s.closeWith(websocket.CloseNormalClosure, "")
		return
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		s.closeWith(websocket.ClosePolicyViolation, "invalid request frame")
		return
	}
	if isWorkerClaim(obj) {
		s.closeWith(websocket.ClosePolicyViolation, "invalid-handshake")
		return
	}
	req, ok := parseRequestFrame(obj)
	if !ok {
		s.closeWith(websocket.ClosePolicyViolation, "invalid request frame")
		return
	}
	if req.Method != "connect" {
		s.reject(req.ID, websocket.ClosePolicyViolation, codeInvalidRequest, "invalid handshake: first request must be connect", nil)
		return
	}
	g.stats.connectAttempts.Add(1)
	params, err := parseConnectParams(req.Params)
	if err != nil {
		s.reject(req.ID, websocket.ClosePolicyViolation, codeInvalidRequest, "invalid connect params: "+err.Error(), nil)
		return
	}

	// Startup gate: before protocol, role, auth and device checks. Nodes
	// are let through here, but an unpaired node is rejected the same way
	// further on, which for a fake with no pairing store is every node.
	if g.startupPending() {
		g.stats.startupRejects.Add(1)
		g.logf("%s connect during startup window: UNAVAILABLE", s.connID)
		s.writeRaw(StartupFrame(req.ID))
		s.closeWith(StartupCloseCode, StartupCloseReason)
		return
	}

	if !s.admitProtocol(req.ID, params) {
		return
	}

	role := params.Role
	if role == "" {
		role = "operator"
	}
	if role != "operator" && role != "node" {
		s.reject(req.ID, websocket.ClosePolicyViolation, codeInvalidRequest, "invalid role", nil)
		return
	}
	scopes := params.Scopes

	// Shared-secret auth.
	if g.cfg.Token != "" {
		if reason, detail := checkToken(g.cfg.Token, params.Auth); reason != "" {
			msg := formatAuthFailure(reason, params.Client.ID, params.Client.Mode)
			next := "update_auth_credentials"
			if reason == "token_missing" {
				next = "update_auth_configuration"
			}
			s.reject(req.ID, websocket.ClosePolicyViolation, codeInvalidRequest, msg, map[string]any{
				"code":                    detail,
				"authReason":              reason,
				"canRetryWithDeviceToken": false,
				"recommendedNextStep":     next,
			})
			return
		}
	}

	if params.Device == nil {
		if role == "node" {
			s.reject(req.ID, websocket.ClosePolicyViolation, codeNotPaired, "device identity required", map[string]any{"code": "DEVICE_IDENTITY_REQUIRED"})
			return
		}
		// Self-declared scopes are kept only for the local cli and local
		// gateway-client/backend shared-auth paths.
		keep := s.att.local && ((params.Client.ID == "cli" && params.Client.Mode == "cli") ||
			(params.Client.ID == "gateway-client" && params.Client.Mode == "backend"))
		if !keep {
			scopes = []string{}
		}
	} else {
		if !s.verifyDevice(req.ID, params, role, scopes) {
			return
		}
		if !s.att.local && !g.cfg.PairRemoteDevices {
			// Silent pairing is for direct-local clients only; the fake has
			// no pairing store, so every remote device is unpaired unless
			// PairRemoteDevices says they were all approved.
			s.reject(req.ID, websocket.ClosePolicyViolation, codeNotPaired, "pairing required", map[string]any{
				"code":     "PAIRING_REQUIRED",
				"deviceId": params.Device.ID,
			})
			return
		}
	}
	if scopes == nil {
		scopes = []string{}
	}
	s.hello(req.ID, role, scopes)
}

// admitProtocol applies the generation's protocol range check and rejects
// the connect with that generation's exact answer and close 1002.
func (s *session) admitProtocol(id string, p *connectParams) bool {
	lo, hi := p.MinProtocol, p.MaxProtocol
	var details any
	switch s.g.generation() {
	case Protocol3:
		if !(hi < LegacyProtocolVersion || lo > LegacyProtocolVersion) {
			return true
		}
		details = struct {
			ExpectedProtocol int `json:"expectedProtocol"`
		}{LegacyProtocolVersion}
	case Protocol4Only:
		if hi >= ProtocolVersion && lo <= ProtocolVersion {
			return true
		}
		details = struct {
			ExpectedProtocol     int `json:"expectedProtocol"`
			MinimumProbeProtocol int `json:"minimumProbeProtocol"`
		}{ProtocolVersion, ProtocolVersion}
	default:
		current := hi >= ProtocolVersion && lo <= ProtocolVersion
		probe := p.Client.Mode == "probe" && hi >= LegacyProtocolVersion && lo <= ProtocolVersion
		node := p.Role == "node" && p.Client.Mode == "node" && hi >= LegacyProtocolVersion && lo <= LegacyProtocolVersion
		if current || probe || node {
			return true
		}
		details = struct {
			Code                 string `json:"code"`
			ClientMinProtocol    int    `json:"clientMinProtocol"`
			ClientMaxProtocol    int    `json:"clientMaxProtocol"`
			ExpectedProtocol     int    `json:"expectedProtocol"`
			MinimumProbeProtocol int    `json:"minimumProbeProtocol"`
		}{"PROTOCOL_MISMATCH", lo, hi, ProtocolVersion, LegacyProtocolVersion}
	}
	s.reject(id, websocket.CloseProtocolError, codeInvalidRequest, "protocol mismatch", details)
	return false
}

// verifyDevice checks the device proof in the gateway's order and rejects
// the connect on failure.
func (s *session) verifyDevice(id string, p *connectParams, role string, scopes []string) bool {
	d := p.Device
	fail := func(reason, message, code string) bool {
		s.reject(id, websocket.ClosePolicyViolation, codeInvalidRequest, message, map[string]any{"code": code, "reason": reason})
		return false
	}
	derived, err := deviceauth.DeviceIDFromPublicKey(d.PublicKey)
	if err != nil || derived != d.ID {
		return fail("device-id-mismatch", "device identity mismatch", "DEVICE_AUTH_DEVICE_ID_MISMATCH")
	}
	now := time.Now().UnixMilli()
	if skew := now - d.SignedAt; skew > deviceSignatureSkewMs || skew < -deviceSignatureSkewMs {
		return fail("device-signature-stale", "device signature expired", "DEVICE_AUTH_SIGNATURE_EXPIRED")
	}
	nonce := strings.TrimSpace(d.Nonce)
	if nonce == "" {
		return fail("device-nonce-missing", "device nonce required", "DEVICE_AUTH_NONCE_REQUIRED")
	}
	if nonce != s.nonce {
		return fail("device-nonce-mismatch", "device nonce mismatch", "DEVICE_AUTH_NONCE_MISMATCH")
	}
	payload := deviceauth.Payload{
		DeviceID:     d.ID,
		ClientID:     p.Client.ID,
		ClientMode:   p.Client.Mode,
		Role:         role,
		Scopes:       scopes,
		SignedAtMs:   d.SignedAt,
		Token:        p.signatureToken(),
		Nonce:        nonce,
		Platform:     p.Client.Platform,
		DeviceFamily: p.Client.DeviceFamily,
	}
	if err := deviceauth.Verify(d.PublicKey, d.Signature, payload); err != nil {
		return fail("device-signature", "device signature invalid", "DEVICE_AUTH_SIGNATURE_INVALID")
	}
	return true
}

func checkToken(want string, auth *connectAuth) (reason, detail string) {
	if auth == nil || auth.Token == nil || *auth.Token == "" {
		return "token_missing", "AUTH_TOKEN_MISSING"
	}
	if *auth.Token != want {
		return "token_mismatch", "AUTH_TOKEN_MISMATCH"
	}
	return "", ""
}

func formatAuthFailure(reason, clientID, clientMode string) string {
	hint := "provide gateway auth token"
	switch {
	case clientID == "cli" || clientMode == "cli":
		hint = "set gateway.remote.token to match gateway.auth.token"
	case clientID == "openclaw-control-ui" || clientID == "webchat-ui" || clientID == "webchat" || clientMode == "webchat":
		hint = "open the dashboard URL and paste the token in Control UI settings"
	}
	if reason == "token_missing" {
		return "unauthorized: gateway token missing (" + hint + ")"
	}
	return "unauthorized: gateway token mismatch (" + hint + ")"
}

// hello completes the handshake: res ok with the hello-ok payload, then (not
// in Echo mode) a health event with seq 1, then keepalive.
func (s *session) hello(id, role string, scopes []string) {
	g := s.g
	s.mu.Lock()
	if s.closeSent {
		s.mu.Unlock()
		return
	}
	s.authed = true
	s.role = role
	s.scopes = scopes
	if s.preauthTimer != nil {
		s.preauthTimer.Stop()
	}
	stop := make(chan struct{})
	s.keepaliveStop = stop
	s.mu.Unlock()
	s.releasePreauth()
	s.ws.SetReadLimit(g.cfg.MaxPayload)

	// Count before sending so that a client that has seen hello-ok also
	// sees it in Stats.
	g.stats.helloOK.Add(1)
	s.sendOK(id, map[string]any{
		"type":     "hello-ok",
		"protocol": g.protocol(),
		"server":   map[string]any{"version": g.version(), "connId": s.connID},
		"features": map[string]any{"methods": gatewayMethods(), "events": gatewayEvents()},
		"snapshot": map[string]any{
			"presence":     []any{},
			"health":       map[string]any{},
			"stateVersion": map[string]any{"presence": 0, "health": 0},
			"uptimeMs":     g.uptimeMs(),
		},
		"auth": map[string]any{"role": role, "scopes": scopes},
		"policy": map[string]any{
			"maxPayload":       g.cfg.MaxPayload,
			"maxBufferedBytes": MaxBufferedBytes,
			"tickIntervalMs":   g.cfg.TickInterval.Milliseconds(),
		},
	})
	g.logf("%s hello-ok role=%s", s.connID, role)
	if !g.cfg.Echo {
		s.sendEvent("health", g.healthPayload())
	}
	g.wg.Add(1)
	go s.keepalive(stop)
}

// gatewayMethods and gatewayEvents are the features advertised in hello-ok.
func gatewayMethods() []string {
	return []string{"health", "status", "sessions.list", "chat.send", "chat.history", "config.get", "node.list"}
}

func gatewayEvents() []string {
	return []string{"connect.challenge", "tick", "health", "shutdown", "presence", "chat", "agent"}
}

func (g *Gateway) healthPayload() map[string]any {
	return map[string]any{"ok": true, "ts": time.Now().UnixMilli(), "durationMs": 0}
}

// keepalive sends tick events (not in Echo mode) and pings, and terminates a
// socket whose previous ping is still unanswered.
func (s *session) keepalive(stop chan struct{}) {
	g := s.g
	defer g.wg.Done()
	ping := time.NewTicker(g.cfg.PingInterval)
	defer ping.Stop()
	var tickC <-chan time.Time
	if !g.cfg.Echo {
		tick := time.NewTicker(g.cfg.TickInterval)
		defer tick.Stop()
		tickC = tick.C
	}
	for {
		select {
		case <-stop:
			return
		case <-tickC:
			if !s.closing() {
				s.sendEvent("tick", map[string]any{"ts": time.Now().UnixMilli()})
			}
		case <-ping.C:
			if s.closing() {
				continue
			}
			if s.awaitingPong.Load() {
				g.logf("%s no pong: terminating", s.connID)
				s.terminate()
				return
			}
			s.awaitingPong.Store(true)
			_ = s.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait))
		}
	}
}

// handleAuthed handles a frame after hello: echo in Echo mode, else RPC.
func (s *session) handleAuthed(mt int, data []byte) {
	g := s.g
	if g.cfg.Echo {
		s.wmu.Lock()
		s.writeLocked(mt, data)
		s.wmu.Unlock()
		return
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return
	}
	req, ok := parseRequestFrame(obj)
	if !ok {
		return
	}
	switch req.Method {
	case "connect":
		s.sendError(req.ID, codeInvalidRequest, "connect is only valid as the first request", nil)
	case "health":
		s.sendOK(req.ID, g.healthPayload())
	case "status":
		s.mu.Lock()
		role, scopes := s.role, s.scopes
		s.mu.Unlock()
		s.sendOK(req.ID, map[string]any{
			"ok":       true,
			"version":  g.version(),
			"uptimeMs": g.uptimeMs(),
			"connId":   s.connID,
			"role":     role,
			"scopes":   scopes,
		})
	default:
		s.sendError(req.ID, codeInvalidRequest, "unknown method: "+req.Method, nil)
	}
}
