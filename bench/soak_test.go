package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestSoakMessageRoundTrip: a message parses back to its connection and
// number; the filler may be empty or large.
func TestSoakMessageRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		sid string
		seq int64
		pad string
	}{
		{"L0.0", 1, ""},
		{"S12345", 987654321, "abc"},
		{"L199.42", 7, strings.Repeat("x-Y_9", 40000)},
	} {
		msg := soakMessage(tc.sid, tc.seq, []byte(tc.pad))
		sid, seq, ok := parseSoakMessage(msg)
		if !ok || sid != tc.sid || seq != tc.seq {
			t.Fatalf("parse(%.80s…) = %q, %d, %v; want %q, %d, true", msg, sid, seq, ok, tc.sid, tc.seq)
		}
	}
}

// TestSoakMessageCorruption: changing any single byte of a message, or
// cutting it anywhere, is never taken for the message itself: either the
// parse fails or it names another connection or number (which the tracker
// counts as corrupted, duplicated or reordered).
func TestSoakMessageCorruption(t *testing.T) {
	msg := soakMessage("L3.1", 42, []byte("padding-padding"))
	for i := range msg {
		for _, flip := range []byte{0x01, 0x20, 0x80} {
			bad := append([]byte(nil), msg...)
			bad[i] ^= flip
			if sid, seq, ok := parseSoakMessage(bad); ok && sid == "L3.1" && seq == 42 {
				t.Fatalf("byte %d ^ %#x not detected: %s", i, flip, bad)
			}
		}
	}
	for n := range len(msg) {
		if _, _, ok := parseSoakMessage(msg[:n]); ok {
			t.Fatalf("message cut to %d bytes parsed", n)
		}
	}
}

// tally returns the counts of t as a comparable struct.
type tallyCounts struct{ sent, received, lost, duplicated, reordered, corrupted, unanswered int64 }

func countsOf(t *msgTally) tallyCounts {
	return tallyCounts{t.sent.Load(), t.received.Load(), t.lost.Load(), t.duplicated.Load(), t.reordered.Load(), t.corrupted.Load(), t.unanswered.Load()}
}

