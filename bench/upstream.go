package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/bench/internal/procs"
)

// upstream is the minimal gateway every path talks to: on upgrade it sends
// the connect.challenge event, answers the first req (connect) with a
// hello-ok res, then echoes every message verbatim. It checks nothing, so the
// figures measure the proxies, not the gateway. It answers the probes
// holdfast polls (/startupz, /readyz, /healthz) as a started gateway would
// (PROTOCOL.md §7).
//
// With a startup window it also plays a starting gateway (PROTOCOL.md §1,
// §6, §9): until the window ends every connect gets the startup UNAVAILABLE
// res and close 1013, /startupz and /readyz answer 503, and at most
// maxPreauth sockets per client IP may be open without a hello-ok (the next
// upgrade gets HTTP 503).
type upstream struct {
	upgrader   websocket.Upgrader
	readyAt    time.Time // end of the startup window
	maxPreauth int       // 0: no limit

	connects  atomic.Int64 // connect requests received (attempts)
	helloOK   atomic.Int64 // hello-ok answers sent
	upgrades  atomic.Int64 // WebSocket upgrades accepted
	refused   atomic.Int64 // upgrades refused by the pre-auth limit
	sessions  atomic.Int64 // sessions currently open
	preauthMu sync.Mutex
	preauth   map[string]int // open unauthenticated sockets per client IP
	maxSeen   int            // most unauthenticated sockets one IP had open
}

// serveUpstream runs the upstream on listen until the process is killed,
// starting with a startup window of the given length (0 for none). It
// prints the ready line with its address on stdout.
func serveUpstream(listen string, window time.Duration, maxPreauth int) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	u := &upstream{
		upgrader:   websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
		readyAt:    time.Now().Add(window),
		maxPreauth: maxPreauth,
		preauth:    map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/startupz", u.probe(`{"ok":true,"status":"started"}`, `{"ok":false,"status":"starting"}`))
	mux.HandleFunc("/readyz", u.probe(`{"ready":true}`, `{"ready":false,"failing":["startup-sidecars"]}`))
	mux.HandleFunc("/healthz", u.probe(`{"ok":true,"status":"live"}`, `{"ok":true,"status":"live"}`))
	mux.HandleFunc("/benchstats", u.stats)
	mux.HandleFunc("/", u.serveWS)
	fmt.Fprintf(os.Stdout, "%s%s\n", procs.ReadyPrefix, l.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(l)
}

// starting reports whether the startup window is still open.
func (u *upstream) starting() bool { return time.Now().Before(u.readyAt) }

// probe answers a probe with 200 and ready, or 503 and starting while the
// startup window is open.
func (u *upstream) probe(ready, starting string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if u.starting() && ready != starting {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, starting)
			return
		}
		_, _ = io.WriteString(w, ready)
	}
}

// gatewayStats is what /benchstats reports.
type gatewayStats struct {
	Connects int64 `json:"connects"`
	HelloOK  int64 `json:"hello_ok"`
	Upgrades int64 `json:"upgrades"`
	Refused  int64 `json:"refused"`
	Sessions int64 `json:"sessions"`
	// MaxPreauth is the most unauthenticated sockets one client address
	// had open at once (with a pre-auth limit).
	MaxPreauth int64 `json:"max_preauth"`
}

// stats reports the counters as JSON.
func (u *upstream) stats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	u.preauthMu.Lock()
	maxSeen := u.maxSeen
	u.preauthMu.Unlock()
	_ = json.NewEncoder(w).Encode(gatewayStats{
		Connects:   u.connects.Load(),
		HelloOK:    u.helloOK.Load(),
		Upgrades:   u.upgrades.Load(),
		Refused:    u.refused.Load(),
		Sessions:   u.sessions.Load(),
		MaxPreauth: int64(maxSeen),
	})
}

