package memrelease

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

// fake is a Releaser over an injected count and heap.
type fake struct {
	r          *Releaser
	count      uint64
	held, live uint64
	releases   int
	excess     []uint64
}

func newFake(quiet time.Duration) *fake {
	f := &fake{held: 100 << 20, live: 50 << 20}
	f.r = &Releaser{
		Count:    func() uint64 { return f.count },
		Heap:     func() (uint64, uint64) { return f.held, f.live },
		Release:  func() { f.releases++ },
		Released: func(x uint64) { f.excess = append(f.excess, x) },
	}
	f.r.SetQuiet(quiet)
	return f
}

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// A burst's heap is released once, a quiet period after its last
// request, and not while requests keep beginning.
func TestReleasesOnceAfterTheBurst(t *testing.T) {
	f := newFake(time.Second)
	f.r.Step(at(0))
	for ms := 100; ms <= 3000; ms += 100 {
		f.count++ // a request every 100 ms
		if f.r.Step(at(ms)) {
			t.Fatalf("released at %d ms, while requests were beginning", ms)
		}
	}
	if f.r.Step(at(3900)) {
		t.Fatal("released 900 ms after the last request (quiet 1s)")
	}
	if !f.r.Step(at(4000)) {
		t.Fatal("not released 1 s after the last request")
	}
	if f.releases != 1 || len(f.excess) != 1 || f.excess[0] != 50<<20 {
		t.Fatalf("releases %d, excess %v; want one of %d", f.releases, f.excess, 50<<20)
	}
	for ms := 4100; ms < 20000; ms += 100 {
		if f.r.Step(at(ms)) {
			t.Fatalf("released again at %d ms with no request since", ms)
		}
	}
	// The next burst is released again.
	f.count++
	f.r.Step(at(20000))
	if !f.r.Step(at(21000)) || f.releases != 2 {
		t.Fatalf("second burst: releases %d, want 2", f.releases)
	}
}

// Nothing is released before any request began: a process that starts
// has no burst behind it.
func TestNoReleaseWithoutConnections(t *testing.T) {
	f := newFake(time.Second)
	for ms := 0; ms < 10000; ms += 250 {
		if f.r.Step(at(ms)) {
			t.Fatalf("released at %d ms with no request", ms)
		}
	}
}

// A heap with little beyond its live bytes is left alone: under MinExcess,
// or under a quarter of the live heap.
func TestSmallExcessNotReleased(t *testing.T) {
	for _, c := range []struct {
		name       string
		held, live uint64
		want       bool
	}{
		{"under MinExcess", 10<<20 + MinExcess - 1, 10 << 20, false},
		{"at MinExcess", 10<<20 + MinExcess, 10 << 20, true},
		{"under a quarter of live", 1<<30 + 200<<20, 1 << 30, false},
		{"a quarter of live", 1<<30 + 256<<20, 1 << 30, true},
		{"held below live", 10 << 20, 20 << 20, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake(time.Second)
			f.held, f.live = c.held, c.live
			f.r.Step(at(0))
			f.count++
			f.r.Step(at(100))
			if got := f.r.Step(at(1100)); got != c.want {
				t.Fatalf("released %v, want %v", got, c.want)
			}
			// Either way the burst is settled: no second look.
			f.held = 1 << 40
			if f.r.Step(at(5000)) {
				t.Fatal("released later for the same burst")
			}
		})
	}
}

// A quiet period of 0 never releases, and SetQuiet applies to the burst in
// progress.
func TestQuietZeroAndChange(t *testing.T) {
	f := newFake(0)
	f.r.Step(at(0))
	f.count++
	f.r.Step(at(100))
	if f.r.Step(at(60000)) {
		t.Fatal("released with quiet 0")
	}
	f.r.SetQuiet(2 * time.Second)
	if f.r.Step(at(60100)) != true {
		t.Fatal("not released once quiet was set, 60 s after the burst")
	}
	f.r.SetQuiet(-time.Second)
	if f.r.Quiet() != 0 {
		t.Fatalf("negative quiet: %v, want 0", f.r.Quiet())
	}
}

// Run ticks Step until its context ends, and releases a burst's heap.
func TestRunReleasesAndStops(t *testing.T) {
	var count atomic.Uint64
	released := make(chan struct{}, 1)
	r := &Releaser{
		Count:   count.Load,
		Heap:    func() (uint64, uint64) { return 100 << 20, 10 << 20 },
		Release: func() { released <- struct{}{} },
	}
	r.SetQuiet(40 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	count.Add(3)
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not release a burst's heap")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
}

// With the runtime's own figures and release, a burst's garbage goes back
// to the operating system: the heap's released pages grow by most of what
// it held beyond its live bytes.
func TestRealHeapReleased(t *testing.T) {
	r := New(time.Second, func() uint64 { return 1 })
	// Garbage that fills the collector's room: 64 MiB in 64 KiB pieces,
	// one kept in 16 so that the live heap is not nothing, made with the
	// collector off so that none of it is returned on the way.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var keep [][]byte
	for i := range 1024 {
		b := make([]byte, 64<<10)
		b[0] = 1
		if i%16 == 0 {
			keep = append(keep, b)
		}
	}
	runtime.GC() // the garbage is now free pages, not yet returned
	held, live := HeapStats()
	if held-live < 48<<20 {
		t.Fatalf("setup: held %d, live %d: the garbage is not held", held, live)
	}
	before := released()
	r.Step(at(0)) // the count moved: a burst
	if !r.Step(at(1000)) {
		t.Fatalf("not released: held %d, live %d", held, live)
	}
	if got := released() - before; got < (held-live)/2 {
		t.Fatalf("released %d bytes of the %d held beyond the live heap", got, held-live)
	}
	if after, _ := HeapStats(); after > held-(held-live)/2 {
		t.Fatalf("the heap holds %d bytes after the release, %d before", after, held)
	}
	runtime.KeepAlive(keep)
}

func released() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
