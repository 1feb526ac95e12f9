package testkit

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// ChallengeFrame is the connect.challenge a scripted gateway sends first.
const ChallengeFrame = `{"type":"event","event":"connect.challenge","payload":{"nonce":"n-1","ts":1}}`

// HelloOK is a protocol-4 hello-ok answering the connect with request id
// id; maxPayload > 0 adds policy.maxPayload (and a 30 s tick interval).
func HelloOK(id string, maxPayload int) string {
	policy := ""
	if maxPayload > 0 {
		policy = `,"policy":{"maxPayload":` + strconv.Itoa(maxPayload) + `,"tickIntervalMs":30000}`
	}
	return `{"type":"res","id":"` + id + `","ok":true,"payload":{"type":"hello-ok","protocol":4` + policy + `}}`
}

// RequestID is the id of a request frame ("" if it has none).
func RequestID(frame []byte) string {
	var req struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(frame, &req)
	return req.ID
}

// GatewayConfig scripts a Gateway.
type GatewayConfig struct {
	// Listener is where the gateway serves; nil listens on a fresh
	// 127.0.0.1 port.
	Listener net.Listener
	// Probe answers every request that is not a WebSocket upgrade; nil
	// answers all of them as a started gateway's /startupz does.
	Probe http.HandlerFunc
	// NoChallenge hands each socket to Session at once; otherwise the
	// gateway first sends ChallengeFrame and reads the connect.
	NoChallenge bool
	// Session runs for each WebSocket with the connect it sent (nil with
	// NoChallenge); the socket is closed when it returns. r is the upgrade
	// request; its context ends when the gateway stops.
	Session func(ws *websocket.Conn, connect []byte, r *http.Request)
}

// Gateway is a scripted gateway stand-in on a real socket. It counts the
// sockets it has open and the connects it has read, and stops when the
// test ends: it closes its listener and every socket, then waits for the
// sessions to return.
type Gateway struct {
	ln       net.Listener
	live     atomic.Int64
	connects atomic.Int64

	mu    sync.Mutex
	at    []time.Time // when each connect arrived
	conns map[*websocket.Conn]struct{}
	wg    sync.WaitGroup
}

// StartGateway serves cfg until the test ends.
func StartGateway(t testing.TB, cfg GatewayConfig) *Gateway {
	t.Helper()
	ln := cfg.Listener
	if ln == nil {
		ln = Listen(t)
	}
	g := &Gateway{ln: ln, conns: map[*websocket.Conn]struct{}{}}
	ctx, stop := context.WithCancel(context.Background())
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			if cfg.Probe != nil {
				cfg.Probe(w, r)
				return
			}
			StartedProbe(w, r)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if !g.track(ws) {
			_ = ws.Close()
			return
		}
		defer g.untrack(ws)
		var connect []byte
		if !cfg.NoChallenge {
			_ = ws.WriteMessage(websocket.TextMessage, []byte(ChallengeFrame))
			if _, connect, err = ws.ReadMessage(); err != nil {
				return
			}
			g.connects.Add(1)
			g.mu.Lock()
			g.at = append(g.at, time.Now())
			g.mu.Unlock()
		}
		if cfg.Session != nil {
			cfg.Session(ws, connect, r.WithContext(ctx))
		}
	})}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close() // the listener and the connections not hijacked
		<-served
		g.mu.Lock()
		for ws := range g.conns {
			_ = ws.Close()
		}
		g.conns = nil // no more sockets
		g.mu.Unlock()
		stop()
		done := make(chan struct{})
		go func() { g.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("scripted gateway: a session did not return 10 s after its socket was closed")
		}
	})
	return g
}

func (g *Gateway) track(ws *websocket.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns == nil {
		return false
	}
	g.conns[ws] = struct{}{}
	g.wg.Add(1)
	g.live.Add(1)
	return true
}

func (g *Gateway) untrack(ws *websocket.Conn) {
	_ = ws.Close()
	g.mu.Lock()
	delete(g.conns, ws)
	g.mu.Unlock()
	g.live.Add(-1)
	g.wg.Done()
}

// Listener is the gateway's listener.
func (g *Gateway) Listener() net.Listener { return g.ln }

// Addr is the gateway's host:port.
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// Live is the number of WebSockets open on the gateway's side.
func (g *Gateway) Live() int64 { return g.live.Load() }

// Connects is the number of connects the gateway has read.
func (g *Gateway) Connects() int64 { return g.connects.Load() }

// ConnectTimes returns when each connect arrived, in order.
func (g *Gateway) ConnectTimes() []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]time.Time(nil), g.at...)
}

// StartedProbe answers like a started gateway's /startupz.
func StartedProbe(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true,"status":"started"}`))
}

// TCPServer is a scripted peer on raw TCP (an upstream that does not speak
// HTTP, or speaks it wrongly). It counts the connections it has open.
type TCPServer struct {
	ln   net.Listener
	live atomic.Int64
	wg   sync.WaitGroup
}

// ServeTCP runs handle for each connection accepted on a fresh 127.0.0.1
// port, and closes the connection when handle returns. When the test ends
// it closes the listener and waits for every handle to return (a handle
// blocked on its connection returns when the peer, holdfast, closes it).
func ServeTCP(t testing.TB, handle func(c net.Conn, br *bufio.Reader)) *TCPServer {
	t.Helper()
	s := &TCPServer{ln: Listen(t)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.live.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.live.Add(-1)
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() { s.ln.Close(); s.wg.Wait() })
	return s
}

// Listener is the server's listener; closing it refuses connections from
// then on and leaves those open alone.
func (s *TCPServer) Listener() net.Listener { return s.ln }

// Addr is the server's host:port.
func (s *TCPServer) Addr() string { return s.ln.Addr().String() }

// Live is the number of connections open on the server's side.
func (s *TCPServer) Live() int64 { return s.live.Load() }

// Listen listens on a fresh 127.0.0.1 port; the listener is closed when
// the test ends.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
