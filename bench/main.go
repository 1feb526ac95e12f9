// Command bench measures holdfast side by side with a direct connection and
// two reference proxies, all in front of the same upstream.
//
// The upstream is a minimal gateway (connect.challenge, connect, hello-ok,
// then echo; see upstream.go). Six paths reach it:
//
//   - direct: the load generator talks to the upstream;
//   - tunnel: net/http/httputil.ReverseProxy, a byte tunnel after the 101;
//   - koding: github.com/koding/websocketproxy, which copies whole messages;
//   - holdfast: the real proxy, built from the repository root and run with
//     its normal configuration;
//   - tunnel_tls and holdfast_tls: the tunnel behind tls.Listen and holdfast
//     with tls.cert_file and tls.key_file, both with the run's test
//     certificate (internal/testcert): the load generator speaks wss:// to
//     the proxy, which terminates TLS and speaks plain ws:// upstream. -quick
//     leaves them out (-paths adds them back).
//
// The upstream and every proxy run as separate processes (the reference
// proxies are this binary re-executed with -serve-proxy), so each proxy's
// resident memory is its own and the load generator shares a heap with none
// of them. Everything listens on 127.0.0.1 on free ports, and every child is
// killed when the run ends, fails or is interrupted.
//
// Figures, each scenario run over all paths in turn in one run:
//
//   - throughput: 64 sessions echo 1 KiB text messages (4 in flight each) for
//     a fixed time; completed echoes per second;
//   - latency: 2000 messages/s in total over 64 sessions, one in flight per
//     session; round-trip p50 and p99 (-latency-sessions and -latency-rate
//     change both: one session at 500/s is one client's sparse stream);
//   - idle: resident memory (VmRSS) growth of the proxy process over N idle
//     spliced sessions, divided by N. For direct there is no proxy, so the
//     figure is the upstream process's growth: the server's own cost, shown
//     for scale;
//   - cpu per message: the proxy process's CPU time (utime+stime from
//     /proc/PID/stat) over the throughput rounds divided by their echoes;
//     direct has no proxy process, so no figure;
//   - handshakes: 32 workers dial, complete the handshake and close; per
//     second;
//   - window (holdfast only): the upstream is a fake gateway that answers
//     every connect with the startup UNAVAILABLE for 5 s and allows 32
//     unauthenticated sockets per IP; 1000 clients, half device-signed,
//     arrive evenly over those 5 s and each makes exactly one attempt.
//     Reported: clients that got hello-ok, p99 time to hello-ok after the
//     window ends, connect attempts the upstream saw per client, the most
//     pre-auth sockets it saw for one address, and the crowd's floor. Two
//     crowds: the loopback one (window: every client at holdfast's
//     address, as local clients are; floor: 1000 fresh handshakes at the
//     tunnel's rate of this run) and the attributed one
//     (window_attributed: through a trusted load balancer, each client
//     with its own X-Forwarded-For address, the gateway trusting holdfast
//     and pairing remote devices; floor: the p99 of the same 1000 clients
//     released at once against a started gateway through the tunnel,
//     window_attributed_floor).
//
// Usage, from the repository root:
//
//	go run ./bench -quick                 # about a minute, for CI smoke runs
//	go run ./bench -quick -paths direct,tunnel,koding,holdfast,tunnel_tls,holdfast_tls   # with wss, ~20 s more
//	go run ./bench -paths tunnel_tls,holdfast_tls -window=false   # wss alone
//	go run ./bench -json bench.json       # full run (several minutes)
//	go run ./bench -paths tunnel,holdfast -holdfast-bin ./holdfast
//	go run ./bench -quick -holdfast-cpuprofile cpu.out   # then: go tool pprof -top cpu.out
//	go run ./bench -quick -paths holdfast -holdfast-cpuprofile cpu.out -profile-phase handshakes
//	go run ./bench -quick -paths direct -window-path direct   # window without a proxy
//	go run ./bench -paths holdfast -baseline-bin /tmp/holdfast-before -window=false   # before/after
//	go run ./bench -paths tunnel_tls,holdfast_tls,baseline_tls -baseline-bin /tmp/holdfast-before -window=false   # wss before/after
//	go run ./bench -paths holdfast -baseline-bin /tmp/holdfast-before -window=false -scenarios handshakes -rounds 12
//	go run ./bench -scenarios "" -baseline-bin /tmp/holdfast-before   # windows only, both binaries in turn
//	go run ./bench -soak 30m -json soak.json   # the soak (soak.go) instead of the benchmark
//
// holdfast serves no pprof of its own; -holdfast-cpuprofile builds it with
// one extra file (added by go build -overlay, the checkout is untouched)
// that serves net/http/pprof on 127.0.0.1, and profiles its first
// throughput round (holdfast_tls's when -paths has it but not holdfast).
//
// The run prints a table with each figure and its ratio to the other paths,
// then checks holdfast against its goals. -json FILE writes the figures with
// keys throughput_msgs_per_s, rtt_p50_us, rtt_p99_us, idle_bytes_per_session,
// handshakes_per_s, cpu_us_per_msg and cpu_us_per_handshake (each keyed by
// path), window, window_attributed and window_attributed_floor. The exit
// status is 1
// when the harness itself fails, not when a goal is missed.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-proxy/holdfast/bench/internal/procs"
	"github.com/holdfast-proxy/holdfast/internal/testcert"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// fullPaths are the paths a run measures by default; quickPaths those of
