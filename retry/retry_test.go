package retry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestClampRetryAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ms   int64
		want time.Duration
	}{
		{-1, 500 * time.Millisecond}, // absent: the gateway's default
		{0, 100 * time.Millisecond},
		{50, 100 * time.Millisecond},
		{500, 500 * time.Millisecond},
		{1999, 1999 * time.Millisecond},
		{60000, 2 * time.Second},
	} {
		if got := ClampRetryAfter(tc.ms); got != tc.want {
			t.Errorf("ClampRetryAfter(%d) = %v; want %v", tc.ms, got, tc.want)
		}
	}
}

func TestBackoffDial(t *testing.T) {
	t.Parallel()
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for _, tc := range []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{1, 0, 25 * time.Millisecond}, // the floor: Base/4
		{1, 1, 100 * time.Millisecond},
		{2, 1, 200 * time.Millisecond},
		{3, 1, 400 * time.Millisecond},
		{4, 1, 800 * time.Millisecond},
		{5, 1, time.Second}, // capped
		{50, 1, time.Second},
		{50, 0.5, 25*time.Millisecond + (time.Second-25*time.Millisecond)/2},
	} {
		b.Rand = func() float64 { return tc.r }
		if got := b.Dial(tc.attempt); got != tc.want {
			t.Errorf("Dial(%d) with rand %v = %v; want %v", tc.attempt, tc.r, got, tc.want)
		}
	}
}

func TestBackoffRetryAfterJitter(t *testing.T) {
	t.Parallel()
	b := Backoff{Rand: LockedRand(1)}
	d := 500 * time.Millisecond
	for range 1000 {
		got := b.RetryAfter(d)
		if got < d || got >= d+d/4 {
			t.Fatalf("RetryAfter(%v) = %v; want in [%v, %v)", d, got, d, d+d/4)
		}
	}
}

func TestBudget(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(1000, 0)}
	b := NewBudget(clk, 2*time.Second)
	if !b.Allows(time.Second, 500*time.Millisecond) {
		t.Error("a fresh 2s budget must allow a 1s wait plus 0.5s")
	}
	clk.Advance(1600 * time.Millisecond)
	if got := b.Remaining(); got != 400*time.Millisecond {
		t.Errorf("Remaining = %v; want 400ms", got)
	}
	if b.Allows(200*time.Millisecond, 250*time.Millisecond) {
		t.Error("400ms left must not allow 200ms + 250ms")
	}
	clk.Advance(time.Hour)
	if got := b.Remaining(); got != 0 {
		t.Errorf("Remaining after the deadline = %v; want 0", got)
	}
}

// One watcher serves every waiter with one poller, probes only while
// someone waits, and releases all waiters when the gateway has started.
func TestWatcherSharesOnePoller(t *testing.T) {
	t.Parallel()
	var probes, concurrent, maxConcurrent atomic.Int64
	var started atomic.Bool
	w := NewWatcher(WatcherConfig{
		PollInterval: 20 * time.Millisecond,
		Probe: func(ctx context.Context) (State, error) {
			probes.Add(1)
			n := concurrent.Add(1)
			defer concurrent.Add(-1)
			for {
				m := maxConcurrent.Load()
				if n <= m || maxConcurrent.CompareAndSwap(m, n) {
					break
				}
			}
			if started.Load() {
				return Started, nil
			}
			return Starting, nil
		},
	})
	defer w.Close()

	const waiters = 100
	var wg sync.WaitGroup
	errs := make(chan error, waiters)
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			errs <- w.WaitStarted(ctx)
		}()
	}
	time.Sleep(300 * time.Millisecond)
	started.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("WaitStarted: %v", err)
		}
	}
	n := probes.Load()
	if n < 5 || n > 25 {
		t.Errorf("%d probes for 100 waiters over ~300ms at 20ms; want 5..25", n)
	}
	if maxConcurrent.Load() != 1 {
		t.Errorf("%d probes ran at once; want 1", maxConcurrent.Load())
	}
	// Nobody waits now: no more probes.
	time.Sleep(100 * time.Millisecond)
	before := probes.Load()
	time.Sleep(200 * time.Millisecond)
	if after := probes.Load(); after != before {
		t.Errorf("%d probes with nobody waiting; want 0", after-before)
	}
}

