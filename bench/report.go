package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
)

// pathNames returns the paths in report order. tunnel_tls and
// holdfast_tls are the tunnel and holdfast serving wss:// (TLS terminated
// by the proxy, plain ws to the upstream). baseline is another holdfast
// binary (-baseline-bin), measured only when asked for; baseline_tls is
// that binary serving wss://, measured when -paths names it.
func pathNames() []string {
	return []string{"direct", "tunnel", "koding", "holdfast", "tunnel_tls", "holdfast_tls", "baseline", "baseline_tls"}
}

// report is what a run measured; it is written as JSON with -json.
type report struct {
	Mode   string `json:"mode"` // quick or full
	Rounds int    `json:"rounds"`

	// Throughput is completed 1 KiB echoes per second over 64 sessions;
	// each echo crosses a proxy twice.
	Throughput map[string]float64 `json:"throughput_msgs_per_s"`
	// RTTP50 and RTTP99 are round-trip times at a fixed moderate rate, in
	// microseconds.
	RTTP50 map[string]float64 `json:"rtt_p50_us"`
	RTTP99 map[string]float64 `json:"rtt_p99_us"`
	// Idle is resident-memory growth per idle spliced session of the proxy
	// process; for direct it is the upstream process's growth.
	Idle map[string]float64 `json:"idle_bytes_per_session"`
	// Handshakes is completed challenge/connect/hello-ok handshakes per
	// second, each on a fresh connection.
	Handshakes map[string]float64 `json:"handshakes_per_s"`
	// CPUPerMsg is the proxy process's CPU time (utime+stime, all threads,
	// from /proc/PID/stat) over the throughput rounds divided by the
	// echoes they completed, in microseconds: the CPU cost of one message
	// of throughput_msgs_per_s, which crosses the proxy twice. direct has
	// no proxy process and no entry.
	CPUPerMsg map[string]float64 `json:"cpu_us_per_msg"`
	// CPUPerHandshake is the proxy process's CPU time over the handshake
	// rounds divided by the handshakes they completed, in microseconds.
	CPUPerHandshake map[string]float64 `json:"cpu_us_per_handshake"`
	// FastPath is what holdfast's metrics counted over the handshake
	// rounds, the gateway up throughout: holds, probes, delayed dials and
	// retries should all be 0.
	FastPath *fastPathReport `json:"handshake_fast_path,omitempty"`
	// Window is the startup-window scenario with the loopback crowd: every
	// client at one address, as the gateway sees it.
	Window *windowReport `json:"window"`
	// WindowAttributed is the startup-window scenario with the attributed
	// crowd: every client at its own X-Forwarded-For address, through a
	// trusted load balancer.
	WindowAttributed *windowReport `json:"window_attributed"`
	// AttributedFloor is the attributed crowd released at once against a
	// started gateway through the tunnel: its p99 is window_attributed's
	// floor_ms.
	AttributedFloor *floorReport `json:"window_attributed_floor,omitempty"`
	// WindowBaseline and WindowAttributedBaseline are the same scenarios
	// with the -baseline-bin holdfast, measured in the same run.
	WindowBaseline           *windowReport `json:"window_baseline,omitempty"`
	WindowAttributedBaseline *windowReport `json:"window_attributed_baseline,omitempty"`

	// Notes says, per key, why a path has no figure by design: direct has
	// no proxy process, so no CPU figures.
	Notes map[string]string `json:"notes,omitempty"`

	// Errors holds, per scenario and path, why a figure is missing.
	Errors map[string]string `json:"errors,omitempty"`
}