// -quick, which leaves the wss paths out to stay at about a minute (they
// add about 20 s).
const (
	fullPaths  = "direct,tunnel,koding,holdfast,tunnel_tls,holdfast_tls"
	quickPaths = "direct,tunnel,koding,holdfast"
)

// settings holds the knobs of one run.
type settings struct {
	quick       bool
	paths       []string
	rounds      int // each scenario runs over all paths this many times
	sessions    int
	latSessions int // sessions of the latency scenario
	msgSize     int
	inFlight    int
	rate        float64
	throughDur  time.Duration
	latencyDur  time.Duration
	handDur     time.Duration
	handWorkers int
	idleN       int
	settle      time.Duration
	window      windowSettings
	scenarios   []string // of idle, throughput, latency, handshakes
}

// runs reports whether scenario is to be run.
func (s settings) runs(scenario string) bool { return slices.Contains(s.scenarios, scenario) }

// run parses args and either serves as a child (-serve-upstream,
// -serve-proxy) or runs the benchmark. It returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "short run (under a minute) for CI smoke use")
	jsonFile := fs.String("json", "", "write the figures as JSON to this `file`")
	paths := fs.String("paths", "", "comma-separated paths to measure (default "+fullPaths+"; with -quick "+quickPaths+"); tunnel_tls and holdfast_tls serve wss://, TLS terminated by the proxy")
	src := fs.String("src", ".", "repository root holdfast is built from")
	holdfastBin := fs.String("holdfast-bin", "", "use this holdfast `binary` instead of building one from -src")
	baselineBin := fs.String("baseline-bin", "", "also measure this holdfast `binary` as path baseline (or baseline_tls, serving wss://, when -paths names it), interleaved with the others, and in the window scenarios after holdfast (before/after comparisons in one run)")
	idle := fs.Int("idle", 0, "idle sessions per path (default 5000, 500 with -quick)")
	latSessions := fs.Int("latency-sessions", 64, "sessions of the latency scenario")
	latRate := fs.Float64("latency-rate", 2000, "messages per second, over all its sessions, of the latency scenario")
	rounds := fs.Int("rounds", 0, "rounds of each scenario over all paths (default 4, 2 with -quick)")
	scenarios := fs.String("scenarios", "idle,throughput,latency,handshakes", "comma-separated scenarios to run besides the windows (empty: none)")
	window := fs.Bool("window", true, "run the startup-window scenarios, loopback and attributed crowd (holdfast only)")
	windowPath := fs.String("window-path", "holdfast", "path of the window scenario: `holdfast`, or direct to see what no-retry clients get without it")
	windowGW := fs.String("window-gateway", "fakegw", "gateway of the window scenario: `fakegw` (internal/fakegw) or bench (the bench upstream with a startup window)")
	cpuProfile := fs.String("holdfast-cpuprofile", "", "build holdfast with a pprof listener and save a CPU profile of its first round of -profile-phase to `file`")
	profilePhase := fs.String("profile-phase", "throughput", "phase profiled by -holdfast-cpuprofile: `throughput`, handshakes, window or window_attributed (the 2 s after the window ends)")
	lateDial := fs.String("late-dial", "", "holdfast's handshake.late_dial (`duration`; default: holdfast's own)")
	soakDur := fs.Duration("soak", 0, "run the soak for this `duration` instead of the benchmark (see soak.go; at least 30s)")
	soakSessions := fs.Int("soak-sessions", 200, "long sessions of the soak")
	soakRate := fs.Float64("soak-rate", 50, "new handshakes per second of the soak")
	soakLogLevel := fs.String("soak-log-level", "warn", "log.level of the soak's holdfasts (their logs stay with -keep)")
	keep := fs.Bool("keep", false, "keep the temporary directory (child logs, holdfast config)")
	serveUp := fs.Bool("serve-upstream", false, "internal: run the bench upstream")
	serveGW := fs.Bool("serve-fakegw", false, "internal: run internal/fakegw with -startup-window")
	attributed := fs.Bool("attributed", false, "internal: -serve-fakegw trusts "+balancerAddr+" as a proxy and has every device paired")
	serveProxyKind := fs.String("serve-proxy", "", "internal: run a reference proxy, `tunnel` or koding")
	listen := fs.String("listen", "127.0.0.1:0", "internal: listen address for -serve-upstream and -serve-proxy")
	upstreamURL := fs.String("upstream", "", "internal: upstream URL for -serve-proxy")
	proxyCert := fs.String("tls-cert", "", "internal: -serve-proxy serves TLS with this PEM certificate `file`")
	proxyKey := fs.String("tls-key", "", "internal: the key `file` of -tls-cert")
	forwardFor := fs.Bool("forward-for", false, "internal: the -serve-proxy tunnel passes X-Forwarded-For on, its peer appended")
	startupWindow := fs.Duration("startup-window", 0, "internal: startup window of -serve-upstream")
	maxPreauth := fs.Int("max-preauth", 0, "internal: unauthenticated sockets per IP allowed by -serve-upstream (0: no limit)")
	drive := fs.String("drive", "", "run -drive-n handshakes (dial, handshake, close) against this ws:// `URL` with -drive-workers at a time, and exit (scripts/callgrind.sh)")
	driveN := fs.Int("drive-n", 1000, "handshakes of -drive")
	driveWorkers := fs.Int("drive-workers", 8, "concurrent clients of -drive")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := procs.RaiseFileLimit(); err != nil {
		fmt.Fprintf(stderr, "bench: raise file limit: %v\n", err)
	}
	switch {
	case *serveUp:
		if err := serveUpstream(*listen, *startupWindow, *maxPreauth); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	case *serveGW:
		if err := serveFakegw(*listen, *startupWindow, *attributed); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	case *drive != "":
		if err := driveHandshakes(*drive, *driveN, *driveWorkers); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	case *serveProxyKind != "":
		if err := serveProxy(*serveProxyKind, *listen, *upstreamURL, proxyOptions{certFile: *proxyCert, keyFile: *proxyKey, forwardFor: *forwardFor}); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}

	if *soakDur != 0 {
		ss, err := newSoakSettings(*soakDur, *soakSessions, *soakRate)
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 2
		}
		ss.logLevel = *soakLogLevel
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		dir, cleanup, err := workDir("holdfast-soak-", *keep, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		defer cleanup()
		cs := &procs.Children{Dir: dir}
		defer cs.KillAll()
		b := &bench{cs: cs, dir: dir, log: stderr, src: *src, holdfastBin: *holdfastBin}
		return b.runSoak(ctx, ss, *jsonFile, stdout)
	}

	if *paths == "" {
		*paths = map[bool]string{false: fullPaths, true: quickPaths}[*quick]
	}
	s := settings{
		quick: *quick, paths: strings.Split(*paths, ","),
		rounds: 4, sessions: 64, latSessions: *latSessions, msgSize: 1024, inFlight: 4, rate: *latRate,
		throughDur: 2500 * time.Millisecond, latencyDur: 2500 * time.Millisecond,
		handDur: 1500 * time.Millisecond, handWorkers: 32,
		idleN: 5000, settle: 3 * time.Second,
		window: windowSettings{clients: 1000, window: 5 * time.Second, timeout: 15 * time.Second, gateway: *windowGW, path: *windowPath},
	}
	if *quick {
		s.rounds = 2
		s.throughDur, s.latencyDur, s.handDur = time.Second, time.Second, 750*time.Millisecond
		s.idleN, s.settle = 500, time.Second
	}
	if *idle > 0 {
		s.idleN = *idle
	}
	if *rounds > 0 {
		s.rounds = *rounds
	}
	if s.latSessions < 1 || s.rate <= 0 {
		fmt.Fprintf(stderr, "bench: -latency-sessions must be at least 1 and -latency-rate above 0 (got %d, %g)\n", s.latSessions, s.rate)
		return 2
	}
	if *scenarios != "" {
		s.scenarios = strings.Split(*scenarios, ",")
	}
	for _, sc := range s.scenarios {
		if !slices.Contains([]string{"idle", "throughput", "latency", "handshakes"}, sc) {
			fmt.Fprintf(stderr, "bench: unknown scenario %q (want idle,throughput,latency,handshakes)\n", sc)
			return 2
		}
	}
	if *baselineBin != "" && !slices.Contains(s.paths, "baseline") && !slices.Contains(s.paths, "baseline_tls") {
		s.paths = append(s.paths, "baseline")
	}
	for _, p := range s.paths {
		if (p == "baseline" || p == "baseline_tls") && *baselineBin == "" {
			fmt.Fprintf(stderr, "bench: path %s needs -baseline-bin\n", p)
			return 2
		}
		if !slices.Contains(pathNames(), p) {
			fmt.Fprintf(stderr, "bench: unknown path %q (want %s)\n", p, strings.Join(pathNames(), ","))
			return 2
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, cleanup, err := workDir("holdfast-bench-", *keep, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	defer cleanup()
	cs := &procs.Children{Dir: dir}
	defer cs.KillAll()

	r := newReport(map[bool]string{true: "quick", false: "full"}[*quick])
	r.Rounds = s.rounds
	if !slices.Contains([]string{"throughput", "handshakes", "window", "window_attributed"}, *profilePhase) {
		fmt.Fprintf(stderr, "bench: unknown -profile-phase %q\n", *profilePhase)
		return 2
	}
	if *lateDial != "" {
		if _, err := time.ParseDuration(*lateDial); err != nil {
			fmt.Fprintf(stderr, "bench: -late-dial: %v\n", err)
			return 2
		}
	}
	b := &bench{s: s, cs: cs, dir: dir, log: stderr, r: r, src: *src, holdfastBin: *holdfastBin, baselineBin: *baselineBin,
		cpuProfile: *cpuProfile, profilePhase: *profilePhase, lateDial: *lateDial}
	if err := b.setup(ctx); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	b.runScenarios(ctx)
	if *window && (*windowPath == "direct" || slices.Contains(s.paths, "holdfast")) {
		// With a baseline, each crowd meets both binaries in turn.
		b.runWindow(ctx, false, false)
		if b.baselineBin != "" {
			b.runWindow(ctx, false, true)
		}
		b.runWindow(ctx, true, false)
		if b.baselineBin != "" {
			b.runWindow(ctx, true, true)
		}
		if *windowPath == "holdfast" {
			b.runAttributedFloor(ctx)
		}
		b.r.setFloor(s.window.clients)
	}
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "bench: interrupted\n")
		return 1
	}
	fmt.Fprintln(stdout)
	r.printTable(stdout)
	if *jsonFile != "" {
		if err := r.writeJSON(*jsonFile); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
	}
	return 0
}