// admit takes a pre-auth slot for the client IP of r; it returns a function
// that gives the slot back (idempotent), or false when the IP has
// maxPreauth unauthenticated sockets already.
func (u *upstream) admit(r *http.Request) (func(), bool) {
	if u.maxPreauth <= 0 {
		return func() {}, true
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	u.preauthMu.Lock()
	defer u.preauthMu.Unlock()
	if u.preauth[ip] >= u.maxPreauth {
		return nil, false
	}
	u.preauth[ip]++
	u.maxSeen = max(u.maxSeen, u.preauth[ip])
	var once sync.Once
	return func() {
		once.Do(func() {
			u.preauthMu.Lock()
			u.preauth[ip]--
			u.preauthMu.Unlock()
		})
	}, true
}

// serveWS runs one upstream session: challenge, connect, hello-ok, echo.
func (u *upstream) serveWS(w http.ResponseWriter, r *http.Request) {
	release, ok := u.admit(r)
	if !ok {
		u.refused.Add(1)
		http.Error(w, "Too many unauthenticated sockets", http.StatusServiceUnavailable)
		return
	}
	defer release()
	conn, err := u.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	u.upgrades.Add(1)
	u.sessions.Add(1)
	defer u.sessions.Add(-1)

	if err := conn.WriteMessage(websocket.TextMessage, challengeFrame()); err != nil {
		return
	}
	_, msg, err := conn.ReadMessage()
	if err != nil {
		return
	}
	var req struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(msg, &req) != nil || req.ID == "" {
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "invalid request frame"),
			time.Now().Add(time.Second))
		return
	}
	n := u.connects.Add(1)
	if u.starting() {
		_ = conn.WriteMessage(websocket.TextMessage, startupUnavailableFrame(req.ID))
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "gateway starting"),
			time.Now().Add(time.Second))
		return
	}
	if err := conn.WriteMessage(websocket.TextMessage, helloOKFrame(req.ID, n)); err != nil {
		return
	}
	u.helloOK.Add(1)
	release()
	// Echo: copy each message into a writer of the same type, without an
	// intermediate buffer (gorilla's message writer implements ReadFrom).
	for {
		mt, rd, err := conn.NextReader()
		if err != nil {
			return
		}
		wr, err := conn.NextWriter(mt)
		if err != nil {
			return
		}
		if _, err := io.Copy(wr, rd); err != nil {
			return
		}
		if err := wr.Close(); err != nil {
			return
		}
	}
}

// challengeFrame returns a connect.challenge event with a fresh nonce
// (PROTOCOL.md §2).
func challengeFrame() []byte {
	var b [16]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	return []byte(`{"type":"event","event":"connect.challenge","payload":{"nonce":"` + nonce +
		`","ts":` + strconv.FormatInt(time.Now().UnixMilli(), 10) + `,"capabilities":["model-catalog-snapshot"]}}`)
}

// startupUnavailableFrame returns the res a starting gateway sends to a
// connect (PROTOCOL.md §1).
func startupUnavailableFrame(id string) []byte {
	idJSON, _ := json.Marshal(id)
	return []byte(`{"type":"res","id":` + string(idJSON) + `,"ok":false,"error":{"code":"UNAVAILABLE",` +
		`"message":"gateway starting; retry shortly","retryable":true,"retryAfterMs":500,` +
		`"details":{"reason":"startup-sidecars"}}}`)
}

// helloOKFrame returns a successful connect res with a small hello-ok payload
// (PROTOCOL.md §5). The real one is about 15 KB; a small one keeps the
// handshake figure about the proxies.
func helloOKFrame(id string, n int64) []byte {
	idJSON, _ := json.Marshal(id)
	return []byte(`{"type":"res","id":` + string(idJSON) + `,"ok":true,"payload":{"type":"hello-ok","protocol":4,` +
		`"server":{"version":"bench","connId":"c` + strconv.FormatInt(n, 10) + `"},` +
		`"features":{"methods":["health"],"events":["tick"]},"snapshot":{},` +
		`"auth":{"role":"operator","scopes":[]},` +
		`"policy":{"maxPayload":26214400,"maxBufferedBytes":52428800,"tickIntervalMs":30000}}}`)
}
