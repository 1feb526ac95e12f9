package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testcert"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

const testToken = "serve-test-token"

// running is holdfast's serve on 127.0.0.1 for one test.
type running struct {
	t      *testing.T
	ls     listeners
	stop   chan struct{}
	reload chan struct{}
	done   chan error
	logs   *syncWriter
}

// startServe runs serve with cfg (listeners on random ports); path is the
// file a reload reads ("" for none). The test's end stops it.
func startServe(t *testing.T, cfg Config, path string) *running {
	t.Helper()
	return startServeWith(t, cfg, controls{configPath: path})
}

// startServeWith is startServe with ctl's hooks (its channels are the
// running's).
func startServeWith(t *testing.T, cfg Config, ctl controls) *running {
	t.Helper()
	r := &running{t: t, stop: make(chan struct{}, 2), reload: make(chan struct{}, 1),
		done: make(chan error, 1), logs: &syncWriter{}}
	ready := make(chan listeners, 1)
	go func() {
		ctl.stop, ctl.reload, ctl.ready = r.stop, r.reload, ready
		r.done <- serve(cfg, r.logs, ctl)
	}()
	select {
	case r.ls = <-ready:
	case err := <-r.done:
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() {
		select {
		case r.stop <- struct{}{}:
		default:
		}
		select {
		case r.stop <- struct{}{}: // and at once
		default:
		}
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
		if t.Failed() {
			t.Logf("holdfast log:\n%s", r.logs.String())
		}
	})
	return r
}

func (r *running) metricsURL() string { return "http://" + r.ls.metrics.String() }

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, what, cond)
}

// testConfig is the default configuration on random ports in front of gw,
// with a quick drain.
func testConfig(gw *fakegw.Gateway) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Upstream.URL = gw.URL()
	cfg.Readiness.PollInterval = 50 * time.Millisecond
	cfg.Shutdown.DrainDelay = 0
	cfg.Shutdown.Drain = 0
	return cfg
}

func startGW(t *testing.T, cfg fakegw.Config) *fakegw.Gateway {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	if cfg.Addr == "" {
		cfg.Addr = testkit.FreeAddr(t) // see testkit.FreeAddr
	}
	gw, err := fakegw.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	return gw
}

