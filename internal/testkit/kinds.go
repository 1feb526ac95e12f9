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

// kindGate admits tests of one kind at a time: the kind whose turn it is,
// once the other kind's tests have ended. The turn passes when the kind
// whose turn it is has nothing waiting or running and the other kind has
// waited for settle, so tests of the running kind join it as they come and
// the gate switches kinds as seldom as it can: each switch waits for the
// longest running test to end (before, the running kind stopped admitting
// once the other had waited 2 s, and the proxy package's heavy tests ran
// in four rounds, those admitted one by one). Neither kind waits forever:
// a package has finitely many tests. Heavy tests have the first turn, so
// that they run beside the burst of tests of neither kind that begins a
// package, and the prompt ones on a quieter machine after.
//
// A test waiting at the gate holds its -parallel slot: a heavy test that
// gets its slot after the heavy round has ended waits for the prompt
// round.
type kindGate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	settle  time.Duration
	turn    int
	active  [2]int
	waiting [2]int
	since   [2]time.Time // when the oldest waiter of a kind began waiting
}

// maxPrompt is how many prompt tests run at once: more of them, each with
// its own clients and gateway, load the machine as a heavy test does.
const maxPrompt = 6

// settle is how long a kind waits before it takes the turn from a kind
// with nothing to do: the tests of a package are released together, and
// one of the other kind may be a moment behind.
const settle = 100 * time.Millisecond

func newKindGate() *kindGate {
	g := &kindGate{settle: settle, turn: kindHeavy}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// passTurn gives the turn to the other kind when it is due, and returns
// how long until it may be due with no test starting or ending, or 0.
func (g *kindGate) passTurn() time.Duration {
	cur, other := g.turn, 1-g.turn
	if g.waiting[other] == 0 || g.waiting[cur] > 0 || g.active[cur] > 0 {
		return 0
	}
	if waited := time.Since(g.since[other]); waited <= g.settle {
		return g.settle - waited + time.Millisecond
	}
	g.turn = other
	return 0
}

func (g *kindGate) admits(k int) bool {
	return g.turn == k && g.active[1-k] == 0 && (k != kindPrompt || g.active[k] < maxPrompt)
}

func (g *kindGate) enter(t testing.TB, k int) {
	t.Helper()
	g.mu.Lock()
	if g.waiting[k]++; g.waiting[k] == 1 {
		g.since[k] = time.Now()
	}
	for {
		wake := g.passTurn()
		if g.admits(k) {
			break
		}
		if wake > 0 {
			time.AfterFunc(wake, func() {
				g.mu.Lock() // this waiter is in Wait once the lock is free
				g.cond.Broadcast()
				g.mu.Unlock()
			})
		}
		g.cond.Wait()
	}
	if g.waiting[k]--; g.waiting[k] > 0 {
		g.since[k] = time.Now() // the next waiter's wait, at most
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
