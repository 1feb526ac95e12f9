package proxy

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/retry"
)

// docs/close-codes.md's table is the endings table: every row, word for
// word. Edit the table in outcome.go, then paste what this test prints.
func TestDocCloseCodes(t *testing.T) {
	t.Parallel()
	const page = "../docs/close-codes.md"
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "\n## How each connection ends\n")
	if i < 0 {
		t.Fatalf("%s has no \"## How each connection ends\" section", page)
	}
	section := doc[i:]
	start := strings.Index(section, "\n| situation")
	if start < 0 {
		t.Fatalf("%s's close-code section has no table", page)
	}
	table := section[start+1:]
	if end := strings.Index(table, "\n\n"); end >= 0 {
		table = table[:end+1]
	}
	if want := closeTable(); table != want {
		t.Errorf("%s's close-code table differs from the endings table; it should read:\n\n%s", page, want)
	}
}

// Every ending is fully specified, and exactly the handshake endings
// count a result.
func TestEndingsTable(t *testing.T) {
	t.Parallel()
	results := map[metrics.Result]bool{}
	for e := range numEndings {
		s := endings[e]
		if s.msg == "" {
			t.Errorf("ending %d has no log message", e)
		}
		if e.handshakeEnd() != (s.result != "") {
			t.Errorf("ending %d (%s): result %q", e, s.msg, s.result)
		}
		results[s.result] = true
		for _, l := range []legEnd{s.client, s.gateway} {
			if l.relay && l.code == 0 {
				t.Errorf("ending %d (%s) relays with no fallback close", e, s.msg)
			}
			if p, ok := l.payload(nil); ok && len(p) > 125 {
				t.Errorf("ending %d (%s): close payload over 125 bytes", e, s.msg)
			}
		}
	}
	for _, r := range []metrics.Result{metrics.ResultOK, metrics.ResultRejected, metrics.ResultUnavailable,
		metrics.ResultAttributionRefused, metrics.ResultClientGone, metrics.ResultError} {
		if !results[r] {
			t.Errorf("no ending counts result %q", r)
		}
	}
}

// What an ending says about the gateway: a gateway close is judged by its
// code; only evidence changes the state.
func TestEvidence(t *testing.T) {
	t.Parallel()
	closeErr := func(code int) error { return &websocket.CloseError{Code: code} }
	for _, tc := range []struct {
		ev   evidence
		err  error
		want retry.State
		ok   bool
	}{
		{noEvidence, nil, retry.Unknown, false},
		{evStarted, nil, retry.Started, true},
		{evStarting, nil, retry.Starting, true},
		{evDown, nil, retry.Down, true},
		{evGatewayClose, closeErr(websocket.CloseServiceRestart), retry.Down, true},
		{evGatewayClose, closeErr(websocket.CloseGoingAway), retry.Down, true},
		{evGatewayClose, closeErr(websocket.CloseNormalClosure), retry.Started, true},
		{evGatewayClose, closeErr(websocket.CloseNoStatusReceived), retry.Started, true},
		{evGatewayClose, closeErr(websocket.CloseTryAgainLater), retry.Unknown, false},
		{evGatewayClose, closeErr(websocket.CloseAbnormalClosure), retry.Unknown, false},
		{evGatewayClose, errors.New("use of closed network connection"), retry.Unknown, false},
	} {
		got, ok := evidenceOf(tc.ev, tc.err)
		if got != tc.want || ok != tc.ok {
			t.Errorf("evidenceOf(%d, %v) = %v, %v; want %v, %v", tc.ev, tc.err, got, ok, tc.want, tc.ok)
		}
	}
}
