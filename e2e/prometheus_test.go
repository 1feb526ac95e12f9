//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
)

// The alert the startup window must raise, and its for: (checked against
// the rule file, so the test follows the rule).
const notStartedAlert = "HoldfastGatewayNotStarted"

// TestPrometheus is the monitoring proof: a real Prometheus (Debian's
// binary) scrapes holdfast every second, with holdfast's rule file loaded,
// while clients without retry logic keep connecting through holdfast to a
// real gateway that the delay plugin keeps from starting for longer than
// the "gateway not started" alert's for:. Then, through Prometheus' HTTP
// API: the alert was pending, then firing, during the window and resolved
// after it; every rule is healthy and every alert expression evaluates;
// every query of the Grafana dashboard parses and returns data.
func TestPrometheus(t *testing.T) {
	foreground(t)
	requireInstalled(t, currentVersion)
	if bypass() {
		t.Skip("HOLDFAST_E2E_BYPASS=1: no holdfast to scrape")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not installed (Debian package prometheus; scripts/test.sh installs it): %v", err)
	}
	rules := readRuleFile(t)
	forNotStarted := rules.alert(t, notStartedAlert).forDuration(t)

	ctx := context.Background()
	// The plugin's own cap is far beyond the hold: the test releases the
	// window once the alert has fired.
	gw := newGateway(t, gatewayOptions{Version: currentVersion, DelayMs: 240000})
	hf := startHoldfast(t, gw, holdfastOptions{})
	prom := startPrometheus(t, promBin, hf.MPort)
	testStart := time.Now()

	// Clients with no retry logic of their own keep connecting until one
	// session each has been spliced: while the gateway is down or starting
	// each waits in holdfast for its budget, then gets 503 or the
	// gateway's UNAVAILABLE and tries again.
	// Its gateway's start is heavy, and the test steps back once the
	// port is open: the next test may start its gateway meanwhile.
	theMachine.startBegins(topLevel(t))
	gw.Spawn(t)
	var (
		wg       sync.WaitGroup
		attempts atomic.Int64
		failed   atomic.Int64
	)
	released := make(chan struct{})
	stopLoops := make(chan struct{})
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { close(stopLoops) }) }
	t.Cleanup(func() { stop(); wg.Wait() })
	identity, err := deviceauth.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	type session struct {
		name      string
		helloAt   time.Time
		healthErr error
		statusErr error
	}
	sessions := make([]session, 2)
	for i, dev := range []*deviceauth.Identity{nil, identity} {
		sessions[i].name = "token-only"
		if dev != nil {
			sessions[i].name = "device-signed"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopLoops:
					return
				default:
				}
				afterWindow := false
				select {
				case <-released:
					afterWindow = true
				default:
				}
				attempts.Add(1)
				cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
				c, res, err := testclient.Connect(cctx, testclient.Options{URL: hf.URL(), Token: gw.Token, Device: dev, Timeout: 30 * time.Second})
				if err == nil && res.HelloOK {
					s := &sessions[i]
					s.helloAt = time.Now()
					_, s.healthErr = c.Call(cctx, "health", nil)
					_, s.statusErr = c.Call(cctx, "status", nil)
					// Keep the session open for a few scrapes.
					select {
					case <-stopLoops:
					case <-time.After(3 * time.Second):
					}
					c.Close()
					cancel()
					return
				}
				failed.Add(1)
				cancel()
				if afterWindow {
					// Once the gateway has started a failure is final.
					t.Errorf("%s client after the window: %v (%s)", sessions[i].name, err, summarize(res))
					return
				}
				select {
				case <-stopLoops:
					return
				case <-time.After(250 * time.Millisecond):
				}
			}
		}()
	}

	// Poll the alert from the spawn on: while the port is still closed,
	// holdfast sees the gateway down, which counts as not started too.
	portCh := make(chan error, 1)
	go func() { portCh <- gw.waitPort(ctx, 180*time.Second) }()
	var pendingAt, firingAt, portOpen time.Time
	for {
		select {
		case err := <-portCh:
			if err != nil {
				t.Fatalf("gateway %s: %v\n%s", currentVersion, err, gw.LogTail())
			}
			portOpen = time.Now()
			t.Logf("gateway %s: port open after %v", currentVersion, gw.PortOpenAfter.Round(time.Millisecond))
			// The rest is a wait of the alert's for: and more, the
			// gateway held starting, two clients retrying through
			// holdfast and a scrape a second: the next test may start
			// meanwhile.
			background(t)
		default:
		}
		// Hold the window until the alert fires, and at least its for:
		// plus a few evaluations after the port opened.
		if !portOpen.IsZero() && !firingAt.IsZero() && time.Since(portOpen) >= forNotStarted+5*time.Second {
			break
		}
		if time.Since(testStart) > 180*time.Second+forNotStarted {
			t.Fatalf("%s not firing %v after spawn (port open: %v; pending since %v); alerts: %s",
				notStartedAlert, time.Since(testStart).Round(time.Second), !portOpen.IsZero(), pendingAt, prom.alertsText(t))
		}
		switch prom.alertState(t, notStartedAlert) {
		case "pending":
			if pendingAt.IsZero() {
				pendingAt = time.Now()
				t.Logf("%s pending %v after spawn", notStartedAlert, pendingAt.Sub(testStart).Round(time.Millisecond))
			}
		case "firing":
			if firingAt.IsZero() {
				firingAt = time.Now()
				t.Logf("%s firing %v after spawn: %s", notStartedAlert, firingAt.Sub(testStart).Round(time.Millisecond), prom.alertsText(t))
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	windowAlerts := prom.alertsText(t)
	gw.ReleaseWindow(t)
	close(released)
	gw.WaitStarted(t, ctx, 90*time.Second)
	startedAt := time.Now()
	window := startedAt.Sub(portOpen)
	figure(t, "prometheus: gateway %s port open %v after spawn, held starting %v (the alert's for: %v); %s pending after %v, firing after %v (after spawn); %d client attempts, %d failed in the window",
		currentVersion, gw.PortOpenAfter.Round(time.Millisecond), window.Round(time.Millisecond), forNotStarted, notStartedAlert,
		pendingAt.Sub(testStart).Round(time.Millisecond), firingAt.Sub(testStart).Round(time.Millisecond), attempts.Load(), failed.Load())
	t.Logf("alerts during the window: %s", windowAlerts)
	if window <= forNotStarted {
		t.Errorf("window %v not longer than the alert's for: %v", window, forNotStarted)
	}
	if pendingAt.IsZero() {
		t.Errorf("%s never seen pending", notStartedAlert)
	}

	// Every client gets through once the gateway has started.
	loopsDone := make(chan struct{})
	go func() { wg.Wait(); close(loopsDone) }()
	select {
	case <-loopsDone:
	case <-time.After(60 * time.Second):
		t.Fatalf("clients not through 60 s after the gateway started")
	}
	for _, s := range sessions {
		if s.helloAt.IsZero() {
			t.Errorf("%s client never got hello-ok", s.name)
			continue
		}
		figure(t, "prometheus: %s client hello-ok %v after the gateway started", s.name, s.helloAt.Sub(startedAt).Round(time.Millisecond))
		if s.healthErr != nil || s.statusErr != nil {
			t.Errorf("%s session: health %v, status %v", s.name, s.healthErr, s.statusErr)
		}
	}
	// A passthrough request, for its panel.
	if r, err := httpGet(ctx, hf.HTTPBase()+"/healthz", nil); err != nil || r.Status != 200 {
		t.Errorf("GET /healthz through holdfast: %v %d", err, r.Status)
	}

	// Resolved after the window.
	var resolvedAt time.Time
	if !waitUntil(30*time.Second, func() bool { return prom.alertState(t, notStartedAlert) == "" }) {
		t.Errorf("%s still %s 30 s after the gateway started: %s", notStartedAlert, prom.alertState(t, notStartedAlert), prom.alertsText(t))
	} else {
		resolvedAt = time.Now()
		figure(t, "prometheus: %s resolved %v after the gateway started", notStartedAlert, resolvedAt.Sub(startedAt).Round(time.Millisecond))
	}
	// Two more scrapes, so that every series has its last values.
	time.Sleep(2500 * time.Millisecond)
	end := time.Now()

	// The alert's own history, as Prometheus recorded it (ALERTS).
	hist := prom.queryRange(t, `ALERTS{alertname="`+notStartedAlert+`"}`, testStart, end)
	states := map[string][2]time.Time{}
	for _, s := range hist {
		first, last := s.span()
		states[s.Metric["alertstate"]] = [2]time.Time{first, last}
	}
	for _, st := range []string{"pending", "firing"} {
		sp, ok := states[st]
		if !ok {
			t.Errorf("ALERTS has no %s sample for %s", st, notStartedAlert)
			continue
		}
		figure(t, "prometheus: ALERTS{alertname=%q,alertstate=%q} from %s to %s", notStartedAlert, st, sp[0].Format("15:04:05"), sp[1].Format("15:04:05"))
		if sp[1].After(startedAt.Add(15 * time.Second)) {
			t.Errorf("%s %s until %v, %v after the gateway started", notStartedAlert, st, sp[1].Format("15:04:05"), sp[1].Sub(startedAt))
		}
	}
	if f, ok := states["firing"]; ok && f[1].Sub(states["pending"][0]) < forNotStarted {
		t.Errorf("pending to last firing %v; shorter than for: %v", f[1].Sub(states["pending"][0]), forNotStarted)
	}

	// Every rule loaded and evaluated without error.
	for _, r := range prom.rules(t) {
		if r.Health != "ok" || r.LastError != "" {
			t.Errorf("rule %s%s: health %q, last error %q", r.Name, r.Query, r.Health, r.LastError)
		}
	}
	// Every alert expression evaluates, in the window and after it.
	mid := firingAt
	for _, a := range rules.alerts() {
		for _, at := range []time.Time{mid, end} {
			res := prom.query(t, a.Expr, at)
			t.Logf("alert %s at %s: %d series", a.Alert, at.Format("15:04:05"), len(res))
		}
	}
	// The "not started" expression held in the window and not after it.
	if n := len(prom.query(t, rules.alert(t, notStartedAlert).Expr, mid)); n != 1 {
		t.Errorf("%s expression: %d series in the window; want 1", notStartedAlert, n)
	}
	if n := len(prom.query(t, rules.alert(t, notStartedAlert).Expr, end)); n != 0 {
		t.Errorf("%s expression: %d series after the window; want 0", notStartedAlert, n)
	}

	// Every dashboard query parses and returns data over the run.
	for _, p := range readDashboardPanels(t) {
		for _, expr := range p.exprs {
			filled := fillDashboardVariables(expr, "holdfast", ".+", "5s")
			res := prom.queryRange(t, filled, testStart, end)
			finite, last := 0, math.NaN()
			for _, s := range res {
				for _, v := range s.Values {
					if f := v.value(); !math.IsNaN(f) && !math.IsInf(f, 0) {
						finite++
						last = f
					}
				}
			}
			t.Logf("panel %q: %d series, %d finite samples, last %g: %s", p.title, len(res), finite, last, filled)
			if finite == 0 {
				t.Errorf("panel %q: query returned no data: %s", p.title, filled)
			}
		}
	}
	// What the panels show holds figures, not just series.
	for _, c := range []struct {
		expr string
		at   time.Time
		want string
	}{
		{`sum(increase(holdfast_handshakes_total{result="unavailable"}[10m]))`, end, "> 0: clients ran out of budget in the window"},
		{`sum(holdfast_handshakes_total{result="ok"})`, end, "≥ 2: both clients through"},
		{`max_over_time(holdfast_gateway_state{state="starting"}[10m])`, end, "1: starting seen"},
		{`holdfast_gateway_state{state="started"}`, end, "1 at the end"},
		{`sum(holdfast_spliced_messages_total)`, end, "> 0: messages relayed"},
		{`holdfast_build_info`, end, "1"},
	} {
		res := prom.query(t, c.expr, c.at)
		v := math.NaN()
		if len(res) > 0 {
			v = res[0].Value.value()
		}
		figure(t, "prometheus: %s = %g (want %s)", c.expr, v, c.want)
		ok := false
		switch {
		case strings.HasPrefix(c.want, "> 0"):
			ok = v > 0
		case strings.HasPrefix(c.want, "≥ 2"):
			ok = v >= 2
		default:
			ok = v == 1
		}
		if !ok {
			t.Errorf("%s = %g; want %s", c.expr, v, c.want)
		}
	}

	// The access log: one line per client connection, none with the token.
	var accessLines int
	if !waitUntil(10*time.Second, func() bool {
		accessLines = strings.Count(hf.LogTail(64<<20), "msg=access ")
		return int64(accessLines) >= attempts.Load()
	}) {
		t.Errorf("%d access lines for %d client connections", accessLines, attempts.Load())
	}
	figure(t, "prometheus: %d access lines for %d client connections", accessLines, attempts.Load())
	if strings.Contains(hf.LogTail(64<<20), gw.Token) {
		t.Errorf("holdfast's log carries the gateway token")
	}

	// promtool check metrics on holdfast's scrape in front of the real gateway.
	if pt, err := exec.LookPath("promtool"); err != nil {
		t.Errorf("promtool not installed: %v", err)
	} else {
		res, err := httpGet(ctx, fmt.Sprintf("http://127.0.0.1:%d/metrics", hf.MPort), nil)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(pt, "check", "metrics")
		cmd.Stdin = strings.NewReader(res.Body)
		if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}

	prom.screenshot(t, testStart, end)
}

// ruleSet is holdfast's Prometheus rule file.
type ruleSet struct {
	Groups []struct {
		Name  string      `yaml:"name"`
		Rules []alertRule `yaml:"rules"`
	} `yaml:"groups"`
}

type alertRule struct {
	Alert  string `yaml:"alert"`
	Record string `yaml:"record"`
	Expr   string `yaml:"expr"`
	For    string `yaml:"for"`
}

func rulesPath(t *testing.T) string {
	p, err := filepath.Abs(filepath.Join("..", "deploy", "prometheus", "holdfast.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readRuleFile(t *testing.T) ruleSet {
	t.Helper()
	b, err := os.ReadFile(rulesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	var rs ruleSet
	if err := yaml.Unmarshal(b, &rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

func (rs ruleSet) alerts() []alertRule {
	var out []alertRule
	for _, g := range rs.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

func (rs ruleSet) alert(t *testing.T, name string) alertRule {
	t.Helper()
	for _, a := range rs.alerts() {
		if a.Alert == name {
			return a
		}
	}
	t.Fatalf("no alert %s in the rule file", name)
	return alertRule{}
}

func (a alertRule) forDuration(t *testing.T) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(a.For)
	if err != nil || d <= 0 {
		t.Fatalf("alert %s: for: %q", a.Alert, a.For)
	}
	return d
}

type dashboardPanel struct {
	title string
	exprs []string
}

// readDashboardPanels returns the queries of deploy/grafana/holdfast.json.
func readDashboardPanels(t *testing.T) []dashboardPanel {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "holdfast.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var out []dashboardPanel
	for _, p := range d.Panels {
		dp := dashboardPanel{title: p.Title}
		for _, tg := range p.Targets {
			dp.exprs = append(dp.exprs, tg.Expr)
		}
		if len(dp.exprs) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		out = append(out, dp)
	}
	if len(out) == 0 {
		t.Fatal("dashboard has no panels")
	}
	return out
}

// fillDashboardVariables does what Grafana does to a panel query for one
// job, an instance regular expression and a rate window (the same as
// deploy/monitoring's FillVariables).
func fillDashboardVariables(expr, job, instance, rateWindow string) string {
	return strings.NewReplacer("$job", job, "$instance", instance, "$__rate_interval", rateWindow).Replace(expr)
}

// prometheus is one Prometheus server on 127.0.0.1 with its own data
// directory, scraping holdfast every second and evaluating holdfast's rules
// every second.
type prometheus struct {
	base    string
	logPath string
}

func startPrometheus(t *testing.T, bin string, metricsPort int) *prometheus {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: holdfast
    static_configs:
      - targets: ["127.0.0.1:%d"]
`, rulesPath(t), metricsPort)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{base: fmt.Sprintf("http://127.0.0.1:%d", port), logPath: filepath.Join(dir, "prometheus.log")}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+fmt.Sprintf("127.0.0.1:%d", port),
		"--log.level=warn")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("--- prometheus log (tail) ---\n%s", tail(string(b), 4000))
		}
	})
	if !waitUntil(30*time.Second, func() bool {
		r, err := httpGet(context.Background(), p.base+"/-/ready", nil)
		return err == nil && r.Status == 200
	}) {
		b, _ := os.ReadFile(p.logPath)
		t.Fatalf("prometheus not ready after 30 s\n%s", tail(string(b), 4000))
	}
	// The scrape reaches holdfast.
	if !waitUntil(20*time.Second, func() bool {
		res := p.query(t, `up{job="holdfast"}`, time.Now())
		return len(res) == 1 && res[0].Value.value() == 1
	}) {
		t.Fatalf("prometheus does not scrape holdfast: %s", p.get(t, "/api/v1/targets"))
	}
	t.Logf("prometheus %s scraping holdfast 127.0.0.1:%d every 1 s, rules %s", p.base, metricsPort, rulesPath(t))
	return p
}

// sample is a [time, "value"] pair of the HTTP API.
type sample [2]any

func (s sample) value() float64 {
	str, _ := s[1].(string)
	f, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

func (s sample) time() time.Time {
	f, _ := s[0].(float64)
	return time.Unix(0, int64(f*1e9))
}

type series struct {
	Metric map[string]string `json:"metric"`
	Value  sample            `json:"value"`
	Values []sample          `json:"values"`
}

// span returns the times of a range series' first and last samples.
func (s series) span() (first, last time.Time) {
	if len(s.Values) == 0 {
		return
	}
	return s.Values[0].time(), s.Values[len(s.Values)-1].time()
}

// get fetches an API path and returns its data, failing the test on an
// error status.
func (p *prometheus) get(t *testing.T, pathQuery string) json.RawMessage {
	t.Helper()
	res, err := httpGet(context.Background(), p.base+pathQuery, nil)
	if err != nil {
		t.Fatalf("prometheus %s: %v", pathQuery, err)
	}
	var r struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal([]byte(res.Body), &r); err != nil || r.Status != "success" {
		q, _ := url.QueryUnescape(pathQuery)
		t.Errorf("prometheus %s: HTTP %d, %s: %s (%v)", q, res.Status, r.ErrorType, r.Error, err)
		return nil
	}
	return r.Data
}

func (p *prometheus) query(t *testing.T, expr string, at time.Time) []series {
	t.Helper()
	data := p.get(t, "/api/v1/query?"+url.Values{"query": {expr}, "time": {unixString(at)}}.Encode())
	return decodeSeries(t, data)
}

func (p *prometheus) queryRange(t *testing.T, expr string, start, end time.Time) []series {
	t.Helper()
	data := p.get(t, "/api/v1/query_range?"+url.Values{
		"query": {expr}, "start": {unixString(start)}, "end": {unixString(end)}, "step": {"1"},
	}.Encode())
	return decodeSeries(t, data)
}

func decodeSeries(t *testing.T, data json.RawMessage) []series {
	t.Helper()
	if data == nil {
		return nil
	}
	var d struct {
		ResultType string   `json:"resultType"`
		Result     []series `json:"result"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Errorf("decode query result: %v", err)
	}
	return d.Result
}

func unixString(at time.Time) string {
	return strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
	Value  string            `json:"value"`
}

func (p *prometheus) alerts(t *testing.T) []promAlert {
	t.Helper()
	var d struct {
		Alerts []promAlert `json:"alerts"`
	}
	if data := p.get(t, "/api/v1/alerts"); data != nil {
		_ = json.Unmarshal(data, &d)
	}
	return d.Alerts
}

// alertState is "pending", "firing" or "" (inactive) for alertname.
func (p *prometheus) alertState(t *testing.T, name string) string {
	t.Helper()
	state := ""
	for _, a := range p.alerts(t) {
		if a.Labels["alertname"] == name && (state == "" || a.State == "firing") {
			state = a.State
		}
	}
	return state
}

func (p *prometheus) alertsText(t *testing.T) string {
	t.Helper()
	var parts []string
	for _, a := range p.alerts(t) {
		parts = append(parts, fmt.Sprintf("%s %s (value %s)", a.Labels["alertname"], a.State, a.Value))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

type promRule struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

func (p *prometheus) rules(t *testing.T) []promRule {
	t.Helper()
	var d struct {
		Groups []struct {
			Rules []promRule `json:"rules"`
		} `json:"groups"`
	}
	if data := p.get(t, "/api/v1/rules"); data != nil {
		_ = json.Unmarshal(data, &d)
	}
	var out []promRule
	for _, g := range d.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Error("prometheus loaded no rules")
	}
	return out
}

// screenshot renders Prometheus' graph page for the run in headless
// Chromium into $HOLDFAST_E2E_SCREENSHOTS/prometheus-window.png, when that
// variable names a directory.
func (p *prometheus) screenshot(t *testing.T, start, end time.Time) {
	t.Helper()
	dir := os.Getenv("HOLDFAST_E2E_SCREENSHOTS")
	if dir == "" {
		t.Log("screenshot not taken: HOLDFAST_E2E_SCREENSHOTS is not set")
		return
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Errorf("HOLDFAST_E2E_SCREENSHOTS set but chromium not installed: %v", err)
		return
	}
	// The graph page takes its end time to the minute: end at the next
	// full minute, the range from the start of the run.
	endAt := end.UTC().Truncate(time.Minute).Add(time.Minute)
	rangeS := int(endAt.Sub(start).Seconds()) + 5
	v := url.Values{}
	for i, expr := range []string{
		// The dashboard's gateway state: 1 down, 2 starting, 3 started.
		`max(holdfast_gateway_state{state="down"} or 2 * holdfast_gateway_state{state="starting"} or 3 * holdfast_gateway_state{state="started"})`,
		// The alert: 1 while pending, 2 while firing.
		`ALERTS{alertname="` + notStartedAlert + `",alertstate="pending"} or 2 * ALERTS{alertname="` + notStartedAlert + `",alertstate="firing"}`,
		`sum by (result) (increase(holdfast_handshakes_total[10s]))`,
	} {
		g := fmt.Sprintf("g%d.", i)
		v.Set(g+"expr", expr)
		v.Set(g+"tab", "0")
		v.Set(g+"range_input", fmt.Sprintf("%ds", rangeS))
		v.Set(g+"end_input", endAt.Format("2006-01-02 15:04:05"))
		v.Set(g+"moment_input", endAt.Format("2006-01-02 15:04:05"))
		v.Set(g+"stacked", "0")
	}
	out := filepath.Join(dir, "prometheus-window.png")
	profile := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
		"--user-data-dir="+profile, "--hide-scrollbars", "--window-size=1400,2300",
		"--virtual-time-budget=20000", "--screenshot="+out, p.base+"/graph?"+v.Encode())
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("chromium screenshot: %v\n%s", err, tail(string(b), 2000))
		return
	}
	t.Logf("screenshot of the Prometheus graph page for the window: %s", out)
}