// echo sends msg on an echoing session and reads it back.
func echo(t *testing.T, c *testclient.Conn, msg string) {
	t.Helper()
	ws := c.WS()
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("session write: %v", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil || string(data) != msg {
		t.Fatalf("session echo = %q, %v; want %q", data, err, msg)
	}
}

// certPair writes a self-signed certificate for 127.0.0.1 and its key into
// dir (replacing the files by rename, as rotators do) and returns the
// certificate.
func certPair(t *testing.T, dir, name string) *x509.Certificate {
	t.Helper()
	p, err := testcert.New(name)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, filepath.Join(dir, "tls.key"), p.KeyPEM)
	writeAtomic(t, filepath.Join(dir, "tls.crt"), p.CertPEM)
	return p.Leaf
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// servedCert makes a TLS handshake with holdfast and returns the
// certificate it presented.
func servedCert(t *testing.T, addr string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake with holdfast: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// Clients reach holdfast over wss:// with the configured pair; a rotation of
// the files is picked up by new connections while an open session goes on;
// a bad pair is refused with a clear log line and the one in use kept.
func TestTLSListenerRotation(t *testing.T) {
	t.Parallel()
	gw := startGW(t, fakegw.Config{Echo: true})
	dir := t.TempDir()
	certA := certPair(t, dir, "holdfast-a")
	cfg := testConfig(gw)
	cfg.TLS = ListenTLSConfig{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	cfg.Log.Level = "debug"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := startServe(t, cfg, "")
	addr := r.ls.proxy.String()
	roots := x509.NewCertPool()
	roots.AddCert(certA)

	// TLS 1.2 at least; a refused handshake is no warning (scanners).
	if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Error("a TLS 1.1 handshake succeeded; want TLS 1.2 at least")
	}
	waitFor(t, 5*time.Second, "the refused handshake's debug line", func() bool {
		return strings.Contains(r.logs.String(), `level=DEBUG msg="http: TLS handshake error`)
	})
	if strings.Contains(r.logs.String(), "level=WARN") {
		t.Errorf("warnings logged:\n%s", grep(r.logs.String(), "level=WARN"))
	}
	// A plain-text upgrade is not served.
	if _, res, err := testclient.Connect(context.Background(), testclient.Options{URL: "ws://" + addr, Token: testToken, Timeout: 3 * time.Second}); err == nil || res.HelloOK {
		t.Error("a ws:// client got through a TLS listener")
	}

	opts := testclient.Options{URL: "wss://" + addr, Token: testToken, TLSConfig: &tls.Config{RootCAs: roots}}
	session, res, err := testclient.Connect(context.Background(), opts)
	if err != nil || !res.HelloOK {
		t.Fatalf("wss client: %v %+v", err, res)
	}
	defer session.Close()
	echo(t, session, "before rotation")

	// Rotation: a new pair replaces the files.
	certB := certPair(t, dir, "holdfast-b")
	roots.AddCert(certB)
	start := time.Now()
	waitFor(t, 10*time.Second, "the rotated certificate", func() bool {
		return servedCert(t, addr, roots).SerialNumber.Cmp(certB.SerialNumber) == 0
	})
	t.Logf("rotated certificate served %v after the files changed", time.Since(start).Round(time.Millisecond))
	echo(t, session, "after rotation")
	c2, res, err := testclient.Connect(context.Background(), opts)
	if err != nil || !res.HelloOK {
		t.Fatalf("wss client after rotation: %v %+v", err, res)
	}
	c2.Close()
	if !strings.Contains(r.logs.String(), `msg="tls: certificate reloaded"`) {
		t.Error("no log line for the reload")
	}

	// A bad pair: a new certificate whose key is not in the key file.
	keep, _ := os.ReadFile(filepath.Join(dir, "tls.key"))
	certPair(t, dir, "holdfast-c")
	writeAtomic(t, filepath.Join(dir, "tls.key"), keep)
	waitFor(t, 10*time.Second, "the bad pair's log line", func() bool {
		_ = servedCert(t, addr, roots)
		return strings.Contains(r.logs.String(), "tls: new certificate not loaded; keeping the certificate in use")
	})
	if got := servedCert(t, addr, roots); got.SerialNumber.Cmp(certB.SerialNumber) != 0 {
		t.Errorf("after a bad pair holdfast serves %q; want the one in use (holdfast-b)", got.Subject.CommonName)
	}
	if !strings.Contains(r.logs.String(), "private key does not match public key") {
		t.Errorf("the bad pair's error is not logged clearly:\n%s", grep(r.logs.String(), "tls:"))
	}
	echo(t, session, "after a bad pair")
}

// -check-config (and startup) refuse a bad pair, and a CA file without
// certificates, naming the key.
func TestCheckConfigRefusesBadFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("no certificate here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "holdfast.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"upstream:\n  url: wss://127.0.0.1:1\n  tls:\n    ca_file: " + empty + "\n", "upstream.tls.ca_file: no PEM certificate in"},
		{"tls:\n  cert_file: " + empty + "\n  key_file: " + empty + "\n", "tls: cert_file"},
		{"tls:\n  cert_file: " + empty + "\n", "tls: cert_file and key_file must be set together"},
		{"shutdown:\n  grace: 5s\n", "shutdown.grace: must be at least"},
	} {
		write(tc.yaml)
		var out, errOut strings.Builder
		err := run([]string{"-check-config", "-config", cfgPath}, &out, &errOut, controls{})
		if err == nil || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("-check-config of %q = %v\n%s\nwant a problem %q", tc.yaml, err, errOut.String(), tc.want)
		}
		// Startup refuses it the same way.
		if err := run([]string{"-config", cfgPath}, &out, &errOut, controls{}); err == nil || !strings.Contains(err.Error(), strings.SplitN(tc.want, ":", 2)[0]) {
			t.Errorf("startup with %q = %v; want it refused", tc.yaml, err)
		}
	}
}

