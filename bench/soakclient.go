package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
)

// Client timings of the soak, after the OpenClaw clients (PROTOCOL.md §4).
const (
	// soakChallengeTimeout and soakConnectTimeout are the clients' bounds
	// on the challenge after the upgrade and on hello-ok after connect.
	soakChallengeTimeout = 15 * time.Second
	soakConnectTimeout   = 15 * time.Second
	// soakBrowserChallenge is how long the Control UI waits for the
	// challenge before it gives up on it.
	soakBrowserChallenge = 750 * time.Millisecond
	// soakReadIdle bounds the wait for any frame in a session that has
	// messages in flight: past it the session counts as ended with
	// nothing from holdfast.
	soakReadIdle = 30 * time.Second
	// soakDrain bounds the wait for the echoes still due when a client
	// ends its session; soakCloseWait the wait for the answer to its
	// close frame.
	soakDrain     = 10 * time.Second
	soakCloseWait = 5 * time.Second
	// soakBackoffMax caps the back-off between failed handshakes of a long
	// session (the Node client's grows to 30 s; shorter keeps the soak
	// dense).
	soakBackoffMax = 5 * time.Second
)

// hsKind is how a soak client authenticates.
type hsKind int

const (
	kindToken   hsKind = iota // token only: replayable
	kindDevice                // token and a device proof over the challenge
	kindBrowser               // a Control UI: Origin header and a device proof
)

// hsOutcome is how one handshake ended.
type hsOutcome struct {
	conn       *websocket.Conn // set on hello-ok
	retryAfter time.Duration   // from a startup UNAVAILABLE, clamped as clients do
}

// soakConnect returns the connect req of a client of kind, signed over
// nonce and ts unless the kind is token-only.
func soakConnect(id string, kind hsKind, dev *deviceauth.Identity, nonce string, ts int64) []byte {
	clientID, mode := "cli", "cli"
	if kind == kindBrowser {
		clientID, mode = "openclaw-control-ui", "webchat"
	}
	device := ""
	if kind != kindToken {
		sig := dev.Sign(deviceauth.Payload{
			DeviceID: dev.ID(), ClientID: clientID, ClientMode: mode, Role: "operator",
			Scopes: []string{"operator.read"}, SignedAtMs: ts, Token: benchToken,
			Nonce: nonce, Platform: "linux",
		})
		device = `,"device":{"id":"` + dev.ID() + `","publicKey":"` + dev.PublicKey() + `","signature":"` + sig +
			`","signedAt":` + strconv.FormatInt(ts, 10) + `,"nonce":"` + nonce + `"}`
	}
	return []byte(`{"type":"req","id":"` + id + `","method":"connect","params":{"minProtocol":4,"maxProtocol":4,` +
		`"client":{"id":"` + clientID + `","version":"2026.9.6","platform":"linux","mode":"` + mode + `"},` +
		`"role":"operator","scopes":["operator.read"],"auth":{"token":"` + benchToken + `"}` + device + `}}`)
}

// closeCodeOf returns the close code a read error stands for: the close
// frame's code, closeNone for a deadline that passed, closeNoFrame for a
// connection that ended without a close frame.
func closeCodeOf(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return closeNone
	}
	return closeNoFrame
}

// recordClose counts a connection's ending.
func (k *soak) recordClose(code int) {
	k.mu.Lock()
	k.codes[code]++
	k.mu.Unlock()
}

// handshake runs one client handshake through the plain or the TLS
// holdfast and counts it under the gateway's phase at its start.
func (k *soak) handshake(ctx context.Context, sid string, kind hsKind, useTLS bool) hsOutcome {
	phase := k.phase.Load()
	k.hs.Add(1)
	k.byPhase[phase][0].Add(1)
	o, code := k.tryHandshake(ctx, sid, kind, useTLS)
	if o.conn != nil {
		k.hsOK.Add(1)
		k.byPhase[phase][1].Add(1)
	} else if code >= 0 {
		k.recordClose(code)
	}
	return o
}

