package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// runScenarios runs idle, throughput, latency and handshakes over every
// started path. Idle runs first, on fresh processes, so the memory figure
// is not blurred by heap left over from the load scenarios. Within a
// scenario the paths take turns, round by round, so slow drifts of the
// machine spread over all of them.
func (b *bench) runScenarios(ctx context.Context) {
	for _, t := range b.targets {
		if ctx.Err() != nil || !b.s.runs("idle") {
			break
		}
		v, err := measureIdle(ctx, t, b.s.idleN, b.s.settle)
		b.record("idle", t, err, func() { b.r.Idle[t.name] = v }, "%.0f B/session", v)
		waitUpstreamDrained(ctx, b.upstream.Addr)
	}

	for _, t := range b.targets {
		if t.proxy == nil {
			b.r.Notes = map[string]string{
				"cpu_us_per_msg":       t.name + " has no proxy process",
				"cpu_us_per_handshake": t.name + " has no proxy process",
			}
		}
	}
	sums := map[string]float64{}
	cpu := map[string]time.Duration{}
	done := map[string]int64{}
	for round := range b.s.rounds {
		for _, t := range b.targets {
			if ctx.Err() != nil {
				return
			}
			if !b.s.runs("throughput") {
				break
			}
			var stopProfile func()
			if t.name == b.profiledPath() && round == 0 && b.cpuProfile != "" && b.profilePhase == "throughput" {
				stopProfile = b.profileHoldfast(ctx, b.s.throughDur)
			}
			v, err := measureThroughput(ctx, t, b.s.sessions, b.s.inFlight, b.s.msgSize, b.s.throughDur)
			if stopProfile != nil {
				stopProfile()
			}
			b.record("throughput", t, err, func() {
				sums[t.name] += v.perSecond
				b.r.Throughput[t.name] = sums[t.name] / float64(round+1)
				if t.proxy != nil && v.done > 0 {
					cpu[t.name] += v.cpu
					done[t.name] += v.done
					b.r.CPUPerMsg[t.name] = float64(cpu[t.name].Nanoseconds()) / 1e3 / float64(done[t.name])
				}
			}, "round %d: %.0f msg/s, %s", round+1, v.perSecond, cpuText(t, v))
			waitUpstreamDrained(ctx, b.upstream.Addr)
		}
	}

	rtts := map[string][]time.Duration{}
	for round := range b.s.rounds {
		for _, t := range b.targets {
			if ctx.Err() != nil {
				return
			}
			if !b.s.runs("latency") {
				break
			}
			d, err := measureLatency(ctx, t, b.s.latSessions, b.s.msgSize, b.s.rate, b.s.latencyDur)
			b.record("latency", t, err, func() {
				rtts[t.name] = append(rtts[t.name], d...)
				b.r.RTTP50[t.name] = float64(percentile(rtts[t.name], 50).Microseconds())
				b.r.RTTP99[t.name] = float64(percentile(rtts[t.name], 99).Microseconds())
			}, "round %d: p50 %v p99 %v (%d samples)", round+1, percentile(d, 50), percentile(d, 99), len(d))
			waitUpstreamDrained(ctx, b.upstream.Addr)
		}
	}

	clear(sums)
	clear(cpu)
	clear(done)
	var fastBefore *fastPathReport
	if b.holdfastMetrics != "" && b.s.runs("handshakes") {
		// One handshake first, so that holdfast has seen the gateway
		// started (with nothing seen yet, a probe is due).
		for _, t := range b.targets {
			if t.name == "holdfast" {
				if c, err := handshake(ctx, newDialer(handshakeTimeout, t.tls), t.url, nil, "warm-up", nil, handshakeTimeout); err == nil {
					c.Close()
				}
			}
		}
		if r, err := scrapeFastPath(ctx, b.holdfastMetrics); err == nil {
			fastBefore = &r
		} else {
			b.logf("handshakes: %v", err)
		}
	}
	defer func() {
		if fastBefore == nil || ctx.Err() != nil {
			return
		}
		after, err := scrapeFastPath(ctx, b.holdfastMetrics)
		if err != nil {
			b.logf("handshakes: %v", err)
			return
		}
		d := after.minus(*fastBefore)
		b.r.FastPath = &d
		b.logf("handshakes holdfast: %.0f handshakes, %.0f holds, %.0f readiness probes, %.0f delayed dials, %.0f retries",
			d.Handshakes, d.Holds, d.Probes, d.DelayedDials, d.Retries)
	}()
	for round := range b.s.rounds {
		for _, t := range b.targets {
			if ctx.Err() != nil {
				return
			}
			if !b.s.runs("handshakes") {
				break
			}
			var stopProfile func()
			if t.name == b.profiledPath() && round == 0 && b.cpuProfile != "" && b.profilePhase == "handshakes" {
				stopProfile = b.profileHoldfast(ctx, b.s.handDur)
			}
			v, err := measureHandshakes(ctx, t, b.s.handWorkers, b.s.handDur)
			if stopProfile != nil {
				stopProfile()
			}
			b.record("handshakes", t, err, func() {
				sums[t.name] += v.perSecond
				b.r.Handshakes[t.name] = sums[t.name] / float64(round+1)
				if t.proxy != nil && v.done > 0 {
					cpu[t.name] += v.cpu
					done[t.name] += v.done
					b.r.CPUPerHandshake[t.name] = float64(cpu[t.name].Nanoseconds()) / 1e3 / float64(done[t.name])
				}
			}, "round %d: %.0f/s, %s", round+1, v.perSecond, cpuText(t, v))
			waitUpstreamDrained(ctx, b.upstream.Addr)
		}
	}
}

// cpuText describes the proxy CPU time of one round.
func cpuText(t target, v rate) string {
	if t.proxy == nil {
		return "no proxy process"
	}
	if v.done == 0 {
		return "nothing done"
	}
	return fmt.Sprintf("proxy cpu %v (%.1f us/op)", v.cpu, float64(v.cpu.Nanoseconds())/1e3/float64(v.done))
}

// record logs one measurement and stores it with set, or records err as the
// reason the figure is missing. A scenario that fails for a path in one
// round leaves that path's figure out.
func (b *bench) record(scenario string, t target, err error, set func(), format string, args ...any) {
	if err != nil {
		b.logf("%s %s: %v", scenario, t.name, err)
		b.r.fail(scenario, t.name, err)
		return
	}
	if _, failed := b.r.Errors[scenario+"/"+t.name]; failed {
		return
	}
	set()
	b.logf("%s %s: %s", scenario, t.name, fmt.Sprintf(format, args...))
}

// profileHoldfast starts fetching a CPU profile of holdfast for d from the
// pprof listener of its profiling build (see pprofOverlay) and returns a
// function that waits for it and saves it to b.cpuProfile.
func (b *bench) profileHoldfast(ctx context.Context, d time.Duration) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.pprofAddr, max(1, int(d.Seconds()+0.5)))
		req, err := httpGet(ctx, url)
		if err != nil {
			return
		}
		resp, err := (&http.Client{Timeout: d + 10*time.Second}).Do(req)
		if err != nil {
			b.logf("holdfast cpu profile: %v", err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.logf("holdfast cpu profile: %s answered %s", url, resp.Status)
			return
		}
		f, err := os.Create(b.cpuProfile)
		if err != nil {
			b.logf("holdfast cpu profile: %v", err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			b.logf("holdfast cpu profile: %v", err)
			return
		}
		b.logf("holdfast cpu profile saved to %s", b.cpuProfile)
	}()
	return func() { <-done }
}
