//go:build e2e

package e2e

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The suite's tests take turns on the machine. Most of them measure a
// client against its own timers (a challenge timer, a budget, a window
// held to the second) while gateways and Node clients keep the two cores
// busy, so at most one test is in the foreground at a time: it holds the
// machine from its start (foreground) to its end. A test whose rest is a
// long wait that puts little load on the machine (a TUI kept connected
// past two tick intervals, an alert's for: while the gateway is held
// starting) steps back (background) and the next test starts; what the
// background test still does (a scrape, a gateway stop, its checks)
// runs beside the foreground one. Tests that start a gateway hold the
// machine while it starts: that is the suite's heaviest work.
//
// Every test that takes the machine calls t.Parallel (in foreground), so
// run.sh gives go test a -parallel above the number of tests: all of them
// wait for their turn at once, and the turn goes to the waiting test that
// comes first in turnOrder (the tests with a background part first, so
// that their waits overlap the others' work), then in the order they
// asked.

// turnOrder ranks tests for the machine; tests not named come after, in
// the order they asked.
var turnOrder = []string{
	"TestPrometheus",
	"TestLegacyClientsOnCurrent",
}

// firstTurnSettle is how long the first turn waits for the tests that go
// test releases at once to ask, so that it goes by rank, not by a race.
const firstTurnSettle = 200 * time.Millisecond

type machine struct {
	mu      sync.Mutex
	holder  string // top-level test in the foreground; "" when free
	waiting []*turn
	granted bool      // a turn was granted since the suite began
	settle  time.Time // the first turn goes no sooner
}

type turn struct {
	name  string
	rank  int
	ready chan struct{}
}

var theMachine machine

// rank returns a test's place in turnOrder, or len(turnOrder) when it is
// not named.
func rank(name string) int {
	if i := slices.Index(turnOrder, name); i >= 0 {
		return i
	}
	return len(turnOrder)
}

// topLevel is the name of the top-level test of t (a subtest's parent).
func topLevel(t testing.TB) string {
	name, _, _ := strings.Cut(t.Name(), "/")
	return name
}

// foreground runs t in parallel with the suite's other tests and returns
// once t holds the machine; t keeps it until it ends or calls background.
// Call it first thing in a top-level test.
func foreground(t *testing.T) {
	t.Helper()
	t.Parallel()
	name := topLevel(t)
	tu := &turn{name: name, rank: rank(name), ready: make(chan struct{})}
	m := &theMachine
	m.mu.Lock()
	m.waiting = append(m.waiting, tu)
	if !m.granted && m.settle.IsZero() {
		m.settle = time.Now().Add(firstTurnSettle)
	}
	settle := m.settle
	m.mu.Unlock()
	time.Sleep(time.Until(settle)) // the first turn: let the others ask
	m.mu.Lock()
	m.grantLocked()
	m.mu.Unlock()
	t.Cleanup(func() { m.release(name) })
	start := time.Now()
	<-tu.ready
	if w := time.Since(start); w > time.Second {
		t.Logf("machine: foreground after waiting %v for other tests", w.Round(time.Second))
	}
}

// background gives the machine back for the rest of t's top-level test:
// what follows must be a wait that puts little load on the machine, and
// must not depend on being alone on it. Safe to call more than once, and
// from a subtest.
func background(t testing.TB) {
	t.Helper()
	if theMachine.release(topLevel(t)) {
		t.Logf("machine: %s steps back to the background", topLevel(t))
	}
}

// release gives the machine back if name holds it, and reports whether it
// did.
func (m *machine) release(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder != name {
		// Still waiting (a test that failed before its turn came):
		// leave the queue.
		m.waiting = slices.DeleteFunc(m.waiting, func(w *turn) bool { return w.name == name })
		return false
	}
	m.holder = ""
	m.grantLocked()
	return true
}

// grantLocked gives a free machine to the first waiting test by rank, then
// by arrival.
func (m *machine) grantLocked() {
	if m.holder != "" || len(m.waiting) == 0 {
		return
	}
	if !m.granted && time.Now().Before(m.settle) {
		return // the first turn waits for its settle
	}
	best := 0
	for i, w := range m.waiting {
		if w.rank < m.waiting[best].rank {
			best = i
		}
	}
	tu := m.waiting[best]
	m.waiting = slices.Delete(m.waiting, best, best+1)
	m.holder, m.granted = tu.name, true
	close(tu.ready)
}
