package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestKnownSeriesStartAtZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	New(reg, false)
	want := `
# HELP holdfast_handshakes_total Client handshakes through holdfast, by how they ended.
# TYPE holdfast_handshakes_total counter
holdfast_handshakes_total{result="attribution_refused"} 0
holdfast_handshakes_total{result="client_gone"} 0
holdfast_handshakes_total{result="error"} 0
holdfast_handshakes_total{result="ok"} 0
holdfast_handshakes_total{result="rejected"} 0
holdfast_handshakes_total{result="unavailable"} 0
# HELP holdfast_upstream_retries_total Upstream attempts made again after a failed one, by reason.
# TYPE holdfast_upstream_retries_total counter
holdfast_upstream_retries_total{reason="dial"} 0
holdfast_upstream_retries_total{reason="startup_unavailable"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"holdfast_handshakes_total", "holdfast_upstream_retries_total"); err != nil {
		t.Fatal(err)
	}
}

func TestRecording(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg, true)
	m.Handshake(ResultOK, 30*time.Millisecond)
	m.Handshake(ResultUnavailable, 12*time.Second)
	m.Retry(RetryDial)
	m.Hold()
	m.SessionStarted()
	m.GatewayState("starting")
	m.GatewayState("started")
	for name, want := range map[string]float64{
		"holdfast_connect_holds_total": 1,
		"holdfast_sessions_active":     1,
	} {
		if got := gatherValue(t, reg, name, ""); got != want {
			t.Errorf("%s = %v; want %v", name, got, want)
		}
	}
	if got := gatherValue(t, reg, "holdfast_gateway_state", "started"); got != 1 {
		t.Errorf("state started = %v; want 1", got)
	}
	if got := gatherValue(t, reg, "holdfast_gateway_state", "starting"); got != 0 {
		t.Errorf("state starting = %v; want 0", got)
	}
	if n, err := testutil.GatherAndCount(reg, "go_goroutines", "process_resident_memory_bytes"); err != nil || n != 2 {
		t.Errorf("runtime collectors: %d series, %v", n, err)
	}
	// A nil *Metrics records nothing and does not panic.
	var none *Metrics
	none.Handshake(ResultOK, time.Second)
	none.GatewayState("down")
}

func gatherValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("%s{%s} not found", name, label)
	return 0
}

func TestBuildInfo(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	RegisterBuildInfo(reg, "v1.2.3", "go1.26.8")
	want := `
# HELP holdfast_build_info Always 1; the labels say which holdfast build runs and the Go version that built it.
# TYPE holdfast_build_info gauge
holdfast_build_info{goversion="go1.26.8",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "holdfast_build_info"); err != nil {
		t.Fatal(err)
	}
}