// bench is one benchmark run: its settings, children, targets and report.
type bench struct {
	s           settings
	cs          *procs.Children
	dir         string
	log         io.Writer
	r           *report
	src         string
	holdfastBin string
	baselineBin string // another holdfast, measured as path baseline
	cpuProfile  string
	// profilePhase is the phase -holdfast-cpuprofile profiles.
	profilePhase string
	lateDial     string // handshake.late_dial for every holdfast, if set

	upstream        *procs.Child
	targets         []target
	cert            *runCert // the wss paths' test certificate, made once
	holdfastMetrics string   // address of holdfast's metrics listener
	pprofAddr       string   // address of the profiling build's pprof listener
}

// logf prints progress to the log writer.
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

// setup starts the upstream and every selected proxy. A proxy that fails to
// start is reported as missing; only an upstream failure is fatal.
func (b *bench) setup(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	b.upstream, err = b.cs.Start("upstream", exe, []string{"-serve-upstream"}, true, 10*time.Second)
	if err != nil {
		return err
	}
	upURL := "ws://" + b.upstream.Addr + "/"
	for _, p := range b.s.paths {
		var t target
		var err error
		switch p {
		case "direct":
			t = target{name: p, url: upURL, proc: b.upstream}
		case "tunnel", "koding":
			var c *procs.Child
			c, err = b.cs.Start(p, exe, []string{"-serve-proxy", p, "-upstream", "http://" + b.upstream.Addr}, true, 10*time.Second)
			if err == nil {
				t = target{name: p, url: "ws://" + c.Addr + "/", proc: c, proxy: c}
			}
		case "holdfast":
			t, err = b.startHoldfast(ctx, upURL)
		case "tunnel_tls":
			var certFile, keyFile string
			if certFile, keyFile, err = b.certFiles(); err != nil {
				break
			}
			var c *procs.Child
			c, err = b.cs.Start("tunnel-tls", exe, []string{"-serve-proxy", "tunnel", "-upstream", "http://" + b.upstream.Addr,
				"-tls-cert", certFile, "-tls-key", keyFile}, true, 10*time.Second)
			if err == nil {
				t = target{name: p, url: "wss://" + c.Addr + "/", tls: b.cert.clientConfig(), proc: c, proxy: c}
			}
		case "holdfast_tls":
			var bin string
			if bin, err = b.buildHoldfast(ctx); err != nil {
				break
			}
			var c *procs.Child
			c, _, err = b.launchHoldfast(ctx, bin, "holdfast-tls", upURL, holdfastOptions{tls: true})
			if err == nil {
				t = target{name: p, url: "wss://" + c.Addr + "/", tls: b.cert.clientConfig(), proc: c, proxy: c}
			}
		case "baseline":
			var c *procs.Child
			c, _, err = b.launchHoldfast(ctx, b.baselineBin, "baseline", upURL, holdfastOptions{})
			if err == nil {
				t = target{name: p, url: "ws://" + c.Addr + "/", proc: c, proxy: c}
			}
		case "baseline_tls":
			var c *procs.Child
			c, _, err = b.launchHoldfast(ctx, b.baselineBin, "baseline-tls", upURL, holdfastOptions{tls: true})
			if err == nil {
				t = target{name: p, url: "wss://" + c.Addr + "/", tls: b.cert.clientConfig(), proc: c, proxy: c}
			}
		}
		if err != nil {
			b.logf("%s unavailable: %v", p, err)
			b.r.fail("setup", p, err)
			continue
		}
		b.targets = append(b.targets, t)
	}
	return nil
}

