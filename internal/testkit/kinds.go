package testkit

import (
	"sync"
	"testing"
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
// tests run.
func Prompt(t testing.TB) { kinds.enter(t, kindPrompt) }

const (
	kindHeavy = iota
	kindPrompt
)

// kindGate admits tests of one kind at a time. A kind that waits is not
// overtaken: while it waits, no more tests of the running kind start.
type kindGate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	active  [2]int
	waiting [2]int
}

func newKindGate() *kindGate {
	g := &kindGate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *kindGate) enter(t testing.TB, k int) {
	t.Helper()
	other := 1 - k
	g.mu.Lock()
	g.waiting[k]++
	for g.active[other] > 0 || (g.waiting[other] > 0 && g.active[k] > 0) {
		g.cond.Wait()
	}
	g.waiting[k]--
	g.active[k]++
	g.mu.Unlock()
	t.Cleanup(func() {
		g.mu.Lock()
		g.active[k]--
		g.mu.Unlock()
		g.cond.Broadcast()
	})
}