func TestWatcherFreshness(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(1000, 0)}
	w := NewWatcher(WatcherConfig{Clock: clk, FreshFor: time.Second,
		Probe: func(context.Context) (State, error) { return Starting, nil }})
	defer w.Close()
	if w.Started() {
		t.Fatal("a new watcher must not claim Started")
	}
	w.Observe(Started)
	if !w.Started() {
		t.Fatal("Started just observed must count")
	}
	clk.Advance(1100 * time.Millisecond)
	if w.Started() {
		t.Fatal("a Started observation older than FreshFor must not count")
	}
	if s, age := w.State(); s != Started || age != 1100*time.Millisecond {
		t.Errorf("State = %v, %v", s, age)
	}
	// An Observe from a connection wakes a waiter at once.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- w.WaitStarted(ctx)
	}()
	time.Sleep(50 * time.Millisecond)
	w.Observe(Started)
	if err := <-done; err != nil {
		t.Fatalf("WaitStarted after Observe(Started): %v", err)
	}
}

func TestWatcherCloseReleasesWaiters(t *testing.T) {
	t.Parallel()
	w := NewWatcher(WatcherConfig{PollInterval: 10 * time.Millisecond,
		Probe: func(context.Context) (State, error) { return Starting, nil }})
	done := make(chan error, 1)
	go func() { done <- w.WaitStarted(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	w.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("WaitStarted returned nil after Close")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not release the waiter")
	}
}

func TestHTTPProbe(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		startupz func(w http.ResponseWriter)
		readyz   func(w http.ResponseWriter)
		want     State
	}{
		{"startupz started", jsonAnswer(200, `{"ok":true,"status":"started"}`), nil, Started},
		{"startupz starting", jsonAnswer(503, `{"ok":false,"status":"starting"}`), nil, Starting},
		{"startupz draining", jsonAnswer(503, `{"ok":false,"status":"draining"}`), nil, Starting},
		{"legacy html, readyz starting", htmlAnswer, jsonAnswer(503, `{"ready":false,"failing":["startup-sidecars"],"uptimeMs":5}`), Starting},
		{"legacy html, readyz ready", htmlAnswer, jsonAnswer(200, `{"ready":true}`), Started},
		{"legacy html, readyz failing for another reason", htmlAnswer, jsonAnswer(503, `{"ready":false,"failing":["channel:slack"]}`), Started},
		{"legacy html, plain readyz body", htmlAnswer, jsonAnswer(503, `{"ready":false}`), Starting},
		{"no startupz route", func(w http.ResponseWriter) { http.NotFound(w, nil) }, jsonAnswer(200, `{"ready":true}`), Started},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var forwarded atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "" {
					forwarded.Store(true)
				}
				switch r.URL.Path {
				case "/startupz":
					tc.startupz(w)
				case "/readyz":
					if tc.readyz == nil {
						t.Error("probe fell back to /readyz")
						http.NotFound(w, r)
						return
					}
					tc.readyz(w)
				}
			}))
			defer srv.Close()
			u, _ := url.Parse("ws" + srv.URL[len("http"):] + "/")
			p := NewHTTPProbe(u, nil)
			got, err := p.Probe(context.Background())
			if err != nil || got != tc.want {
				t.Fatalf("Probe = %v, %v; want %v", got, err, tc.want)
			}
			if forwarded.Load() {
				t.Error("the probe sent forwarding headers")
			}
		})
	}
}

func TestHTTPProbeGatewayDown(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	u, _ := url.Parse("ws" + srv.URL[len("http"):])
	srv.Close()
	got, err := NewHTTPProbe(u, nil).Probe(context.Background())
	if err == nil || got != Down {
		t.Fatalf("Probe of a closed port = %v, %v; want Down and an error", got, err)
	}
}

func jsonAnswer(status int, body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func htmlAnswer(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte("<!doctype html><title>Control UI</title>"))
}

func TestWatcherReportsChanges(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var changes []string
	w := NewWatcher(WatcherConfig{
		Probe: func(context.Context) (State, error) { return Starting, nil },
		OnChange: func(from, to State) {
			mu.Lock()
			changes = append(changes, from.String()+">"+to.String())
			mu.Unlock()
		},
	})
	defer w.Close()
	for _, s := range []State{Down, Down, Starting, Started, Started, Down} {
		w.Observe(s)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "unknown>down down>starting starting>started started>down"
	if got := strings.Join(changes, " "); got != want {
		t.Errorf("changes %q; want %q", got, want)
	}
}

// Readiness endpoints that are not the gateway's, and transport failures:
// what each says of the gateway.
func TestHTTPProbeUnusableAndFailing(t *testing.T) {
	t.Parallel()
	html404 := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("<html>404</html>"))
	}
	html502 := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
	}
	for _, tc := range []struct {
		name      string
		startupz  func(w http.ResponseWriter)
		readyz    func(w http.ResponseWriter)
		want      State
		unusable  bool
		wantError bool
	}{
		{"404 HTML on both", html404, html404, Unknown, true, true},
		{"readyz 404 JSON", html404, jsonAnswer(404, `{"error":"not found"}`), Unknown, true, true},
		{"readyz 200 HTML (a catch-all page)", htmlAnswer, htmlAnswer, Unknown, true, true},
		{"front cannot reach the gateway", html404, html502, Down, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/startupz":
					tc.startupz(w)
				case "/readyz":
					tc.readyz(w)
				}
			}))
			defer srv.Close()
			u, _ := url.Parse("ws" + srv.URL[len("http"):])
			got, err := NewHTTPProbe(u, nil).Probe(context.Background())
			if got != tc.want || (err != nil) != tc.wantError || errors.Is(err, ErrNoReadiness) != tc.unusable {
				t.Fatalf("Probe = %v, %v; want %v (unusable %v)", got, err, tc.want, tc.unusable)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(release)
		u, _ := url.Parse("ws" + srv.URL[len("http"):])
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		got, err := NewHTTPProbe(u, nil).Probe(ctx)
		if err == nil || got != Unknown {
			t.Fatalf("Probe = %v, %v; want Unknown and an error: a timeout says nothing", got, err)
		}
	})
}

