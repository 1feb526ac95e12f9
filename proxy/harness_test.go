package proxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// TestMain fails the package when goroutines of holdfast's own packages
// outlive the tests. The tests mostly wait on timers and sockets, so sixteen
// run per core unless -parallel says otherwise.
func TestMain(m *testing.M) {
	testkit.DefaultParallel(16 * runtime.GOMAXPROCS(0))
	code := m.Run()
	if code == 0 {
		if leaked := waitNoLeaks(5 * time.Second); leaked != "" {
			os.Stderr.WriteString("goroutines leaked:\n" + leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func waitNoLeaks(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "holdfast/proxy.") || strings.Contains(g, "holdfast/proxy/internal/wire.") || strings.Contains(g, "holdfast/retry.") ||
				strings.Contains(g, "holdfast/internal/fakegw.") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer collects logs from many goroutines.
type syncBuffer = testkit.LogBuffer

// harness is holdfast on a real 127.0.0.1 listener in front of an upstream.
type harness struct {
	t    testing.TB
	h    *proxy.Handler
	reg  *prometheus.Registry
	url  string // ws://127.0.0.1:port
	http string // http://127.0.0.1:port
	logs *syncBuffer
	// label marks the goroutines of this holdfast (goroutines).
	label string
}

// startProxy runs holdfast in front of upstreamAddr. wrap, if set, wraps the
// listener (to present clients from another address).
func startProxy(t testing.TB, upstreamAddr string, tweak func(*proxy.Config), wrap func(net.Listener) net.Listener) *harness {
	t.Helper()
	return startProxyOn(t, upstreamAddr, tweak, func(h *proxy.Handler, ln net.Listener) net.Listener {
		if wrap != nil {
			ln = wrap(ln)
		}
		return h.WrapListener(ln)
	})
}

// startProxyOn is startProxy with the listener holdfast serves on made by
// listen from the 127.0.0.1 one (h.WrapTLSListener, say).
func startProxyOn(t testing.TB, upstreamAddr string, tweak func(*proxy.Config), listen func(h *proxy.Handler, ln net.Listener) net.Listener) *harness {
	t.Helper()
	u := &url.URL{Scheme: "ws", Host: upstreamAddr}
	cfg := proxy.Config{
		Upstream:              u,
		Budget:                8 * time.Second,
		ReadinessPollInterval: 50 * time.Millisecond,
		CloseGrace:            500 * time.Millisecond,
		// The dial-first path (what browsers always get) unless a test
		// turns the late dial on (latedial_test.go).
		LateDialMax: -1,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Every goroutine of this holdfast (started by New, by the server or
	// by a connection's) carries the harness's label: goroutines counts
	// them while other tests run beside it.
	label := fmt.Sprintf("%p", logs)
	var h *proxy.Handler
	var err error
	pprof.Do(context.Background(), pprof.Labels(harnessLabel, label), func(context.Context) {
		h, err = proxy.New(cfg, proxy.Options{
			Logger:    logger,
			AccessLog: logger,
			Metrics:   metrics.New(reg, false),
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln = listen(h, ln)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	pprof.Do(context.Background(), pprof.Labels(harnessLabel, label), func(context.Context) {
		go func() {
			defer close(done)
			_ = srv.Serve(ln)
		}()
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
		h.Close()
		<-done
		if t.Failed() {
			t.Logf("holdfast log:\n%s", logs.String())
		}
	})
	return &harness{t: t, h: h, reg: reg, url: "ws://" + addr, http: "http://" + addr, logs: logs, label: label}
}

// harnessLabel is the profiler label that marks a harness's goroutines.
const harnessLabel = "holdfast_harness"

// goroutines counts the goroutines of this harness's holdfast that run
// holdfast's proxy code, as proxyGoroutines does for the whole process.
func (hs *harness) goroutines() int {
	return hs.countGoroutines(func(rec string) bool { return ownCode(rec) && !strings.Contains(rec, "proxy_test.") })
}

// countGoroutines counts the goroutines of this harness's holdfast (by
// profiler label) whose stack record match accepts.
func (hs *harness) countGoroutines(match func(rec string) bool) int {
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		hs.t.Fatal(err)
	}
	mark := fmt.Sprintf("%q:%q", harnessLabel, hs.label)
	n := 0
	for _, rec := range goroutineRecords(b.String()) {
		if !strings.Contains(rec, mark) || !match(rec) {
			continue
		}
		var count int
		if _, err := fmt.Sscanf(rec, "%d @", &count); err == nil {
			n += count
		}
	}
	return n
}

// ownCode reports whether a goroutine's record runs holdfast's proxy code:
// the package's, or the frame relay's (a resumed relay, the parker).
func ownCode(rec string) bool {
	return strings.Contains(rec, "holdfast/proxy.") || strings.Contains(rec, "holdfast/proxy/internal/wire.")
}

// goroutineRecords splits a goroutine profile written with debug 1 into its
// records, each starting with its goroutine count ("N @ ..."): the
// profile's first line ("goroutine profile: total N") is not one, and
// would otherwise hide the count of the first record, the most common
// stack.
func goroutineRecords(profile string) []string {
	if i := strings.IndexByte(profile, '\n'); i >= 0 && strings.HasPrefix(profile, "goroutine profile:") {
		profile = profile[i+1:]
	}
	return strings.Split(profile, "\n\n")
}

// startGateway runs a fake gateway and stops it at the end of the test.
func startGateway(t *testing.T, cfg fakegw.Config) *fakegw.Gateway {
	t.Helper()
	if cfg.Addr == "" {
		// A port no parallel test's listener takes while the gateway
		// is down, and no stale dial of another test reaches.
		cfg.Addr = testkit.FreeAddr(t)
	}
	g, err := fakegw.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// metric returns the value of a counter or gauge with the given labels
// (name=value pairs), or a histogram's sample count.
func (hs *harness) metric(name string, labels ...string) float64 {
	hs.t.Helper()
	mfs, err := hs.reg.Gather()
	if err != nil {
		hs.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelValue(m, labels[i]) != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	hs.t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// waitMetric polls until metric reaches want (sessions end asynchronously).
func (hs *harness) waitMetric(want float64, name string, labels ...string) {
	hs.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := hs.metric(name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			hs.t.Fatalf("%s%v = %v; want %v", name, labels, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeAddr returns a 127.0.0.1 address nobody listens on.
func freeAddr(t *testing.T) string { return testkit.FreeAddr(t) }

// remoteListener presents every accepted 127.0.0.1 connection as coming from
// another address, so that holdfast treats its client as remote. No traffic
// goes anywhere but 127.0.0.1.
type remoteListener struct {
	net.Listener
	addr net.Addr
}

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c, l.addr}, nil
}

type remoteConn struct {
	net.Conn
	addr net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.addr }

// Every record goroutineRecords returns starts with its count, the first
// (the most common stack) included, so that counting goroutines by stack
// misses none.
func TestGoroutineRecordsStartWithCounts(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	for range 64 { // the most common stack: the profile's first record
		go func() { <-stop }()
	}
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		t.Fatal(err)
	}
	recs := goroutineRecords(b.String())
	total := 0
	for _, rec := range recs {
		if strings.TrimSpace(rec) == "" {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(rec, "%d @", &n); err != nil {
			t.Fatalf("record %q: %v", rec[:min(len(rec), 60)], err)
		}
		total += n
	}
	if total < 64 {
		t.Fatalf("counted %d goroutines; want at least 64", total)
	}
}
