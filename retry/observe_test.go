package retry

import (
	"context"
	"testing"
	"time"
)

// On a started gateway every hello-ok observes Started: with nobody
// waiting that costs no allocation, and a waiter that comes later still
// returns at once.
func TestWatcherObserveStartedWithoutWaiters(t *testing.T) {
	// Serial: testing.AllocsPerRun counts the whole process's allocations
	// (and refuses to run beside parallel tests).
	w := NewWatcher(WatcherConfig{Probe: func(context.Context) (State, error) { return Started, nil }})
	defer w.Close()
	w.Observe(Started)
	if n := testing.AllocsPerRun(100, func() { w.Observe(Started) }); n != 0 {
		t.Fatalf("Observe(Started) with no waiter: %v allocations; want 0", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.WaitStarted(ctx); err != nil {
		t.Fatalf("WaitStarted on a fresh start: %v", err)
	}
}

// SeenNotStartedSince remembers the last Starting or Down, whatever was
// observed after it.
func TestWatcherSeenNotStartedSince(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(1000, 0)}
	w := NewWatcher(WatcherConfig{Clock: clk, Probe: func(context.Context) (State, error) { return Started, nil }})
	defer w.Close()
	t0 := clk.Now()
	if w.SeenNotStartedSince(t0) {
		t.Fatal("a new watcher has seen nothing")
	}
	clk.Advance(time.Second)
	w.Observe(Starting)
	clk.Advance(time.Second)
	w.Observe(Started)
	if !w.SeenNotStartedSince(t0) {
		t.Error("Starting then Started: not seen since before the Starting")
	}
	if w.SeenNotStartedSince(t0.Add(1500 * time.Millisecond)) {
		t.Error("seen since after the Starting")
	}
	clk.Advance(time.Second)
	w.Observe(Down)
	if !w.SeenNotStartedSince(clk.Now()) {
		t.Error("Down not seen at its time")
	}
}
