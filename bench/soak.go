package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/holdfast-proxy/holdfast/bench/internal/procs"
	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/testcert"
)

// soakSettings shapes a soak run (-soak DURATION). newSoakSettings scales
// the intervals with the duration, so that a 60-second run still restarts
// the gateway, reloads (a valid and an invalid file) and rotates the
// certificate at least once.
type soakSettings struct {
	duration time.Duration
	sessions int     // long sessions, each reconnecting as real clients do
	rate     float64 // new handshakes per second besides them
	// restartEvery is the time between gateway restarts; window the
	// startup window each restart opens.
	restartEvery, window time.Duration
	// reloadEvery is the time between SIGHUPs; rotateEvery between
	// certificate rotations.
	reloadEvery, rotateEvery time.Duration
	// sampleEvery is the time between resource samples; samples before
	// warmup are kept but not judged.
	sampleEvery, warmup time.Duration
	// tlsShare: one client in tlsShare goes through the TLS holdfast.
	tlsShare int
	// logLevel is both holdfasts' log.level (warn unless -soak-log-level).
	logLevel string
}

// Soak defaults: a gateway restart every minute with a 3 s startup window,
// a reload every 5 minutes, a certificate rotation every 10, a sample
// every 10 s after a warm-up minute.
const (
	soakRestartEvery = time.Minute
	soakWindow       = 3 * time.Second
	soakReloadEvery  = 5 * time.Minute
	soakRotateEvery  = 10 * time.Minute
	soakSampleEvery  = 10 * time.Second
	soakWarmup       = time.Minute
	// soakRestartOffset puts restarts between samples (see restartTimes).
	soakRestartOffset = 2 * time.Second
	// soakMinDuration is the shortest run with room for every event.
	soakMinDuration = 30 * time.Second
)

// newSoakSettings returns the settings of a run of duration d. Intervals
// are capped at a third (restarts), a quarter (reloads) and a half
// (rotations) of d; the warm-up is a minute, or a third of d for runs
// shorter than 3 minutes.
func newSoakSettings(d time.Duration, sessions int, rate float64) (soakSettings, error) {
	if d < soakMinDuration {
		return soakSettings{}, fmt.Errorf("-soak: want at least %v, got %v", soakMinDuration, d)
	}
	if sessions < 1 || rate <= 0 {
		return soakSettings{}, fmt.Errorf("-soak-sessions and -soak-rate must be positive, got %d and %g", sessions, rate)
	}
	s := soakSettings{
		duration: d, sessions: sessions, rate: rate,
		restartEvery: min(soakRestartEvery, d/3), window: soakWindow,
		reloadEvery: min(soakReloadEvery, d/4), rotateEvery: min(soakRotateEvery, d/2),
		sampleEvery: soakSampleEvery, warmup: soakWarmup, tlsShare: 4, logLevel: "warn",
	}
	if d < 3*time.Minute {
		s.warmup = (d / 3).Truncate(s.sampleEvery)
	}
	return s, nil
}

// restartTimes are the offsets of the gateway restarts: every
// restartEvery, 2 s past it (so that a restart is not under way at a
// sample: every sample sees the sessions back, 8 s after the last
// restart at the least), none in the last half interval.
func (s soakSettings) restartTimes() []time.Duration {
	var t []time.Duration
	for at := s.restartEvery + soakRestartOffset; at <= s.duration-s.restartEvery/2; at += s.restartEvery {
		t = append(t, at)
	}
	return t
}

// reloadTimes are the offsets of the reloads: half an interval in, then
// every reloadEvery.
func (s soakSettings) reloadTimes() []time.Duration {
	var t []time.Duration
	for at := s.reloadEvery / 2; at < s.duration; at += s.reloadEvery {
		t = append(t, at)
	}
	return t
}

// rotationTimes are the offsets of the certificate rotations: half an
// interval in, then every rotateEvery, none in the last 10 s (the new
// certificate must be seen served).
func (s soakSettings) rotationTimes() []time.Duration {
	var t []time.Duration
	for at := s.rotateEvery / 2; at < s.duration-10*time.Second; at += s.rotateEvery {
		t = append(t, at)
	}
	return t
}