// windowReport is the startup-window scenario's outcome.
type windowReport struct {
	Clients                   int     `json:"clients"`
	OK                        int     `json:"ok"`
	P99AfterWindowMs          float64 `json:"p99_after_window_ms"`
	P50AfterWindowMs          float64 `json:"p50_after_window_ms"`
	UpstreamConnectsPerClient float64 `json:"upstream_connects_per_client"`

	// FloorMs is the crowd's floor, measured in the same run, in ms. For
	// the loopback crowd: what 1 000 fresh handshakes take at the tunnel's
	// rate (clients ÷ tunnel handshakes/s): after the window the held
	// clients pass the gateway's per-address admission a few at a time,
	// each needing a fresh upstream handshake. For the attributed crowd:
	// the p99 of the same clients released at once against a started
	// gateway through the tunnel (window_attributed_floor). 0 when not
	// measured.
	FloorMs float64 `json:"floor_ms"`
	// MaxPreauthPerAddress is the most unauthenticated sockets the gateway
	// saw open at once for one attributed client address.
	MaxPreauthPerAddress int64 `json:"max_preauth_per_address"`
	// ReleaseMs is the time from the window's end to the last hello-ok,
	// and ReleaseCPUMs the CPU time each process (holdfast, gateway, and
	// the clients: the load generator) used over it, in ms. With two
	// cores, a process near ReleaseMs is saturating one of them.
	ReleaseMs    float64            `json:"release_ms"`
	ReleaseCPUMs map[string]float64 `json:"release_cpu_ms,omitempty"`

	// Path is holdfast, or direct for the comparison run without a proxy.
	Path string `json:"path"`
	// Upstream is which gateway served the window (fakegw or bench).
	Upstream string `json:"upstream,omitempty"`
	// Failures counts the client errors by text (at most a few kinds).
	Failures map[string]int `json:"failures,omitempty"`
}

// newReport returns an empty report.
func newReport(mode string) *report {
	return &report{
		Mode:            mode,
		Throughput:      map[string]float64{},
		RTTP50:          map[string]float64{},
		RTTP99:          map[string]float64{},
		Idle:            map[string]float64{},
		Handshakes:      map[string]float64{},
		CPUPerMsg:       map[string]float64{},
		CPUPerHandshake: map[string]float64{},
		Errors:          map[string]string{},
	}
}

// setFloor sets floor_ms of the window reports for a crowd of clients:
// the loopback crowd's from the tunnel's handshake rate, the attributed
// crowd's from its measured floor when every floor client got hello-ok.
func (r *report) setFloor(clients int) {
	if hs, ok := r.Handshakes["tunnel"]; ok && hs > 0 {
		for _, w := range []*windowReport{r.Window, r.WindowBaseline} {
			if w != nil {
				w.FloorMs = math.Round(float64(clients)/hs*1e6) / 1e3
			}
		}
	}
	if f := r.AttributedFloor; f != nil && f.OK == f.Clients && f.Clients > 0 {
		for _, w := range []*windowReport{r.WindowAttributed, r.WindowAttributedBaseline} {
			if w != nil {
				w.FloorMs = f.P99Ms
			}
		}
	}
}

// fail records why the figure of scenario for path is missing.
func (r *report) fail(scenario, path string, err error) {
	r.Errors[scenario+"/"+path] = err.Error()
}

