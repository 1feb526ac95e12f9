package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name        string
		live, floor uint64
		base, want  int
	}{
		{name: "no floor", live: 1 * mib, floor: 0, base: 100, want: 100},
		{name: "collector off", live: 1 * mib, floor: 32 * mib, base: -1, want: -1},
		{name: "small heap: the minimum reaches the floor", live: 1 * mib, floor: 32 * mib, base: 100, want: 800},
		{name: "empty heap", live: 0, floor: 32 * mib, base: 100, want: 800},
		{name: "larger heap: the live heap reaches it", live: 6 * mib, floor: 32 * mib, base: 100, want: 434},
		{name: "goal at the floor already", live: 16 * mib, floor: 32 * mib, base: 100, want: 100},
		{name: "goal above the floor", live: 40 * mib, floor: 32 * mib, base: 100, want: 100},
		{name: "just under", live: 16*mib - 1, floor: 32 * mib, base: 100, want: 101},
		{name: "own GOGC higher", live: 8 * mib, floor: 32 * mib, base: 400, want: 400},
		{name: "own GOGC lower", live: 8 * mib, floor: 32 * mib, base: 50, want: 300},
		{name: "minimum rounded up", live: 0, floor: 32*mib + 1, base: 100, want: 801},
		{name: "floor under the minimum", live: 1 * mib, floor: 2 * mib, base: 100, want: 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Percent(c.live, c.floor, c.base)
			if got != c.want {
				t.Fatalf("Percent(%d, %d, %d) = %d, want %d", c.live, c.floor, c.base, got, c.want)
			}
			if c.base < 0 || c.floor == 0 {
				return
			}
			goal := func(p int) uint64 { return max(c.live*uint64(100+p)/100, HeapMinimum*uint64(p)/100) }
			if goal(got) < c.floor && got != c.base {
				t.Errorf("goal %d at %d%% is below the floor %d", goal(got), got, c.floor)
			}
			if got > c.base && goal(got-1) >= c.floor {
				t.Errorf("%d%% is not the least percent: %d%% has goal %d", got, got-1, goal(got-1))
			}
		})
	}
}

// fake is a collector for a Tuner: its live heap and the percents set.
type fake struct {
	live    uint64
	percent int
	sets    []int
}

func (f *fake) tuner(floor uint64) *Tuner {
	return &Tuner{Live: func() uint64 { return f.live }, Set: func(p int) int {
		old := f.percent
		f.percent = p
		f.sets = append(f.sets, p)
		return old
	}, floor: floor}
}

func TestTunerFollowsTheLiveHeap(t *testing.T) {
	f := &fake{live: 2 << 20, percent: 100}
	tu := f.tuner(32 << 20)
	tu.Apply()
	if f.percent != 100 {
		t.Fatalf("before Start: percent %d", f.percent)
	}
	tu.Start()
	defer tu.Stop()
	if f.percent != 800 {
		t.Fatalf("2 MiB live, floor 32 MiB: percent %d, want 800", f.percent)
	}
	f.live = 20 << 20
	tu.Apply()
	if f.percent != 100 {
		t.Fatalf("20 MiB live: percent %d, want the base 100", f.percent)
	}
	n := len(f.sets)
	tu.Apply()
	if len(f.sets) != n {
		t.Fatalf("an unchanged percent was set again: %v", f.sets)
	}
	f.live = 4 << 20
	tu.SetFloor(8 << 20)
	if f.percent != 100 {
		t.Fatalf("4 MiB live, floor 8 MiB: percent %d, want 100", f.percent)
	}
	tu.SetFloor(0)
	if f.percent != 100 {
		t.Fatalf("no floor: percent %d", f.percent)
	}
	tu.SetFloor(64 << 20)
	if f.percent != 1500 {
		t.Fatalf("4 MiB live, floor 64 MiB: percent %d, want 1500 (the minimum would need 1600)", f.percent)
	}
	tu.Stop()
	if f.percent != 100 {
		t.Fatalf("after Stop: percent %d, want the base back", f.percent)
	}
	tu.Apply()
	if f.percent != 100 {
		t.Fatalf("Apply after Stop set %d", f.percent)
	}
}

func TestTunerKeepsTheProcessGOGC(t *testing.T) {
	f := &fake{live: 2 << 20, percent: 400}
	tu := f.tuner(32 << 20)
	tu.Start()
	if f.percent != 800 {
		t.Fatalf("base 400: percent %d, want 800", f.percent)
	}
	tu.Stop()
	if f.percent != 400 {
		t.Fatalf("after Stop: percent %d, want 400", f.percent)
	}
	off := &fake{live: 2 << 20, percent: -1}
	tu = off.tuner(32 << 20)
	tu.Start()
	tu.Stop()
	if off.percent != -1 {
		t.Fatalf("GOGC=off: percent %d after a run", off.percent)
	}
	for _, p := range off.sets {
		if p != -1 && p != 100 {
			t.Fatalf("GOGC=off: set %v", off.sets)
		}
	}
}

// cycles returns the collections completed so far.
func cycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink []byte

// churn allocates n bytes of garbage in 64 KiB pieces and returns the
// collections that ran meanwhile.
func churn(n int) uint64 {
	c0 := cycles()
	for i := 0; i < n>>16; i++ {
		sink = make([]byte, 64<<10)
	}
	sink = nil
	return cycles() - c0
}

// On the real runtime: with a 256 MiB floor, 128 MiB of garbage over a
// small live heap runs no more than a collection or two; without it, the
// 4 MiB goal runs one every few MiB. The finalizer keeps the floor over
// collections that run meanwhile, and Stop gives the percent back.
func TestFloorOnTheRuntime(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	runtime.GC()
	without := churn(128 << 20)
	if without < 8 {
		t.Fatalf("without a floor, 128 MiB of garbage ran %d collections; the test assumes a 4 MiB goal", without)
	}

	tu := New(256 << 20)
	var applied atomic.Int64
	tu.Live = func() uint64 { applied.Add(1); return LiveHeap() }
	tu.Start()
	defer tu.Stop()
	if p := debug.SetGCPercent(-1); p <= 100 {
		t.Fatalf("after Start the percent is %d", p)
	} else {
		debug.SetGCPercent(p)
	}
	// Each collection finds the sentinel its predecessor's finalizer
	// armed, and applies the floor again (a collection that comes before
	// the finalizer goroutine ran finds none: the next one does).
	deadline := time.Now().Add(5 * time.Second)
	for i := range 3 {
		a0 := applied.Load()
		runtime.GC()
		for applied.Load() == a0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if applied.Load() == a0 {
			t.Fatalf("collection %d: the floor was not applied after it", i+1)
		}
	}
	deadline = time.Now().Add(5 * time.Second)
	with := churn(128 << 20)
	for with > 2 && time.Now().Before(deadline) {
		// the finalizer goroutine may lag behind the collections the
		// loop above forced: give it a moment and measure again
		time.Sleep(10 * time.Millisecond)
		with = churn(128 << 20)
	}
	if with > 2 {
		t.Fatalf("with a 256 MiB floor, 128 MiB of garbage ran %d collections (without: %d)", with, without)
	}
	// The goal is the floor, not far past it: with 16 MiB, the same
	// garbage runs a collection every 16 MiB or so.
	tu.SetFloor(16 << 20)
	runtime.GC()
	if n := churn(128 << 20); n < 4 || n > 16 {
		t.Errorf("with a 16 MiB floor, 128 MiB of garbage ran %d collections; want about 8", n)
	}
	tu.Stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("after Stop the percent is %d, want 100", p)
	}
}
