package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// windowSettings shapes the startup-window scenario.
type windowSettings struct {
	clients int           // clients arriving evenly during the window
	window  time.Duration // how long the gateway answers connects with UNAVAILABLE
	timeout time.Duration // one client's bound from dial to hello-ok
}

// windowMaxPreauth is the gateway's limit of unauthenticated sockets per
// client IP (PROTOCOL.md §6, §9); every client of holdfast shares its IP.
const windowMaxPreauth = 32

// runWindow runs the startup-window scenario against a fresh holdfast:
// holdfast starts first, pointed at a gateway port that is still closed;
// then the gateway starts with a startup window, and the clients arrive
// evenly over that window. Each client makes exactly one attempt (dial,
// challenge, connect, wait for hello-ok), as an old client that does not
// retry would.
func (b *bench) runWindow(ctx context.Context) {
	w, err := b.measureWindow(ctx)
	if err != nil {
		b.logf("window: %v", err)
		b.r.fail("window", "holdfast", err)
		return
	}
	b.r.Window = w
	b.logf("window: %d/%d hello-ok, p99 after window %.0f ms, %.3f upstream connects per client",
		w.OK, w.Clients, w.P99AfterWindowMs, w.UpstreamConnectsPerClient)
}

// measureWindow does the work of runWindow.
func (b *bench) measureWindow(ctx context.Context) (*windowReport, error) {
	bin, err := b.buildHoldfast(ctx)
	if err != nil {
		return nil, err
	}
	gwAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	hf, _, err := b.launchHoldfast(ctx, bin, "holdfast-window", "ws://"+gwAddr+"/")
	if err != nil {
		return nil, err
	}
	defer hf.kill()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ws := b.s.window
	gw, err := b.cs.start("window-gateway", exe, []string{
		"-serve-upstream", "-listen", gwAddr,
		"-startup-window", ws.window.String(),
		"-max-preauth", strconv.Itoa(windowMaxPreauth),
	}, true, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer gw.kill()
	start := time.Now() // the window opens when the gateway listens
	windowEnd := start.Add(ws.window)

	url := "ws://" + hf.addr + "/"
	d := newDialer(ws.timeout)
	after := make([]time.Duration, ws.clients)
	errs := make([]error, ws.clients)
	var wg sync.WaitGroup
	for i := range ws.clients {
		at := start.Add(ws.window * time.Duration(i) / time.Duration(ws.clients))
		if err := sleepCtx(ctx, time.Until(at)); err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := handshake(ctx, d, url, sessionID(i), ws.timeout)
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

	st, err := fetchStats(ctx, gw.addr)
	if err != nil {
		return nil, err
	}
	w := &windowReport{Clients: ws.clients, Upstream: "bench", Failures: map[string]int{}}
	var ok []time.Duration
	for i, err := range errs {
		if err != nil {
			w.Failures[shortErr(err)]++
			continue
		}
		ok = append(ok, after[i])
	}
	w.OK = len(ok)
	w.P99AfterWindowMs = float64(percentile(ok, 99).Microseconds()) / 1000
	w.UpstreamConnectsPerClient = float64(st.Connects) / float64(ws.clients)
	b.logf("window: gateway saw %d upgrades, %d connects, %d hello-ok, %d refused by the pre-auth limit",
		st.Upgrades, st.Connects, st.HelloOK, st.Refused)
	return w, nil
}

// fetchStats reads the bench upstream's counters.
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
