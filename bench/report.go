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

// pathNames returns the paths in report order.
func pathNames() []string { return []string{"direct", "tunnel", "koding", "holdfast"} }

// report is what a run measured; it is written as JSON with -json.
type report struct {
	Mode string `json:"mode"` // quick or full

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
	// Window is holdfast's startup-window scenario.
	Window *windowReport `json:"window"`

	// Errors holds, per scenario and path, why a figure is missing.
	Errors map[string]string `json:"errors,omitempty"`
}

// windowReport is the startup-window scenario's outcome.
type windowReport struct {
	Clients                   int     `json:"clients"`
	OK                        int     `json:"ok"`
	P99AfterWindowMs          float64 `json:"p99_after_window_ms"`
	UpstreamConnectsPerClient float64 `json:"upstream_connects_per_client"`

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
		Mode:       mode,
		Throughput: map[string]float64{},
		RTTP50:     map[string]float64{},
		RTTP99:     map[string]float64{},
		Idle:       map[string]float64{},
		Handshakes: map[string]float64{},
		Errors:     map[string]string{},
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
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\tpath\tvalue\t/direct\t/tunnel\t/koding\t/holdfast\t")
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
	}
	for _, row := range rows {
		for _, p := range pathNames() {
			v, ok := row.m[p]
			val := "-"
			if ok {
				val = fmt.Sprintf("%.0f %s", v, row.unit)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", row.name, p, val,
				ratio(row.m, p, "direct"), ratio(row.m, p, "tunnel"),
				ratio(row.m, p, "koding"), ratio(row.m, p, "holdfast"))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "added p99 over direct:")
	for _, p := range pathNames()[1:] {
		if a, ok := r.added99(p); ok {
			fmt.Fprintf(w, "  %-8s %8.0f us\n", p, a)
		}
	}
	if r.Window != nil {
		wr := r.Window
		fmt.Fprintf(w, "\nstartup window (%s, gateway %s): %d/%d hello-ok, p99 after window %.0f ms, %.3f upstream connects per client\n",
			wr.Path, wr.Upstream, wr.OK, wr.Clients, wr.P99AfterWindowMs, wr.UpstreamConnectsPerClient)
		for k, n := range wr.Failures {
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

// goals checks the run against the targets.
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
	k, okK := r.Throughput["koding"]
	t, okT := r.Throughput["tunnel"]
	check(okH && okK, h >= 2.0*k, "throughput >= 2.0x koding (got %s)", ratio(r.Throughput, "holdfast", "koding"))
	check(okH && okT, h >= 0.9*t, "throughput >= 0.9x tunnel (got %s)", ratio(r.Throughput, "holdfast", "tunnel"))
	ah, okAH := r.added99("holdfast")
	at, okAT := r.added99("tunnel")
	got := "-"
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
	w := r.Window
	if w != nil && w.Path != "holdfast" {
		w = nil
	}
	check(w != nil && w.Clients > 0, w != nil && w.OK == w.Clients, "window: 100%% hello-ok (got %s)", windowShare(w))
	check(w != nil && w.OK > 0, w != nil && w.P99AfterWindowMs <= 250, "window: p99 <= 250 ms after the window (got %s)", windowP99(w))
	check(w != nil && w.Clients > 0, w != nil && w.UpstreamConnectsPerClient <= 1.05, "window: <= 1.05 upstream connects per client (got %s)", windowConnects(w))
	return gs
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
