package main

import (
	"strings"
	"testing"
)

// TestSetFloor: the loopback crowd's floor comes from the tunnel's
// handshake rate, the attributed crowd's from its own measured floor, and
// only when every floor client got hello-ok (a floor with failures would
// understate the crowd's work).
func TestSetFloor(t *testing.T) {
	r := newReport("quick")
	r.Handshakes["tunnel"] = 2000
	r.Window = &windowReport{Path: "holdfast"}
	r.WindowAttributed = &windowReport{Path: "holdfast", OK: 1000, Clients: 1000, P99AfterWindowMs: 300}
	r.AttributedFloor = &floorReport{Clients: 1000, OK: 1000, P99Ms: 412.5}
	r.setFloor(1000)
	if r.Window.FloorMs != 500 {
		t.Errorf("loopback floor = %v ms; want 500 (1000 / 2000/s)", r.Window.FloorMs)
	}
	if r.WindowAttributed.FloorMs != 412.5 {
		t.Errorf("attributed floor = %v ms; want the measured 412.5", r.WindowAttributed.FloorMs)
	}
	if g := findGoal(r.goals(), "attributed window: p99 after the window"); g.verdict != "MET" {
		t.Errorf("attributed goal %q: %s; want MET (300 ms <= 412.5 ms)", g.text, g.verdict)
	}

	r.WindowAttributed.P99AfterWindowMs = 413
	if g := findGoal(r.goals(), "attributed window: p99 after the window"); g.verdict != "MISS" {
		t.Errorf("attributed goal %q: %s; want MISS (413 ms > 1.0x 412.5 ms)", g.text, g.verdict)
	}

	r.WindowAttributed.FloorMs = 0
	r.AttributedFloor.OK = 999
	r.setFloor(1000)
	if r.WindowAttributed.FloorMs != 0 {
		t.Errorf("attributed floor = %v ms with a floor client failed; want 0 (none)", r.WindowAttributed.FloorMs)
	}
	if g := findGoal(r.goals(), "attributed window: p99 after the window"); g.verdict != "N/A" {
		t.Errorf("attributed goal %q: %s; want N/A without a floor", g.text, g.verdict)
	}
}

// TestGoalsWSS: the wss goals compare holdfast_tls with tunnel_tls, not
// with the ws paths.
func TestGoalsWSS(t *testing.T) {
	r := newReport("quick")
	r.Throughput["tunnel"] = 100
	r.Throughput["tunnel_tls"] = 50
	r.Throughput["holdfast_tls"] = 60
	r.CPUPerMsg["tunnel_tls"] = 10
	r.CPUPerMsg["holdfast_tls"] = 12
	r.Idle["holdfast_tls"] = 20 * 1024
	r.RTTP50["tunnel_tls"], r.RTTP50["holdfast_tls"] = 200, 190
	r.RTTP99["direct"], r.RTTP99["tunnel_tls"], r.RTTP99["holdfast_tls"] = 100, 400, 440
	for _, tc := range []struct{ goal, want string }{
		{"wss: throughput >= 1.0x tunnel_tls (got 1.20x)", "MET"},
		{"wss: cpu per message <= 1.1x tunnel_tls's (got 1.20x)", "MISS"},
		{"wss: idle <= 16 KiB per session (got 20.0 KiB)", "MISS"},
		{"wss: round trip p50 <= 1.0x tunnel_tls's (got 0.95x)", "MET"},
		{"wss: round trip p99 <= 1.0x tunnel_tls's (got 1.10x)", "MISS"},
		{"wss: p99 added over direct <= 1.1x tunnel_tls's (holdfast_tls 340 us, tunnel_tls 300 us)", "MISS"},
		{"throughput >= 1.0x tunnel (got -)", "N/A"},
	} {
		g := findGoal(r.goals(), tc.goal)
		if g.text != tc.goal || g.verdict != tc.want {
			t.Errorf("goal %q: %s %q; want %s", tc.goal, g.verdict, g.text, tc.want)
		}
	}
}

// findGoal returns the first goal whose text starts with prefix.
func findGoal(gs []goal, prefix string) goal {
	for _, g := range gs {
		if strings.HasPrefix(g.text, prefix) {
			return g
		}
	}
	return goal{}
}
