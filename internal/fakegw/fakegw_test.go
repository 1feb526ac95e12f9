package fakegw_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

const testToken = "s3cret-token"

// TestMain fails the package if goroutines outlive the tests (a count over
// the whole process, taken before and after all of them). The tests
// mostly wait on timers and sockets: sixteen run per core unless -parallel
// says otherwise.
func TestMain(m *testing.M) {
	testkit.DefaultParallel(16 * runtime.GOMAXPROCS(0))
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			fmt.Fprintf(os.Stderr, "goroutine leak: %d before, %d after\n%s\n", before, n, buf[:runtime.Stack(buf, true)])
			code = 1
		}
	}
	os.Exit(code)
}

func startGW(t *testing.T, cfg fakegw.Config) *fakegw.Gateway {
	t.Helper()
	if testing.Verbose() {
		cfg.Logf = t.Logf
	}
	g, err := fakegw.Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(g.Close)
	return g
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newIdentity(t *testing.T) *deviceauth.Identity { return testkit.NewDevice(t) }

// rawConn is a bare socket that has read its connect.challenge.
type rawConn struct {
	ws    *websocket.Conn
	nonce string
	ts    int64
}

func dialRaw(t *testing.T, url string, hdr http.Header) *rawConn {
	t.Helper()
	ws := testkit.DialRaw(t, url, hdr)
	_, data := testkit.Read(t, ws, 3*time.Second)
	var ch struct {
		Type    string `json:"type"`
		Event   string `json:"event"`
		Seq     *int   `json:"seq"`
		Payload struct {
			Nonce        string   `json:"nonce"`
			Ts           int64    `json:"ts"`
			Capabilities []string `json:"capabilities"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(data, &ch); err != nil || ch.Type != "event" || ch.Event != "connect.challenge" || ch.Payload.Nonce == "" || ch.Seq != nil {
		t.Fatalf("bad challenge %s (%v)", data, err)
	}
	if d := time.Since(time.UnixMilli(ch.Payload.Ts)); d < -time.Second || d > 5*time.Second {
		t.Fatalf("challenge ts %d is not now", ch.Payload.Ts)
	}
	return &rawConn{ws: ws, nonce: ch.Payload.Nonce, ts: ch.Payload.Ts}
}

func (c *rawConn) send(t *testing.T, v any) {
	t.Helper()
	var err error
	if b, ok := v.([]byte); ok {
		err = c.ws.WriteMessage(websocket.TextMessage, b)
	} else {
		err = c.ws.WriteJSON(v)
	}
	if err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readAll reads frames until the peer closes and returns them with the close
// code and reason (1006 if the connection dropped without a close frame).
func (c *rawConn) readAll(t *testing.T, wait time.Duration) ([]string, int, string) {
	t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(wait))
	var frames []string
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return frames, ce.Code, ce.Text
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no close within %v; frames %q", wait, frames)
			}
			return frames, websocket.CloseAbnormalClosure, ""
		}
		frames = append(frames, string(data))
	}
}

type connectSpec struct {
	token   string
	device  *deviceauth.Identity
	nonce   string // signed nonce
	ts      int64
	minP    int
	maxP    int
	mode    string
	role    string
	scopes  []string
	rawAuth map[string]any
}

func connectReq(id string, s connectSpec) map[string]any {
	if s.minP == 0 {
		s.minP, s.maxP = 3, 4
	}
	if s.mode == "" {
		s.mode = "cli"
	}
	if s.role == "" {
		s.role = "operator"
	}
	if s.scopes == nil {
		s.scopes = []string{"operator.read"}
	}
	params := map[string]any{
		"minProtocol": s.minP, "maxProtocol": s.maxP,
		"client": map[string]any{"id": "cli", "version": "1.0.0", "platform": "linux", "mode": s.mode},
		"role":   s.role, "scopes": s.scopes,
	}
	if s.token != "" {
		params["auth"] = map[string]any{"token": s.token}
	}
	if s.rawAuth != nil {
		params["auth"] = s.rawAuth
	}
	if s.device != nil {
		p := deviceauth.Payload{DeviceID: s.device.ID(), ClientID: "cli", ClientMode: s.mode, Role: s.role,
			Scopes: s.scopes, SignedAtMs: s.ts, Token: s.token, Nonce: s.nonce, Platform: "linux"}
		params["device"] = map[string]any{"id": s.device.ID(), "publicKey": s.device.PublicKey(),
			"signature": s.device.Sign(p), "signedAt": s.ts, "nonce": s.nonce}
	}
	return map[string]any{"type": "req", "id": id, "method": "connect", "params": params}
}

type resShape struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	OK      bool            `json:"ok"`
	Payload json.RawMessage `json:"payload"`
	Error   *struct {
		Code         string `json:"code"`
		Message      string `json:"message"`
		RetryAfterMs int    `json:"retryAfterMs"`
		Details      struct {
			Code   string `json:"code"`
			Reason string `json:"reason"`
		} `json:"details"`
	} `json:"error"`
}

func parseRes(t *testing.T, s string) resShape {
	t.Helper()
	var r resShape
	if err := json.Unmarshal([]byte(s), &r); err != nil || r.Type != "res" {
		t.Fatalf("not a res frame: %s", s)
	}
	return r
}

func TestConnectStartupWindow(t *testing.T) {
	t.Parallel()
	const window = 300 * time.Millisecond
	tests := []struct {
		name   string
		device bool
		token  string
		during bool
	}{
		{"token during window", false, testToken, true},
		{"device during window", true, testToken, true},
		{"wrong token during window", false, "wrong", true},
		{"token after window", false, testToken, false},
		{"device after window", true, testToken, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := window
			if tc.during {
				// Open for longer than any connect takes on a loaded
				// machine; a 300 ms window could close before it.
				w = time.Minute
			}
			g := startGW(t, fakegw.Config{Token: testToken, StartupWindow: w})
			if !tc.during {
				time.Sleep(window + 50*time.Millisecond)
			}
			opts := testclient.Options{URL: g.URL(), Token: tc.token, Timeout: 5 * time.Second}
			if tc.device {
				opts.Device = newIdentity(t)
			}
			conn, res, err := testclient.Connect(testCtx(t), opts)
			if tc.during {
				if err == nil || conn != nil {
					t.Fatalf("connect during the window succeeded")
				}
				if res.Error == nil || res.Error.Code != "UNAVAILABLE" || !res.Error.Retryable || res.Error.RetryAfterMs != 500 ||
					string(res.Error.Details) != `{"reason":"startup-sidecars"}` || res.Error.Message != "gateway starting; retry shortly" {
					t.Fatalf("error = %+v", res.Error)
				}
				if res.CloseCode != 1013 || res.CloseReason != "gateway starting" {
					t.Fatalf("close = %d %q, want 1013 gateway starting", res.CloseCode, res.CloseReason)
				}
				if st := g.Stats(); st.StartupRejects != 1 || st.ConnectAttempts != 1 || st.HelloOK != 0 {
					t.Fatalf("stats %+v", st)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect: %v (%+v)", err, res)
			}
			defer conn.Close()
			var hello struct {
				Type     string `json:"type"`
				Protocol int    `json:"protocol"`
				Auth     struct {
					Role   string   `json:"role"`
					Scopes []string `json:"scopes"`
				} `json:"auth"`
				Policy struct {
					MaxPayload       int64 `json:"maxPayload"`
					MaxBufferedBytes int64 `json:"maxBufferedBytes"`
					TickIntervalMs   int64 `json:"tickIntervalMs"`
				} `json:"policy"`
			}
			if err := json.Unmarshal(res.Hello, &hello); err != nil {
				t.Fatal(err)
			}
			if hello.Type != "hello-ok" || hello.Protocol != 4 || hello.Auth.Role != "operator" ||
				hello.Policy.MaxPayload != 26214400 || hello.Policy.MaxBufferedBytes != 52428800 || hello.Policy.TickIntervalMs != 30000 {
				t.Fatalf("hello = %s", res.Hello)
			}
			if len(hello.Auth.Scopes) != len(testclient.DefaultScopes()) {
				t.Fatalf("scopes = %v (local cli keeps its scopes)", hello.Auth.Scopes)
			}
		})
	}
}

func TestStartupFrameExact(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Token: testToken, StartupWindow: time.Minute})
	c := dialRaw(t, g.URL(), nil)
	c.send(t, connectReq("c-1", connectSpec{token: testToken}))
	frames, code, reason := c.readAll(t, 3*time.Second)
	want := `{"type":"res","id":"c-1","ok":false,"error":{"code":"UNAVAILABLE","message":"gateway starting; retry shortly","retryable":true,"retryAfterMs":500,"details":{"reason":"startup-sidecars"}}}`
	if len(frames) != 1 || frames[0] != want {
		t.Fatalf("frames = %q\nwant [%s]", frames, want)
	}
	if code != 1013 || reason != "gateway starting" {
		t.Fatalf("close %d %q", code, reason)
	}
	if got := string(fakegw.StartupFrame("c-1")); got != want {
		t.Fatalf("StartupFrame = %s", got)
	}
}

func TestSetStarted(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{StartupWindow: time.Hour})
	if code, _ := httpGet(t, g.HTTPURL()+"/startupz", nil); code != 503 {
		t.Fatalf("/startupz = %d during window", code)
	}
	g.SetStarted()
	if code, _ := httpGet(t, g.HTTPURL()+"/startupz", nil); code != 200 {
		t.Fatalf("/startupz = %d after SetStarted", code)
	}
	conn, res, err := testclient.Connect(testCtx(t), testclient.Options{URL: g.URL(), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Connect after SetStarted: %v %+v", err, res)
	}
	conn.Close()
}

func TestHandshakeRejections(t *testing.T) {
	t.Parallel()
	dev := newIdentity(t)
	tests := []struct {
		name       string
		cfg        fakegw.Config
		frame      func(c *rawConn) any
		wantCode   int
		wantReason string
		wantErr    string // error.code of the res; "" = no res expected
		wantDetail string
		wantMsg    string
	}{
		{
			name:     "bad json",
			frame:    func(*rawConn) any { return []byte("{not json") },
			wantCode: 1000,
		},
		{
			name:       "invalid request frame",
			frame:      func(*rawConn) any { return map[string]any{"type": "req", "id": "1", "method": "connect", "extra": 1} },
			wantCode:   1008,
			wantReason: "invalid request frame",
		},
		{
			name:       "first request not connect",
			frame:      func(*rawConn) any { return map[string]any{"type": "req", "id": "1", "method": "health"} },
			wantCode:   1008,
			wantErr:    "INVALID_REQUEST",
			wantMsg:    "invalid handshake: first request must be connect",
			wantReason: "invalid handshake: first request must be connect",
		},
		{
			name: "bad client id, even during startup",
			cfg:  fakegw.Config{StartupWindow: time.Hour},
			frame: func(*rawConn) any {
				f := connectReq("1", connectSpec{})
				f["params"].(map[string]any)["client"].(map[string]any)["id"] = "nope"
				return f
			},
			wantCode: 1008,
			wantErr:  "INVALID_REQUEST",
			wantMsg:  "invalid connect params: at /client/id: must be equal to one of the allowed values",
		},
		{
			name: "device missing a field",
			frame: func(c *rawConn) any {
				f := connectReq("1", connectSpec{device: dev, nonce: c.nonce, ts: c.ts})
				delete(f["params"].(map[string]any)["device"].(map[string]any), "signedAt")
				return f
			},
			wantCode: 1008,
			wantErr:  "INVALID_REQUEST",
			wantMsg:  "invalid connect params: at /device: must have required property 'signedAt'",
		},
		{
			name:       "protocol mismatch",
			frame:      func(*rawConn) any { return connectReq("1", connectSpec{minP: 5, maxP: 6}) },
			wantCode:   1002,
			wantReason: "protocol mismatch",
			wantErr:    "INVALID_REQUEST",
			wantDetail: "PROTOCOL_MISMATCH",
		},
		{
			name:       "protocol 3 only, not a probe",
			frame:      func(*rawConn) any { return connectReq("1", connectSpec{minP: 3, maxP: 3}) },
			wantCode:   1002,
			wantErr:    "INVALID_REQUEST",
			wantDetail: "PROTOCOL_MISMATCH",
		},
		{
			name:       "wrong token",
			cfg:        fakegw.Config{Token: testToken},
			frame:      func(*rawConn) any { return connectReq("1", connectSpec{token: "wrong"}) },
			wantCode:   1008,
			wantErr:    "INVALID_REQUEST",
			wantDetail: "AUTH_TOKEN_MISMATCH",
			wantMsg:    "unauthorized: gateway token mismatch (set gateway.remote.token to match gateway.auth.token)",
		},
		{
			name:       "missing token",
			cfg:        fakegw.Config{Token: testToken},
			frame:      func(*rawConn) any { return connectReq("1", connectSpec{}) },
			wantCode:   1008,
			wantErr:    "INVALID_REQUEST",
			wantDetail: "AUTH_TOKEN_MISSING",
		},
		{
			name: "device id mismatch",
			frame: func(c *rawConn) any {
				f := connectReq("1", connectSpec{device: dev, nonce: c.nonce, ts: c.ts})
				f["params"].(map[string]any)["device"].(map[string]any)["id"] = strings.Repeat("0", 64)
				return f
			},
			wantCode:   1008,
			wantErr:    "INVALID_REQUEST",
			wantDetail: "DEVICE_AUTH_DEVICE_ID_MISMATCH",
		},
		{
			name: "stale signature",
			frame: func(c *rawConn) any {
				return connectReq("1", connectSpec{device: dev, nonce: c.nonce, ts: c.ts - 121000})
			},
			wantCode:   1008,
			wantErr:    "INVALID_REQUEST",
			wantDetail: "DEVICE_AUTH_SIGNATURE_EXPIRED",
		},
		{
			name: "bad signature",
			frame: func(c *rawConn) any {
				f := connectReq("1", connectSpec{device: dev, nonce: c.nonce, ts: c.ts})
				f["params"].(map[string]any)["scopes"] = []string{"operator.admin"} // not what was signed
				return f
			},
			wantCode:   1008,
			wantReason: "device signature invalid",
			wantErr:    "INVALID_REQUEST",
			wantDetail: "DEVICE_AUTH_SIGNATURE_INVALID",
		},
		{
			name:       "worker claim",
			frame:      func(*rawConn) any { return connectReq("1", connectSpec{mode: "worker"}) },
			wantCode:   1008,
			wantReason: "invalid-handshake",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := startGW(t, tc.cfg)
			c := dialRaw(t, g.URL(), nil)
			c.send(t, tc.frame(c))
			frames, code, reason := c.readAll(t, 3*time.Second)
			if code != tc.wantCode {
				t.Fatalf("close code %d %q, want %d; frames %q", code, reason, tc.wantCode, frames)
			}
			if tc.wantReason != "" && reason != tc.wantReason {
				t.Fatalf("close reason %q, want %q", reason, tc.wantReason)
			}
			if tc.wantCode == 1000 && reason != "" {
				t.Fatalf("close reason %q, want empty", reason)
			}
			if tc.wantErr == "" {
				if len(frames) != 0 {
					t.Fatalf("unexpected frames %q", frames)
				}
				return
			}
			if len(frames) != 1 {
				t.Fatalf("frames %q, want one res", frames)
			}
			r := parseRes(t, frames[0])
			if r.OK || r.Error == nil || r.Error.Code != tc.wantErr || r.ID != "1" {
				t.Fatalf("res %s", frames[0])
			}
			if tc.wantDetail != "" && r.Error.Details.Code != tc.wantDetail {
				t.Fatalf("details.code %q, want %q", r.Error.Details.Code, tc.wantDetail)
			}
			if tc.wantMsg != "" && r.Error.Message != tc.wantMsg {
				t.Fatalf("message %q, want %q", r.Error.Message, tc.wantMsg)
			}
		})
	}
}

func TestDeviceReplayNonceMismatch(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Token: testToken})
	dev := newIdentity(t)
	a := dialRaw(t, g.URL(), nil)
	b := dialRaw(t, g.URL(), nil)
	if a.nonce == b.nonce {
		t.Fatal("two sockets got the same nonce")
	}
	frame := connectReq("c1", connectSpec{token: testToken, device: dev, nonce: a.nonce, ts: a.ts})
	b.send(t, frame)
	frames, code, reason := b.readAll(t, 3*time.Second)
	if code != 1008 || reason != "device nonce mismatch" || len(frames) != 1 {
		t.Fatalf("replay: close %d %q frames %q", code, reason, frames)
	}
	if r := parseRes(t, frames[0]); r.Error == nil || r.Error.Details.Code != "DEVICE_AUTH_NONCE_MISMATCH" || r.Error.Details.Reason != "device-nonce-mismatch" {
		t.Fatalf("replay res %s", frames[0])
	}
	// The same frame on its own socket is fine.
	a.send(t, frame)
	_ = a.ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, data, err := a.ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if r := parseRes(t, string(data)); !r.OK {
		t.Fatalf("original socket: %s", data)
	}
}

func TestDeviceReplayDuringStartupIsUnavailable(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Token: testToken, StartupWindow: time.Hour})
	dev := newIdentity(t)
	a := dialRaw(t, g.URL(), nil)
	b := dialRaw(t, g.URL(), nil)
	b.send(t, connectReq("c1", connectSpec{token: testToken, device: dev, nonce: a.nonce, ts: a.ts}))
	if _, code, _ := b.readAll(t, 3*time.Second); code != 1013 {
		t.Fatalf("close %d, want 1013 (startup check runs before device proof)", code)
	}
}

func TestPreauthTimeout(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{PreauthTimeout: 200 * time.Millisecond})
	start := time.Now() // before the dial: the timer runs from the upgrade
	c := dialRaw(t, g.URL(), nil)
	frames, code, reason := c.readAll(t, 3*time.Second)
	if code != 1000 || reason != "" || len(frames) != 0 {
		t.Fatalf("close %d %q frames %q", code, reason, frames)
	}
	// The configured 200 ms timer closed it, not the default 15 s one (nor
	// readAll's 3 s bound); on a loaded machine the close can come a
	// second or more after the timer fires.
	if el := time.Since(start); el < 200*time.Millisecond || el > 2500*time.Millisecond {
		t.Fatalf("closed after %v; want the 200 ms pre-auth timer", el)
	}
}

func TestPreauthOversize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		size     int
		wantCode int
	}{
		{65537, 1009},
		{200000, 1009},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			g := startGW(t, fakegw.Config{})
			c := dialRaw(t, g.URL(), nil)
			big := []byte(`{"type":"req","id":"1","method":"connect","params":{"pad":"` + strings.Repeat("x", tc.size) + `"}}`)
			c.send(t, big)
			_, code, reason := c.readAll(t, 3*time.Second)
			if code != tc.wantCode || reason != "" {
				t.Fatalf("close %d %q, want %d with empty reason", code, reason, tc.wantCode)
			}
		})
	}
}

func TestPreauthBudget(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Token: testToken})
	var conns []*rawConn
	for i := 0; i < 32; i++ {
		conns = append(conns, dialRaw(t, g.URL(), nil))
	}
	_, resp, err := websocket.DefaultDialer.Dial(g.URL(), nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("33rd upgrade: err %v resp %v", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Too many unauthenticated sockets") {
		t.Fatalf("503 body %q", body)
	}
	st := g.Stats()
	if st.Upgrades != 32 || st.Rejected503 != 1 || st.MaxPreauthSeen != 32 {
		t.Fatalf("stats %+v", st)
	}
	// Authenticating one frees a slot.
	conns[0].send(t, connectReq("c", connectSpec{token: testToken}))
	_ = conns[0].ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := conns[0].ws.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	dialRaw(t, g.URL(), nil)
}

func TestPreauthBudgetUnlimited(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{MaxPreauthPerIP: -1})
	for i := 0; i < 40; i++ {
		dialRaw(t, g.URL(), nil)
	}
	if st := g.Stats(); st.Rejected503 != 0 || st.MaxPreauthSeen != 40 {
		t.Fatalf("stats %+v", st)
	}
}

// noKeepAlive is an HTTP client that leaves no idle connections behind.
func httpGet(t *testing.T, url string, hdr http.Header) (int, string) {
	t.Helper()
	return httpDo(t, http.MethodGet, url, hdr)
}

func httpDo(t *testing.T, method, url string, hdr http.Header) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "text/html") {
		return resp.StatusCode, "HTML:" + string(b)
	}
	return resp.StatusCode, string(b)
}

func TestAttribution(t *testing.T) {
	t.Parallel()
	xff := http.Header{"X-Forwarded-For": {"203.0.113.9"}}
	tests := []struct {
		name    string
		trusted []string
		hdr     http.Header
		status  int // upgrade status: 101 or refusal
	}{
		{"direct local", nil, nil, 101},
		{"XFF from untrusted loopback", nil, xff, 403},
		{"XFF 127.0.0.1 from untrusted loopback", nil, http.Header{"X-Forwarded-For": {"127.0.0.1"}}, 403},
		{"X-Real-IP from untrusted", nil, http.Header{"X-Real-Ip": {"203.0.113.9"}}, 403},
		{"Forwarded from untrusted", nil, http.Header{"Forwarded": {"for=203.0.113.9"}}, 403},
		{"X-Forwarded-Proto from untrusted", nil, http.Header{"X-Forwarded-Proto": {"https"}}, 403},
		{"trusted proxy with XFF", []string{"127.0.0.1/32"}, xff, 101},
		{"trusted proxy XFF loopback", []string{"127.0.0.1"}, http.Header{"X-Forwarded-For": {"127.0.0.1"}}, 403},
		{"trusted proxy X-Real-IP only", []string{"127.0.0.0/8"}, http.Header{"X-Real-Ip": {"203.0.113.9"}}, 403},
		{"trusted proxy right-most untrusted hop", []string{"127.0.0.1/32", "10.0.0.0/8"}, http.Header{"X-Forwarded-For": {"198.51.100.1, 203.0.113.9, 10.1.1.1"}}, 101},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := startGW(t, fakegw.Config{TrustedProxies: tc.trusted})
			ws, resp, err := websocket.DefaultDialer.Dial(g.URL(), tc.hdr)
			if tc.status == 101 {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				ws.Close()
			} else {
				if err == nil || resp == nil || resp.StatusCode != tc.status {
					t.Fatalf("dial: err %v resp %v, want %d", err, resp, tc.status)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !strings.Contains(string(b), "proxy_attribution_required") {
					t.Fatalf("403 body %s", b)
				}
				if g.Stats().Rejected403 != 1 {
					t.Fatalf("stats %+v", g.Stats())
				}
			}
			wantHTTP := 200
			if tc.status == 403 {
				wantHTTP = 403
			}
			for _, p := range []string{"/startupz", "/readyz", "/"} {
				if code, body := httpGet(t, g.HTTPURL()+p, tc.hdr); code != wantHTTP {
					t.Errorf("GET %s = %d %s, want %d", p, code, body, wantHTTP)
				}
			}
			if code, _ := httpGet(t, g.HTTPURL()+"/healthz", tc.hdr); code != 200 {
				t.Errorf("/healthz = %d, want 200 always", code)
			}
			if hs := g.Upgrades(); len(hs) != 1 || (tc.hdr != nil && hs[0].Get("X-Forwarded-For") != tc.hdr.Get("X-Forwarded-For")) {
				t.Errorf("Upgrades() = %v", hs)
			}
		})
	}
}

func TestTrustedProxyRemoteClients(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Token: testToken, TrustedProxies: []string{"127.0.0.1/32"}, MaxPreauthPerIP: 2})
	hdrA := http.Header{"X-Forwarded-For": {"203.0.113.1"}}
	hdrB := http.Header{"X-Forwarded-For": {"203.0.113.2"}}
	// The budget is per attributed client IP.
	dialRaw(t, g.URL(), hdrA)
	dialRaw(t, g.URL(), hdrA)
	if _, resp, err := websocket.DefaultDialer.Dial(g.URL(), hdrA); err == nil || resp.StatusCode != 503 {
		t.Fatalf("third socket for A: %v", err)
	}
	c := dialRaw(t, g.URL(), hdrB)

	// A remote device is not silently paired.
	c.send(t, connectReq("1", connectSpec{token: testToken, device: newIdentity(t), nonce: c.nonce, ts: c.ts}))
	frames, code, _ := c.readAll(t, 3*time.Second)
	if code != 1008 || len(frames) != 1 {
		t.Fatalf("close %d frames %q", code, frames)
	}
	if r := parseRes(t, frames[0]); r.Error == nil || r.Error.Code != "NOT_PAIRED" || r.Error.Details.Code != "PAIRING_REQUIRED" {
		t.Fatalf("res %s", frames[0])
	}
	// A remote device-less cli gets hello-ok with its scopes cleared.
	conn, res, err := testclient.Connect(testCtx(t), testclient.Options{URL: g.URL(), Token: testToken, Header: hdrB, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Connect: %v %+v", err, res)
	}
	defer conn.Close()
	if !bytes.Contains(res.Hello, []byte(`"scopes":[]`)) {
		t.Fatalf("hello %s", res.Hello)
	}
}

func TestProbes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		legacy bool
		gen    fakegw.Generation
		window time.Duration
		path   string
		method string
		hdr    http.Header
		code   int
		body   string // substring; "HTML:" prefix for text/html
	}{
		{"healthz", false, fakegw.Current, time.Hour, "/healthz", "GET", nil, 200, `{"ok":true,"status":"live"}`},
		{"health", false, fakegw.Current, time.Hour, "/health", "GET", nil, 200, `"status":"live"`},
		{"startupz starting", false, fakegw.Current, time.Hour, "/startupz", "GET", nil, 503, `"status":"starting"`},
		{"startupz starting detail", false, fakegw.Current, time.Hour, "/startup", "GET", nil, 503, `"pendingReason":"startup-sidecars"`},
		{"startupz started", false, fakegw.Current, 0, "/startupz", "GET", nil, 200, `"status":"started"`},
		{"startupz HEAD", false, fakegw.Current, 0, "/startupz", "HEAD", nil, 200, ``},
		{"startupz POST", false, fakegw.Current, 0, "/startupz", "POST", nil, 405, ``},
		{"readyz starting local", false, fakegw.Current, time.Hour, "/readyz", "GET", nil, 503, `{"failing":["startup-sidecars"],"ready":false,"uptimeMs":`},
		{"readyz starting via trusted proxy", false, fakegw.Current, time.Hour, "/readyz", "GET", http.Header{"X-Forwarded-For": {"203.0.113.5"}}, 503, `{"ready":false}`},
		{"readyz ready", false, fakegw.Current, 0, "/ready", "GET", nil, 200, `"ready":true`},
		{"readyz POST", false, fakegw.Current, 0, "/readyz", "POST", nil, 405, ``},
		{"legacy startupz starting", true, fakegw.Current, time.Hour, "/startupz", "GET", nil, 200, `HTML:`},
		{"legacy startupz started", true, fakegw.Current, 0, "/startupz", "GET", nil, 200, `HTML:`},
		{"legacy readyz starting", true, fakegw.Current, time.Hour, "/readyz", "GET", nil, 503, `"failing":["startup-sidecars"]`},
		// 2026.5.12: no /startupz either (PROTOCOL.md §9); /readyz only.
		{"5.12 startupz starting", false, fakegw.Protocol4Only, time.Hour, "/startupz", "GET", nil, 200, `HTML:`},
		{"5.12 startup started", false, fakegw.Protocol4Only, 0, "/startup", "GET", nil, 200, `HTML:`},
		{"5.12 readyz starting", false, fakegw.Protocol4Only, time.Hour, "/readyz", "GET", nil, 503, `{"failing":["startup-sidecars"],"ready":false,"uptimeMs":`},
		{"5.12 readyz ready", false, fakegw.Protocol4Only, 0, "/readyz", "GET", nil, 200, `"ready":true`},
		{"control ui", false, fakegw.Current, 0, "/", "GET", nil, 200, `HTML:<!doctype html>`},
		{"unknown path", false, fakegw.Current, 0, "/nope", "GET", nil, 404, ``},
		{"unknown path during startup", false, fakegw.Current, time.Hour, "/v1/models", "GET", nil, 503, `Plugin runtime is starting`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := startGW(t, fakegw.Config{Legacy: tc.legacy, Generation: tc.gen, StartupWindow: tc.window, TrustedProxies: []string{"127.0.0.1"}})
			code, body := httpDo(t, tc.method, g.HTTPURL()+tc.path, tc.hdr)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("%s %s = %d %q; want %d containing %q", tc.method, tc.path, code, body, tc.code, tc.body)
			}
			if tc.body == `{"ready":false}` && body != tc.body {
				t.Fatalf("plain readyz body %q", body)
			}
		})
	}
	t.Run("counters", func(t *testing.T) {
		g := startGW(t, fakegw.Config{})
		for _, p := range []string{"/startupz", "/startup", "/readyz", "/healthz", "/healthz", "/health"} {
			httpGet(t, g.HTTPURL()+p, nil)
		}
		if st := g.Stats(); st.StartupzPolls != 2 || st.ReadyzPolls != 1 || st.HealthzPolls != 3 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestLegacy(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Legacy: true, Token: testToken})
	conn, res, err := testclient.Connect(testCtx(t), testclient.Options{URL: g.URL(), Token: testToken, Device: newIdentity(t), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Connect: %v %+v", err, res)
	}
	conn.Close()
	if !bytes.Contains(res.Hello, []byte(`"protocol":3`)) {
		t.Fatalf("hello %s", res.Hello)
	}
	_, res, err = testclient.Connect(testCtx(t), testclient.Options{URL: g.URL(), Token: testToken, MinProtocol: 4, MaxProtocol: 4, Timeout: 3 * time.Second})
	if err == nil || res.CloseCode != 1002 || res.CloseReason != "protocol mismatch" {
		t.Fatalf("protocol 4 against legacy: %v %+v", err, res)
	}
}

// TestProtocolAdmissionByGeneration checks each generation's range check
// and its exact refusal (PROTOCOL.md §10).
func TestProtocolAdmissionByGeneration(t *testing.T) {
	t.Parallel()
	const (
		refused3    = `{"type":"res","id":"1","ok":false,"error":{"code":"INVALID_REQUEST","message":"protocol mismatch","details":{"expectedProtocol":3}}}`
		refused512  = `{"type":"res","id":"1","ok":false,"error":{"code":"INVALID_REQUEST","message":"protocol mismatch","details":{"expectedProtocol":4,"minimumProbeProtocol":4}}}`
		refused96of = `{"type":"res","id":"1","ok":false,"error":{"code":"INVALID_REQUEST","message":"protocol mismatch","details":{"code":"PROTOCOL_MISMATCH","clientMinProtocol":%d,"clientMaxProtocol":%d,"expectedProtocol":4,"minimumProbeProtocol":3}}}`
	)
	dev := newIdentity(t)
	type connect struct {
		name       string
		minP, maxP int
		mode, role string
	}
	cli33 := connect{"cli [3,3]", 3, 3, "cli", "operator"}
	cli34 := connect{"cli [3,4]", 3, 4, "cli", "operator"}
	cli44 := connect{"cli [4,4]", 4, 4, "cli", "operator"}
	probe33 := connect{"probe [3,3]", 3, 3, "probe", "operator"}
	node33 := connect{"node [3,3]", 3, 3, "node", "node"}
	nodeOp33 := connect{"node mode, operator role [3,3]", 3, 3, "node", "operator"}
	for _, tc := range []struct {
		gen     fakegw.Generation
		c       connect
		refusal string // "" = admitted past the protocol check
	}{
		{fakegw.Protocol3, cli33, ""},
		{fakegw.Protocol3, cli34, ""},
		{fakegw.Protocol3, cli44, refused3},
		{fakegw.Protocol4Only, cli33, refused512},
		{fakegw.Protocol4Only, probe33, refused512},
		{fakegw.Protocol4Only, node33, refused512},
		{fakegw.Protocol4Only, cli34, ""},
		{fakegw.Current, cli33, fmt.Sprintf(refused96of, 3, 3)},
		{fakegw.Current, nodeOp33, fmt.Sprintf(refused96of, 3, 3)},
		{fakegw.Current, probe33, ""},
		{fakegw.Current, node33, ""},
		{fakegw.Current, cli34, ""},
		{fakegw.Current, connect{"cli [5,6]", 5, 6, "cli", "operator"}, fmt.Sprintf(refused96of, 5, 6)},
	} {
		t.Run(fmt.Sprintf("gen%d/%s", tc.gen, tc.c.name), func(t *testing.T) {
			g := startGW(t, fakegw.Config{Generation: tc.gen})
			c := dialRaw(t, g.URL(), nil)
			c.send(t, connectReq("1", connectSpec{device: dev, nonce: c.nonce, ts: c.ts, minP: tc.c.minP, maxP: tc.c.maxP, mode: tc.c.mode, role: tc.c.role}))
			if tc.refusal != "" {
				frames, code, reason := c.readAll(t, 3*time.Second)
				if len(frames) != 1 || frames[0] != tc.refusal || code != 1002 || reason != "protocol mismatch" {
					t.Fatalf("got %q, close %d %q; want %s and 1002", frames, code, reason, tc.refusal)
				}
				return
			}
			_ = c.ws.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, data, err := c.ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, []byte("protocol mismatch")) {
				t.Fatalf("refused: %s", data)
			}
		})
	}
}

// TestRecipientProfileID: the current generation adds recipientProfileId
// to events for operators, last, as frameWithSequence does; older ones and
// nodes get none.
func TestRecipientProfileID(t *testing.T) {
	t.Parallel()
	for _, gen := range []fakegw.Generation{fakegw.Current, fakegw.Protocol4Only} {
		g := startGW(t, fakegw.Config{Generation: gen, TickInterval: 50 * time.Millisecond})
		ctx := testCtx(t)
		conn, res, err := testclient.Connect(ctx, testclient.Options{URL: g.URL(), MinProtocol: 4, MaxProtocol: 4, Timeout: 3 * time.Second})
		if err != nil {
			t.Fatalf("Connect: %v %+v", err, res)
		}
		for i := 1; i <= 2; i++ {
			raw, err := conn.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			suffix := fmt.Sprintf(`"seq":%d}`, i)
			if gen == fakegw.Current {
				suffix = fmt.Sprintf(`"seq":%d,"recipientProfileId":"owner"}`, i)
			}
			if !bytes.HasPrefix(raw, []byte(`{"type":"event","event":`)) || !bytes.HasSuffix(raw, []byte(suffix)) {
				t.Errorf("generation %d: event %s; want it to end %s", gen, raw, suffix)
			}
		}
		conn.Close()
	}
}

func TestProbeModeProtocol3(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{})
	conn, res, err := testclient.Connect(testCtx(t), testclient.Options{URL: g.URL(), Mode: "probe", MinProtocol: 3, MaxProtocol: 3, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("probe with protocol 3: %v %+v", err, res)
	}
	conn.Close()
}

func TestAfterHello(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Token: testToken, TickInterval: 100 * time.Millisecond})
	ctx := testCtx(t)
	conn, res, err := testclient.Connect(ctx, testclient.Options{URL: g.URL(), Token: testToken, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Connect: %v %+v", err, res)
	}
	defer conn.Close()

	type event struct {
		Type  string `json:"type"`
		Event string `json:"event"`
		Seq   int64  `json:"seq"`
	}
	readEvent := func() event {
		t.Helper()
		raw, err := conn.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var e event
		if err := json.Unmarshal(raw, &e); err != nil || e.Type != "event" {
			t.Fatalf("not an event: %s", raw)
		}
		return e
	}
	if e := readEvent(); e.Event != "health" || e.Seq != 1 {
		t.Fatalf("first event %+v, want health seq 1", e)
	}
	if e := readEvent(); e.Event != "tick" || e.Seq != 2 {
		t.Fatalf("second event %+v, want tick seq 2", e)
	}

	tests := []struct {
		method  string
		wantErr string
	}{
		{"health", ""},
		{"status", ""},
		{"connect", "connect is only valid as the first request"},
		{"no.such.method", "unknown method: no.such.method"},
	}
	for _, tc := range tests {
		payload, err := conn.Call(ctx, tc.method, map[string]any{})
		if tc.wantErr == "" {
			if err != nil || !bytes.Contains(payload, []byte(`"ok":true`)) {
				t.Errorf("%s: %s %v", tc.method, payload, err)
			}
			continue
		}
		var es *testclient.ErrorShape
		if !errors.As(err, &es) || es.Code != "INVALID_REQUEST" || es.Message != tc.wantErr {
			t.Errorf("%s: err %v, want INVALID_REQUEST %q", tc.method, err, tc.wantErr)
		}
	}
	if st := g.Stats(); st.HelloOK != 1 || st.ConnectAttempts != 1 {
		t.Fatalf("stats %+v (a connect after hello is not a connect attempt)", st)
	}
}

func TestRequestsQueuedBehindConnect(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{})
	c := dialRaw(t, g.URL(), nil)
	c.send(t, connectReq("c", connectSpec{}))
	c.send(t, map[string]any{"type": "req", "id": "r1", "method": "health"})
	_ = c.ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	var ids []string
	for len(ids) < 2 {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var r resShape
		_ = json.Unmarshal(data, &r)
		if r.Type == "res" {
			if !r.OK {
				t.Fatalf("res %s", data)
			}
			ids = append(ids, r.ID)
		}
	}
	if ids[0] != "c" || ids[1] != "r1" {
		t.Fatalf("answer order %v", ids)
	}
}

func TestPingTimeoutTerminates(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{PingInterval: 50 * time.Millisecond, TickInterval: time.Hour})
	conn, res, err := testclient.Connect(testCtx(t), testclient.Options{URL: g.URL(), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Connect: %v %+v", err, res)
	}
	defer conn.Close()
	// Not reading means pings go unanswered.
	time.Sleep(300 * time.Millisecond)
	ws := conn.WS()
	ws.SetPingHandler(func(string) error { return nil }) // and stay silent now
	_ = ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
			t.Fatalf("got close frame %v; want a dropped connection", ce)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection not terminated")
		}
		return
	}
}

func TestPingsAnsweredKeepSession(t *testing.T) {
	// Serial: a pong is due within 30 ms, which the load of parallel
	// tests on 2 cores can delay.
	g := startGW(t, fakegw.Config{PingInterval: 30 * time.Millisecond, TickInterval: 20 * time.Millisecond})
	ctx := testCtx(t)
	conn, res, err := testclient.Connect(ctx, testclient.Options{URL: g.URL(), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Connect: %v %+v", err, res)
	}
	defer conn.Close()
	var pings atomic.Int64
	ws := conn.WS()
	ws.SetPingHandler(func(data string) error {
		pings.Add(1)
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	// Ticks keep the reader busy while pings are answered, until three
	// pings came (90 ms on an idle machine; a loaded one delays the
	// gateway's ticker, not the outcome).
	for end := time.Now().Add(5 * time.Second); pings.Load() < 3; {
		if time.Now().After(end) {
			t.Fatalf("%d pings in 5 s at 30 ms", pings.Load())
		}
		if _, err := conn.ReadMessage(ctx); err != nil {
			t.Fatalf("session ended: %v", err)
		}
	}
	if _, err := conn.Call(ctx, "health", nil); err != nil {
		t.Fatalf("session unusable after pings: %v", err)
	}
}

func TestStopSendsShutdown(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Token: testToken})
	ctx := testCtx(t)
	conn, res, err := testclient.Connect(ctx, testclient.Options{URL: g.URL(), Token: testToken, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Connect: %v %+v", err, res)
	}
	defer conn.Close()
	pre := dialRaw(t, g.URL(), nil)
	if _, err := conn.ReadMessage(ctx); err != nil { // health seq 1
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { g.Stop(); close(done) }()

	raw, err := conn.ReadMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"event","event":"shutdown","payload":{"reason":"gateway stopping"},"seq":2,"recipientProfileId":"owner"}`; string(raw) != want {
		t.Fatalf("shutdown frame %s, want %s", raw, want)
	}
	_, err = conn.ReadMessage(ctx)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1012 || ce.Text != "service restart" {
		t.Fatalf("close %v, want 1012 service restart", err)
	}
	if frames, code, _ := pre.readAll(t, 3*time.Second); code != 1012 || len(frames) != 0 {
		t.Fatalf("pre-auth socket: close %d frames %q", code, frames)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return")
	}
	ln, err := net.Listen("tcp4", g.Addr())
	if err != nil {
		t.Fatalf("port not released: %v", err)
	}
	ln.Close()
	g.Stop() // idempotent
}

func TestRestart(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Token: testToken})
	addr := g.Addr()
	ctx := testCtx(t)
	conn, _, err := testclient.Connect(ctx, testclient.Options{URL: g.URL(), Token: testToken, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A window far longer than a connect takes on a loaded machine (one
	// took 1.5 s): the connect below must fall into it.
	const window = 4 * time.Second
	began := time.Now() // the window begins after this
	if err := g.Restart(window); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if g.Addr() != addr {
		t.Fatalf("address changed %s -> %s", addr, g.Addr())
	}
	// The old session was shut down.
	for {
		if _, err := conn.ReadMessage(ctx); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 1012 {
				t.Fatalf("old session: %v", err)
			}
			break
		}
	}
	_, res, err := testclient.Connect(ctx, testclient.Options{URL: g.URL(), Token: testToken, Timeout: 3 * time.Second})
	if err == nil || res.CloseCode != 1013 {
		t.Fatalf("connect in the fresh window: %v %+v", err, res)
	}
	// The window ends by itself, not before its time.
	testkit.WaitFor(t, window+10*time.Second, "the window's end", func() bool {
		code, _ := httpGet(t, g.HTTPURL()+"/startupz", nil)
		return code == 200
	})
	if d := time.Since(began); d < window {
		t.Fatalf("window ended %v after Restart; want %v", d, window)
	}
	conn2, res, err := testclient.Connect(ctx, testclient.Options{URL: g.URL(), Token: testToken, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("connect after the window: %v %+v", err, res)
	}
	conn2.Close()
	if st := g.Stats(); st.HelloOK != 2 || st.StartupRejects != 1 || st.Upgrades != 3 {
		t.Fatalf("cumulative stats %+v", st)
	}
	g.Stop()
	if err := g.Restart(0); err != nil {
		t.Fatalf("Restart after Stop: %v", err)
	}
	if code, _ := httpGet(t, g.HTTPURL()+"/startupz", nil); code != 200 {
		t.Fatalf("/startupz after Restart(0) = %d", code)
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Echo: true, TickInterval: 10 * time.Millisecond})
	ctx := testCtx(t)
	conn, res, err := testclient.Connect(ctx, testclient.Options{URL: g.URL(), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Connect: %v %+v", err, res)
	}
	defer conn.Close()
	ws := conn.WS()
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	tests := []struct {
		name string
		mt   int
		data []byte
	}{
		{"text", websocket.TextMessage, []byte(`{"type":"req","id":"1","method":"health"}`)},
		{"not json", websocket.TextMessage, []byte("plain text")},
		{"binary", websocket.BinaryMessage, []byte{0, 1, 2, 0xff, 0xfe}},
		{"large binary", websocket.BinaryMessage, big},
		{"large text", websocket.TextMessage, bytes.Repeat([]byte("a"), 200000)},
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, tc := range tests {
		if err := ws.WriteMessage(tc.mt, tc.data); err != nil {
			t.Fatalf("%s: write: %v", tc.name, err)
		}
		mt, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("%s: read: %v", tc.name, err)
		}
		if mt != tc.mt || !bytes.Equal(got, tc.data) {
			t.Fatalf("%s: echo differs (type %d, %d bytes)", tc.name, mt, len(got))
		}
	}
}

func TestCloseSessions(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{})
	ctx := testCtx(t)
	conn, _, err := testclient.Connect(ctx, testclient.Options{URL: g.URL(), Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pre := dialRaw(t, g.URL(), nil)
	g.CloseSessions(4001, "gateway auth changed")
	for {
		if _, err := conn.ReadMessage(ctx); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "gateway auth changed" {
				t.Fatalf("close %v", err)
			}
			break
		}
	}
	// Unauthenticated sockets are left alone.
	pre.send(t, connectReq("c", connectSpec{}))
	_ = pre.ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, data, err := pre.ws.ReadMessage()
	if err != nil || !parseRes(t, string(data)).OK {
		t.Fatalf("pre-auth socket after CloseSessions: %s %v", data, err)
	}
}

func TestSubprotocolEchoed(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{})
	d := websocket.Dialer{Subprotocols: []string{"first", "second"}}
	ws, _, err := d.Dial(g.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if ws.Subprotocol() != "first" {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
}

func TestOnlyLoopback(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", "localhost:0", ":0"} {
		if g, err := fakegw.Start(fakegw.Config{Addr: addr}); err == nil {
			g.Close()
			t.Errorf("Start(%q) succeeded", addr)
		}
	}
}

func TestPairRemoteDevices(t *testing.T) {
	t.Parallel()
	g := startGW(t, fakegw.Config{Token: testToken, TrustedProxies: []string{"127.0.0.1"}, PairRemoteDevices: true})
	hdr := http.Header{"X-Forwarded-For": {"198.18.0.7"}}
	c := dialRaw(t, g.URL(), hdr)
	c.send(t, connectReq("1", connectSpec{token: testToken, device: newIdentity(t), nonce: c.nonce, ts: c.ts}))
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if r := parseRes(t, string(data)); !r.OK || !bytes.Contains(r.Payload, []byte(`"hello-ok"`)) {
		t.Fatalf("a remote device of a gateway that pairs remote devices: res %s", data)
	}
	// The proof is still checked: a signature over another nonce fails.
	c = dialRaw(t, g.URL(), hdr)
	c.send(t, connectReq("2", connectSpec{token: testToken, device: newIdentity(t), nonce: "other", ts: c.ts}))
	frames, code, _ := c.readAll(t, 3*time.Second)
	if code != 1008 || len(frames) != 1 {
		t.Fatalf("close %d frames %q", code, frames)
	}
	if r := parseRes(t, frames[0]); r.OK || r.Error == nil || r.Error.Details.Code != "DEVICE_AUTH_NONCE_MISMATCH" {
		t.Fatalf("res %s", frames[0])
	}
}
