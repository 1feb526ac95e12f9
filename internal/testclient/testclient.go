// Package testclient is a minimal OpenClaw gateway client for tests. It makes
// exactly one connection attempt with no retry, the way OpenClaw CLIs up to
// 2026.4.27 do: dial, wait for connect.challenge, send one connect (token
// only, or signed with an Ed25519 device identity over the challenge nonce),
// and read the answer.
package testclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/uuid"
)

// Defaults applied by Connect to zero Options fields.
const (
	DefaultClientID      = "cli"
	DefaultMode          = "cli"
	DefaultRole          = "operator"
	DefaultPlatform      = "linux"
	DefaultClientVersion = "2026.9.6"
	DefaultMinProtocol   = 3
	DefaultMaxProtocol   = 4
	DefaultTimeout       = 15 * time.Second

	// closeReadWait bounds the wait for the server's close frame after a
	// failed connect.
	closeReadWait = 2 * time.Second
)

// DefaultScopes returns the scopes the OpenClaw CLI requests
// (CLI_DEFAULT_OPERATOR_SCOPES).
func DefaultScopes() []string {
	return []string{"operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.pairing", "operator.talk.secrets"}
}

// Options configure one connection attempt.
type Options struct {
	// URL is the gateway (or proxy) WebSocket URL.
	URL string
	// Token goes in auth.token; "" sends no auth.
	Token string
	// Device, if set, signs a v3 device proof over the challenge nonce with
	// signedAt = the challenge ts; nil makes a token-only (replayable)
	// connect.
	Device *deviceauth.Identity
	// ClientID, Mode, Role, Platform and DeviceFamily default to "cli",
	// "cli", "operator", "linux" and "" (omitted).
	ClientID, Mode, Role, Platform, DeviceFamily string
	// ClientVersion is client.version; default DefaultClientVersion.
	ClientVersion string
	// Scopes defaults to DefaultScopes(). A non-nil empty slice sends [].
	Scopes []string
	// MinProtocol and MaxProtocol default to 3 and 4, which current (4) and
	// 2026.4.29–2026.5.x (3) gateways both accept.
	MinProtocol, MaxProtocol int
	// Header holds extra upgrade request headers.
	Header http.Header
	// Timeout bounds the whole handshake; default 15 s.
	Timeout time.Duration
	// ChallengeTimeout, when set, is the client's challenge timer, counted
	// from the socket's open, as the Node client's watchdog (10 s in
	// 2026.4.x, 15 s in current clients): without a challenge by then the
	// client closes 1008 "connect challenge timeout" and Connect returns
	// ErrChallengeTimeout.
	ChallengeTimeout time.Duration
	// TLSConfig is used for wss:// URLs (nil: the system roots).
	TLSConfig *tls.Config
}

// ErrorShape is the error of a failed res frame.
type ErrorShape struct {
	Code         string          `json:"code"`
	Message      string          `json:"message"`
	Retryable    bool            `json:"retryable,omitempty"`
	RetryAfterMs int             `json:"retryAfterMs,omitempty"`
	Details      json.RawMessage `json:"details,omitempty"`
}

// DetailsCode returns details.code, or "".
func (e *ErrorShape) DetailsCode() string {
	var d struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(e.Details, &d)
	return d.Code
}

// Error implements error.
func (e *ErrorShape) Error() string { return e.Code + ": " + e.Message }

// Result describes how a connection attempt ended.
type Result struct {
	// HelloOK is true when the connect was answered with hello-ok; Hello is
	// then the hello-ok payload.
	HelloOK bool
	Hello   json.RawMessage
	// Error is the error of a failed connect res, if one arrived.
	Error *ErrorShape
	// CloseCode and CloseReason are from the close frame received, if any
	// (0 and "" otherwise).
	CloseCode   int
	CloseReason string
	// Nonce is the challenge nonce the connect was bound to.
	Nonce string
	// ChallengeTs is the challenge ts.
	ChallengeTs int64
	// ChallengeAfter is how long after the socket opened the challenge came.
	ChallengeAfter time.Duration
	// HTTPStatus is the status of a refused upgrade (403, 503, ...), else 0.
	HTTPStatus int
}

// Conn is an authenticated connection. Its methods must not be called
// concurrently, except Close.
type Conn struct {
	ws *websocket.Conn
}