// holdfastConfig is holdfast's normal configuration for the bench.
const holdfastConfig = `listen: %q
trusted_proxies: %s
upstream:
  url: %q
metrics:
  listen: %q
handshake:
  budget: 12s
%slog:
  level: warn
`

// startHoldfast builds holdfast (unless -holdfast-bin is set), starts it
// against upstreamURL and waits for its /readyz.
func (b *bench) startHoldfast(ctx context.Context, upstreamURL string) (target, error) {
	bin, err := b.buildHoldfast(ctx)
	if err != nil {
		return target{}, err
	}
	c, metricsAddr, err := b.launchHoldfast(ctx, bin, "holdfast", upstreamURL, holdfastOptions{})
	if err != nil {
		return target{}, err
	}
	b.holdfastMetrics = metricsAddr
	return target{name: "holdfast", url: "ws://" + c.Addr + "/", proc: c, proxy: c}, nil
}

// buildHoldfast returns the holdfast binary, building it once from b.src.
func (b *bench) buildHoldfast(ctx context.Context) (string, error) {
	if b.holdfastBin != "" {
		return b.holdfastBin, nil
	}
	bin := filepath.Join(b.dir, "holdfast")
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", bin}
	if b.cpuProfile != "" {
		overlay, err := pprofOverlay(b.dir, b.src)
		if err != nil {
			return "", err
		}
		args = append(args, "-overlay", overlay)
	}
	cmd := exec.CommandContext(bctx, "go", append(args, ".")...)
	cmd.Dir = b.src
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build holdfast: %w: %s", err, strings.TrimSpace(string(out)))
	}
	b.holdfastBin = bin
	return bin, nil
}