// reloadKind is the file reload k (from 0) installs: every third one
// (k = 1, 4, …) is invalid; the valid ones alternate B, A, B, …
func reloadKind(k int) string {
	if k%3 == 1 {
		return "invalid"
	}
	if valid := k - (k+1)/3; valid%2 == 0 {
		return "B"
	}
	return "A"
}

// soakConfig is a soak holdfast's configuration. Variants A and B differ
// in keys a reload applies (handshake.budget, limits.handshakes); the
// invalid one has a budget over the clients' 15 s connect timeout, which
// holdfast refuses naming handshake.budget. Each of the two holdfasts
// takes 16 of the gateway's 32 unauthenticated sockets per address.
const soakConfig = `listen: %q
upstream:
  url: %q
  max_preauth_per_address: 16
metrics:
  listen: %q
%shandshake:
  budget: %s
limits:
  handshakes: %d
log:
  level: %s
`

// soakHoldfast is one holdfast process of the soak.
type soakHoldfast struct {
	name     string
	c        *procs.Child
	cfg      string // config file path
	listen   string
	metrics  string
	upstream string
	tls      string // the tls: block, or ""
	logLevel string // log.level
}

// writeConfig writes variant kind (A, B or invalid) to h.cfg, atomically.
func (h *soakHoldfast) writeConfig(kind string) error {
	budget, handshakes := "12s", 2048
	switch kind {
	case "B":
		budget, handshakes = "11s", 4096
	case "invalid":
		budget = "20s"
	}
	tmp := h.cfg + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, soakConfig, h.listen, h.upstream, h.metrics, h.tls, budget, handshakes, h.logLevel), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, h.cfg)
}

// Gateway phases, as the soak's controller knows them: up, stopping (a
// restart asked for, until the gateway listens again), starting (its
// startup window).
const (
	phaseUp = iota
	phaseStopping
	phaseStarting
	phaseCount
)

// phaseNames names the phases in the report.
var phaseNames = [phaseCount]string{"up", "stopping", "starting"}

// soakSample is one resource sample of a holdfast process.
type soakSample struct {
	T          float64 `json:"t_s"`
	RSS        int64   `json:"rss_bytes"`
	Goroutines int64   `json:"goroutines"`
	FDs        int64   `json:"fds"`
	Sessions   int64   `json:"sessions"` // holdfast_sessions_active
}

// procSpreads is the judged part of one process's samples.
type procSpreads struct {
	RSS        spread `json:"rss_bytes"`
	Goroutines spread `json:"goroutines"`
	FDs        spread `json:"fds"`
}

// spreadsOf returns the spreads of samples.
func spreadsOf(samples []soakSample) procSpreads {
	var rss, g, fds []int64
	for _, s := range samples {
		rss, g, fds = append(rss, s.RSS), append(g, s.Goroutines), append(fds, s.FDs)
	}
	return procSpreads{RSS: spreadOf(rss), Goroutines: spreadOf(g), FDs: spreadOf(fds)}
}

// idleCounts are a process's goroutines and descriptors with no client.
type idleCounts struct {
	GoroutinesBefore int64 `json:"goroutines_before"`
	GoroutinesAfter  int64 `json:"goroutines_after"`
	FDsBefore        int64 `json:"fds_before"`
	FDsAfter         int64 `json:"fds_after"`
}

// soakIdleSlack is how many goroutines, and how many descriptors, an idle
// holdfast may have above its count before the load. Point samples of an
// idle process differ by one now and then (a 60 s soak in CI saw 9
// goroutines and 12 descriptors before the load, 10 and 11 after, for 40
// s); a leak per connection (thousands in a soak) or per reload (four in
// 60 s) is well above it.
const soakIdleSlack = 2

// back reports whether the counts after the load are at most those before,
// give or take soakIdleSlack.
func (c idleCounts) back() bool {
	return c.GoroutinesAfter <= c.GoroutinesBefore+soakIdleSlack && c.FDsAfter <= c.FDsBefore+soakIdleSlack
}

