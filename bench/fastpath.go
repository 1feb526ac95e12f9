package main

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
)

// fastPathReport is what holdfast's own metrics say about the handshake
// scenario, where the gateway is up throughout: every handshake should go
// straight through, with no hold, no readiness probe, no delayed dial and
// no retry.
type fastPathReport struct {
	Handshakes   float64 `json:"handshakes"` // holdfast_handshakes_total{result="ok"}
	Holds        float64 `json:"holds"`      // holdfast_connect_holds_total
	Probes       float64 `json:"probes"`     // holdfast_readiness_probes_total
	DelayedDials float64 `json:"delayed_dials"`
	Retries      float64 `json:"retries"` // holdfast_upstream_retries_total
}

// fastPathMetrics are the series summed for a fastPathReport.
var fastPathMetrics = []string{
	"holdfast_handshakes_total",
	"holdfast_connect_holds_total",
	"holdfast_readiness_probes_total",
	"holdfast_upstream_dials_delayed_total",
	"holdfast_upstream_retries_total",
}

// scrapeFastPath reads holdfast's /metrics at addr and sums the series of
// fastPathMetrics (handshakes only with result="ok").
func scrapeFastPath(ctx context.Context, addr string) (fastPathReport, error) {
	var r fastPathReport
	req, err := httpGet(ctx, "http://"+addr+"/metrics")
	if err != nil {
		return r, err
	}
	resp, err := newHTTPClient().Do(req)
	if err != nil {
		return r, fmt.Errorf("holdfast metrics: %w", err)
	}
	defer resp.Body.Close()
	sums := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		series := name
		if i := strings.IndexByte(name, '{'); i >= 0 {
			series = name[:i]
			if series == "holdfast_handshakes_total" && !strings.Contains(name[i:], `result="ok"`) {
				continue
			}
		}
		for _, m := range fastPathMetrics {
			if series == m {
				v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
				if err != nil {
					return r, fmt.Errorf("holdfast metrics: %q: %w", line, err)
				}
				sums[m] += v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return r, fmt.Errorf("holdfast metrics: %w", err)
	}
	r = fastPathReport{
		Handshakes:   sums["holdfast_handshakes_total"],
		Holds:        sums["holdfast_connect_holds_total"],
		Probes:       sums["holdfast_readiness_probes_total"],
		DelayedDials: sums["holdfast_upstream_dials_delayed_total"],
		Retries:      sums["holdfast_upstream_retries_total"],
	}
	return r, nil
}

// minus returns r - o, field by field.
func (r fastPathReport) minus(o fastPathReport) fastPathReport {
	return fastPathReport{
		Handshakes:   r.Handshakes - o.Handshakes,
		Holds:        r.Holds - o.Holds,
		Probes:       r.Probes - o.Probes,
		DelayedDials: r.DelayedDials - o.DelayedDials,
		Retries:      r.Retries - o.Retries,
	}
}
