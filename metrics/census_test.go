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