// soakReport is what a soak run writes with -json.
type soakReport struct {
	DurationS        float64 `json:"duration_s"`
	MessagesSent     int64   `json:"messages_sent"`
	MessagesReceived int64   `json:"messages_received"`
	Lost             int64   `json:"lost"`
	Duplicated       int64   `json:"duplicated"`
	Reordered        int64   `json:"reordered"`
	Corrupted        int64   `json:"corrupted"`
	// Unanswered were in flight when holdfast closed their session with a
	// documented code (a gateway restart): not lost (see msgTracker).
	Unanswered   int64 `json:"unanswered_at_close"`
	Handshakes   int64 `json:"handshakes"`
	HandshakesOK int64 `json:"handshakes_ok"`
	// HandshakesByPhase is, per gateway phase at the handshake's start,
	// [begun, hello-ok].
	HandshakesByPhase map[string][2]int64 `json:"handshakes_by_phase"`
	WindowHandshakes  int64               `json:"window_handshakes"`
	WindowHelloOK     int64               `json:"window_hello_ok"`
	// CloseCodes counts every connection's ending by the close code the
	// client received (0: nothing before its deadline; 1006: no close
	// frame); HTTPStatuses refused upgrades.
	CloseCodes   map[int]int64 `json:"close_codes"`
	HTTPStatuses map[int]int64 `json:"http_statuses"`
	// BrowserChallengeLate counts browser-like clients whose challenge
	// came more than 750 ms after their upgrade (the Control UI gives up
	// then).
	BrowserChallengeLate int64 `json:"browser_challenges_over_750ms"`
	ChurnSkipped         int64 `json:"churn_skipped"`
	GatewayRestarts      int64 `json:"gateway_restarts"`
	Reloads              int64 `json:"reloads"`
	ReloadsInvalid       int64 `json:"reloads_invalid"`
	// ReloadsCounted is, per holdfast process, its
	// holdfast_config_reloads_total [success, failure].
	ReloadsCounted  map[string][2]int64 `json:"reloads_counted"`
	Rotations       int64               `json:"rotations"`
	RotationsServed int64               `json:"rotations_served"`
	WarmupS         float64             `json:"warmup_s"`
	// RSS, Goroutines and FDs are the plain holdfast's samples after the
	// warm-up; TLSHoldfast the same for the TLS one.
	RSS         spread                `json:"rss_bytes"`
	Goroutines  spread                `json:"goroutines"`
	FDs         spread                `json:"fds"`
	TLSHoldfast procSpreads           `json:"tls_holdfast"`
	Idle        map[string]idleCounts `json:"idle"`
	Samples     []soakSample          `json:"samples"`
	TLSSamples  []soakSample          `json:"tls_samples"`
	// LogLines counts, per process, its log lines (info and above) by
	// level and message.
	LogLines map[string]map[string]int `json:"log_lines"`
	Problems []string                  `json:"problems"`
}

// soak is one soak run.
type soak struct {
	b     *bench
	s     soakSettings
	plain *soakHoldfast
	tlsHF *soakHoldfast
	stats string // the gateway's stats and restart listener
	start time.Time

	tally    msgTally
	phase    atomic.Int32
	sids     atomic.Int64
	hs, hsOK atomic.Int64
	byPhase  [phaseCount][2]atomic.Int64
	late     atomic.Int64
	skipped  atomic.Int64
	restarts atomic.Int64

	// mu guards the fields up to idle.
	mu       sync.Mutex
	codes    map[int]int64 // close code → connections
	statuses map[int]int64 // HTTP status → refused upgrades
	samples  map[string][]soakSample
	failures []string // controller failures (a restart that did not happen)
	reloads  int64
	invalid  int64 // reloads of the invalid file
	rotated  int64
	rotSeen  int64 // rotations whose certificate was seen served
	idle     map[string]idleCounts

	tlsConf  atomic.Pointer[tls.Config] // what TLS clients trust now
	pairs    []testcert.Pair            // every certificate made (setup, then the rotator only)
	pads     []byte                     // filler messages are cut from
	devs     []*deviceauth.Identity     // device identities clients sign with
	scrapeCl *http.Client
}

