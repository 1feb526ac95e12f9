//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// browser is a headless Debian chromium driven over the DevTools protocol
// (raw CDP on gorilla/websocket, which the module has already: no browser
// driver is added). It runs in a process group of its own with a fresh
// profile and is stopped in t.Cleanup.
type browser struct {
	t   testing.TB
	cmd *exec.Cmd
	ws  *websocket.Conn

	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpMessage
	done    chan struct{}
}

type cdpMessage struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

var devtoolsURL = regexp.MustCompile(`DevTools listening on (ws://127\.0\.0\.1:\d+/devtools/browser/\S+)`)

// startBrowser launches chromium and connects to its DevTools endpoint.
func startBrowser(t testing.TB) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium missing (%v); run e2e/setup.sh", err)
	}
	profile := t.TempDir()
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
		"--disable-extensions", "--disable-sync", "--metrics-recording-only", "--mute-audio",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--user-data-dir="+profile, "--window-size=1280,900", "about:blank")
	cmd.Env = append(os.Environ(), "HOME="+profile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{t: t, cmd: cmd, pending: map[int]chan cdpMessage{}, done: make(chan struct{})}
	t.Cleanup(b.Stop)
	found := make(chan string, 1)
	var logTail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if m := devtoolsURL.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			} else if logTail.Len() < 4000 {
				logTail.WriteString(sc.Text() + "\n")
			}
		}
	}()
	var wsURL string
	select {
	case wsURL = <-found:
	case <-time.After(60 * time.Second):
		t.Fatalf("chromium printed no DevTools endpoint within 60 s")
	}
	ws, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("DevTools: %v", err)
	}
	ws.SetReadLimit(64 << 20)
	b.ws = ws
	go b.read()
	return b
}

func (b *browser) read() {
	defer close(b.done)
	for {
		var m cdpMessage
		if err := b.ws.ReadJSON(&m); err != nil {
			b.mu.Lock()
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		if m.ID == 0 {
			continue // events: the page reports what it saw itself
		}
		b.mu.Lock()
		ch := b.pending[m.ID]
		delete(b.pending, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// call sends one DevTools command (to a page when session is set) and
// returns its result.
func (b *browser) call(ctx context.Context, session, method string, params any) (json.RawMessage, error) {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpMessage, 1)
	b.pending[id] = ch
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	err := b.ws.WriteJSON(msg)
	b.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return nil, errors.New("DevTools connection closed")
		}
		if m.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, m.Error.Message)
		}
		return m.Result, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// page is one tab.
type page struct {
	b       *browser
	session string
}

// newPage opens a blank tab whose every document runs script before its own
// code.
func (b *browser) newPage(ctx context.Context, script string) (*page, error) {
	res, err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"})
	if err != nil {
		return nil, err
	}
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := json.Unmarshal(res, &target); err != nil {
		return nil, err
	}
	res, err = b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true})
	if err != nil {
		return nil, err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(res, &att); err != nil {
		return nil, err
	}
	p := &page{b: b, session: att.SessionID}
	for _, c := range []struct {
		method string
		params any
	}{
		{"Page.enable", nil},
		{"Runtime.enable", nil},
		{"Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": script}},
	} {
		if _, err := b.call(ctx, p.session, c.method, c.params); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Navigate loads url.
func (p *page) Navigate(ctx context.Context, url string) error {
	res, err := p.b.call(ctx, p.session, "Page.navigate", map[string]any{"url": url})
	if err != nil {
		return err
	}
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	_ = json.Unmarshal(res, &nav)
	if nav.ErrorText != "" {
		return fmt.Errorf("navigate %s: %s", url, nav.ErrorText)
	}
	return nil
}

// Eval evaluates a JavaScript expression and decodes its JSON value into v.
func (p *page) Eval(ctx context.Context, expr string, v any) error {
	res, err := p.b.call(ctx, p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true,
	})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return fmt.Errorf("evaluate: %s", r.ExceptionDetails.Text)
	}
	if len(r.Result.Value) == 0 {
		return errors.New("evaluate: no value")
	}
	return json.Unmarshal(r.Result.Value, v)
}

// Screenshot writes a PNG of the page to path.
func (p *page) Screenshot(ctx context.Context, path string) error {
	res, err := p.b.call(ctx, p.session, "Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		return err
	}
	var shot struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(res, &shot); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}

// Stop closes the browser: politely, then its whole process group.
func (b *browser) Stop() {
	if b.ws != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, _ = b.call(ctx, "", "Browser.close", nil)
		cancel()
		_ = b.ws.Close()
	}
	waited := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
	}
}

// socketWatch is injected before the Control UI's own code: it wraps
// window.WebSocket so that every socket the page opens is recorded with
// its URL, whether it saw hello-ok, the error codes of failed responses
// and the close code and reason the page saw.
const socketWatch = `(() => {
  if (window.__hfSockets) return;
  const log = window.__hfSockets = [];
  const Orig = window.WebSocket;
  class Watched extends Orig {
    constructor(url, protocols) {
      super(url, protocols);
      const rec = { url: String(url), t0: Date.now(), open: 0, hello: 0, errors: [], closeCode: 0, closeReason: "", closed: 0, clean: false };
      log.push(rec);
      this.addEventListener("open", () => { rec.open = Date.now(); });
      this.addEventListener("message", (e) => {
        if (typeof e.data !== "string") return;
        try {
          const f = JSON.parse(e.data);
          if (f.type === "res" && f.ok && f.payload && f.payload.type === "hello-ok") rec.hello = Date.now();
          if (f.type === "res" && !f.ok && f.error) rec.errors.push(f.error.code + (f.error.details && f.error.details.reason ? ":" + f.error.details.reason : ""));
        } catch (_) {}
      });
      this.addEventListener("close", (e) => { rec.closeCode = e.code; rec.closeReason = e.reason; rec.closed = Date.now(); rec.clean = e.wasClean; });
    }
  }
  window.WebSocket = Watched;
})();`

// pageSocket is one WebSocket as the page saw it (times in ms since the
// epoch; 0 when it did not happen).
type pageSocket struct {
	URL         string   `json:"url"`
	T0          int64    `json:"t0"`
	Open        int64    `json:"open"`
	Hello       int64    `json:"hello"`
	Errors      []string `json:"errors"`
	CloseCode   int      `json:"closeCode"`
	CloseReason string   `json:"closeReason"`
	Closed      int64    `json:"closed"`
}

// Failed reports a socket that ended without hello-ok.
func (s pageSocket) Failed() bool { return s.Hello == 0 && s.Closed != 0 }

// sockets reads what the injected watcher recorded.
func (p *page) sockets(ctx context.Context) ([]pageSocket, error) {
	var out []pageSocket
	err := p.Eval(ctx, `window.__hfSockets || []`, &out)
	return out, err
}

// artifactDir is where the suite keeps what a person may want to look at
// after a run (screenshots): $HOLDFAST_E2E_ARTIFACTS, default
// e2e/artifacts in the repository (ignored by git).
func artifactDir() string {
	if d := os.Getenv("HOLDFAST_E2E_ARTIFACTS"); d != "" {
		return d
	}
	abs, err := filepath.Abs("artifacts")
	if err != nil {
		return "artifacts"
	}
	return abs
}
