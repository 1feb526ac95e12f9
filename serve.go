package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-proxy/holdfast/internal/memrelease"
	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// server is one running holdfast: its listeners, the proxy handler that
// serves new connections, and the configuration in force.
type server struct {
	log     *slog.Logger
	level   *slog.LevelVar
	metrics *metrics.Metrics
	certs   *certFiles // nil without tls

	handler  atomic.Pointer[proxy.Handler] // serves new connections
	draining atomic.Bool                   // /readyz answers 503
	begun    atomic.Uint64                 // requests served so far
	release  *memrelease.Releaser          // memory.release_after

	mu  sync.Mutex // serialises reloads
	cfg Config     // in force
}

// ServeHTTP hands each request to the handler of the configuration in
// force when it arrives.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.begun.Add(1)
	s.handler.Load().ServeHTTP(w, r)
}

func (s *server) current() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// serve runs holdfast with cfg until ctl.stop, then drains
// (docs/operations.md, "Drain"): /readyz answers 503 at once; upgrades are served for
// shutdown.drain_delay more, then refused; spliced sessions are closed
// spread over shutdown.drain; handshakes in flight finish. A second stop,
// or shutdown.grace after the first, stops at once.
func serve(cfg Config, logOut io.Writer, ctl controls) error {
	level := new(slog.LevelVar)
	l, _ := parseLevel(cfg.Log.Level)
	level.Set(l)
	s := &server{log: newLogger(cfg.Log, level, logOut), level: level, cfg: cfg}
	logger := s.log
	for _, w := range cfg.Warnings() {
		logger.Warn("configuration: " + w)
	}
	pcfg, err := cfg.ProxyConfig()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	s.metrics = metrics.New(reg, true)
	metrics.RegisterBuildInfo(reg, buildVersion(), runtime.Version())
	h, err := proxy.New(pcfg, proxy.Options{Logger: logger, AccessLog: accessLog(cfg.Log, logger), Metrics: s.metrics})
	if err != nil {
		return err
	}
	s.handler.Store(h)
	defer func() { s.handler.Load().Close() }() // every handler's watcher
	s.release = memrelease.New(cfg.Memory.ReleaseAfter, s.begun.Load)
	s.release.Released = func(excess uint64) {
		s.metrics.MemoryReleased()
		logger.Debug("heap returned to the operating system after a burst of requests", "held_beyond_live_bytes", excess)
	}
	if ctl.heap != nil {
		s.release.Heap = ctl.heap
	}
	rctx, stopRelease := context.WithCancel(context.Background())
	releaseDone := make(chan struct{})
	go func() { s.release.Run(rctx); close(releaseDone) }()
	defer func() { stopRelease(); <-releaseDone }()
	if cfg.TLS.CertFile != "" {
		if s.certs, err = newCertFiles(cfg.TLS.CertFile, cfg.TLS.KeyFile, logger); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}

	pl, err := listenClients(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ml, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		pl.Close()
		return fmt.Errorf("metrics.listen: %w", err)
	}
	var ln net.Listener
	if s.certs != nil {
		// TLS below the batching layer, as on a wss upstream: such
		// sessions take the frame relay and idle holding no read buffer.
		ln = h.WrapTLSListener(pl, s.certs.config())
	} else {
		ln = h.WrapListener(pl)
	}

	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	psrv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(serverErrors{logger}, "", 0),
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorLog: errLog}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}

	errc := make(chan error, 2)
	go func() { errc <- psrv.Serve(ln) }()
	go func() { errc <- msrv.Serve(ml) }()
	logger.Info("holdfast listening", "listen", pl.Addr().String(), "tls", s.certs != nil,
		"metrics", ml.Addr().String(), "upstream", cfg.Upstream.URL)
	if ctl.ready != nil {
		ctl.ready <- listeners{proxy: pl.Addr(), metrics: ml.Addr()}
	}

	var serveErr error