// runSoak runs the soak for settings s and writes the report to jsonFile
// (if set). It returns the exit status: 1 when the harness fails or the
// run breaks a promise (see soakReport.problems), else 0.
func (b *bench) runSoak(ctx context.Context, s soakSettings, jsonFile string, stdout io.Writer) int {
	k := &soak{b: b, s: s, codes: map[int]int64{}, statuses: map[int]int64{}, samples: map[string][]soakSample{},
		idle: map[string]idleCounts{}, scrapeCl: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	if err := k.setup(ctx); err != nil {
		b.logf("soak: %v", err)
		return 1
	}
	r := k.run(ctx)
	if ctx.Err() != nil {
		b.logf("soak: interrupted")
		return 1
	}
	k.print(stdout, r)
	if jsonFile != "" {
		out, err := json.MarshalIndent(r, "", "  ")
		if err == nil {
			err = os.WriteFile(jsonFile, append(out, '\n'), 0o644)
		}
		if err != nil {
			b.logf("soak: %v", err)
			return 1
		}
	}
	if len(r.Problems) > 0 {
		for _, p := range r.Problems {
			fmt.Fprintf(b.log, "soak: FAIL: %s\n", p)
		}
		return 1
	}
	fmt.Fprintln(stdout, "soak: PASS: nothing lost, duplicated, reordered or corrupted; every connection ended with a documented close")
	return 0
}

// setup builds and starts the gateway and both holdfasts and makes the
// first certificate.
func (k *soak) setup(ctx context.Context) error {
	b := k.b
	bin, err := b.buildHoldfast(ctx)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	gwAddr, err := procs.FreePort()
	if err != nil {
		return err
	}
	gw, err := b.cs.Start("soak-gateway", exe, []string{"-serve-fakegw", "-listen", gwAddr, "-startup-window", "0s"}, true, 10*time.Second)
	if err != nil {
		return err
	}
	f := strings.Fields(gw.Addr)
	if len(f) != 2 {
		return fmt.Errorf("gateway ready line %q", gw.Addr)
	}
	k.stats = f[1]

	pair, err := testcert.New("holdfast-soak-0")
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(b.dir, "tls.crt"), filepath.Join(b.dir, "tls.key")
	if err := k.installPair(pair, certFile, keyFile); err != nil {
		return err
	}
	tlsBlock := fmt.Sprintf("tls:\n  cert_file: %q\n  key_file: %q\n", certFile, keyFile)
	for _, h := range []*soakHoldfast{{name: "holdfast-soak"}, {name: "holdfast-soak-tls", tls: tlsBlock}} {
		h.upstream = "ws://" + gwAddr + "/"
		h.logLevel = k.s.logLevel
		h.cfg = filepath.Join(b.dir, h.name+".yaml")
		if h.listen, err = procs.FreePort(); err != nil {
			return err
		}
		if h.metrics, err = procs.FreePort(); err != nil {
			return err
		}
		if err := h.writeConfig("A"); err != nil {
			return err
		}
		if h.c, err = b.cs.Start(h.name, bin, []string{"-config", h.cfg}, false, 0); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = procs.WaitHTTP(wctx, h.c, "http://"+h.metrics+"/healthz")
		cancel()
		if err != nil {
			return err
		}
		if h.tls == "" {
			k.plain = h
		} else {
			k.tlsHF = h
		}
	}

	k.pads = make([]byte, 256<<10)
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	for i := range k.pads {
		k.pads[i] = letters[rand.IntN(len(letters))]
	}
	for range 32 {
		d, err := deviceauth.NewIdentity()
		if err != nil {
			return err
		}
		k.devs = append(k.devs, d)
	}
	return nil
}

// installPair makes the clients trust p (with every earlier pair, for
// sessions still on them) and writes it over certFile and keyFile the way
// certbot does: each file written aside and renamed into place, the
// certificate first.
func (k *soak) installPair(p testcert.Pair, certFile, keyFile string) error {
	k.pairs = append(k.pairs, p)
	pool := x509.NewCertPool()
	for _, q := range k.pairs {
		pool.AddCert(q.Leaf)
	}
	k.tlsConf.Store(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	for _, f := range []struct {
		path string
		data []byte
	}{{certFile, p.CertPEM}, {keyFile, p.KeyPEM}} {
		if err := os.WriteFile(f.path+".new", f.data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(f.path+".new", f.path); err != nil {
			return err
		}
	}
	return nil
}

// run drives the load and the controller for the duration, then winds
// down and returns the report.
func (k *soak) run(ctx context.Context) *soakReport {
	b := k.b
	for _, h := range []*soakHoldfast{k.plain, k.tlsHF} {
		g, fds := k.counts(ctx, h)
		k.idle[h.name] = idleCounts{GoroutinesBefore: g, FDsBefore: fds}
	}
	b.logf("soak: %v, %d long sessions, %.0f new handshakes/s, gateway restart every %v (window %v), reload every %v, rotation every %v, warm-up %v",
		k.s.duration, k.s.sessions, k.s.rate, k.s.restartEvery, k.s.window, k.s.reloadEvery, k.s.rotateEvery, k.s.warmup)
	if k.s.warmup < soakWarmup {
		b.logf("soak: run shorter than 3 minutes: warm-up scaled down to %v", k.s.warmup)
	}
	k.start = time.Now()
	stop := make(chan struct{})
	var load, ctl sync.WaitGroup
	for i := range k.s.sessions {
		load.Add(1)
		go func() {
			defer load.Done()
			// Spread the first connects over 2 s, as clients starting up.
			if waitStop(ctx, stop, time.Duration(i)*2*time.Second/time.Duration(k.s.sessions)) {
				k.longSession(ctx, i, stop)
			}
		}()
	}
	load.Add(1)
	go func() {
		defer load.Done()
		k.churn(ctx, stop)
	}()
	ctl.Add(3)
	go func() { defer ctl.Done(); k.restarter(ctx) }()
	go func() { defer ctl.Done(); k.reloader(ctx) }()
	go func() { defer ctl.Done(); k.rotator(ctx) }()
	k.sampler(ctx) // returns after the sample at the end of the duration
	close(stop)
	ctl.Wait()
	load.Wait()
	dur := time.Since(k.start)
	b.logf("soak: load stopped after %v; waiting for holdfast to be idle", dur.Round(time.Second))
	var idle sync.WaitGroup
	for _, h := range []*soakHoldfast{k.plain, k.tlsHF} {
		idle.Add(1)
		go func() {
			defer idle.Done()
			k.waitIdle(ctx, h)
		}()
	}
	idle.Wait()
	return k.report(ctx, dur)
}

// waitStop waits d and reports true, or false if stop closes or ctx ends
// first.
func waitStop(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// untilOffset waits until offset at after the start; false if ctx ends.
func (k *soak) untilOffset(ctx context.Context, at time.Duration) bool {
	return sleepCtx(ctx, time.Until(k.start.Add(at))) == nil
}

// restarter restarts the gateway at restartTimes, tracking its phase.
func (k *soak) restarter(ctx context.Context) {
	cl := &http.Client{Timeout: 20 * time.Second}
	for _, at := range k.s.restartTimes() {
		if !k.untilOffset(ctx, at) {
			return
		}
		k.phase.Store(phaseStopping)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+k.stats+"/restart?window="+k.s.window.String(), nil)
		if err != nil {
			k.fail("gateway restart: %v", err)
			return
		}
		resp, err := cl.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
		}
		if err != nil {
			k.fail("gateway restart at %v: %v", at, err)
			k.phase.Store(phaseUp)
			continue
		}
		k.phase.Store(phaseStarting)
		k.restarts.Add(1)
		k.b.logf("soak: %v: gateway restarted, startup window %v", time.Since(k.start).Round(time.Second), k.s.window)
		if sleepCtx(ctx, k.s.window) != nil {
			return
		}
		k.phase.Store(phaseUp)
	}
}

// reloader rewrites both holdfasts' files and sends them SIGHUP at
// reloadTimes.
func (k *soak) reloader(ctx context.Context) {
	for i, at := range k.s.reloadTimes() {
		if !k.untilOffset(ctx, at) {
			return
		}
		kind := reloadKind(i)
		for _, h := range []*soakHoldfast{k.plain, k.tlsHF} {
			if err := h.writeConfig(kind); err != nil {
				k.fail("reload: %v", err)
				return
			}
			if err := syscall.Kill(h.c.Cmd.Process.Pid, syscall.SIGHUP); err != nil {
				k.fail("reload: SIGHUP %s: %v", h.name, err)
				return
			}
		}
		k.mu.Lock()
		k.reloads++
		if kind == "invalid" {
			k.invalid++
		}
		k.mu.Unlock()
		k.b.logf("soak: %v: reload with config %s", time.Since(k.start).Round(time.Second), kind)
	}
}

// rotator rotates the TLS holdfast's certificate at rotationTimes and
// checks that new clients get the new one within 10 s.
func (k *soak) rotator(ctx context.Context) {
	certFile, keyFile := filepath.Join(k.b.dir, "tls.crt"), filepath.Join(k.b.dir, "tls.key")
	for i, at := range k.s.rotationTimes() {
		if !k.untilOffset(ctx, at) {
			return
		}
		p, err := testcert.New(fmt.Sprintf("holdfast-soak-%d", i+1))
		if err == nil {
			err = k.installPair(p, certFile, keyFile)
		}
		if err != nil {
			k.fail("rotation: %v", err)
			return
		}
		k.mu.Lock()
		k.rotated++
		k.mu.Unlock()
		served := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
			if servedSerial(k.tlsHF.listen, k.tlsConf.Load()) == p.Leaf.SerialNumber.String() {
				served = true
				break
			}
			_ = sleepCtx(ctx, 200*time.Millisecond)
		}
		if served {
			k.mu.Lock()
			k.rotSeen++
			k.mu.Unlock()
		}
		k.b.logf("soak: %v: certificate rotated; served to new clients: %v", time.Since(k.start).Round(time.Second), served)
	}
}

// servedSerial returns the serial number of the certificate addr serves,
// or "" on failure.
func servedSerial(addr string, conf *tls.Config) string {
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, conf)
	if err != nil {
		return ""
	}
	defer c.Close()
	if certs := c.ConnectionState().PeerCertificates; len(certs) > 0 {
		return certs[0].SerialNumber.String()
	}
	return ""
}

