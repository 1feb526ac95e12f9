package retry

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
)

// HTTPProbe asks a gateway for its startup state over HTTP.
//
// Current gateways (2026.9.6, measured) serve GET /startupz, the exact
// mirror of their WebSocket startup gate: JSON {"status":"started"} with
// 200, "starting" with 503. Older ones (2026.4.29–2026.5.x, and 2026.5.12,
// measured: PROTOCOL.md §9) have no such endpoint: their Control UI answers
// it with 200 text/html, so only a JSON body with a status counts. For those the probe falls back to GET /readyz, whose
// detailed body (given to loopback callers without forwarding headers) lists
// "startup-sidecars" in "failing" while starting.
//
// Requests carry no forwarding headers: the gateway answers any
// X-Forwarded-For from an untrusted peer with 403.
type HTTPProbe struct {
	// Base is the gateway's HTTP origin, such as http://127.0.0.1:18789.
	Base *url.URL
	// Client performs the requests; required (NewHTTPProbe sets it).
	Client *http.Client
	// Clock dates the legacy-mode decision; nil means the system clock.
	Clock Clock

	mu          sync.Mutex
	legacyUntil time.Time // skip /startupz until then
}

// ProbeBase derives the HTTP origin of a gateway from its WebSocket URL:
// ws becomes http, wss becomes https, and the path is dropped.
func ProbeBase(wsURL *url.URL) *url.URL {
	u := &url.URL{Scheme: "http", Host: wsURL.Host}
	if wsURL.Scheme == "wss" || wsURL.Scheme == "https" {
		u.Scheme = "https"
	}
	return u
}

// legacyRecheck is how long a gateway without /startupz is believed to stay
// without one before the probe asks again (it may be upgraded in place).
const legacyRecheck = 30 * time.Second

// maxProbeBody bounds what the probe reads of a response.
const maxProbeBody = 64 << 10

// Probe implements the Probe function type.
func (p *HTTPProbe) Probe(ctx context.Context) (State, error) {
	now := p.now()
	p.mu.Lock()
	legacy := now.Before(p.legacyUntil)
	p.mu.Unlock()
	if !legacy {
		s, ok, err := p.startupz(ctx)
		if err != nil {
			return s, err
		}
		if ok {
			return s, nil
		}
		p.mu.Lock()
		p.legacyUntil = now.Add(legacyRecheck)
		p.mu.Unlock()
	}
	return p.readyz(ctx)
}

func (p *HTTPProbe) now() time.Time {
	if p.Clock == nil {
		return time.Now()
	}
	return p.Clock.Now()
}

// startupz returns ok=false when the gateway has no /startupz endpoint.
func (p *HTTPProbe) startupz(ctx context.Context) (State, bool, error) {
	status, body, isJSON, err := p.get(ctx, "/startupz")
	if err != nil {
		return transportState(err), false, err
	}
	if !isJSON {
		return Unknown, false, nil
	}
	var v struct {
		Status *string `json:"status"`
	}
	if json.Unmarshal(body, &v) != nil || v.Status == nil {
		return Unknown, false, nil
	}
	switch {
	case *v.Status == "started" && status == http.StatusOK:
		return Started, true, nil
	case *v.Status == "starting":
		return Starting, true, nil
	default:
		// "draining" and anything new: the gate is not open for startup
		// purposes, and a drain answers connect with its own UNAVAILABLE.
		return Starting, true, nil
	}
}

// readyz reads /readyz: the gateway's answer is JSON, 200 when ready and
// 503 when not. A front that cannot reach the gateway (502, 503 or 504
// without JSON) says it is down; any other answer is not the gateway's,
// and the endpoints are unusable (ErrNoReadiness).
func (p *HTTPProbe) readyz(ctx context.Context) (State, error) {
	status, body, isJSON, err := p.get(ctx, "/readyz")
	if err != nil {
		return transportState(err), err
	}
	if !isJSON {
		switch status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return Down, fmt.Errorf("readiness probe: GET /readyz: status %d from something in front of the gateway", status)
		}
		return Unknown, fmt.Errorf("%w: GET /startupz and /readyz: status %d without a JSON body", ErrNoReadiness, status)
	}
	switch status {
	case http.StatusOK:
		return Started, nil
	case http.StatusServiceUnavailable:
	default:
		return Unknown, fmt.Errorf("%w: GET /readyz: status %d", ErrNoReadiness, status)
	}
	var v struct {
		Failing []string `json:"failing"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return Unknown, fmt.Errorf("%w: GET /readyz: %v", ErrNoReadiness, err)
	}
	if v.Failing == nil {
		// The plain body ({"ready":false}) says nothing of startup:
		// assume the worst.
		return Starting, nil
	}
	if slices.Contains(v.Failing, gwproto.StartupReason) {
		return Starting, nil
	}
	// Not ready for other reasons (an unhealthy channel, say): the
	// WebSocket startup gate is open.
	return Started, nil
}

// transportState is what a failed request says of the gateway: a timeout
// nothing (Unknown), anything else (refused, reset) that it is down.
func transportState(err error) State {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return Unknown
	}
	return Down
}

func (p *HTTPProbe) get(ctx context.Context, path string) (status int, body []byte, isJSON bool, err error) {
	u := *p.Base
	u.Path = path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, nil, false, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.Client.Do(req)
	if err != nil {
		return 0, nil, false, fmt.Errorf("readiness probe: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, nil, false, fmt.Errorf("readiness probe: GET %s: %w", path, err)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return resp.StatusCode, body, mt == "application/json", nil
}

// NewHTTPProbe returns a probe of the gateway behind the WebSocket URL
// wsURL. tlsConfig is used for wss gateways and may be nil. The client it
// builds uses no environment proxy (the gateway is reached directly, like the
// WebSocket dials) and follows no redirects.
func NewHTTPProbe(wsURL *url.URL, tlsConfig *tls.Config) *HTTPProbe {
	return &HTTPProbe{
		Base: ProbeBase(wsURL),
		Client: &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				TLSClientConfig:     tlsConfig,
				MaxIdleConnsPerHost: 2,
				IdleConnTimeout:     30 * time.Second,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}
