// Package memrelease gives back to the operating system the heap that a
// burst of requests left behind, once the burst is over.
//
// Go's collector lets the heap grow to twice what was live at the last
// collection before it collects again (GOGC=100), and its scavenger keeps
// that much resident. A burst of handshakes (a reconnect storm, TLS
// handshakes above all) fills that room with garbage. Once the sessions it
// opened go idle nothing more is allocated, no collection runs, and the
// process stays at about twice what its sessions hold until the next
// burst. A Releaser watches a count of requests begun; once the count
// has not moved for the quiet period after it last moved, and the heap
// holds enough beyond what is live, it runs one collection and returns
// every free page (runtime/debug.FreeOSMemory).
//
// The policy (Step) is pure: the count, the heap's figures, the release and
// the clock are injected. Run drives it with a ticker.
package memrelease

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// MinExcess is the least a heap must hold beyond its live bytes for a
// release: below it, a collection costs more than the pages it returns are
// worth.
const MinExcess = 4 << 20

// A Releaser releases the heap's free pages once requests stop
// beginning. Its fields are set before Run or Step and not changed after.
type Releaser struct {
	// Count returns how many requests have begun so far (monotonic).
	Count func() uint64
	// Heap returns the bytes the heap holds resident (objects, the unused
	// parts of its spans, free pages not yet returned) and the bytes that
	// were live at the last collection. HeapStats by default.
	Heap func() (held, live uint64)
	// Release runs a collection and returns the free pages:
	// debug.FreeOSMemory by default.
	Release func()
	// Released, when set, is called after each release with the bytes held
	// beyond the live heap before it.
	Released func(excess uint64)

	quiet atomic.Int64 // time.Duration; 0: never release

	seen    uint64    // Count at the last Step
	moved   time.Time // when Count last moved
	pending bool      // it moved since the last release (or the start)
}

// New returns a Releaser that releases once no request has begun for
// quiet (0: never), with count as its count of requests begun.
func New(quiet time.Duration, count func() uint64) *Releaser {
	r := &Releaser{Count: count, Heap: HeapStats, Release: debug.FreeOSMemory}
	r.SetQuiet(quiet)
	return r
}

// SetQuiet changes the quiet period; 0 stops releasing. It is safe to call
// while Run runs (a configuration reload).
func (r *Releaser) SetQuiet(quiet time.Duration) { r.quiet.Store(int64(max(quiet, 0))) }

// Quiet returns the quiet period in force.
func (r *Releaser) Quiet() time.Duration { return time.Duration(r.quiet.Load()) }

// Step looks at the count at now and releases when a burst has ended: the
// count moved since the last release, has not moved for the quiet period,
// and the heap holds at least MinExcess and a quarter of its live bytes
// beyond them. It reports whether it released. Calls must not overlap.
func (r *Releaser) Step(now time.Time) bool {
	n := r.Count()
	if n != r.seen {
		r.seen, r.moved, r.pending = n, now, true
		return false
	}
	quiet := r.Quiet()
	if !r.pending || quiet == 0 || now.Sub(r.moved) < quiet {
		return false
	}
	r.pending = false
	held, live := r.Heap()
	if held <= live {
		return false
	}
	excess := held - live
	if excess < MinExcess || excess < live/4 {
		return false
	}
	r.Release()
	if r.Released != nil {
		r.Released(excess)
	}
	return true
}

// Run calls Step every quarter of the quiet period, never less often than
// every 250 ms (every second while releasing is off), until ctx ends.
func (r *Releaser) Run(ctx context.Context) {
	period := tickFor(r.Quiet())
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.Step(now)
			if p := tickFor(r.Quiet()); p != period {
				period = p
				t.Reset(p)
			}
		}
	}
}

// tickFor is Run's period for a quiet period.
func tickFor(quiet time.Duration) time.Duration {
	if quiet == 0 {
		return time.Second
	}
	return min(max(quiet/4, time.Millisecond), 250*time.Millisecond)
}

// HeapStats returns the bytes the Go heap holds resident (objects, live or
// not yet swept, the unused parts of in-use spans, and free pages not yet
// returned to the operating system) and the bytes live at the last
// collection, from runtime/metrics.
func HeapStats() (held, live uint64) {
	s := [...]metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	metrics.Read(s[:])
	for _, x := range s[:3] {
		if x.Value.Kind() == metrics.KindUint64 {
			held += x.Value.Uint64()
		}
	}
	if s[3].Value.Kind() == metrics.KindUint64 {
		live = s[3].Value.Uint64()
	}
	return held, live
}