// fail records a controller failure.
func (k *soak) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	k.b.logf("soak: %s", msg)
	k.mu.Lock()
	k.failures = append(k.failures, msg)
	k.mu.Unlock()
}

// sampler samples both holdfasts every sampleEvery up to and including
// the end of the duration, and returns then.
func (k *soak) sampler(ctx context.Context) {
	for at := k.s.sampleEvery; at <= k.s.duration; at += k.s.sampleEvery {
		if !k.untilOffset(ctx, at) {
			return
		}
		for _, h := range []*soakHoldfast{k.plain, k.tlsHF} {
			s := soakSample{T: at.Seconds()}
			s.RSS, _ = procs.RSSOf(h.c.Cmd.Process.Pid)
			s.FDs, _ = fdsOf(h.c.Cmd.Process.Pid)
			m, err := k.scrape(ctx, h.metrics)
			if err != nil {
				k.b.logf("soak: %s metrics: %v", h.name, err)
			}
			s.Goroutines, s.Sessions = int64(m["go_goroutines"]), int64(m["holdfast_sessions_active"])
			k.mu.Lock()
			k.samples[h.name] = append(k.samples[h.name], s)
			k.mu.Unlock()
		}
		k.mu.Lock()
		s := k.samples[k.plain.name]
		k.mu.Unlock()
		last := s[len(s)-1]
		k.b.logf("soak: %v: holdfast rss %.1f MiB, %d goroutines, %d fds, %d sessions; %d sent, %d received, %d handshakes (%d ok)",
			at, float64(last.RSS)/(1<<20), last.Goroutines, last.FDs, last.Sessions,
			k.tally.sent.Load(), k.tally.received.Load(), k.hs.Load(), k.hsOK.Load())
	}
}