// SIGHUP: a valid file applies to new connections (here a new upstream, a
// new log level) while a spliced session stays on its gateway; an invalid
// one is refused with every problem logged and the configuration in force
// kept; both are counted.
func TestReload(t *testing.T) {
	t.Parallel()
	gw1 := startGW(t, fakegw.Config{Echo: true})
	gw2 := startGW(t, fakegw.Config{Echo: true})
	dir := t.TempDir()
	path := filepath.Join(dir, "holdfast.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := "listen: 127.0.0.1:0\nmetrics:\n  listen: 127.0.0.1:0\nshutdown:\n  drain_delay: 0s\n  drain: 0s\n"
	write(base + "upstream:\n  url: " + gw1.URL() + "\n")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	r := startServe(t, cfg, path)
	url := "ws://" + r.ls.proxy.String()
	opts := testclient.Options{URL: url, Token: testToken}

	s1, res, err := testclient.Connect(context.Background(), opts)
	if err != nil || !res.HelloOK {
		t.Fatalf("client: %v %+v", err, res)
	}
	defer s1.Close()
	echo(t, s1, "on gateway 1")
	if n := gw1.Stats().Upgrades; n != 1 {
		t.Fatalf("gateway 1 saw %d upgrades; want 1", n)
	}

	reloads := func(result string) string {
		return `holdfast_config_reloads_total{result="` + result + `"} `
	}
	// Valid: a new upstream, debug logs, a different budget; listen
	// changed too, which needs a restart.
	write("listen: 127.0.0.1:1\nmetrics:\n  listen: 127.0.0.1:0\nupstream:\n  url: " + gw2.URL() +
		"\nhandshake:\n  budget: 9s\nlog:\n  level: debug\nshutdown:\n  drain_delay: 0s\n  drain: 0s\n")
	r.reload <- struct{}{}
	// The reload counts itself, then logs what changed: wait for both
	// (reading the log as soon as the counter moved missed its lines).
	waitFor(t, 10*time.Second, "the reload and its log line", func() bool {
		return strings.Contains(get(t, r.metricsURL()+"/metrics"), reloads("success")+"1") &&
			strings.Contains(r.logs.String(), "msg=\"config reloaded;")
	})
	logs := r.logs.String()
	if !strings.Contains(logs, `msg="config reloaded; new connections use it, spliced sessions keep theirs"`) ||
		!strings.Contains(logs, "changed=upstream.url,handshake.budget,log.level") {
		t.Errorf("reload log line missing or incomplete:\n%s", grep(logs, "config"))
	}
	if !strings.Contains(logs, "keys=listen") {
		t.Errorf("no warning that listen needs a restart:\n%s", grep(logs, "config"))
	}
	if body := get(t, r.metricsURL()+"/metrics"); !strings.Contains(body, `holdfast_gateway_state{state="unknown"} 1`) {
		t.Errorf("after a reload to a new gateway its state must start unknown:\n%s", grep(body, "gateway_state"))
	}
	s2, res, err := testclient.Connect(context.Background(), opts)
	if err != nil || !res.HelloOK {
		t.Fatalf("client after reload (holdfast must still listen where it did): %v %+v", err, res)
	}
	defer s2.Close()
	echo(t, s2, "on gateway 2")
	if n := gw2.Stats().Upgrades; n != 1 {
		t.Errorf("gateway 2 saw %d upgrades; want 1 (the new connection)", n)
	}
	if n := gw1.Stats().Upgrades; n != 1 {
		t.Errorf("gateway 1 saw %d upgrades; want still 1", n)
	}
	echo(t, s1, "still on gateway 1") // the spliced session is untouched
	if !strings.Contains(r.logs.String(), "level=DEBUG") {
		t.Error("log.level debug not applied")
	}

	// Invalid: two problems, both logged; nothing changes.
	write(base + "upstream:\n  url: http://nowhere\nhandshake:\n  budget: 20s\n")
	r.reload <- struct{}{}
	waitFor(t, 10*time.Second, "the refused reload", func() bool {
		return strings.Contains(get(t, r.metricsURL()+"/metrics"), reloads("failure")+"1")
	})
	logs = r.logs.String()
	for _, want := range []string{
		`problem="upstream.url: must be a ws:// or wss:// URL with a host`,
		`problem="handshake.budget: must be shorter than the clients' 15s connect timeout`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("refused reload does not log %q:\n%s", want, grep(logs, "reload"))
		}
	}
	s3, res, err := testclient.Connect(context.Background(), opts)
	if err != nil || !res.HelloOK {
		t.Fatalf("client after a refused reload: %v %+v", err, res)
	}
	s3.Close()
	if n := gw2.Stats().Upgrades; n != 2 {
		t.Errorf("gateway 2 saw %d upgrades; want 2 (the configuration in force kept)", n)
	}
	echo(t, s1, "gateway 1 after a refused reload")
	echo(t, s2, "gateway 2 after a refused reload")
	if body := get(t, r.metricsURL()+"/metrics"); !strings.Contains(body, reloads("success")+"1") {
		t.Errorf("reload counters:\n%s", grep(body, "config_reloads"))
	}
}