wait:
	for {
		select {
		case <-ctl.stop:
			break wait
		case serveErr = <-errc:
			break wait
		case <-ctl.reload:
			s.reload(ctl.configPath)
		}
	}

	// Drain. The configuration in force now decides its shape.
	sc := s.current().Shutdown
	s.draining.Store(true)
	h = s.handler.Load()
	logger.Info("holdfast draining; a second signal stops at once", "drain_delay", sc.DrainDelay,
		"drain", sc.Drain, "grace", sc.Grace, "sessions", h.Sessions(), "handshakes", h.Handshakes())
	ctx, cancel := context.WithTimeout(context.Background(), sc.Grace)
	defer cancel()
	go func() {
		select {
		case <-ctl.stop:
			logger.Warn("second stop signal: stopping at once")
			cancel()
		case <-ctx.Done():
		}
	}()
	if serveErr == nil {
		// Load balancers see /readyz fail before upgrades are refused.
		if !sleepCtx(ctx, sc.DrainDelay) {
			logger.Warn("stopping before the end of shutdown.drain_delay")
		}
	}
	h.Refuse()
	shutDown := make(chan struct{})
	go func() {
		// Stops accepting; returns when the requests still in their
		// upstream dial have been answered (hijacked upgrades are Drain's).
		_ = psrv.Shutdown(ctx)
		close(shutDown)
	}()
	drainStart := time.Now()
	if err := h.Drain(ctx, sc.Drain); err != nil {
		logger.Warn("stopped at once: connections were still open", "err", err)
	}
	<-shutDown
	_ = psrv.Close() // requests still dialing when stopped at once
	logger.Info("holdfast stopped", "drained_for", time.Since(drainStart).Round(time.Millisecond))
	mctx, mcancel := context.WithTimeout(context.Background(), time.Second)
	defer mcancel()
	_ = msrv.Shutdown(mctx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// reload re-reads the configuration file. A valid file applies to new
// connections from now on; spliced sessions keep the settings they began
// with. An invalid one is refused with every problem logged, and the
// configuration in force is kept.
func (s *server) reload(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if path == "" {
		s.log.Warn("config reload: no configuration file to re-read")
		return
	}
	fail := func(err error) {
		for _, line := range splitLines(err.Error()) {
			s.log.Error("config reload refused; keeping the configuration in force", "path", path, "problem", line)
		}
		s.metrics.ConfigReload(false)
	}
	next, err := LoadConfig(path)
	if err != nil {
		fail(err)
		return
	}
	for _, w := range next.Warnings() {
		s.log.Warn("configuration: " + w)
	}
	old := s.cfg
	var kept []string
	keep := func(key string, changed bool) {
		if changed {
			kept = append(kept, key)
		}
	}
	keep("listen", next.Listen != old.Listen)
	next.Listen = old.Listen
	keep("metrics.listen", next.Metrics.Listen != old.Metrics.Listen)
	next.Metrics.Listen = old.Metrics.Listen
	keep("log.format", next.Log.Format != old.Log.Format)
	next.Log.Format = old.Log.Format
	if (next.TLS.CertFile == "") != (old.TLS.CertFile == "") {
		keep("tls", true)
		next.TLS = old.TLS
	}
	pcfg, err := next.ProxyConfig()
	if err != nil {
		fail(err)
		return
	}
	if s.certs != nil && next.TLS != old.TLS {
		if err := s.certs.setFiles(next.TLS.CertFile, next.TLS.KeyFile); err != nil {
			fail(fmt.Errorf("tls: %w", err))
			return
		}
	}
	h, err := proxy.New(pcfg, proxy.Options{Logger: s.log, AccessLog: accessLog(next.Log, s.log), Metrics: s.metrics, Previous: s.handler.Load()})
	if err != nil {
		fail(err)
		return
	}
	lvl, _ := parseLevel(next.Log.Level)
	s.level.Set(lvl)
	s.release.SetQuiet(next.Memory.ReleaseAfter)
	s.handler.Store(h)
	changed := diffKeys(old, next)
	s.cfg = next
	if s.certs != nil {
		s.certs.refresh()
	}
	s.metrics.ConfigReload(true)
	if len(kept) > 0 {
		s.log.Warn("config reload: these keys changed but need a restart; their old values stay in force", "keys", strings.Join(kept, ","))
	}
	s.log.Info("config reloaded; new connections use it, spliced sessions keep theirs", "path", path,
		"changed", cmp.Or(strings.Join(changed, ","), "nothing"))
}

// serverErrors logs the client listener's HTTP server errors at warn level,
// except failed TLS handshakes: on a public port scanners and old clients
// make them all day, so they go to debug.
type serverErrors struct{ log *slog.Logger }

func (e serverErrors) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		level = slog.LevelDebug
	}
	e.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// diffKeys lists the YAML keys whose values differ between a and b.
func diffKeys(a, b Config) []string {
	var out []string
	var walk func(prefix string, x, y reflect.Value)
	walk = func(prefix string, x, y reflect.Value) {
		if x.Kind() != reflect.Struct {
			if !reflect.DeepEqual(x.Interface(), y.Interface()) {
				out = append(out, prefix)
			}
			return
		}
		for i := 0; i < x.NumField(); i++ {
			key := strings.Split(x.Type().Field(i).Tag.Get("yaml"), ",")[0]
			if prefix != "" {
				key = prefix + "." + key
			}
			walk(key, x.Field(i), y.Field(i))
		}
	}
	walk("", reflect.ValueOf(a), reflect.ValueOf(b))
	return out
}

// listenClients opens the socket holdfast serves clients on. Accepted
// sockets get no TCP keepalive: the protocol keeps a session alive end to
// end (the gateway pings every 25 s and ticks every 30 s, the client's
// watchdog closes after 60 s of silence), and holdfast forwards both.
func listenClients(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr)
}
