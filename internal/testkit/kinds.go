package testkit

import (
	"sync"
	"testing"
	"time"
)

// Parallel tests of a package share the machine. Most wait on timers and
// sockets; a few load both cores for seconds (heavy: megabytes through a
// relay, hundreds of clients), and some bound how long the code under test
// takes to answer (prompt: "at once", "no wait", within a budget). A
// prompt test beside a heavy one measures the machine, not the code, so
// the two kinds never overlap: tests of one kind run together, and while
// one kind runs the other waits. A test names its kind right after
// t.Parallel, in the test or subtest that does the work, never in a parent
// of parallel subtests (it would hold its kind while they wait for a
// slot). The gate is the test binary's: one per process.
var kinds = newKindGate()

// Heavy marks t as a test that loads the CPU; it waits while prompt
// tests run.
func Heavy(t testing.TB) { kinds.enter(t, kindHeavy) }

// Prompt marks t as a test that bounds a latency; it waits while heavy
// tests run, and while maxPrompt others run.
func Prompt(t testing.TB) { kinds.enter(t, kindPrompt) }

const (
	kindHeavy = iota
	kindPrompt
)

// kindGate admits tests of one kind at a time. Tests of the running kind
// may join it until the other kind has waited for patience; from then on
// the running kind drains and the other takes over, so neither waits
// longer than patience and the longest test of the other kind.
type kindGate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	active  [2]int
	waiting [2]int
	since   [2]time.Time // when the oldest waiter of a kind began waiting
}

// maxPrompt is how many prompt tests run at once: more of them, each with
// its own clients and gateway, load the machine as a heavy test does.
const maxPrompt = 4

// patience is how long a kind waits before the running kind stops
// admitting more of its tests.
const patience = 2 * time.Second

func newKindGate() *kindGate {
	g := &kindGate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *kindGate) enter(t testing.TB, k int) {
	t.Helper()
	other := 1 - k
	g.mu.Lock()
	if g.waiting[k]++; g.waiting[k] == 1 {
		g.since[k] = time.Now()
	}
	for g.active[other] > 0 || (g.waiting[other] > 0 && g.active[k] > 0 && time.Since(g.since[other]) > patience) ||
		(k == kindPrompt && g.active[k] >= maxPrompt) {
		g.cond.Wait()
	}
	if g.waiting[k]--; g.waiting[k] > 0 {
		g.since[k] = time.Now() // the waiters left are served with this one's kind
	}
	g.active[k]++
	g.mu.Unlock()
	t.Cleanup(func() {
		g.mu.Lock()
		g.active[k]--
		g.mu.Unlock()
		g.cond.Broadcast()
	})
}
