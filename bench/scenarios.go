package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/bench/internal/procs"
)

// target is one path to the upstream.
type target struct {
	name string // direct, tunnel, koding, holdfast, tunnel_tls, holdfast_tls, baseline or baseline_tls
	url  string // ws:// or wss:// URL the load generator dials
	// tls is the load generator's TLS configuration for a wss:// URL
	// (trusting the run's test certificate); nil for ws://.
	tls  *tls.Config
	proc *procs.Child // process whose RSS is measured for idle sessions
	// proxy is the proxy's process, whose CPU time is measured under load;
	// nil for direct, which has none.
	proxy *procs.Child
}

// handshakeTimeout bounds one client handshake in every scenario except the
// startup window, which has its own bound.
const handshakeTimeout = 10 * time.Second

// openSessions runs n handshakes against t, at most par at a time, and
// returns the spliced conns. It fails if any handshake fails; the conns
// opened so far are closed.
func openSessions(ctx context.Context, t target, n, par int) ([]*websocket.Conn, error) {
	d := newDialer(handshakeTimeout, t.tls)
	conns := make([]*websocket.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conns[i], errs[i] = handshake(ctx, d, t.url, nil, sessionID(i), nil, handshakeTimeout)
		}()
	}
	wg.Wait()
	failed := 0
	var first error
	for _, err := range errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed > 0 {
		closeAll(conns)
		return nil, fmt.Errorf("%s: %d of %d handshakes failed, first: %w", t.name, failed, n, first)
	}
	return conns, nil
}

// closeAll closes every non-nil conn.
func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// rate is the outcome of one throughput or handshake round.
type rate struct {
	perSecond float64       // completed operations per second
	done      int64         // operations completed while cpu was taken
	cpu       time.Duration // the proxy's CPU time over the round; 0 for direct
}

// cpuNow returns t's proxy CPU time, or 0 for direct.
func cpuNow(t target) (time.Duration, error) {
	if t.proxy == nil {
		return 0, nil
	}
	d, err := t.proxy.CPU()
	if err != nil {
		return 0, fmt.Errorf("%s: cpu: %w", t.name, err)
	}
	return d, nil
}

// measureThroughput runs echo on `sessions` sessions for dur, each session
// keeping up to `window` messages in flight, and returns completed echoes per
// second. Each echo crosses a proxy twice (client to upstream and back). The
// proxy's CPU time (t.proxy's utime+stime) is taken over the same span: from
// the first message to the last echo, session set-up and teardown left out.
func measureThroughput(ctx context.Context, t target, sessions, window, size int, dur time.Duration) (rate, error) {
	var res rate
	conns, err := openSessions(ctx, t, sessions, 16)
	if err != nil {
		return res, err
	}
	defer closeAll(conns)
	payload := echoPayload(size)
	cpu0, err := cpuNow(t)
	if err != nil {
		return res, err
	}
	start := time.Now()
	end := start.Add(dur)
	var echoed atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 2*sessions)
	wctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	for _, c := range conns {
		tokens := make(chan struct{}, window)
		_ = c.SetReadDeadline(end.Add(2 * time.Second))
		_ = c.SetWriteDeadline(end.Add(2 * time.Second))
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			for {
				select {
				case tokens <- struct{}{}:
				case <-wctx.Done():
					return
				}
				if wctx.Err() != nil {
					return
				}
				if err := c.WriteMessage(websocket.TextMessage, payload); err != nil {
					errc <- fmt.Errorf("write: %w", err)
					return
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			buf := make([]byte, size+64)
			for {
				_, r, err := c.NextReader()
				if err != nil {
					if time.Now().Before(end) {
						errc <- fmt.Errorf("read: %w", err)
					}
					return
				}
				if _, err := io.ReadFull(r, buf[:size]); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
					errc <- fmt.Errorf("read: %w", err)
					return
				}
				if !time.Now().Before(end) {
					return
				}
				echoed.Add(1)
				<-tokens
			}
		}()
	}
	wg.Wait()
	cpu1, err := cpuNow(t)
	if err != nil {
		return res, err
	}
	res.cpu = cpu1 - cpu0
	elapsed := time.Since(start)
	if elapsed > dur {
		elapsed = dur
	}
	select {
	case err := <-errc:
		return res, fmt.Errorf("%s: throughput: %w", t.name, err)
	default:
	}
	res.done = echoed.Load()
	res.perSecond = float64(res.done) / elapsed.Seconds()
	return res, nil
}

