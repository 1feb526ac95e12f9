// Package gcfloor keeps the Go collector's heap goal at or above a floor.
//
// After each collection the collector lets the heap grow by GOGC percent
// (100 by default) of what was live before it collects again, or to 4 MiB
// at least. A proxy holds little live (a few kilobytes per session) but
// allocates several kilobytes per handshake (the HTTP server's buffers, the
// frames, the upgrade), so with a small live heap it collects every few
// hundred handshakes, and each cycle has costs that do not shrink with the
// heap: starting and stopping the mark workers, two short stops of the
// world, every goroutine's stack scanned, every span swept. A floor raises
// the goal of a small heap to the floor; a heap whose own goal is above it
// is left to the collector. A memory limit (GOMEMLIMIT) still bounds the
// goal, and GOGC=off leaves the collector off.
//
// The policy (Percent) is pure. A Tuner applies it after every collection
// (a finalizer re-armed each cycle, the pattern of GOGC tuners), with the
// live heap and the setting of the percent injected.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// HeapMinimum is the runtime's least heap goal at GOGC=100; it scales with
// the percent (at 800 it is 32 MiB).
const HeapMinimum = 4 << 20

// Percent returns the least GOGC percent whose heap goal, after a
// collection that left live bytes live, is floor at least: base (the
// process's own GOGC) when its goal reaches floor already. The goal at
// percent p is the larger of live × (100 + p) / 100 and the runtime's
// minimum, HeapMinimum × p / 100; a larger percent would only let the heap
// grow past the floor, over memory the caches and the page tables have not
// seen. base < 0 (the collector off) and floor 0 return base.
func Percent(live, floor uint64, base int) int {
	if base < 0 || floor == 0 {
		return base
	}
	goal := func(p uint64) uint64 { return max(live*(100+p)/100, HeapMinimum*p/100) }
	if goal(uint64(base)) >= floor {
		return base
	}
	p := (floor*100 + HeapMinimum - 1) / HeapMinimum // the minimum alone
	if live > 0 {
		p = min(p, ((floor-live)*100+live-1)/live) // the live heap alone
	}
	return int(max(p, uint64(base)))
}

// A Tuner sets the collector's percent to Percent(live, floor, base) after
// every collection. Create it with New; its methods are safe for concurrent
// use.
type Tuner struct {
	// Live returns the bytes live after the last collection (LiveHeap by
	// default).
	Live func() uint64
	// Set sets the percent and returns the one before (debug.SetGCPercent
	// by default).
	Set func(int) int

	mu      sync.Mutex
	base    int    // the percent before Start
	floor   uint64 // 0: none
	current int    // the percent last set
	running bool
	gen     int // counts Starts: a finalizer of an earlier run does nothing
}

// New returns a Tuner for floor bytes (0: none) over the runtime's collector.
func New(floor uint64) *Tuner {
	return &Tuner{Live: LiveHeap, Set: debug.SetGCPercent, floor: floor}
}

// Start reads the process's own percent (GOGC) as the base, applies the
// floor and keeps applying it after every collection until Stop.
func (t *Tuner) Start() {
	t.mu.Lock()
	if t.running {
		t.mu.Unlock()
		return
	}
	t.base = t.Set(100)
	t.Set(t.base)
	t.current = t.base
	t.running = true
	t.gen++
	gen := t.gen
	t.mu.Unlock()
	t.Apply()
	t.arm(gen)
}

// Stop ends the tuning and sets the base percent back.
func (t *Tuner) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		return
	}
	t.running = false
	if t.current != t.base {
		t.Set(t.base)
		t.current = t.base
	}
}

// SetFloor changes the floor (0: none) and applies it at once.
func (t *Tuner) SetFloor(floor uint64) {
	t.mu.Lock()
	t.floor = floor
	t.mu.Unlock()
	t.Apply()
}

// Apply sets the percent for the live heap now, if the Tuner runs and the
// percent differs from the one set last.
func (t *Tuner) Apply() { t.apply(0) }

// apply is Apply for the finalizer of run gen (0: any run); it reports
// whether that run goes on.
func (t *Tuner) apply(gen int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running || (gen != 0 && gen != t.gen) {
		return false
	}
	if p := Percent(t.Live(), t.floor, t.base); p != t.current {
		t.Set(p)
		t.current = p
	}
	return true
}

// sentinel is garbage whose finalizer runs after the collection that finds
// it unreachable: once per cycle, as each finalizer arms the next. Its
// size keeps it out of the tiny allocator, whose blocks are freed (and
// finalized) only with their neighbours.
type sentinel struct {
	t   *Tuner
	gen int
	_   [16]byte
}

func (t *Tuner) arm(gen int) {
	runtime.SetFinalizer(&sentinel{t: t, gen: gen}, func(s *sentinel) {
		if s.t.apply(s.gen) {
			s.t.arm(s.gen)
		}
	})
}

// LiveHeap returns the heap bytes marked live by the last collection
// (runtime/metrics /gc/heap/live:bytes).
func LiveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