// tryHandshake does the work of handshake. Without hello-ok it returns
// the close code the client saw, or -1 for an HTTP refusal (counted here).
func (k *soak) tryHandshake(ctx context.Context, sid string, kind hsKind, useTLS bool) (hsOutcome, int) {
	h, scheme, origin := k.plain, "ws", "http"
	if useTLS {
		h, scheme, origin = k.tlsHF, "wss", "https"
	}
	var hdr http.Header
	if kind == kindBrowser {
		hdr = http.Header{"Origin": {origin + "://" + h.listen}}
	}
	d := &websocket.Dialer{HandshakeTimeout: soakChallengeTimeout, ReadBufferSize: 4096, WriteBufferSize: 4096}
	if useTLS {
		d.TLSClientConfig = k.tlsConf.Load()
	}
	dctx, cancel := context.WithTimeout(ctx, soakChallengeTimeout)
	defer cancel()
	conn, resp, err := d.DialContext(dctx, scheme+"://"+h.listen+"/", hdr)
	if err != nil {
		if resp != nil {
			k.mu.Lock()
			k.statuses[resp.StatusCode]++
			k.mu.Unlock()
			return hsOutcome{}, -1
		}
		return hsOutcome{}, closeNone
	}
	upgraded := time.Now()
	_ = conn.SetReadDeadline(upgraded.Add(soakChallengeTimeout))
	sentConnect := false
	var retryAfter time.Duration
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			conn.Close()
			return hsOutcome{retryAfter: retryAfter}, closeCodeOf(err)
		}
		var f struct {
			frameHead
			Error *struct {
				Code         string `json:"code"`
				RetryAfterMs int    `json:"retryAfterMs"`
				Details      struct {
					Reason string `json:"reason"`
				} `json:"details"`
			} `json:"error"`
		}
		if err := json.Unmarshal(msg, &f); err != nil {
			continue
		}
		switch {
		case !sentConnect && f.Type == "event" && f.Event == "connect.challenge":
			if kind == kindBrowser && time.Since(upgraded) > soakBrowserChallenge {
				k.late.Add(1)
			}
			dev := k.devs[rand.IntN(len(k.devs))]
			_ = conn.SetWriteDeadline(time.Now().Add(soakConnectTimeout))
			if err := conn.WriteMessage(websocket.TextMessage, soakConnect(sid, kind, dev, f.Payload.Nonce, f.Payload.TS)); err != nil {
				conn.Close()
				return hsOutcome{}, closeNoFrame
			}
			sentConnect = true
			_ = conn.SetReadDeadline(time.Now().Add(soakConnectTimeout))
		case sentConnect && f.Type == "res" && f.ID == sid:
			if f.OK && f.Payload.Type == "hello-ok" {
				_ = conn.SetReadDeadline(time.Time{})
				_ = conn.SetWriteDeadline(time.Time{})
				return hsOutcome{conn: conn}, 0
			}
			// Refused: the close follows. A startup refusal says when to
			// come back, clamped to 100 ms–2 s as clients do.
			if e := f.Error; e != nil && e.Code == "UNAVAILABLE" && e.Details.Reason == "startup-sidecars" {
				retryAfter = min(max(time.Duration(e.RetryAfterMs)*time.Millisecond, 100*time.Millisecond), 2*time.Second)
			}
		}
	}
}

// pad returns filler for one message: mostly up to 1 KiB, sometimes up to
// 16 KiB, now and then 64–192 KiB (a message over several reads and
// frames).
func (k *soak) pad() []byte {
	n := 16 + rand.IntN(1008)
	switch r := rand.IntN(1000); {
	case r < 5:
		n = 64<<10 + rand.IntN(128<<10)
	case r < 100:
		n = 1<<10 + rand.IntN(15<<10)
	}
	off := rand.IntN(len(k.pads) - n)
	return k.pads[off : off+n]
}