// profiledChild names the holdfast process -holdfast-cpuprofile profiles:
// that of the phase, holdfast_tls's in the throughput and handshake phases
// of a run that measures holdfast_tls but not holdfast.
func (b *bench) profiledChild() string {
	if b.profiledPath() == "holdfast_tls" {
		return "holdfast-tls"
	}
	return profiledChild[b.profilePhase]
}

// profiledPath is the path whose first round of the throughput or handshake
// phase -holdfast-cpuprofile profiles.
func (b *bench) profiledPath() string {
	if !slices.Contains(b.s.paths, "holdfast") && slices.Contains(b.s.paths, "holdfast_tls") {
		return "holdfast_tls"
	}
	return "holdfast"
}

// profiledChild names the holdfast process -holdfast-cpuprofile profiles in
// each phase.
var profiledChild = map[string]string{
	"throughput":        "holdfast",
	"handshakes":        "holdfast",
	"window":            "holdfast-window",
	"window_attributed": "holdfast-window-attributed",
}

// holdfastOptions are what a bench holdfast's config adds to the normal one.
type holdfastOptions struct {
	trusted []string // trusted_proxies
	// tls: holdfast serves wss:// with the run's test certificate
	// (tls.cert_file and tls.key_file).
	tls bool
}

// launchHoldfast writes a config for upstreamURL and opts, starts holdfast
// with it as child name, and waits until its metrics listener answers
// /healthz and its data port accepts. It returns the child and the metrics
// address.
func (b *bench) launchHoldfast(ctx context.Context, bin, name, upstreamURL string, opts holdfastOptions) (*procs.Child, string, error) {
	listen, err := procs.FreePort()
	if err != nil {
		return nil, "", err
	}
	metricsAddr, err := procs.FreePort()
	if err != nil {
		return nil, "", err
	}
	cfg := filepath.Join(b.dir, name+".yaml")
	trustedYAML, err := json.Marshal(append([]string{}, opts.trusted...)) // a YAML flow sequence
	if err != nil {
		return nil, "", err
	}
	extra := ""
	if b.lateDial != "" {
		extra = "  late_dial: " + b.lateDial + "\n"
	}
	text := fmt.Appendf(nil, holdfastConfig, listen, trustedYAML, upstreamURL, metricsAddr, extra)
	if opts.tls {
		certFile, keyFile, err := b.certFiles()
		if err != nil {
			return nil, "", err
		}
		text = fmt.Appendf(text, "tls:\n  cert_file: %q\n  key_file: %q\n", certFile, keyFile)
	}
	if err := os.WriteFile(cfg, text, 0o644); err != nil {
		return nil, "", err
	}
	var env []string
	if b.cpuProfile != "" && name == b.profiledChild() {
		if b.pprofAddr, err = procs.FreePort(); err != nil {
			return nil, "", err
		}
		env = append(env, pprofEnv+"="+b.pprofAddr)
	}
	c, err := b.cs.Start(name, bin, []string{"-config", cfg}, false, 0, env...)
	if err != nil {
		return nil, "", err
	}
	c.Addr = listen
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := procs.WaitHTTP(wctx, c, "http://"+metricsAddr+"/healthz"); err != nil {
		c.Kill()
		return nil, "", err
	}
	return c, metricsAddr, nil
}

