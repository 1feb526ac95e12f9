package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/holdfast-proxy/holdfast/bench/internal/procs"
	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
)

// windowSettings shapes the startup-window scenario.
type windowSettings struct {
	clients int           // clients arriving evenly during the window
	window  time.Duration // how long the gateway answers connects with UNAVAILABLE
	timeout time.Duration // one client's bound from dial to hello-ok
	gateway string        // fakegw or bench
	path    string        // holdfast, or direct to see what clients get without it
}

// windowMaxPreauth is the gateway's limit of unauthenticated sockets per
// client IP (PROTOCOL.md §6, §9); every loopback client of holdfast shares
// its IP.
const windowMaxPreauth = 32

// balancerAddr is the address the attributed crowd's load balancer (the
// load generator) connects from: holdfast's trusted_proxies holds it.
const balancerAddr = "127.0.0.1"

// clientAddr returns the X-Forwarded-For address of client i of the
// attributed crowd, in 198.18.0.0/15 (RFC 2544's benchmarking range). It is
// only a header value: every socket stays on 127.0.0.1.
func clientAddr(i int) string {
	return fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)
}

// runWindow runs the startup-window scenario against a fresh holdfast:
// holdfast starts first, pointed at a gateway port that is still closed;
// then the gateway starts with a startup window, and the clients arrive
// evenly over that window. Each client makes exactly one attempt (dial,
// challenge, connect, wait for hello-ok), as an old client that does not
// retry would.
//
// The loopback crowd connects from 127.0.0.1 like any local client, so
// the gateway sees every one of them at one address. The attributed crowd
// arrives through a trusted load balancer: each client carries its own
// X-Forwarded-For address, holdfast's trusted_proxies holds the load
// generator, and the gateway (internal/fakegw) trusts holdfast and has
// every device paired; its 32 pre-auth sockets then count per client.
//
// With baseline, the holdfast measured is the -baseline-bin one, and the
// figures go to window_baseline or window_attributed_baseline.
func (b *bench) runWindow(ctx context.Context, attributed, baseline bool) {
	name := "window"
	if attributed {
		name = "window_attributed"
	}
	path := b.s.window.path
	if baseline {
		path = "baseline"
	}
	w, err := b.measureWindow(ctx, attributed, baseline)
	if err != nil {
		b.logf("%s: %v", name, err)
		b.r.fail(name, path, err)
		return
	}
	switch {
	case baseline && attributed:
		b.r.WindowAttributedBaseline = w
	case baseline:
		b.r.WindowBaseline = w
	case attributed:
		b.r.WindowAttributed = w
	default:
		b.r.Window = w
	}
	b.logf("%s (%s): %d/%d hello-ok, p50 after window %.0f ms, p99 %.0f ms, %.3f upstream connects per client, at most %d pre-auth sockets per address",
		name, path, w.OK, w.Clients, w.P50AfterWindowMs, w.P99AfterWindowMs, w.UpstreamConnectsPerClient, w.MaxPreauthPerAddress)
}