// The poller stops once the start is confirmed, even while waiters are
// still being woken: no probe right after "started".
func TestWatcherStopsOnceStarted(t *testing.T) {
	t.Parallel()
	var probes atomic.Int64
	var started atomic.Bool
	w := NewWatcher(WatcherConfig{PollInterval: 10 * time.Millisecond,
		Probe: func(context.Context) (State, error) {
			probes.Add(1)
			if started.Load() {
				return Started, nil
			}
			return Starting, nil
		}})
	defer w.Close()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := w.WaitStarted(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	started.Store(true)
	wg.Wait()
	n := probes.Load()
	time.Sleep(100 * time.Millisecond)
	if after := probes.Load(); after != n {
		t.Errorf("%d probes after the start was confirmed; want 0", after-n)
	}
}

// A probe that times out changes nothing: "started" stays the last state,
// and no change is reported.
func TestWatcherProbeTimeoutKeepsState(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(1000, 0)}
	var changes atomic.Int64
	w := NewWatcher(WatcherConfig{Clock: clk, ProbeTimeout: 20 * time.Millisecond, PollInterval: 10 * time.Millisecond,
		OnChange: func(State, State) { changes.Add(1) },
		Probe: func(ctx context.Context) (State, error) {
			<-ctx.Done()
			return Unknown, ctx.Err()
		}})
	defer w.Close()
	w.Observe(Started)
	clk.Advance(2 * time.Second) // stale: a waiter probes
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if err := w.WaitStarted(ctx); err == nil {
		t.Fatal("WaitStarted confirmed a stale start")
	}
	if s, _ := w.State(); s != Started {
		t.Errorf("state %v after probes that timed out; want started", s)
	}
	if n := changes.Load(); n != 1 {
		t.Errorf("%d changes; want 1 (unknown>started)", n)
	}
}

// Unusable readiness endpoints: said once, waiters released at once, no
// probing until blindRecheck, and what connections see still counts.
func TestWatcherBlind(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(1000, 0)}
	var probes, blinds atomic.Int64
	w := NewWatcher(WatcherConfig{Clock: clk, PollInterval: 10 * time.Millisecond,
		OnBlind: func(error) { blinds.Add(1) },
		Probe: func(context.Context) (State, error) {
			probes.Add(1)
			return Unknown, fmt.Errorf("%w: 404", ErrNoReadiness)
		}})
	defer w.Close()
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := w.WaitStarted(ctx)
		cancel()
		if !errors.Is(err, ErrNoReadiness) {
			t.Fatalf("WaitStarted = %v; want ErrNoReadiness", err)
		}
	}
	if !w.Blind() || probes.Load() != 1 || blinds.Load() != 1 {
		t.Errorf("blind %v, %d probes, %d reports; want blind, 1, 1", w.Blind(), probes.Load(), blinds.Load())
	}
	w.Observe(Started)
	if !w.Started() {
		t.Error("a connection's hello-ok does not count while blind")
	}
	clk.Advance(blindRecheck + time.Second)
	if w.Blind() {
		t.Error("still blind after blindRecheck")
	}
}

// Open sessions keep a start confirmed past FreshFor; without them it
// ages out.
func TestWatcherLiveSessions(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(1000, 0)}
	w := NewWatcher(WatcherConfig{Clock: clk, FreshFor: time.Second,
		Probe: func(context.Context) (State, error) { return Starting, nil }})
	defer w.Close()
	w.Observe(Started)
	w.Live(1)
	clk.Advance(time.Minute)
	if !w.Started() {
		t.Error("a start with a session open aged out")
	}
	w.Live(-1)
	if w.Started() {
		t.Error("a start a minute old counts with no session open")
	}
	w.Live(1)
	w.Observe(Down)
	if w.Started() {
		t.Error("down observed, yet started")
	}
}