// relay runs a session on conn: numbered messages go out every ~every
// (at most inFlight unanswered) and come back through the gateway's
// echo, checked by a msgTracker. It ends when holdfast closes the
// session, or after length (negative: no limit) or when stop closes:
// then the client waits for the echoes due (up to soakDrain) and closes
// with 1000.
func (k *soak) relay(conn *websocket.Conn, sid string, stop <-chan struct{}, length, every time.Duration, inFlight int64) {
	defer conn.Close()
	tr := newMsgTracker(sid, &k.tally)
	done := make(chan int, 1)
	go func() {
		for {
			_ = conn.SetReadDeadline(time.Now().Add(soakReadIdle))
			_, msg, err := conn.ReadMessage()
			if err != nil {
				done <- closeCodeOf(err)
				return
			}
			tr.receive(msg)
		}
	}()
	var lengthC <-chan time.Time
	if length >= 0 {
		t := time.NewTimer(length)
		defer t.Stop()
		lengthC = t.C
	}
	jitter := func() time.Duration { return every/2 + rand.N(every) }
	tick := time.NewTimer(jitter())
	defer tick.Stop()
	code, ended := 0, false
send:
	for {
		select {
		case code = <-done:
			ended = true
			break send
		case <-stop:
			break send
		case <-lengthC:
			break send
		case <-tick.C:
			tick.Reset(jitter())
			if tr.outstanding() >= inFlight {
				continue
			}
			seq := tr.next()
			_ = conn.SetWriteDeadline(time.Now().Add(soakDrain))
			if err := conn.WriteMessage(websocket.TextMessage, soakMessage(sid, seq, k.pad())); err != nil {
				tr.unsend(seq)
				break send
			}
		}
	}
	for deadline := time.Now().Add(soakDrain); !ended && tr.outstanding() > 0 && time.Now().Before(deadline); {
		select {
		case code = <-done:
			ended = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	weClosed := false
	if !ended {
		weClosed = true
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(soakCloseWait))
		select {
		case code = <-done:
		case <-time.After(soakCloseWait):
			code = closeNone
			conn.Close()
			<-done
		}
	}
	// Holdfast's answer to the client's own close is not an ending by
	// holdfast: what was still due then is lost.
	tr.end(documentedClose(code) && !(weClosed && code == websocket.CloseNormalClosure))
	k.recordClose(code)
}

// longSession keeps session i open for the whole run: it reconnects after
// each close as OpenClaw clients do (about 1 s after a session ends, after
// the server's retryAfterMs after a startup refusal, else with a back-off
// from 1 s doubling up to soakBackoffMax).
func (k *soak) longSession(ctx context.Context, i int, stop <-chan struct{}) {
	kind := hsKind(i % 3)
	useTLS := i%k.s.tlsShare == k.s.tlsShare-1
	backoff := time.Second
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		sid := fmt.Sprintf("L%d.%d", i, n)
		o := k.handshake(ctx, sid, kind, useTLS)
		var wait time.Duration
		switch {
		case o.conn != nil:
			backoff = time.Second
			k.relay(o.conn, sid, stop, -1, 100*time.Millisecond, 8)
			wait = 500*time.Millisecond + rand.N(time.Second)
		case o.retryAfter > 0:
			wait = o.retryAfter
		default:
			wait = backoff
			backoff = min(2*backoff, soakBackoffMax)
		}
		if !waitStop(ctx, stop, wait) {
			return
		}
	}
}

// churn starts rate new handshakes a second until stop closes: token-only,
// device-signed and browser-like clients, one in tlsShare over TLS, each
// session of random length (a tenth close right after hello-ok, the rest
// last 3 s on average, at most 20 s). At most 2000 are under way at once;
// beyond that a start is skipped and counted.
func (k *soak) churn(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(time.Duration(float64(time.Second) / k.s.rate))
	defer t.Stop()
	sem := make(chan struct{}, 2000)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			k.skipped.Add(1)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			kind := kindToken
			switch r := rand.IntN(10); {
			case r >= 8:
				kind = kindBrowser
			case r >= 4:
				kind = kindDevice
			}
			sid := "S" + strconv.FormatInt(k.sids.Add(1), 10)
			o := k.handshake(ctx, sid, kind, rand.IntN(k.s.tlsShare) == 0)
			if o.conn == nil {
				return
			}
			length := time.Duration(0)
			if rand.IntN(10) > 0 {
				length = min(time.Duration(rand.ExpFloat64()*float64(3*time.Second)), 20*time.Second)
			}
			k.relay(o.conn, sid, stop, length, 200*time.Millisecond, 4)
		}()
	}
}