// TestMsgTracker drives one connection's books through each way a
// message can go wrong.
func TestMsgTracker(t *testing.T) {
	const sid = "L1.0"
	echo := func(seq int64) []byte { return soakMessage(sid, seq, []byte("p")) }
	tests := []struct {
		name string
		// sent messages are numbered 1..sent; recv lists what comes back.
		sent       int64
		recv       [][]byte
		documented bool
		want       tallyCounts
	}{
		{
			name: "every echo in order, client closes",
			sent: 3, recv: [][]byte{echo(1), echo(2), echo(3)},
			want: tallyCounts{sent: 3, received: 3},
		},
		{
			name: "a gap is lost even at a documented close",
			sent: 3, recv: [][]byte{echo(1), echo(3)}, documented: true,
			want: tallyCounts{sent: 3, received: 2, lost: 1},
		},
		{
			name: "echoes due at a documented close are unanswered, not lost",
			sent: 5, recv: [][]byte{echo(1), echo(2)}, documented: true,
			want: tallyCounts{sent: 5, received: 2, unanswered: 3},
		},
		{
			name: "echoes due when the client closed are lost",
			sent: 5, recv: [][]byte{echo(1), echo(2)},
			want: tallyCounts{sent: 5, received: 2, lost: 3},
		},
		{
			name: "a duplicate is counted once and nothing is lost",
			sent: 2, recv: [][]byte{echo(1), echo(1), echo(2)},
			want: tallyCounts{sent: 2, received: 3, duplicated: 1},
		},
		{
			name: "a late echo is reordered, not lost",
			sent: 3, recv: [][]byte{echo(2), echo(1), echo(3)},
			want: tallyCounts{sent: 3, received: 3, reordered: 1},
		},
		{
			name: "a changed byte is corrupted and its number lost",
			sent: 2, recv: [][]byte{echo(1), func() []byte { b := echo(2); b[len(b)/2] ^= 1; return b }()},
			want: tallyCounts{sent: 2, received: 2, corrupted: 1, lost: 1},
		},
		{
			name: "another connection's message is corrupted",
			sent: 1, recv: [][]byte{soakMessage("L2.0", 1, []byte("p")), echo(1)},
			want: tallyCounts{sent: 1, received: 2, corrupted: 1},
		},
		{
			name: "a number never sent is corrupted",
			sent: 1, recv: [][]byte{echo(1), echo(2)},
			want: tallyCounts{sent: 1, received: 2, corrupted: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tally msgTally
			tr := newMsgTracker(sid, &tally)
			for range tc.sent {
				tr.next()
			}
			for _, m := range tc.recv {
				tr.receive(m)
			}
			tr.end(tc.documented)
			tr.end(tc.documented) // books close once
			if got := countsOf(&tally); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestMsgTrackerUnsend: a message whose write failed is not counted as
// sent, and outstanding follows what is due.
func TestMsgTrackerUnsend(t *testing.T) {
	var tally msgTally
	tr := newMsgTracker("S1", &tally)
	a, b := tr.next(), tr.next()
	if got := tr.outstanding(); got != 2 {
		t.Fatalf("outstanding = %d, want 2", got)
	}
	tr.unsend(b)
	tr.receive(soakMessage("S1", a, nil))
	if got := tr.outstanding(); got != 0 {
		t.Fatalf("outstanding = %d, want 0", got)
	}
	tr.end(false)
	if got, want := countsOf(&tally), (tallyCounts{sent: 1, received: 1}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// TestCloseCodeOf: a close frame gives its code, a deadline 0, a dropped
// connection 1006.
func TestCloseCodeOf(t *testing.T) {
	timeout := &net.OpError{Op: "read", Err: timeoutErr{}}
	for _, tc := range []struct {
		err  error
		want int
	}{
		{&websocket.CloseError{Code: 1012, Text: "service restart"}, 1012},
		{fmt.Errorf("read: %w", &websocket.CloseError{Code: 1000}), 1000},
		{timeout, closeNone},
		{io.ErrUnexpectedEOF, closeNoFrame},
		{errors.New("connection reset by peer"), closeNoFrame},
	} {
		if got := closeCodeOf(tc.err); got != tc.want {
			t.Errorf("closeCodeOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// passingReport is a soak result that breaks nothing.
func passingReport() *soakReport {
	return &soakReport{
		MessagesSent: 10, MessagesReceived: 10, Handshakes: 5, HandshakesOK: 5,
		CloseCodes:       map[int]int64{0: 0, 1000: 3, 1012: 2},
		WindowHandshakes: 2, WindowHelloOK: 2,
		GatewayRestarts: 1, Reloads: 3, ReloadsInvalid: 1,
		ReloadsCounted: map[string][2]int64{"holdfast-soak": {2, 1}},
		Rotations:      1, RotationsServed: 1,
		Samples: []soakSample{{T: 20}},
		Idle:    map[string]idleCounts{"holdfast-soak": {GoroutinesBefore: 11, GoroutinesAfter: 11, FDsBefore: 12, FDsAfter: 10}},
	}
}

// TestSoakProblems: each broken promise is reported, and a clean run
// reports nothing.
func TestSoakProblems(t *testing.T) {
	if p := passingReport().problems(); len(p) != 0 {
		t.Fatalf("clean run: %q", p)
	}
	tests := []struct {
		name   string
		change func(r *soakReport)
		want   string
	}{
		{"lost", func(r *soakReport) { r.Lost = 1 }, "1 messages lost"},
		{"duplicated", func(r *soakReport) { r.Duplicated = 2 }, "2 messages duplicated"},
		{"reordered", func(r *soakReport) { r.Reordered = 3 }, "3 messages reordered"},
		{"corrupted", func(r *soakReport) { r.Corrupted = 4 }, "4 messages corrupted"},
		{"no close frame", func(r *soakReport) { r.CloseCodes[1006] = 1 }, "without a close frame (1006)"},
		{"nothing before the deadline", func(r *soakReport) { r.CloseCodes[0] = 2 }, "2 connections ended with nothing from holdfast"},
		{"undocumented code", func(r *soakReport) { r.CloseCodes[1005] = 1 }, "closed with 1005, not a documented close code"},
		{"window without hello-ok", func(r *soakReport) { r.WindowHelloOK = 1 }, "1 of 2 handshakes begun in a startup window"},
		{"no restart", func(r *soakReport) { r.GatewayRestarts = 0 }, "no gateway restart"},
		{"no invalid reload", func(r *soakReport) {
			r.ReloadsInvalid = 0
			r.ReloadsCounted["holdfast-soak"] = [2]int64{3, 0}
		}, "want at least one of each"},
		{"reload not applied", func(r *soakReport) { r.ReloadsCounted["holdfast-soak"] = [2]int64{1, 1} }, "counted 1 successful and 1 refused reloads, want 2 and 1"},
		{"rotation not served", func(r *soakReport) { r.RotationsServed = 0 }, "0 of 1 rotated certificates"},
		{"nothing relayed", func(r *soakReport) { r.MessagesReceived = 0 }, "no message relayed"},
		{"no sample", func(r *soakReport) { r.Samples = nil }, "no resource sample"},
		{"goroutines left", func(r *soakReport) {
			r.Idle["holdfast-soak"] = idleCounts{GoroutinesBefore: 11, GoroutinesAfter: 14, FDsBefore: 12, FDsAfter: 12}
		}, "holdfast-soak did not come back to its idle counts after the load: 11 goroutines and 12 descriptors before, 14 and 12 after"},
		{"descriptor left", func(r *soakReport) {
			r.Idle["holdfast-soak"] = idleCounts{GoroutinesBefore: 11, GoroutinesAfter: 11, FDsBefore: 12, FDsAfter: 15}
		}, "did not come back to its idle counts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := passingReport()
			tc.change(r)
			p := r.problems()
			if len(p) != 1 || !strings.Contains(p[0], tc.want) {
				t.Fatalf("problems = %q, want one containing %q", p, tc.want)
			}
		})
	}
}

// TestSoakSchedule: a 60-second run restarts, reloads (an invalid file
// among them) and rotates at least once, with a scaled warm-up; a
// 30-minute run keeps the nominal intervals.
func TestSoakSchedule(t *testing.T) {
	s, err := newSoakSettings(time.Minute, 200, 50)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.restartTimes()); n < 1 {
		t.Errorf("60 s: %d restarts", n)
	}
	invalid := 0
	for i := range s.reloadTimes() {
		if reloadKind(i) == "invalid" {
			invalid++
		}
	}
	if n := len(s.reloadTimes()); n < 2 || invalid < 1 {
		t.Errorf("60 s: %d reloads, %d invalid", n, invalid)
	}
	if n := len(s.rotationTimes()); n < 1 {
		t.Errorf("60 s: %d rotations", n)
	}
	if s.warmup != 20*time.Second {
		t.Errorf("60 s: warm-up %v, want 20s", s.warmup)
	}
	for _, at := range append(s.restartTimes(), append(s.reloadTimes(), s.rotationTimes()...)...) {
		if at <= 0 || at >= s.duration {
			t.Errorf("60 s: event at %v, outside the run", at)
		}
	}

	s, err = newSoakSettings(30*time.Minute, 200, 50)
	if err != nil {
		t.Fatal(err)
	}
	if s.restartEvery != time.Minute || s.reloadEvery != 5*time.Minute || s.rotateEvery != 10*time.Minute || s.warmup != time.Minute {
		t.Errorf("30 min: %+v", s)
	}
	if n := len(s.restartTimes()); n != 29 {
		t.Errorf("30 min: %d restarts, want 29", n)
	}
	if got := []string{reloadKind(0), reloadKind(1), reloadKind(2), reloadKind(3), reloadKind(4), reloadKind(5)}; strings.Join(got, ",") != "B,invalid,A,B,invalid,A" {
		t.Errorf("reload kinds %v", got)
	}
	if _, err := newSoakSettings(10*time.Second, 200, 50); err == nil {
		t.Error("10 s run accepted")
	}
}

// TestSoakReportKeys: the JSON has the keys the test command and docs/soak.md
// name, spelled exactly, with close_codes keyed by code.
func TestSoakReportKeys(t *testing.T) {
	r := passingReport()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"duration_s", "messages_sent", "messages_received", "lost", "duplicated", "reordered",
		"corrupted", "handshakes", "handshakes_ok", "close_codes", "gateway_restarts", "reloads", "rotations",
		"rss_bytes", "goroutines", "fds"} {
		if _, ok := got[key]; !ok {
			t.Errorf("no key %q in %s", key, b)
		}
	}
	var codes map[string]int64
	if err := json.Unmarshal(got["close_codes"], &codes); err != nil || codes["1012"] != 2 || len(codes) != 3 {
		t.Errorf("close_codes = %s (%v)", got["close_codes"], err)
	}
	var s map[string]int64
	if err := json.Unmarshal(got["rss_bytes"], &s); err != nil || len(s) != 3 {
		t.Errorf("rss_bytes = %s, want first, last, max (%v)", got["rss_bytes"], err)
	}
	for _, k := range []string{"first", "last", "max"} {
		if _, ok := s[k]; !ok {
			t.Errorf("rss_bytes lacks %q", k)
		}
	}
}