// closeOf reads ws until it ends and returns the close it saw.
func closeOf(ws *websocket.Conn, d time.Duration) error {
	_ = ws.SetReadDeadline(time.Now().Add(d))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return err
		}
	}
}

func isClose(err error, code int) bool {
	var ce *websocket.CloseError
	return errors.As(err, &ce) && ce.Code == code
}

// SIGTERM (the first stop): /readyz answers 503 at once; upgrades are still
// served for shutdown.drain_delay, then refused; a handshake in flight (a
// device client waiting through the gateway's startup window) finishes with
// hello-ok within its budget, and its session is then closed with 1012;
// serve returns nil.
func TestStopDrains(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	gw := startGW(t, fakegw.Config{Echo: true, StartupWindow: 4 * time.Second})
	cfg := testConfig(gw)
	cfg.Shutdown.DrainDelay = 2 * time.Second
	cfg.Shutdown.Drain = time.Second
	r := startServe(t, cfg, "")
	url := "ws://" + r.ls.proxy.String()
	if got := httpStatus(t, r.metricsURL()+"/readyz"); got != 200 {
		t.Fatalf("/readyz = %d before the stop; want 200", got)
	}

	// A device connect, held until the gateway has started.
	dev := newDevice(t)
	type outcome struct {
		c   *testclient.Conn
		res testclient.Result
		err error
	}
	held := make(chan outcome, 1)
	go func() {
		c, res, err := testclient.Connect(context.Background(), testclient.Options{URL: url, Token: testToken, Device: dev})
		held <- outcome{c, res, err}
	}()
	waitFor(t, 10*time.Second, "the device connect to wait for the gateway", func() bool {
		m := get(t, r.metricsURL()+"/metrics")
		return strings.Contains(m, "holdfast_connect_holds_total 1") || strings.Contains(m, "holdfast_upstream_dials_delayed_total 1")
	})

	stopped := time.Now()
	r.stop <- struct{}{}
	waitFor(t, time.Second, "/readyz to answer 503", func() bool {
		return httpStatus(t, r.metricsURL()+"/readyz") == 503
	})
	// Still served during the drain delay: the upgrade gets its challenge.
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("upgrade %v after the stop (drain_delay 2s): %v; want it served", time.Since(stopped), err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, data, err := ws.ReadMessage(); err != nil || !strings.Contains(string(data), "connect.challenge") {
		t.Errorf("upgrade during the drain delay: %q %v; want the challenge", data, err)
	}
	ws.Close()
	// Then refused.
	waitFor(t, 5*time.Second, "upgrades to be refused", func() bool {
		ws, _, err := (&websocket.Dialer{HandshakeTimeout: time.Second}).Dial(url, nil)
		if err == nil {
			ws.Close()
		}
		return err != nil
	})
	if d := time.Since(stopped); d < cfg.Shutdown.DrainDelay {
		t.Errorf("upgrades refused %v after the stop; want after drain_delay (%v)", d, cfg.Shutdown.DrainDelay)
	}

	// The held handshake finishes, then its session is drained.
	var o outcome
	select {
	case o = <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("the held client never got an answer")
	}
	if o.err != nil || !o.res.HelloOK {
		t.Fatalf("held client during the drain: %v %+v; want hello-ok", o.err, o.res)
	}
	if err := closeOf(o.c.WS(), 10*time.Second); !isClose(err, 1012) {
		t.Errorf("held client's session ended with %v; want 1012", err)
	}
	o.c.Close()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		if err != nil {
			t.Errorf("serve = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not return after the drain")
	}
}

// A second stop during the drain stops at once: every session still open
// gets its close frame (1012) before serve returns, none sees 1006.
func TestSecondStopStopsAtOnce(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	const n = 20
	gw := startGW(t, fakegw.Config{Echo: true})
	cfg := testConfig(gw)
	cfg.Shutdown.Drain = 30 * time.Second
	cfg.Shutdown.Grace = time.Minute
	r := startServe(t, cfg, "")
	url := "ws://" + r.ls.proxy.String()
	errs := make(chan error, n)
	for range n {
		c, res, err := testclient.Connect(context.Background(), testclient.Options{URL: url, Token: testToken})
		if err != nil || !res.HelloOK {
			t.Fatalf("client: %v %+v", err, res)
		}
		defer c.Close()
		go func() { errs <- closeOf(c.WS(), 30*time.Second) }()
	}
	r.stop <- struct{}{}
	// The drain closes one session every 1.5 s: wait for the first.
	var first error
	select {
	case first = <-errs:
	case <-time.After(10 * time.Second):
		t.Fatal("no session closed by the drain")
	}
	r.stop <- struct{}{}
	start := time.Now()
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not stop at once on a second stop")
	}
	t.Logf("serve returned %v after the second stop", time.Since(start).Round(time.Millisecond))
	for i := range n {
		err := first
		if i > 0 {
			err = <-errs
		}
		if !isClose(err, 1012) {
			t.Errorf("session %d ended with %v; want 1012 (no 1006)", i, err)
		}
	}
}

