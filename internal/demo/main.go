// Command demo shows what holdfast is for, with no OpenClaw gateway needed:
//
//	go run ./internal/demo
//
// It starts the project's fake gateway (internal/fakegw) in its startup
// window, sends two clients without retry logic (one device-signed, one
// token-only, each making one attempt like the OpenClaw CLI up to 2026.4.27)
// straight to it, where they fail, then the same two clients through holdfast,
// where they succeed, and prints the metrics holdfast recorded. Everything
// listens on random ports on 127.0.0.1 and stops when the demo ends.
//
// holdfast runs in this process from its proxy and metrics packages with
// their default settings, as the binary does with the shipped proxy.yaml.
// The demo is not part of the holdfast binary.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/uuid"
	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy"
)

func main() {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	window := fs.Duration("window", 4*time.Second, "how long the fake gateway stays in its startup window")
	verbose := fs.Bool("v", false, "print holdfast's own log lines (debug level) to stderr")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := Options{Window: *window}
	if *verbose {
		opts.Log = os.Stderr
	}
	if err := run(ctx, os.Stdout, opts); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// Options configure one run of the demo.
type Options struct {
	// Window is the fake gateway's startup window (at least 1s).
	Window time.Duration
	// Log, if set, receives holdfast's log lines at debug level.
	Log io.Writer
}

// client is one kind of client the demo sends, twice.
type client struct {
	name   string
	device *deviceauth.Identity
}

// outcome is how one connection attempt ended.
type outcome struct {
	res     testclient.Result
	err     error
	elapsed time.Duration
	end     time.Time
	health  string
	conn    *testclient.Conn // open session after hello-ok; the caller closes it
}

// run plays the demo and writes its report to out.
func run(ctx context.Context, out io.Writer, o Options) error {
	if o.Window < time.Second {
		return fmt.Errorf("window %v: must be at least 1s", o.Window)
	}
	token := uuid.New()
	dev, err := deviceauth.NewIdentity()
	if err != nil {
		return err
	}
	clients := []client{{"device-signed client", dev}, {"token-only client", nil}}

	gw, err := fakegw.Start(fakegw.Config{Token: token, StartupWindow: o.Window})
	if err != nil {
		return err
	}
	defer gw.Close()
	windowEnd := time.Now().Add(o.Window)

	hf, err := startHoldfast(gw.URL(), o.Log)
	if err != nil {
		return err
	}
	defer hf.close()

	w := &report{w: out}
	w.printf("holdfast demo: a gateway in its startup window, clients without retry logic\n\n")
	w.printf("A fake OpenClaw gateway has opened its port but stays in its startup window\n")
	w.printf("for %v: it answers every connect with a retryable UNAVAILABLE error and\n", o.Window)
	w.printf("closes the socket with 1013. Each client below makes one attempt and never\n")
	w.printf("retries, like the OpenClaw CLI up to 2026.4.27.\n\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  gateway\t%s\n", gw.URL())
	fmt.Fprintf(tw, "  holdfast\t%s\t(metrics %s)\n", hf.url, hf.metricsURL)
	tw.Flush()

	// 1. Straight to the gateway: both fail.
	w.printf("\n1. Straight to the gateway\n")
	for _, c := range clients {
		oc := connect(ctx, gw.URL(), token, c.device)
		if oc.conn != nil {
			_ = oc.conn.Close()
		}
		if oc.res.HelloOK {
			return fmt.Errorf("%s connected straight to a gateway in its startup window", c.name)
		}
		w.printf("   %-22s FAILED after %s: %s\n", c.name, seconds(oc.elapsed), describeFailure(oc))
	}
	w.printf("   A client without retry logic gives up here (the old CLI exits 1 with\n")
	w.printf("   \"gateway closed (1013): gateway starting\").\n")

	// 2. Through holdfast: both succeed. Neither client sends an Origin
	// header (browsers do), so holdfast answers their upgrades at once and
	// opens their upstream sockets, whose challenges they sign, only once
	// the gateway has started: no connect meets the window, and the
	// gateway's pre-auth timer starts late (handshake.late_dial).
	w.printf("\n2. The same clients through holdfast\n")
	results := make([]chan outcome, len(clients))
	for i := range results {
		results[i] = make(chan outcome, 1)
	}
	for i := range clients {
		go func() { results[i] <- connect(ctx, hf.url, token, clients[i].device) }()
	}
	if err := hf.waitFor(ctx, `holdfast_upstream_dials_delayed_total`, float64(len(clients))); err != nil {
		return fmt.Errorf("holdfast did not delay the clients' upstream dials: %w", err)
	}
	var sessions []*testclient.Conn
	defer func() {
		for _, c := range sessions {
			_ = c.Close()
		}
	}()
	outcomes := make([]outcome, len(clients))
	for i := range clients {
		outcomes[i] = <-results[i]
		if outcomes[i].conn != nil {
			sessions = append(sessions, outcomes[i].conn)
		}
	}
	for i, c := range clients {
		oc := outcomes[i]
		if !oc.res.HelloOK {
			return fmt.Errorf("%s through holdfast: %v", c.name, oc.err)
		}
		w.printf("   %-22s hello-ok after %s, %s after the window ended; health: %s\n",
			c.name, seconds(oc.elapsed), seconds(max(oc.end.Sub(windowEnd), 0)), oc.health)
	}
	w.printf("   Both waited in holdfast while the gateway was starting and were\n")
	w.printf("   connected the moment it had started. Their sessions are open now.\n")

	// 3. The metrics.
	w.printf("\n3. What holdfast recorded (GET %s)\n", hf.metricsURL)
	samples, err := hf.scrape(ctx)
	if err != nil {
		return err
	}
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, s := range samples {
		if s.value == 0 || !strings.HasPrefix(s.name, "holdfast_") || strings.HasSuffix(s.name, "_bucket") {
			continue
		}
		v := strconv.FormatFloat(s.value, 'f', -1, 64)
		if strings.HasSuffix(s.name, "_seconds_sum") {
			v = seconds(time.Duration(s.value * float64(time.Second)))
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\n", s.series, v, meaning(s))
	}
	tw.Flush()
	w.printf("\nholdfast against a real gateway: README.md, \"Run it\".\n")
	return w.err
}

// connect makes one attempt with testclient (no retry) and, on hello-ok,
// one health call.
func connect(ctx context.Context, url, token string, dev *deviceauth.Identity) outcome {
	t0 := time.Now()
	c, res, err := testclient.Connect(ctx, testclient.Options{URL: url, Token: token, Device: dev})
	oc := outcome{res: res, err: err, elapsed: time.Since(t0), end: time.Now(), conn: c}
	if c == nil {
		return oc
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	payload, err := c.Call(hctx, "health", nil)
	if err != nil {
		oc.health = "failed: " + err.Error()
		return oc
	}
	var h struct {
		OK bool `json:"ok"`
	}
	if json.Unmarshal(payload, &h) == nil && h.OK {
		oc.health = "ok"
	} else {
		oc.health = string(payload)
	}
	return oc
}

func describeFailure(oc outcome) string {
	var parts []string
	if e := oc.res.Error; e != nil {
		s := fmt.Sprintf("%s %q", e.Code, e.Message)
		if e.RetryAfterMs > 0 {
			s += fmt.Sprintf(" (retryAfterMs %d)", e.RetryAfterMs)
		}
		parts = append(parts, s)
	}
	if oc.res.CloseCode != 0 {
		parts = append(parts, fmt.Sprintf("close %d %q", oc.res.CloseCode, oc.res.CloseReason))
	}
	if len(parts) == 0 && oc.err != nil {
		parts = append(parts, oc.err.Error())
	}
	return strings.Join(parts, ", ")
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
}

// meaning explains a series in a few words.
func meaning(s sample) string {
	switch s.name {
	case "holdfast_handshakes_total":
		return "client handshakes, by result"
	case "holdfast_upstream_dials_delayed_total":
		return "clients whose challenge waited for the start"
	case "holdfast_connect_holds_total":
		return "connects held until the gateway had started"
	case "holdfast_upstream_retries_total":
		if s.labels["reason"] == "startup_unavailable" {
			return "replayable connects refused during startup and sent again"
		}
		return "upstream attempts made again"
	case "holdfast_handshake_duration_seconds_count":
		return "handshakes timed"
	case "holdfast_handshake_duration_seconds_sum":
		return "their total time, upgrade to hello-ok"
	case "holdfast_sessions_active":
		return "spliced sessions open now"
	case "holdfast_readiness_probes_total":
		return "probes of the gateway's /startupz, by what it said"
	case "holdfast_gateway_state":
		return "what holdfast last saw of the gateway"
	case "holdfast_spliced_messages_total":
		return "messages relayed after hello-ok"
	case "holdfast_passthrough_requests_total":
		return "HTTP requests reverse-proxied unchanged"
	}
	return ""
}

// report writes formatted lines and keeps the first error.
type report struct {
	w   io.Writer
	err error
}

func (r *report) printf(format string, args ...any) {
	if r.err == nil {
		_, r.err = fmt.Fprintf(r.w, format, args...)
	}
}

// holdfastProcess is holdfast served in this process.
type holdfastProcess struct {
	url, metricsURL string
	close           func()
}

// startHoldfast serves the proxy with its defaults in front of upstream,
// and its /metrics, on random ports of 127.0.0.1.
func startHoldfast(upstream string, logOut io.Writer) (*holdfastProcess, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	logger := slog.New(slog.DiscardHandler)
	if logOut != nil {
		logger = slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	reg := prometheus.NewRegistry()
	h, err := proxy.New(proxy.Config{Upstream: u}, proxy.Options{Logger: logger, Metrics: metrics.New(reg, false)})
	if err != nil {
		return nil, err
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.Close()
		return nil, err
	}
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pl.Close()
		h.Close()
		return nil, err
	}
	psrv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{}, 2)
	go func() { _ = psrv.Serve(h.WrapListener(pl)); done <- struct{}{} }()
	go func() { _ = msrv.Serve(ml); done <- struct{}{} }()
	return &holdfastProcess{
		url:        "ws://" + pl.Addr().String(),
		metricsURL: "http://" + ml.Addr().String() + "/metrics",
		close: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = psrv.Shutdown(ctx)
			_ = h.Shutdown(ctx)
			_ = msrv.Shutdown(ctx)
			h.Close()
			<-done
			<-done
		},
	}, nil
}

// sample is one series of the text exposition format.
type sample struct {
	series string // name{labels} as exposed
	name   string
	labels map[string]string
	value  float64
}

// scrape GETs /metrics and parses its series.
func (p *holdfastProcess) scrape(ctx context.Context) ([]sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.metricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", p.metricsURL, resp.Status)
	}
	var out []sample
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		s := sample{series: line[:i], name: line[:i], labels: map[string]string{}, value: v}
		if j := strings.IndexByte(s.series, '{'); j >= 0 {
			s.name = s.series[:j]
			for _, kv := range strings.Split(strings.TrimSuffix(s.series[j+1:], "}"), ",") {
				k, val, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(val, `"`)
			}
		}
		out = append(out, s)
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].name < out[b].name })
	return out, sc.Err()
}

// waitFor polls /metrics until series reaches at least min.
func (p *holdfastProcess) waitFor(ctx context.Context, series string, min float64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		samples, err := p.scrape(ctx)
		if err != nil {
			return err
		}
		for _, s := range samples {
			if s.series == series && s.value >= min {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("timed out waiting for " + series)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
