package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCensusLabels(t *testing.T) {
	for _, tc := range []struct {
		name       string
		minP, maxP int
		ok         bool
		want       ClientProtocol
	}{
		{"a 2026.4.27 client", 3, 3, true, Protocol3},
		{"a current client", 3, 4, true, Protocol4},
		{"protocol 4 only", 4, 4, true, Protocol4},
		{"a future range", 4, 7, true, Protocol4},
		{"beyond 4", 5, 6, true, ProtocolOther},
		{"below 3", 1, 2, true, ProtocolOther},
		{"a reversed range", 4, 3, true, ProtocolOther},
		{"no readable range", 0, 0, false, ProtocolOther},
	} {
		if got := ProtocolOffered(tc.minP, tc.maxP, tc.ok); got != tc.want {
			t.Errorf("%s: ProtocolOffered(%d, %d, %v) = %q; want %q", tc.name, tc.minP, tc.maxP, tc.ok, got, tc.want)
		}
	}
	for mode, want := range map[string]ClientMode{
		"cli": "cli", "ui": "ui", "node": "node", "probe": "probe", "webchat": "webchat",
		"backend": "other", "worker": "other", "": "other", "CLI": "other", "other": "other",
	} {
		if got := ModeOf(mode); got != want {
			t.Errorf("ModeOf(%q) = %q; want %q", mode, got, want)
		}
	}
	reg := prometheus.NewRegistry()
	m := New(reg, false)
	for _, code := range []int{1012, 1012, 1006, 4000, 3000} {
		m.GatewayClose(code)
	}
	for label, want := range map[string]float64{"1012": 2, "1006": 1, "other": 2, "1000": 0} {
		if got := testutil.ToFloat64(m.census.gatewayCloses.WithLabelValues(label)); got != want {
			t.Errorf("gateway closes{code=%q} = %v; want %v", label, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "holdfast_gateway_closes_total"); err != nil || n != 12 {
		t.Errorf("%d gateway close series (%v); want the 11 codes and other", n, err)
	}
}

// The series a handshake counts without a label lookup are the ones the
// labels name: each Result's, each census series' (and one outside the
// set made up front), and the spliced message counters.
func TestResolvedSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, false)
	for i, r := range []Result{ResultOK, ResultRejected, ResultUnavailable, ResultAttributionRefused, ResultClientGone, ResultError} {
		for range i + 1 {
			m.Handshake(r, 0)
		}
		if got := testutil.ToFloat64(m.handshakes.WithLabelValues(string(r))); got != float64(i+1) {
			t.Errorf("handshakes_total{result=%q} = %v; want %d", r, got, i+1)
		}
	}
	n := 0
	for _, p := range []ClientProtocol{Protocol3, Protocol4, ProtocolOther} {
		for _, mode := range append(clientModes, "unlisted") {
			for _, b := range []bool{true, false} {
				n++
				for range n {
					m.ClientHandshake(p, mode, b)
				}
				bl := "false"
				if b {
					bl = "true"
				}
				if got := testutil.ToFloat64(m.census.clients.WithLabelValues(string(p), string(mode), bl)); got != float64(n) {
					t.Errorf("client_handshakes_total{%s,%s,%s} = %v; want %d", p, mode, bl, got, n)
				}
			}
		}
	}
	up, cl := m.MessageCounters()
	up.Inc()
	cl.Add(2)
	if u, c := testutil.ToFloat64(m.messages.WithLabelValues("to_upstream")), testutil.ToFloat64(m.messages.WithLabelValues("to_client")); u != 1 || c != 2 {
		t.Errorf("spliced_messages_total: to_upstream %v, to_client %v; want 1, 2", u, c)
	}
}
