package testclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
)

// captureServer answers one connect with hello-ok after sending a fixed
// challenge, and hands the connect frame to the test.
func captureServer(t *testing.T, challenge bool, got chan<- map[string]any) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		if !challenge {
			_, _, _ = ws.ReadMessage() // wait for the client to give up
			return
		}
		_ = ws.WriteJSON(map[string]any{"type": "event", "event": "connect.challenge",
			"payload": map[string]any{"nonce": "nonce-1", "ts": time.Now().UnixMilli()}})
		var req map[string]any
		if err := ws.ReadJSON(&req); err != nil {
			return
		}
		got <- req
		_ = ws.WriteJSON(map[string]any{"type": "event", "event": "noise", "seq": 1})
		_ = ws.WriteJSON(map[string]any{"type": "res", "id": req["id"], "ok": true, "payload": map[string]any{"type": "hello-ok", "protocol": 4}})
		_, _, _ = ws.ReadMessage()
	}))
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server on %s", srv.URL)
	}
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func TestConnectParams(t *testing.T) {
	t.Parallel()
	dev, err := deviceauth.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts testclient.Options
	}{
		{"token only", testclient.Options{Token: "tok"}},
		{"device with token", testclient.Options{Token: "tok", Device: dev, DeviceFamily: "Desktop", Platform: "Linux"}},
		{"device without token", testclient.Options{Device: dev, ClientID: "gateway-client", Mode: "backend", Scopes: []string{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan map[string]any, 1)
			tc.opts.URL = captureServer(t, true, got)
			tc.opts.Timeout = 3 * time.Second
			conn, res, err := testclient.Connect(context.Background(), tc.opts)
			if err != nil {
				t.Fatalf("Connect: %v %+v", err, res)
			}
			defer conn.Close()
			if !res.HelloOK || res.Nonce != "nonce-1" {
				t.Fatalf("result %+v", res)
			}
			req := <-got
			raw, _ := json.Marshal(req)
			var f struct {
				Type   string `json:"type"`
				ID     string `json:"id"`
				Method string `json:"method"`
				Params struct {
					MinProtocol int            `json:"minProtocol"`
					MaxProtocol int            `json:"maxProtocol"`
					Client      map[string]any `json:"client"`
					Role        string         `json:"role"`
					Scopes      []string       `json:"scopes"`
					Auth        *struct {
						Token string `json:"token"`
					} `json:"auth"`
					Device *struct {
						ID, PublicKey, Signature, Nonce string
						SignedAt                        int64
					} `json:"device"`
				} `json:"params"`
			}
			if err := json.Unmarshal(raw, &f); err != nil {
				t.Fatal(err)
			}
			p := f.Params
			if f.Type != "req" || f.Method != "connect" || f.ID == "" || p.MinProtocol != 3 || p.MaxProtocol != 4 || p.Role != "operator" {
				t.Fatalf("connect %s", raw)
			}
			wantScopes := tc.opts.Scopes
			if wantScopes == nil {
				wantScopes = testclient.DefaultScopes()
			}
			if strings.Join(p.Scopes, ",") != strings.Join(wantScopes, ",") {
				t.Fatalf("scopes %v", p.Scopes)
			}
			if (tc.opts.Token == "") != (p.Auth == nil) || (p.Auth != nil && p.Auth.Token != tc.opts.Token) {
				t.Fatalf("auth in %s", raw)
			}
			if _, has := p.Client["deviceFamily"]; has != (tc.opts.DeviceFamily != "") {
				t.Fatalf("client %v", p.Client)
			}
			if tc.opts.Device == nil {
				if p.Device != nil {
					t.Fatalf("device sent: %s", raw)
				}
				return
			}
			d := p.Device
			if d == nil || d.ID != dev.ID() || d.PublicKey != dev.PublicKey() || d.Nonce != "nonce-1" {
				t.Fatalf("device %s", raw)
			}
			payload := deviceauth.Payload{DeviceID: d.ID, ClientID: p.Client["id"].(string), ClientMode: p.Client["mode"].(string),
				Role: p.Role, Scopes: p.Scopes, SignedAtMs: d.SignedAt, Token: tc.opts.Token, Nonce: d.Nonce,
				Platform: p.Client["platform"].(string), DeviceFamily: tc.opts.DeviceFamily}
			if v, err := deviceauth.VerifyVersion(d.PublicKey, d.Signature, payload); err != nil || v != "v3" {
				t.Fatalf("signature: %q %v", v, err)
			}
		})
	}
}

func TestConnectNoChallengeTimesOut(t *testing.T) {
	t.Parallel()
	url := captureServer(t, false, nil)
	start := time.Now()
	_, _, err := testclient.Connect(context.Background(), testclient.Options{URL: url, Timeout: 200 * time.Millisecond})
	if err == nil {
		t.Fatal("Connect succeeded without a challenge")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("gave up after %v", el)
	}
}

func TestConnectContextCancel(t *testing.T) {
	t.Parallel()
	url := captureServer(t, false, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, _, err := testclient.Connect(ctx, testclient.Options{URL: url}); err == nil {
		t.Fatal("Connect succeeded")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("cancel took %v", el)
	}
}

// TestConnectOnce checks that a failed connect is never retried.
func TestConnectOnce(t *testing.T) {
	t.Parallel()
	g, err := fakegw.Start(fakegw.Config{Token: "tok", StartupWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	_, res, err := testclient.Connect(context.Background(), testclient.Options{URL: g.URL(), Token: "tok", Timeout: 3 * time.Second})
	if err == nil || res.CloseCode != 1013 || res.Error == nil || res.Error.Code != "UNAVAILABLE" {
		t.Fatalf("Connect: %v %+v", err, res)
	}
	var es *testclient.ErrorShape
	if !errors.As(err, &es) || es.DetailsCode() != "" {
		t.Fatalf("error %v", err)
	}
	if st := g.Stats(); st.Upgrades != 1 || st.ConnectAttempts != 1 {
		t.Fatalf("stats %+v: the client retried", st)
	}
}

func TestConnectHTTPStatus(t *testing.T) {
	t.Parallel()
	g, err := fakegw.Start(fakegw.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	_, res, err := testclient.Connect(context.Background(), testclient.Options{URL: g.URL(), Timeout: 3 * time.Second,
		Header: http.Header{"X-Forwarded-For": {"203.0.113.1"}}})
	if err == nil || res.HTTPStatus != http.StatusForbidden {
		t.Fatalf("Connect: %v %+v", err, res)
	}
}