// measureWindow does the work of runWindow.
func (b *bench) measureWindow(ctx context.Context, attributed, baseline bool) (*windowReport, error) {
	bin := ""
	switch {
	case baseline:
		bin = b.baselineBin
	case b.s.window.path == "holdfast":
		var err error
		if bin, err = b.buildHoldfast(ctx); err != nil {
			return nil, err
		}
	}
	gwAddr, err := procs.FreePort()
	if err != nil {
		return nil, err
	}
	url := "ws://" + gwAddr + "/"
	var hfProc *procs.Child
	if bin != "" {
		name, opts := "holdfast-window", holdfastOptions{}
		if attributed {
			name, opts = "holdfast-window-attributed", holdfastOptions{trusted: []string{balancerAddr}}
		}
		if baseline {
			name = strings.Replace(name, "holdfast", "baseline", 1)
		}
		hf, _, err := b.launchHoldfast(ctx, bin, name, url, opts)
		if err != nil {
			return nil, err
		}
		defer hf.Kill()
		hfProc = hf
		url = "ws://" + hf.Addr + "/"
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ws := b.s.window
	if attributed {
		ws.gateway = "fakegw" // the bench upstream does not attribute
	}
	args := []string{"-listen", gwAddr, "-startup-window", ws.window.String()}
	switch ws.gateway {
	case "fakegw":
		args = append(args, "-serve-fakegw")
		if attributed {
			args = append(args, "-attributed")
		}
	case "bench":
		args = append(args, "-serve-upstream", "-max-preauth", strconv.Itoa(windowMaxPreauth))
	default:
		return nil, fmt.Errorf("unknown window gateway %q (want fakegw or bench)", ws.gateway)
	}
	gwName := "window-gateway"
	if attributed {
		gwName = "window-attributed-gateway"
	}
	gw, err := b.cs.Start(gwName, exe, args, true, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer gw.Kill()
	start := time.Now() // the window opens when the gateway listens
	windowEnd := start.Add(ws.window)
	if b.cpuProfile != "" && b.profilePhase == map[bool]string{false: "window", true: "window_attributed"}[attributed] {
		// The release: the 2 s after the window ends. holdfast is killed
		// only once the profile is saved.
		profiled := make(chan struct{})
		go func() {
			defer close(profiled)
			if sleepCtx(ctx, time.Until(windowEnd)) == nil {
				b.profileHoldfast(ctx, 2*time.Second)()
			}
		}()
		defer func() { <-profiled }()
	}
	// CPU time of each process over the release, from the window's end to
	// the last hello-ok: who was busy while the crowd was let go.
	pids := map[string]int{"gateway": gw.Cmd.Process.Pid, "clients": os.Getpid()}
	if hfProc != nil {
		pids["holdfast"] = hfProc.Cmd.Process.Pid
	}
	cpuAtEnd := map[string]time.Duration{}
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		if sleepCtx(ctx, time.Until(windowEnd)) != nil {
			return
		}
		for name, pid := range pids {
			if d, err := procs.CPUOf(pid); err == nil {
				cpuAtEnd[name] = d
			}
		}
	}()
	statsAddr := gw.Addr
	if f := strings.Fields(gw.Addr); len(f) == 2 {
		statsAddr = f[1]
	}

	// Half the clients sign a device proof bound to their socket's nonce
	// (what current clients send; a proxy cannot replay it), half use the
	// token alone (replayable).
	devs := make([]*deviceauth.Identity, ws.clients)
	for i := 0; i < ws.clients; i += 2 {
		if devs[i], err = deviceauth.NewIdentity(); err != nil {
			return nil, err
		}
	}

	d := newDialer(ws.timeout, nil)
	after := make([]time.Duration, ws.clients)
	errs := make([]error, ws.clients)
	var wg sync.WaitGroup
	for i := range ws.clients {
		at := start.Add(ws.window * time.Duration(i) / time.Duration(ws.clients))
		if err := sleepCtx(ctx, time.Until(at)); err != nil {
			break
		}
		wg.Add(1)
		var hdr http.Header
		if attributed {
			hdr = http.Header{"X-Forwarded-For": {clientAddr(i)}}
		}
		go func() {
			defer wg.Done()
			c, err := handshake(ctx, d, url, hdr, sessionID(i), devs[i], ws.timeout)
			if err != nil {
				errs[i] = err
				return
			}
			after[i] = max(0, time.Since(windowEnd))
			c.Close()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	<-sampled
	releaseCPU := map[string]float64{}
	for name, pid := range pids {
		d, err := procs.CPUOf(pid)
		if t0, ok := cpuAtEnd[name]; ok && err == nil {
			releaseCPU[name] = float64((d - t0).Milliseconds())
		}
	}

	st, err := fetchStats(ctx, statsAddr)
	if err != nil {
		return nil, err
	}
	w := &windowReport{Clients: ws.clients, Path: ws.path, Upstream: ws.gateway, Failures: map[string]int{}}
	if baseline {
		w.Path = "baseline"
	}
	var ok []time.Duration
	for i, err := range errs {
		if err != nil {
			w.Failures[shortErr(err)]++
			continue
		}
		ok = append(ok, after[i])
	}
	w.OK = len(ok)
	w.ReleaseCPUMs = releaseCPU
	if len(ok) > 0 {
		w.ReleaseMs = float64(slices.Max(ok).Microseconds()) / 1000
	}
	w.P99AfterWindowMs = float64(percentile(ok, 99).Microseconds()) / 1000
	w.P50AfterWindowMs = float64(percentile(ok, 50).Microseconds()) / 1000
	w.UpstreamConnectsPerClient = float64(st.Connects) / float64(ws.clients)
	w.MaxPreauthPerAddress = st.MaxPreauth
	b.logf("%s: gateway saw %d upgrades, %d connects, %d hello-ok, %d refused by the pre-auth limit, at most %d pre-auth sockets per address",
		gwName, st.Upgrades, st.Connects, st.HelloOK, st.Refused, st.MaxPreauth)
	return w, nil
}

// fetchStats reads the window gateway's counters.
func fetchStats(ctx context.Context, addr string) (gatewayStats, error) {
	var st gatewayStats
	req, err := httpGet(ctx, "http://"+addr+"/benchstats")
	if err != nil {
		return st, err
	}
	resp, err := newHTTPClient().Do(req)
	if err != nil {
		return st, fmt.Errorf("gateway stats: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("gateway stats: %w", err)
	}
	return st, nil
}

// floorReport is the attributed crowd's floor: the same clients released at
// once against a gateway that has started, through the tunnel, with no
// startup window at all.
type floorReport struct {
	Clients int `json:"clients"`
	OK      int `json:"ok"`
	// P99Ms and P50Ms are times from the release to hello-ok: a full
	// handshake each (TCP, upgrade, challenge, connect, hello-ok) through
	// the tunnel, all clients at once.
	P99Ms                     float64 `json:"p99_ms"`
	P50Ms                     float64 `json:"p50_ms"`
	UpstreamConnectsPerClient float64 `json:"upstream_connects_per_client"`
	MaxPreauthPerAddress      int64   `json:"max_preauth_per_address"`
	// ReleaseMs is the time from the release to the last hello-ok, and
	// ReleaseCPUMs what the tunnel, the gateway and the clients used of
	// CPU over it, in ms.
	ReleaseMs    float64            `json:"release_ms"`
	ReleaseCPUMs map[string]float64 `json:"release_cpu_ms,omitempty"`
	Failures     map[string]int     `json:"failures,omitempty"`
}

// runAttributedFloor measures the attributed crowd's floor (see
// measureAttributedFloor) and records it in the report.
func (b *bench) runAttributedFloor(ctx context.Context) {
	f, err := b.measureAttributedFloor(ctx)
	if err != nil {
		b.logf("window_attributed floor: %v", err)
		b.r.Errors["window_attributed_floor"] = err.Error()
		return
	}
	b.r.AttributedFloor = f
	b.logf("window_attributed floor (tunnel, started gateway, all released at once): %d/%d hello-ok, p50 %.0f ms, p99 %.0f ms, %.3f upstream connects per client",
		f.OK, f.Clients, f.P50Ms, f.P99Ms, f.UpstreamConnectsPerClient)
}

// measureAttributedFloor releases the attributed crowd at once against
// a gateway that has started: the same clients as the attributed window
// (half device-signed, each with its own X-Forwarded-For address), the
// same fake gateway (trusting the proxy, every device paired), each client
// one attempt, but through the tunnel (httputil.ReverseProxy, passing
// X-Forwarded-For on) and with no window. It is what the crowd's own work
// takes on this machine in this run, with no proxy logic in the way:
// every client needs its whole handshake, as every client released by a
// proxy that holds nothing warm would.
func (b *bench) measureAttributedFloor(ctx context.Context) (*floorReport, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	gwAddr, err := procs.FreePort()
	if err != nil {
		return nil, err
	}
	gw, err := b.cs.Start("floor-gateway", exe, []string{"-listen", gwAddr, "-startup-window", "0s", "-serve-fakegw", "-attributed"}, true, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer gw.Kill()
	statsAddr := gw.Addr
	if f := strings.Fields(gw.Addr); len(f) == 2 {
		statsAddr = f[1]
	}
	tun, err := b.cs.Start("floor-tunnel", exe, []string{"-serve-proxy", "tunnel", "-upstream", "http://" + gwAddr, "-forward-for"}, true, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer tun.Kill()

	ws := b.s.window
	devs := make([]*deviceauth.Identity, ws.clients)
	for i := 0; i < ws.clients; i += 2 {
		if devs[i], err = deviceauth.NewIdentity(); err != nil {
			return nil, err
		}
	}
	d := newDialer(ws.timeout, nil)
	url := "ws://" + tun.Addr + "/"
	after := make([]time.Duration, ws.clients)
	errs := make([]error, ws.clients)
	release := make(chan struct{})
	var start time.Time // written before release is closed
	var wg sync.WaitGroup
	for i := range ws.clients {
		wg.Add(1)
		hdr := http.Header{"X-Forwarded-For": {clientAddr(i)}}
		go func() {
			defer wg.Done()
			<-release
			c, err := handshake(ctx, d, url, hdr, sessionID(i), devs[i], ws.timeout)
			if err != nil {
				errs[i] = err
				return
			}
			after[i] = time.Since(start)
			c.Close()
		}()
	}
	pids := map[string]int{"tunnel": tun.Cmd.Process.Pid, "gateway": gw.Cmd.Process.Pid, "clients": os.Getpid()}
	cpu0 := map[string]time.Duration{}
	for name, pid := range pids {
		if d, err := procs.CPUOf(pid); err == nil {
			cpu0[name] = d
		}
	}
	start = time.Now()
	close(release)
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	f := &floorReport{Clients: ws.clients, ReleaseCPUMs: map[string]float64{}, Failures: map[string]int{}}
	for name, pid := range pids {
		d, err := procs.CPUOf(pid)
		if t0, ok := cpu0[name]; ok && err == nil {
			f.ReleaseCPUMs[name] = float64((d - t0).Milliseconds())
		}
	}
	st, err := fetchStats(ctx, statsAddr)
	if err != nil {
		return nil, err
	}
	var ok []time.Duration
	for i, err := range errs {
		if err != nil {
			f.Failures[shortErr(err)]++
			continue
		}
		ok = append(ok, after[i])
	}
	f.OK = len(ok)
	if len(ok) > 0 {
		f.ReleaseMs = float64(slices.Max(ok).Microseconds()) / 1000
	}
	f.P99Ms = float64(percentile(ok, 99).Microseconds()) / 1000
	f.P50Ms = float64(percentile(ok, 50).Microseconds()) / 1000
	f.UpstreamConnectsPerClient = float64(st.Connects) / float64(ws.clients)
	f.MaxPreauthPerAddress = st.MaxPreauth
	return f, nil
}