type frame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Event   string          `json:"event,omitempty"`
	OK      bool            `json:"ok,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Error   *ErrorShape     `json:"error,omitempty"`
	Seq     *int64          `json:"seq,omitempty"`
}

func (o *Options) defaults() {
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.Mode == "" {
		o.Mode = DefaultMode
	}
	if o.Role == "" {
		o.Role = DefaultRole
	}
	if o.Platform == "" {
		o.Platform = DefaultPlatform
	}
	if o.ClientVersion == "" {
		o.ClientVersion = DefaultClientVersion
	}
	if o.Scopes == nil {
		o.Scopes = DefaultScopes()
	}
	if o.MinProtocol == 0 {
		o.MinProtocol = DefaultMinProtocol
	}
	if o.MaxProtocol == 0 {
		o.MaxProtocol = DefaultMaxProtocol
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
}

// ErrChallengeTimeout: no connect.challenge came within
// Options.ChallengeTimeout.
var ErrChallengeTimeout = errors.New("testclient: connect challenge timeout")

// Connect dials once, waits for connect.challenge, sends one connect and
// reads the answer. It never retries. It returns a Conn only on hello-ok;
// otherwise the socket is closed and err describes the failure while Result
// holds what was observed (error res, close frame, HTTP status).
func Connect(ctx context.Context, opts Options) (*Conn, Result, error) {
	opts.defaults()
	var res Result
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	d := websocket.Dialer{HandshakeTimeout: opts.Timeout, TLSClientConfig: opts.TLSConfig}
	ws, resp, err := d.DialContext(ctx, opts.URL, opts.Header)
	if err != nil {
		if resp != nil {
			res.HTTPStatus = resp.StatusCode
		}
		return nil, res, fmt.Errorf("testclient: dial %s: %w", opts.URL, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = ws.NetConn().SetDeadline(time.Unix(1, 0)) })
	ok := false
	defer func() {
		if !stop() && ok {
			// The context ended as the handshake finished; the deadline it
			// set must not outlive the handshake.
			_ = ws.NetConn().SetDeadline(time.Time{})
		}
		if !ok {
			_ = ws.Close()
		}
	}()
	opened := time.Now()
	dl, _ := ctx.Deadline()
	challengeDL := dl
	if opts.ChallengeTimeout > 0 && opened.Add(opts.ChallengeTimeout).Before(dl) {
		challengeDL = opened.Add(opts.ChallengeTimeout)
	}
	_ = ws.SetReadDeadline(challengeDL)

	// 1. The challenge.
	for res.Nonce == "" {
		f, err := readFrame(ws, &res)
		if err != nil {
			var ne net.Error
			if opts.ChallengeTimeout > 0 && errors.As(err, &ne) && ne.Timeout() && challengeDL.Before(dl) {
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "connect challenge timeout"), time.Now().Add(time.Second))
				return nil, res, ErrChallengeTimeout
			}
			return nil, res, fmt.Errorf("testclient: waiting for connect.challenge: %w", err)
		}
		if f.Type == "event" && f.Event == "connect.challenge" {
			var p struct {
				Nonce string `json:"nonce"`
				Ts    int64  `json:"ts"`
			}
			if err := json.Unmarshal(f.Payload, &p); err != nil || p.Nonce == "" {
				return nil, res, errors.New("testclient: connect.challenge without nonce")
			}
			res.Nonce, res.ChallengeTs = p.Nonce, p.Ts
			res.ChallengeAfter = time.Since(opened)
		}
	}
	_ = ws.SetReadDeadline(dl)

	// 2. One connect.
	id := uuid.New()
	if err := ws.WriteJSON(map[string]any{"type": "req", "id": id, "method": "connect", "params": buildParams(&opts, res.Nonce, res.ChallengeTs)}); err != nil {
		return nil, res, fmt.Errorf("testclient: send connect: %w", err)
	}

	// 3. The answer.
	for {
		f, err := readFrame(ws, &res)
		if err != nil {
			return nil, res, fmt.Errorf("testclient: waiting for connect answer: %w", err)
		}
		if f.Type != "res" || f.ID != id {
			continue
		}
		if f.OK {
			var h struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal(f.Payload, &h); err != nil || h.Type != "hello-ok" {
				return nil, res, fmt.Errorf("testclient: connect answered ok without hello-ok: %s", f.Payload)
			}
			res.HelloOK, res.Hello = true, f.Payload
			_ = ws.SetReadDeadline(time.Time{})
			ok = true
			return &Conn{ws: ws}, res, nil
		}
		res.Error = f.Error
		if res.Error == nil {
			res.Error = &ErrorShape{Code: "UNKNOWN", Message: "error res without error"}
		}
		// Read on until the server's close frame (bounded).
		dl := time.Now().Add(closeReadWait)
		if cdl, has := ctx.Deadline(); has && cdl.Before(dl) {
			dl = cdl
		}
		_ = ws.SetReadDeadline(dl)
		for {
			if _, err := readFrame(ws, &res); err != nil {
				break
			}
		}
		return nil, res, fmt.Errorf("testclient: connect failed: %w", res.Error)
	}
}

// readFrame reads one text frame, recording a close frame in res.
func readFrame(ws *websocket.Conn, res *Result) (frame, error) {
	var f frame
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				res.CloseCode, res.CloseReason = ce.Code, ce.Text
			}
			return f, err
		}
		if mt != websocket.TextMessage {
			continue
		}
		if err := json.Unmarshal(data, &f); err != nil {
			return f, fmt.Errorf("bad frame %q: %w", data, err)
		}
		return f, nil
	}
}

func buildParams(o *Options, nonce string, ts int64) map[string]any {
	client := map[string]any{
		"id":       o.ClientID,
		"version":  o.ClientVersion,
		"platform": o.Platform,
		"mode":     o.Mode,
	}
	if o.DeviceFamily != "" {
		client["deviceFamily"] = o.DeviceFamily
	}
	params := map[string]any{
		"minProtocol": o.MinProtocol,
		"maxProtocol": o.MaxProtocol,
		"client":      client,
		"caps":        []string{},
		"role":        o.Role,
		"scopes":      o.Scopes,
	}
	if o.Token != "" {
		params["auth"] = map[string]any{"token": o.Token}
	}
	if o.Device != nil {
		p := deviceauth.Payload{
			DeviceID:     o.Device.ID(),
			ClientID:     o.ClientID,
			ClientMode:   o.Mode,
			Role:         o.Role,
			Scopes:       o.Scopes,
			SignedAtMs:   ts,
			Token:        o.Token,
			Nonce:        nonce,
			Platform:     o.Platform,
			DeviceFamily: o.DeviceFamily,
		}
		params["device"] = map[string]any{
			"id":        p.DeviceID,
			"publicKey": o.Device.PublicKey(),
			"signature": o.Device.Sign(p),
			"signedAt":  ts,
			"nonce":     nonce,
		}
	}
	return params
}

// Call sends one RPC and returns the payload of its res, skipping events and
// unrelated frames. A failed res is returned as a *ErrorShape error. If ctx
// ends first the Conn is unusable afterwards (a WebSocket read error is
// permanent).
func (c *Conn) Call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	id := uuid.New()
	req := map[string]any{"type": "req", "id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	stop := c.bind(ctx)
	defer stop()
	if err := c.ws.WriteJSON(req); err != nil {
		return nil, fmt.Errorf("testclient: send %s: %w", method, err)
	}
	var res Result
	for {
		f, err := readFrame(c.ws, &res)
		if err != nil {
			return nil, fmt.Errorf("testclient: %s: %w", method, err)
		}
		if f.Type != "res" || f.ID != id {
			continue
		}
		if !f.OK {
			if f.Error == nil {
				return nil, fmt.Errorf("testclient: %s: error res without error", method)
			}
			return nil, f.Error
		}
		return f.Payload, nil
	}
}

// ReadMessage returns the next text frame as raw JSON. When the peer closes
// the connection the error is a *websocket.CloseError. As with Call, a read
// cut short by ctx leaves the Conn unusable.
func (c *Conn) ReadMessage(ctx context.Context) (json.RawMessage, error) {
	stop := c.bind(ctx)
	defer stop()
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			return nil, err
		}
		if mt == websocket.TextMessage {
			return data, nil
		}
	}
}

// bind applies ctx's deadline and cancellation to the socket until the
// returned function is called.
func (c *Conn) bind(ctx context.Context) func() {
	nc := c.ws.NetConn()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		_ = nc.SetDeadline(time.Time{})
	}
}

// WS returns the underlying WebSocket for raw access.
func (c *Conn) WS() *websocket.Conn { return c.ws }

// Close sends close 1000 and closes the socket.
func (c *Conn) Close() error {
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return c.ws.Close()
}
