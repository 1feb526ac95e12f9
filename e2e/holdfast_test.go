//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// holdfastBin is built once per test binary by TestMain (or taken from
// HOLDFAST_E2E_BIN); buildErr says why it is missing.
var (
	holdfastBin string
	buildErr    error
)

// buildHoldfast builds the repository root's main package into dir.
func buildHoldfast(dir string) (string, error) {
	if p := os.Getenv("HOLDFAST_E2E_BIN"); p != "" {
		return p, nil
	}
	bin := filepath.Join(dir, "holdfast")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build holdfast: %v\n%s", err, out)
	}
	return bin, nil
}

type holdfastOptions struct {
	Budget time.Duration // handshake.budget; default 13.5s (holdfast's)
	Port   int           // listen port; 0: a free one
	// TrustedProxies is trusted_proxies (none by default).
	TrustedProxies []string
	// CloseGrace is splice.close_grace; default 1s (holdfast's).
	CloseGrace time.Duration
}

// holdfast is one holdfast process in front of a gateway, or, with
// HOLDFAST_E2E_BYPASS=1, a stand-in whose URL is the gateway itself and
// which has no metrics.
type holdfast struct {
	t        testing.TB
	Port     int
	MPort    int
	Bypassed bool
	gw       *gateway
	logPath  string
	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
}

// URL is where clients connect: holdfast's listener, or the gateway when
// bypassed.
func (h *holdfast) URL() string {
	if h.Bypassed {
		return h.gw.URL()
	}
	return wsURL(h.Port)
}

// HTTPBase is the HTTP base URL on the client-facing listener.
func (h *holdfast) HTTPBase() string {
	if h.Bypassed {
		return h.gw.HTTPBase()
	}
	return fmt.Sprintf("http://127.0.0.1:%d", h.Port)
}

// startHoldfast writes a config for gw, validates it with -check-config,
// starts holdfast and waits for its metrics listener. It is stopped in
// t.Cleanup, and its log is printed when the test failed.
func startHoldfast(t testing.TB, gw *gateway, opts holdfastOptions) *holdfast {
	t.Helper()
	h := &holdfast{t: t, gw: gw}
	if bypass() {
		h.Bypassed = true
		t.Logf("HOLDFAST_E2E_BYPASS=1: clients go straight to %s", gw.URL())
		return h
	}
	if buildErr != nil {
		t.Fatalf("holdfast binary unavailable: %v", buildErr)
	}
	if opts.Budget == 0 {
		opts.Budget = 13500 * time.Millisecond
	}
	if opts.CloseGrace == 0 {
		opts.CloseGrace = time.Second
	}
	t.Cleanup(func() {
		h.Stop()
		if t.Failed() || os.Getenv("HOLDFAST_E2E_LOGS") == "1" {
			t.Logf("--- holdfast log (tail) ---\n%s", h.LogTail(12000))
		}
	})
	// A port found free may be taken by another process before holdfast
	// binds it: then holdfast exits, and the start is tried on new ports.
	for attempt := 1; ; attempt++ {
		err := h.start(t, gw, opts)
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(h.LogTail(4000), "address already in use") {
			t.Fatalf("%v\n%s", err, h.LogTail(4000))
		}
		t.Logf("holdfast start %d: %v; again on other ports", attempt, err)
	}
	t.Logf("holdfast: listen 127.0.0.1:%d → %s, metrics 127.0.0.1:%d, budget %s", h.Port, gw.URL(), h.MPort, opts.Budget)
	return h
}

