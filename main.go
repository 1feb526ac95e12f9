// Command holdfast is a WebSocket reverse proxy for OpenClaw gateways. It
// absorbs the gateway's startup unavailability so that clients without retry
// logic connect anyway, then splices their sessions and exports what it did
// as Prometheus metrics.
//
// Usage:
//
//	holdfast -config proxy.yaml
//	holdfast -check-config -config proxy.yaml
//	holdfast -version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "holdfast:", err)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// run parses args, then serves until ctx ends and a graceful stop finishes.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("holdfast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "proxy.yaml", "path of the YAML configuration file")
	check := fs.Bool("check-config", false, "validate the configuration, list every problem, and exit")
	showVersion := fs.Bool("version", false, "print the version and the Go version that built holdfast, and exit")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "holdfast: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if *showVersion {
		fmt.Fprintf(stdout, "holdfast %s %s %s/%s\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
	cfg, err := LoadConfig(*configPath)
	if *check {
		if err != nil {
			fmt.Fprintf(stderr, "%s: invalid:\n", *configPath)
			for _, line := range splitLines(err.Error()) {
				fmt.Fprintf(stderr, "  - %s\n", line)
			}
			return errUsage
		}
		fmt.Fprintf(stdout, "%s: ok\n", *configPath)
		return nil
	}
	if err != nil {
		return err
	}
	return serve(ctx, cfg, stderr, nil)
}

// listeners reports the bound addresses once serve is listening (tests).
type listeners struct {
	proxy, metrics net.Addr
}

// serve runs holdfast with cfg until ctx ends. If ready is non-nil it
// receives the bound addresses once both listeners are open.
func serve(ctx context.Context, cfg Config, logOut io.Writer, ready chan<- listeners) error {
	logger := newLogger(cfg.Log, logOut)
	pcfg, err := cfg.ProxyConfig()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, true)
	metrics.RegisterBuildInfo(reg, buildVersion(), runtime.Version())
	h, err := proxy.New(pcfg, proxy.Options{Logger: logger, Metrics: m})
	if err != nil {
		return err
	}
	defer h.Close()

	pl, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ml, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		pl.Close()
		return fmt.Errorf("metrics.listen: %w", err)
	}

	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	psrv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorLog: errLog}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !h.Ready() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}

	errc := make(chan error, 2)
	go func() { errc <- psrv.Serve(h.WrapListener(pl)) }()
	go func() { errc <- msrv.Serve(ml) }()
	logger.Info("holdfast listening", "listen", pl.Addr().String(), "metrics", ml.Addr().String(), "upstream", cfg.Upstream.URL)
	if ready != nil {
		ready <- listeners{proxy: pl.Addr(), metrics: ml.Addr()}
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	logger.Info("holdfast stopping", "grace", cfg.Shutdown.Grace)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Grace)
	defer cancel()
	// Stop taking connections, close spliced sessions with 1001, and let
	// handshakes in flight end within their budget.
	_ = psrv.Shutdown(sctx)
	if err := h.Shutdown(sctx); err != nil {
		logger.Warn("sessions still open at the end of the grace period", "err", err)
	}
	_ = msrv.Shutdown(sctx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// version is set at link time (-ldflags "-X main.version=v1.2.3"); when
// empty, buildVersion falls back to what the Go toolchain stamped.
var version string

// buildVersion is holdfast's version: the linker-set one, else the main
// module's version as the toolchain stamped it (a tag, or a pseudo-version
// of the commit with "+dirty" for a modified tree), else "devel", followed
// by the commit when the toolchain recorded one ("devel+172b7ce1e0a2").
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	v := "devel"
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" {
		v += "+" + rev[:min(12, len(rev))] + dirty
	}
	return v
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