// writeJSON writes the report to file.
func (r *report) writeJSON(file string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

// ratio formats a/b as "1.23x", or "-" when either is missing.
func ratio(m map[string]float64, a, b string) string {
	x, okA := m[a]
	y, okB := m[b]
	if !okA || !okB || y == 0 || a == b {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x/y)
}

// printTable writes the figures with their ratios to each other path.
func (r *report) printTable(w io.Writer) {
	paths := r.paths()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "metric\tpath\tvalue\t")
	for _, p := range paths {
		fmt.Fprintf(tw, "/%s\t", p)
	}
	fmt.Fprintln(tw)
	rows := []struct {
		name string
		m    map[string]float64
		unit string
	}{
		{"throughput", r.Throughput, "msg/s"},
		{"rtt p50", r.RTTP50, "us"},
		{"rtt p99", r.RTTP99, "us"},
		{"idle/session", r.Idle, "B"},
		{"handshakes", r.Handshakes, "/s"},
		{"cpu/msg", r.CPUPerMsg, "us"},
		{"cpu/handshake", r.CPUPerHandshake, "us"},
	}
	for _, row := range rows {
		for _, p := range paths {
			v, ok := row.m[p]
			val := "-"
			switch {
			case ok && v < 100:
				val = fmt.Sprintf("%.2f %s", v, row.unit)
			case ok:
				val = fmt.Sprintf("%.0f %s", v, row.unit)
			case strings.HasPrefix(row.name, "cpu/") && p == "direct":
				val = "no proxy"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t", row.name, p, val)
			for _, q := range paths {
				fmt.Fprintf(tw, "%s\t", ratio(row.m, p, q))
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "added p99 over direct:")
	for _, p := range paths {
		if a, ok := r.added99(p); ok && p != "direct" {
			fmt.Fprintf(w, "  %-8s %8.0f us\n", p, a)
		}
	}
	for _, x := range []struct {
		name string
		wr   *windowReport
	}{{"loopback crowd", r.Window}, {"attributed crowd", r.WindowAttributed},
		{"loopback crowd", r.WindowBaseline}, {"attributed crowd", r.WindowAttributedBaseline}} {
		wr := x.wr
		if wr == nil {
			continue
		}
		floor := "-"
		if wr.FloorMs > 0 {
			floor = fmt.Sprintf("%.0f ms", wr.FloorMs)
		}
		fmt.Fprintf(w, "\nstartup window, %s (%s, gateway %s): %d/%d hello-ok, p99 after window %.0f ms (floor %s, p50 %.0f ms), %.3f upstream connects per client, at most %d pre-auth sockets per address\n",
			x.name, wr.Path, wr.Upstream, wr.OK, wr.Clients, wr.P99AfterWindowMs, floor, wr.P50AfterWindowMs, wr.UpstreamConnectsPerClient, wr.MaxPreauthPerAddress)
		if len(wr.ReleaseCPUMs) > 0 {
			fmt.Fprintf(w, "  release (window end to last hello-ok) %.0f ms; cpu over it:", wr.ReleaseMs)
			for _, k := range []string{"holdfast", "gateway", "clients"} {
				if v, ok := wr.ReleaseCPUMs[k]; ok {
					fmt.Fprintf(w, " %s %.0f ms", k, v)
				}
			}
			fmt.Fprintln(w)
		}
		for k, n := range wr.Failures {
			fmt.Fprintf(w, "  %5d x %s\n", n, k)
		}
	}
	if f := r.AttributedFloor; f != nil {
		fmt.Fprintf(w, "\nattributed crowd's floor (tunnel, started gateway, all released at once): %d/%d hello-ok, p99 %.0f ms, p50 %.0f ms, %.3f upstream connects per client, at most %d pre-auth sockets per address\n",
			f.OK, f.Clients, f.P99Ms, f.P50Ms, f.UpstreamConnectsPerClient, f.MaxPreauthPerAddress)
		fmt.Fprintf(w, "  release to last hello-ok %.0f ms; cpu over it:", f.ReleaseMs)
		for _, k := range []string{"tunnel", "gateway", "clients"} {
			if v, ok := f.ReleaseCPUMs[k]; ok {
				fmt.Fprintf(w, " %s %.0f ms", k, v)
			}
		}
		fmt.Fprintln(w)
		for k, n := range f.Failures {
			fmt.Fprintf(w, "  %5d x %s\n", n, k)
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "\nmissing figures:")
		for k, v := range r.Errors {
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
	}
	fmt.Fprintln(w, "\ngoals (holdfast):")
	for _, g := range r.goals() {
		fmt.Fprintf(w, "  %-4s %s\n", g.verdict, g.text)
	}
}

// paths returns the paths of pathNames that were measured: those with a
// figure or an error.
func (r *report) paths() []string {
	var out []string
	for _, p := range pathNames() {
		ok := false
		for _, m := range []map[string]float64{r.Throughput, r.RTTP50, r.Idle, r.Handshakes} {
			_, ok2 := m[p]
			ok = ok || ok2
		}
		for k := range r.Errors {
			ok = ok || strings.HasSuffix(k, "/"+p)
		}
		if ok {
			out = append(out, p)
		}
	}
	return out
}

// added99 returns path's p99 minus direct's p99, in microseconds.
func (r *report) added99(path string) (float64, bool) {
	p, ok1 := r.RTTP99[path]
	d, ok2 := r.RTTP99["direct"]
	return p - d, ok1 && ok2
}

// goal is one of the targets and whether this run met it.
type goal struct {
	verdict string // MET, MISS or N/A
	text    string
}

// goals checks the run against holdfast's targets.
func (r *report) goals() []goal {
	var gs []goal
	check := func(have bool, met bool, format string, args ...any) {
		v := "N/A"
		if have {
			v = "MISS"
			if met {
				v = "MET"
			}
		}
		gs = append(gs, goal{v, fmt.Sprintf(format, args...)})
	}
	h, okH := r.Throughput["holdfast"]
	t, okT := r.Throughput["tunnel"]
	check(okH && okT, h >= 1.0*t, "throughput >= 1.0x tunnel (got %s)", ratio(r.Throughput, "holdfast", "tunnel"))
	ch, okCH := r.CPUPerMsg["holdfast"]
	ct, okCT := r.CPUPerMsg["tunnel"]
	check(okCH && okCT, ch <= 1.1*ct, "cpu per message <= 1.1x tunnel's (got %s)", ratio(r.CPUPerMsg, "holdfast", "tunnel"))
	hh, okHH := r.Handshakes["holdfast"]
	ht, okHT := r.Handshakes["tunnel"]
	hk, okHK := r.Handshakes["koding"]
	check(okHH && okHT, hh >= 1.0*ht, "handshakes >= 1.0x tunnel (got %s)", ratio(r.Handshakes, "holdfast", "tunnel"))
	check(okHH && okHK, hh >= 1.0*hk, "handshakes >= 1.0x koding (got %s)", ratio(r.Handshakes, "holdfast", "koding"))
	fp := r.FastPath
	got := "-"
	if fp != nil {
		got = fmt.Sprintf("%.0f holds, %.0f probes, %.0f delayed dials, %.0f retries in %.0f handshakes", fp.Holds, fp.Probes, fp.DelayedDials, fp.Retries, fp.Handshakes)
	}
	check(fp != nil && fp.Handshakes > 0, fp != nil && fp.Holds == 0 && fp.Probes <= float64(r.Rounds) && fp.DelayedDials == 0 && fp.Retries == 0,
		"handshakes on a started gateway: no hold, delayed dial or retry, at most a probe a round (%s)", got)
	ah, okAH := r.added99("holdfast")
	at, okAT := r.added99("tunnel")
	got = "-"
	if okAH && okAT {
		got = fmt.Sprintf("holdfast %.0f us, tunnel %.0f us", ah, at)
	}
	check(okAH && okAT, ah <= 1.1*math.Max(at, 0), "p99 added over direct <= 1.1x tunnel's (%s)", got)
	idle, okI := r.Idle["holdfast"]
	got = "-"
	if okI {
		got = fmt.Sprintf("%.1f KiB", idle/1024)
	}
	check(okI, idle <= 16*1024, "idle <= 16 KiB per session (got %s)", got)
	r.checkRTT(check, "", "holdfast", "tunnel")

	// wss: TLS terminated by the proxy, holdfast against the tunnel
	// behind tls.Listen.
	h, okH = r.Throughput["holdfast_tls"]
	t, okT = r.Throughput["tunnel_tls"]
	check(okH && okT, h >= 1.0*t, "wss: throughput >= 1.0x tunnel_tls (got %s)", ratio(r.Throughput, "holdfast_tls", "tunnel_tls"))
	ch, okCH = r.CPUPerMsg["holdfast_tls"]
	ct, okCT = r.CPUPerMsg["tunnel_tls"]
	check(okCH && okCT, ch <= 1.1*ct, "wss: cpu per message <= 1.1x tunnel_tls's (got %s)", ratio(r.CPUPerMsg, "holdfast_tls", "tunnel_tls"))
	idle, okI = r.Idle["holdfast_tls"]
	got = "-"
	if okI {
		got = fmt.Sprintf("%.1f KiB", idle/1024)
	}
	check(okI, idle <= 16*1024, "wss: idle <= 16 KiB per session (got %s)", got)
	r.checkRTT(check, "wss: ", "holdfast_tls", "tunnel_tls")
	ah, okAH = r.added99("holdfast_tls")
	at, okAT = r.added99("tunnel_tls")
	got = "-"
	if okAH && okAT {
		got = fmt.Sprintf("holdfast_tls %.0f us, tunnel_tls %.0f us", ah, at)
	}
	check(okAH && okAT, ah <= 1.1*math.Max(at, 0), "wss: p99 added over direct <= 1.1x tunnel_tls's (%s)", got)

	w := holdfastWindow(r.Window)
	check(w != nil && w.Clients > 0, w != nil && w.OK == w.Clients, "window: 100%% hello-ok (got %s)", windowShare(w))
	check(w != nil && w.Clients > 0, w != nil && w.UpstreamConnectsPerClient <= 1.05, "window: <= 1.05 upstream connects per client (got %s)", windowConnects(w))
	floor := "-"
	if w != nil && w.FloorMs > 0 {
		floor = fmt.Sprintf("%.0f ms", w.FloorMs)
	}
	check(w != nil && w.OK > 0 && w.FloorMs > 0, w != nil && w.P99AfterWindowMs <= 1.1*w.FloorMs,
		"window: p99 after the window <= 1.1x the floor (got %s, floor %s)", windowP99(w), floor)

	w = holdfastWindow(r.WindowAttributed)
	check(w != nil && w.Clients > 0, w != nil && w.OK == w.Clients, "attributed window: 100%% hello-ok (got %s)", windowShare(w))
	check(w != nil && w.Clients > 0, w != nil && w.UpstreamConnectsPerClient <= 1.05, "attributed window: <= 1.05 upstream connects per client (got %s)", windowConnects(w))
	floor = "-"
	if w != nil && w.FloorMs > 0 {
		floor = fmt.Sprintf("%.0f ms", w.FloorMs)
	}
	check(w != nil && w.OK > 0 && w.FloorMs > 0, w != nil && w.P99AfterWindowMs <= w.FloorMs,
		"attributed window: p99 after the window <= 1.0x the floor (got %s, floor %s)", windowP99(w), floor)
	got = "-"
	if w != nil {
		got = fmt.Sprintf("%d", w.MaxPreauthPerAddress)
	}
	check(w != nil && w.Clients > 0, w != nil && w.MaxPreauthPerAddress <= windowMaxPreauth,
		"attributed window: <= %d pre-auth sockets per address at the gateway (got %s)", windowMaxPreauth, got)
	return gs
}

// checkRTT checks the round trips at the moderate rate: path's p50 and p99
// at most ref's, each goal's text led by prefix.
func (r *report) checkRTT(check func(have, met bool, format string, args ...any), prefix, path, ref string) {
	for _, x := range []struct {
		name string
		m    map[string]float64
	}{{"p50", r.RTTP50}, {"p99", r.RTTP99}} {
		a, okA := x.m[path]
		b, okB := x.m[ref]
		check(okA && okB, a <= b, "%sround trip %s <= 1.0x %s's (got %s)", prefix, x.name, ref, ratio(x.m, path, ref))
	}
}

// holdfastWindow returns w when it measured holdfast, else nil.
func holdfastWindow(w *windowReport) *windowReport {
	if w == nil || w.Path != "holdfast" {
		return nil
	}
	return w
}

func windowShare(w *windowReport) string {
	if w == nil || w.Clients == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(w.OK)/float64(w.Clients))
}

func windowP99(w *windowReport) string {
	if w == nil || w.OK == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", w.P99AfterWindowMs)
}

func windowConnects(w *windowReport) string {
	if w == nil || w.Clients == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", w.UpstreamConnectsPerClient)
}

// shortErr trims an error text to one line for failure counts.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}