// fdsOf returns how many descriptors pid has open.
func fdsOf(pid int) (int64, error) {
	e, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return int64(len(e)), err
}

// scrape reads the /metrics of a holdfast at addr: series (name with its
// labels as written) to value.
func (k *soak) scrape(ctx context.Context, addr string) (map[string]float64, error) {
	m := map[string]float64{}
	req, err := httpGet(ctx, "http://"+addr+"/metrics")
	if err != nil {
		return m, err
	}
	resp, err := k.scrapeCl.Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// counts returns h's goroutines (from its metrics) and open descriptors.
func (k *soak) counts(ctx context.Context, h *soakHoldfast) (goroutines, fds int64) {
	m, _ := k.scrape(ctx, h.metrics)
	fds, _ = fdsOf(h.c.Cmd.Process.Pid)
	return int64(m["go_goroutines"]), fds
}

// soakIdleWait bounds the wait for a holdfast's goroutines and
// descriptors to come back to their count before the load. It outlasts
// the readiness probe's idle keep-alive connection to the gateway (30 s
// without a probe; retry.NewHTTPProbe), which holds a descriptor and two
// goroutines after the last probe.
const soakIdleWait = 40 * time.Second

// waitIdle waits (up to 20 s) until h has no session and no handshake,
// then (up to soakIdleWait more) until its goroutines and descriptors are
// back to their counts before the load, and records its idle counts.
func (k *soak) waitIdle(ctx context.Context, h *soakHoldfast) {
	k.mu.Lock()
	idle := k.idle[h.name]
	k.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m, err := k.scrape(ctx, h.metrics)
		if err == nil && m["holdfast_sessions_active"] == 0 && m["holdfast_upstream_handshakes_in_flight"] == 0 {
			break
		}
		_ = sleepCtx(ctx, 200*time.Millisecond)
	}
	deadline = time.Now().Add(soakIdleWait)
	for {
		idle.GoroutinesAfter, idle.FDsAfter = k.counts(ctx, h)
		if idle.back() || !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		_ = sleepCtx(ctx, 500*time.Millisecond)
	}
	k.mu.Lock()
	k.idle[h.name] = idle
	k.mu.Unlock()
}