// workDir makes a run's temporary folder, named after prefix. cleanup
// removes it, unless keep: then it stays, and its path is printed.
func workDir(prefix string, keep bool, stderr io.Writer) (dir string, cleanup func(), err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	if keep {
		fmt.Fprintf(stderr, "bench: temporary files in %s\n", dir)
		return dir, func() {}, nil
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}

// runCert is the test certificate the wss paths serve (holdfast through
// tls.cert_file and tls.key_file, the tunnel through tls.Listen) and the
// load generator trusts.
type runCert struct {
	pair              testcert.Pair
	certFile, keyFile string
}

// clientConfig returns the load generator's TLS configuration: it trusts
// the run's certificate alone. Each handshake is a full one (no session
// cache), as a client's first connection is.
func (c *runCert) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.pair.Pool(), MinVersion: tls.VersionTLS12}
}

// certFiles makes the run's test certificate for 127.0.0.1 on first use,
// writes it and its key to the run's directory, and returns their paths.
func (b *bench) certFiles() (certFile, keyFile string, err error) {
	if b.cert != nil {
		return b.cert.certFile, b.cert.keyFile, nil
	}
	pair, err := testcert.New("holdfast bench")
	if err != nil {
		return "", "", fmt.Errorf("test certificate: %w", err)
	}
	c := &runCert{pair: pair, certFile: filepath.Join(b.dir, "tls.crt"), keyFile: filepath.Join(b.dir, "tls.key")}
	if err := os.WriteFile(c.certFile, pair.CertPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(c.keyFile, pair.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	b.cert = c
	return c.certFile, c.keyFile, nil
}