// start runs one holdfast process for gw on fresh ports and waits until it
// serves. It returns an error when the process exited or did not come up.
func (h *holdfast) start(t testing.TB, gw *gateway, opts holdfastOptions) error {
	t.Helper()
	h.Port, h.MPort = opts.Port, freePort(t)
	if h.Port == 0 {
		h.Port = freePort(t)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: "127.0.0.1:%d"
upstream:
  url: %q
metrics:
  listen: "127.0.0.1:%d"
handshake:
  budget: %s
splice:
  close_grace: %s
log:
  level: debug
shutdown:
  drain_delay: 0s
  drain: 1s
trusted_proxies: [%s]
`, h.Port, gw.URL(), h.MPort, opts.Budget, opts.CloseGrace, strings.Join(opts.TrustedProxies, ", "))
	cfgPath := filepath.Join(dir, "holdfast.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, holdfastBin, "-check-config", "-config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("holdfast -check-config: %v\n%s\nconfig:\n%s", err, out, cfg)
	}
	h.logPath = filepath.Join(dir, "holdfast.log")
	logf, err := os.Create(h.logPath)
	if err != nil {
		t.Fatal(err)
	}
	h.stopOnce = sync.Once{}
	h.cmd = exec.Command(holdfastBin, "-config", cfgPath)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start holdfast: %v", err)
	}
	h.done = make(chan struct{})
	done := h.done
	go func() { _ = h.cmd.Wait(); logf.Close(); close(done) }()
	// Up when its log says both listeners are bound (a /healthz answer
	// alone could come from another process on a reused port) and its
	// /healthz answers.
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := httpGet(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/healthz", h.MPort), nil)
		if err == nil && res.Status == 200 && strings.Contains(h.LogTail(1<<20), "holdfast listening") {
			return nil
		}
		select {
		case <-h.done:
			return errors.New("holdfast exited at start")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("holdfast metrics listener not up after 15 s (%v)", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits up to 10 s, then SIGKILL.
func (h *holdfast) Stop() {
	if h.cmd == nil {
		return
	}
	h.stopOnce.Do(func() {
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
			h.t.Errorf("holdfast did not exit within 10 s of SIGTERM")
			_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
			<-h.done
		}
	})
}

func (h *holdfast) LogTail(n int) string {
	if h.logPath == "" {
		return ""
	}
	b, _ := os.ReadFile(h.logPath)
	return tail(string(b), n)
}

// Metrics scrapes holdfast's /metrics. Bypassed, there is none: that is an
// error, so every metrics assertion fails without holdfast in the path.
func (h *holdfast) Metrics(ctx context.Context) (metrics, error) {
	if h.Bypassed {
		return nil, fmt.Errorf("holdfast bypassed: no /metrics to scrape")
	}
	res, err := httpGet(ctx, fmt.Sprintf("http://127.0.0.1:%d/metrics", h.MPort), nil)
	if err != nil {
		return nil, err
	}
	if res.Status != 200 {
		return nil, fmt.Errorf("GET /metrics: status %d", res.Status)
	}
	return parseMetrics(res.Body), nil
}

// metrics maps a canonical series name (`name{a="x",b="y"}`, labels sorted)
// to its value.
type metrics map[string]float64

// Get returns the value of name with exactly the given labels (pairs), and
// 0 when the series is absent (a counter that never moved).
func (m metrics) Get(name string, labels ...string) float64 {
	return m[seriesKey(name, labels...)]
}

// Has reports whether any series of the metric family name is present.
func (m metrics) Has(name string) bool {
	for k := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			return true
		}
	}
	return false
}

// Sum adds every series of name (any labels).
func (m metrics) Sum(name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// Holdfast returns the holdfast_* series in a stable order, for logs.
func (m metrics) Holdfast() string {
	var keys []string
	for k := range m {
		if strings.HasPrefix(k, "holdfast_") && !strings.Contains(k, "_bucket{") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %g\n", k, m[k])
	}
	return b.String()
}

func seriesKey(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	var pairs []string
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+"="+strconv.Quote(labels[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// parseMetrics reads the Prometheus text format well enough for counters,
// gauges and histogram series.
func parseMetrics(text string) metrics {
	m := metrics{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var name, labelText, rest string
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, labelText, rest = line[:i], line[i+1:j], strings.TrimSpace(line[j+1:])
		} else {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, rest = f[0], strings.Join(f[1:], " ")
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		var labels []string
		for _, p := range splitLabels(labelText) {
			k, val, ok := strings.Cut(p, "=")
			if !ok {
				continue
			}
			uq, err := strconv.Unquote(strings.TrimSpace(val))
			if err != nil {
				uq = strings.Trim(val, `"`)
			}
			labels = append(labels, strings.TrimSpace(k), uq)
		}
		m[seriesKey(name, labels...)] = v
	}
	return m
}

// splitLabels splits `a="x",b="y,z"` on the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, esc := false, false
	for _, r := range s {
		switch {
		case esc:
			esc = false
		case r == '\\' && inQ:
			esc = true
		case r == '"':
			inQ = !inQ
		case r == ',' && !inQ:
			if strings.TrimSpace(cur.String()) != "" {
				out = append(out, cur.String())
			}
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	if strings.TrimSpace(cur.String()) != "" {
		out = append(out, cur.String())
	}
	return out
}

// httpResult is a fetched HTTP response, body read in full (bounded).
type httpResult struct {
	Status int
	Header http.Header
	Body   string
}

// httpGet fetches url with a 5 s bound and no forwarding headers.
func httpGet(ctx context.Context, url string, header http.Header) (httpResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return httpResult{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	// A fresh transport per request: no connection reuse across the
	// direct and proxied paths.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return httpResult{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		return httpResult{}, err
	}
	return httpResult{Status: res.StatusCode, Header: res.Header, Body: string(b)}, nil
}