// report gathers the run's figures and judges them.
func (k *soak) report(ctx context.Context, dur time.Duration) *soakReport {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := &soakReport{
		DurationS:            dur.Seconds(),
		MessagesSent:         k.tally.sent.Load(),
		MessagesReceived:     k.tally.received.Load(),
		Lost:                 k.tally.lost.Load(),
		Duplicated:           k.tally.duplicated.Load(),
		Reordered:            k.tally.reordered.Load(),
		Corrupted:            k.tally.corrupted.Load(),
		Unanswered:           k.tally.unanswered.Load(),
		Handshakes:           k.hs.Load(),
		HandshakesOK:         k.hsOK.Load(),
		HandshakesByPhase:    map[string][2]int64{},
		WindowHandshakes:     k.byPhase[phaseStarting][0].Load(),
		WindowHelloOK:        k.byPhase[phaseStarting][1].Load(),
		CloseCodes:           maps.Clone(k.codes),
		HTTPStatuses:         maps.Clone(k.statuses),
		BrowserChallengeLate: k.late.Load(),
		ChurnSkipped:         k.skipped.Load(),
		GatewayRestarts:      k.restarts.Load(),
		Reloads:              k.reloads,
		ReloadsInvalid:       k.invalid,
		ReloadsCounted:       map[string][2]int64{},
		Rotations:            k.rotated,
		RotationsServed:      k.rotSeen,
		WarmupS:              k.s.warmup.Seconds(),
		Idle:                 k.idle,
		LogLines:             map[string]map[string]int{},
	}
	if _, ok := r.CloseCodes[closeNone]; !ok {
		r.CloseCodes[closeNone] = 0
	}
	for p := range phaseCount {
		r.HandshakesByPhase[phaseNames[p]] = [2]int64{k.byPhase[p][0].Load(), k.byPhase[p][1].Load()}
	}
	judged := func(name string) []soakSample {
		var out []soakSample
		for _, s := range k.samples[name] {
			if s.T >= k.s.warmup.Seconds() {
				out = append(out, s)
			}
		}
		return out
	}
	r.Samples, r.TLSSamples = judged(k.plain.name), judged(k.tlsHF.name)
	sp := spreadsOf(r.Samples)
	r.RSS, r.Goroutines, r.FDs = sp.RSS, sp.Goroutines, sp.FDs
	r.TLSHoldfast = spreadsOf(r.TLSSamples)
	for _, h := range []*soakHoldfast{k.plain, k.tlsHF} {
		m, err := k.scrape(ctx, h.metrics)
		if err != nil {
			k.failures = append(k.failures, fmt.Sprintf("%s metrics: %v", h.name, err))
		}
		r.ReloadsCounted[h.name] = [2]int64{int64(m[`holdfast_config_reloads_total{result="success"}`]), int64(m[`holdfast_config_reloads_total{result="failure"}`])}
		r.LogLines[h.name] = logLines(h.c.Log)
	}
	r.Problems = append(append([]string{}, r.problems()...), k.failures...)
	return r
}