func newDevice(t *testing.T) *deviceauth.Identity { return testkit.NewDevice(t) }

// Stopping with 1 000 sessions open, one of whose clients never reads while
// the gateway streams to it, ends within shutdown.grace, and /readyz answers
// all along.
func TestStopBoundedWithAStalledClient(t *testing.T) {
	t.Parallel()
	testkit.Heavy(t) // 1 000 sessions, one stalled
	const n = 1000
	gw := startGW(t, fakegw.Config{Echo: true, MaxPreauthPerIP: -1})
	cfg := testConfig(gw)
	// A short grace needs short handshakes (-check-config's rule).
	cfg.Handshake.Budget = 2 * time.Second
	cfg.Handshake.PreauthTimeout = 3 * time.Second
	cfg.Handshake.HoldMargin = time.Second
	cfg.Handshake.AnswerTimeout = time.Second
	// The stop takes about 3 s under the race detector at load 3 (the
	// stalled client's close frame is bounded at 1 s): 15 s leaves room
	// for the heavy tests running beside, and past the grace every
	// session still open is dropped (1006), which is what it bounds.
	cfg.Shutdown.Grace = 15 * time.Second
	cfg.Log.Level = "warn"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := startServe(t, cfg, "")
	url := "ws://" + r.ls.proxy.String()

	conns := make([]*testclient.Conn, n)
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			c, res, err := testclient.Connect(context.Background(), testclient.Options{URL: url, Token: testToken, Timeout: 30 * time.Second})
			if err != nil || !res.HelloOK {
				errs <- fmt.Errorf("client %d: %v %+v", i, err, res)
				return
			}
			conns[i] = c
		}()
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	closed := make(chan error, n)
	for _, c := range conns[1:] {
		defer c.Close()
		go func() { closed <- closeOf(c.WS(), 30*time.Second) }()
	}
	// The stalled client sends until everything between it and the
	// echoing gateway is full: holdfast's writes to it then block.
	stalled := conns[0].WS()
	defer stalled.Close()
	big := make([]byte, 256<<10)
	for {
		_ = stalled.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		if err := stalled.WriteMessage(websocket.BinaryMessage, big); err != nil {
			break
		}
	}

	start := time.Now()
	r.stop <- struct{}{}
	// Generous for a loaded machine, yet shorter than the grace: a /readyz
	// waiting on the stop would time out.
	ready := &http.Client{Timeout: 10 * time.Second}
	polls := 0
	for done := false; !done; {
		select {
		case err := <-r.done:
			r.done <- err
			done = true
		case <-time.After(100 * time.Millisecond):
			resp, err := ready.Get(r.metricsURL() + "/readyz")
			if err != nil {
				select {
				case err := <-r.done: // the metrics listener closes as serve returns
					r.done <- err
					done = true
					continue
				case <-time.After(time.Second):
				}
				t.Fatalf("/readyz did not answer %v into the stop: %v", time.Since(start), err)
			}
			resp.Body.Close()
			if resp.StatusCode != 503 {
				t.Errorf("/readyz = %d during the stop; want 503", resp.StatusCode)
			}
			polls++
		}
	}
	took := time.Since(start)
	t.Logf("stop with %d sessions, one stalled: serve returned after %v; /readyz answered %d polls meanwhile", n, took.Round(time.Millisecond), polls)
	if took > cfg.Shutdown.Grace+time.Second {
		t.Errorf("serve returned %v after the stop; want within shutdown.grace (%v) and the close-frame bound", took, cfg.Shutdown.Grace)
	}
	if polls == 0 {
		t.Error("/readyz was never polled during the stop")
	}
	bad := 0
	for range n - 1 {
		if err := <-closed; !isClose(err, 1012) {
			if bad++; bad <= 3 {
				t.Errorf("a session ended with %v; want 1012", err)
			}
		}
	}
}