// measureLatency sends `rate` messages per second in total, spread evenly
// over `sessions` sessions, each waiting for its echo before the next send,
// for dur. It returns every round-trip time.
func measureLatency(ctx context.Context, t target, sessions, size int, rate float64, dur time.Duration) ([]time.Duration, error) {
	conns, err := openSessions(ctx, t, sessions, 16)
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)
	payload := echoPayload(size)
	interval := time.Duration(float64(sessions) / rate * float64(time.Second))
	start := time.Now().Add(100 * time.Millisecond)
	end := start.Add(dur)
	rtts := make([][]time.Duration, sessions)
	errs := make([]error, sessions)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size+64)
			_ = c.SetReadDeadline(end.Add(5 * time.Second))
			_ = c.SetWriteDeadline(end.Add(5 * time.Second))
			next := start.Add(interval * time.Duration(i) / time.Duration(sessions))
			for next.Before(end) && ctx.Err() == nil {
				time.Sleep(time.Until(next))
				sent := time.Now()
				if err := c.WriteMessage(websocket.TextMessage, payload); err != nil {
					errs[i] = err
					return
				}
				_, r, err := c.NextReader()
				if err == nil {
					_, err = io.ReadFull(r, buf[:size])
				}
				if err != nil {
					errs[i] = err
					return
				}
				rtts[i] = append(rtts[i], time.Since(sent))
				next = next.Add(interval)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%s: latency: %w", t.name, err)
	}
	return slices.Concat(rtts...), nil
}

// percentile returns the p-th percentile (0..100) of d, nearest rank.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

// measureIdle opens n sessions through t, leaves them idle for settle, and
// returns the growth of t.proc's resident memory divided by n. A short
// warm-up first lets the process reach its steady per-connection state.
func measureIdle(ctx context.Context, t target, n int, settle time.Duration) (float64, error) {
	warm, err := openSessions(ctx, t, 32, 16)
	if err != nil {
		return 0, err
	}
	closeAll(warm)
	if err := sleepCtx(ctx, settle); err != nil {
		return 0, err
	}
	before, err := t.proc.RSS()
	if err != nil {
		return 0, err
	}
	conns, err := openSessions(ctx, t, n, 32)
	if err != nil {
		return 0, err
	}
	defer closeAll(conns)
	if err := sleepCtx(ctx, settle); err != nil {
		return 0, err
	}
	after, err := t.proc.RSS()
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n), nil
}

// measureHandshakes runs `workers` loops of dial, handshake and close
// against t for dur and returns completed handshakes per second, and the
// proxy's CPU time over all the handshakes made (those that end after dur
// included).
func measureHandshakes(ctx context.Context, t target, workers int, dur time.Duration) (rate, error) {
	var res rate
	d := newDialer(handshakeTimeout, t.tls)
	cpu0, err := cpuNow(t)
	if err != nil {
		return res, err
	}
	end := time.Now().Add(dur)
	var ok, all, failed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
				c, err := handshake(ctx, d, t.url, nil, sessionID(w*1_000_000+i), nil, handshakeTimeout)
				if err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
					continue
				}
				c.Close()
				all.Add(1)
				if time.Now().Before(end) {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	cpu1, err := cpuNow(t)
	if err != nil {
		return res, err
	}
	elapsed := min(time.Since(start), dur)
	if f := failed.Load(); f > ok.Load()/100 {
		return res, fmt.Errorf("%s: handshakes: %d failed, %d ok, first: %w", t.name, f, ok.Load(), firstErr)
	}
	res.perSecond = float64(ok.Load()) / elapsed.Seconds()
	res.done = all.Load()
	res.cpu = cpu1 - cpu0
	return res, nil
}

// driveHandshakes runs n handshakes against wsURL, `workers` at a time, each
// closed (without a close frame) as soon as it is spliced, as in the
// handshake scenario. It fails if any fails.
func driveHandshakes(wsURL string, n, workers int) error {
	d := newDialer(handshakeTimeout, nil)
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				c, err := handshake(context.Background(), d, wsURL, nil, sessionID(int(i)), nil, handshakeTimeout)
				if err != nil {
					errs[w] = fmt.Errorf("handshake %d: %w", i, err)
					return
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitUpstreamDrained polls the upstream's stats until no session is open
// (the previous scenario's sessions have been torn down through the proxy)
// or 10 s pass.
func waitUpstreamDrained(ctx context.Context, upstreamAddr string) {
	client := newHTTPClient()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		req, err := httpGet(ctx, "http://"+upstreamAddr+"/benchstats")
		if err != nil {
			return
		}
		resp, err := client.Do(req)
		if err == nil {
			var s struct{ Sessions int64 }
			derr := json.NewDecoder(resp.Body).Decode(&s)
			resp.Body.Close()
			if derr == nil && s.Sessions == 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