// logLines counts the lines of a holdfast log (slog text format) at info
// level and above by level and message.
func logLines(path string) map[string]int {
	out := map[string]int{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		level := ""
		for _, l := range []string{"level=INFO", "level=WARN", "level=ERROR"} {
			if strings.Contains(line, l) {
				level = strings.TrimPrefix(l, "level=")
			}
		}
		if level == "" {
			continue
		}
		msg := line
		if _, rest, ok := strings.Cut(line, "msg="); ok {
			if strings.HasPrefix(rest, `"`) {
				if q, err := strconv.QuotedPrefix(rest); err == nil {
					msg, _ = strconv.Unquote(q)
				}
			} else {
				msg, _, _ = strings.Cut(rest, " ")
			}
		}
		out[level+" "+msg]++
	}
	return out
}

// print writes the report's summary.
func (k *soak) print(w io.Writer, r *soakReport) {
	fmt.Fprintf(w, "\nsoak: %.0f s, %d long sessions + %.0f handshakes/s, gateway restarted %d times, %d reloads (%d invalid), %d certificate rotations (%d served)\n",
		r.DurationS, k.s.sessions, k.s.rate, r.GatewayRestarts, r.Reloads, r.ReloadsInvalid, r.Rotations, r.RotationsServed)
	fmt.Fprintf(w, "messages: %d sent, %d received; lost %d, duplicated %d, reordered %d, corrupted %d; %d unanswered at a documented close\n",
		r.MessagesSent, r.MessagesReceived, r.Lost, r.Duplicated, r.Reordered, r.Corrupted, r.Unanswered)
	fmt.Fprintf(w, "handshakes: %d begun, %d hello-ok; in startup windows %d begun, %d hello-ok; by phase %v\n",
		r.Handshakes, r.HandshakesOK, r.WindowHandshakes, r.WindowHelloOK, r.HandshakesByPhase)
	codes := slices.Sorted(maps.Keys(r.CloseCodes))
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d: %d", c, r.CloseCodes[c]))
	}
	fmt.Fprintf(w, "close codes: %s; HTTP refusals: %v\n", strings.Join(parts, ", "), r.HTTPStatuses)
	for _, p := range []struct {
		name string
		s    procSpreads
	}{{"holdfast", procSpreads{r.RSS, r.Goroutines, r.FDs}}, {"holdfast (TLS)", r.TLSHoldfast}} {
		fmt.Fprintf(w, "%s after the %.0f s warm-up: rss %s, goroutines %s, fds %s\n", p.name, r.WarmupS,
			spreadText(p.s.RSS), spreadText(p.s.Goroutines), spreadText(p.s.FDs))
	}
	fmt.Fprintf(w, "idle before/after the load: %v\n", r.Idle)
}

// spreadText formats a spread with the growth from first to last.
func spreadText(s spread) string {
	return fmt.Sprintf("first %d last %d max %d (%+.1f%%)", s.First, s.Last, s.Max, 100*s.growth())
}
