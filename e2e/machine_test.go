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
// machine from its start (foreground) to its end.
//
// Two things run beside the foreground test:
//
//   - A test whose rest is a long wait that puts little load on the
//     machine (a TUI kept connected past two tick intervals, an alert's
//     for: while the gateway is held starting, a gateway's stop) steps back
//     (background); what it still does (a scrape, its checks) runs beside
//     the next foreground test.
//   - A gateway's start (spawn until its port accepts) is the suite's
//     heaviest work, and it keeps one core busy: while the foreground test
//     starts its gateway, the next test that asked with
//     foregroundFromStart runs up to its own gateway's start beside it
//     (co-start). Both starts end before either test goes on: the
//     foreground test waits for the other's port, then goes on alone; the
//     other waits for the foreground with its gateway in its startup window.
//     Its window then counts from that moment (gateway.OpenAfter), not
//     from its port's opening, so that its clients meet the window they
//     would have met alone.
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

// coStartWait bounds how long a foreground test whose gateway is up waits
// for the co-started gateway's port.
const coStartWait = 45 * time.Second

type machine struct {
	mu      sync.Mutex
	holder  string // top-level test in the foreground; "" when free
	waiting []*turn
	granted bool      // a turn was granted since the suite began
	settle  time.Time // the first turn goes no sooner

	// starting: the holder is starting a gateway (or waits for the
	// co-started one); a co-start may be granted meanwhile.
	starting bool
	// co is the co-started test, next in the foreground; coUp is closed
	// (coIsUp) when its gateway's port is open or it gave up.
	co     *turn
	coUp   chan struct{}
	coIsUp bool
}

type turn struct {
	name    string
	rank    int
	coStart bool          // it may start its gateway beside the holder's
	ready   chan struct{} // closed when it may run (foreground or co-start)
	fg      chan struct{} // closed when it holds the foreground
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
	take(t, false)
}

// foregroundFromStart is foreground for a test whose first heavy step is
// its gateway's Start: it may return earlier, while another test starts
// its gateway, and then its gateway's Start returns once t holds the
// machine. Until then t must do nothing that loads the machine or that
// depends on being alone on it (writing a config, starting holdfast).
func foregroundFromStart(t *testing.T) {
	t.Helper()
	take(t, true)
}

func take(t *testing.T, coStart bool) {
	t.Helper()
	t.Parallel()
	name := topLevel(t)
	m := &theMachine
	start := time.Now()
	tu := m.enqueue(name, coStart)
	t.Cleanup(func() { m.release(name) })
	<-tu.ready
	select {
	case <-tu.fg:
		if w := time.Since(start); w > time.Second {
			t.Logf("machine: foreground after waiting %v for other tests", w.Round(time.Second))
		}
	default:
		t.Logf("machine: starting its gateway beside %s's after waiting %v", m.holderName(), time.Since(start).Round(time.Second))
	}
}

// enqueue puts name in line and returns its turn; its ready channel is
// closed when it may run.
func (m *machine) enqueue(name string, coStart bool) *turn {
	tu := &turn{name: name, rank: rank(name), coStart: coStart, ready: make(chan struct{}), fg: make(chan struct{})}
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
	return tu
}

func (m *machine) holderName() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.holder
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

// startBegins tells the machine that test name starts a gateway.
func (m *machine) startBegins(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder != name {
		return
	}
	m.starting = true
	m.grantLocked()
}

// startEnds tells the machine that test name's gateway accepts
// connections, and returns once the test may go on: the foreground test
// once a co-started gateway's port is open too (or coStartWait passed), a
// co-started test once it holds the foreground. It reports how long that
// took.
func (m *machine) startEnds(name string, logf func(format string, args ...any)) time.Duration {
	begin := time.Now()
	m.mu.Lock()
	switch {
	case m.holder == name && m.starting && m.co == nil:
		m.starting = false
		m.mu.Unlock()
	case m.holder == name && m.starting:
		co, up := m.co, m.coUp
		m.mu.Unlock()
		select {
		case <-up:
		case <-time.After(coStartWait):
			logf("machine: %s's gateway not up after %v; going on", co.name, coStartWait)
		}
		m.mu.Lock()
		m.starting = false
		m.mu.Unlock()
	case m.co != nil && m.co.name == name:
		co := m.co
		m.coStartedLocked()
		m.mu.Unlock()
		<-co.fg
		logf("machine: foreground after its gateway waited %v in its startup window", time.Since(begin).Round(time.Second))
	default:
		m.mu.Unlock()
	}
	return time.Since(begin)
}

// release gives the machine back if name holds it, and reports whether it
// did. A test that ends while waiting, or while co-started, leaves its
// place.
func (m *machine) release(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.co != nil && m.co.name == name {
		m.coStartedLocked()
		m.co = nil
		return false
	}
	if m.holder != name {
		m.waiting = slices.DeleteFunc(m.waiting, func(w *turn) bool { return w.name == name })
		return false
	}
	m.holder, m.starting = "", false
	m.grantLocked()
	return true
}

// grantLocked gives a free machine to the co-started test, else to the
// first waiting test by rank, then by arrival; while the holder starts a
// gateway, it lets the first waiting test that may co-start run beside it.
func (m *machine) grantLocked() {
	if !m.granted && time.Now().Before(m.settle) {
		return // the first turn waits for its settle
	}
	if m.holder == "" {
		if co := m.co; co != nil {
			m.co = nil
			m.holder = co.name
			close(co.fg)
			return
		}
		if tu := m.pickLocked(func(*turn) bool { return true }); tu != nil {
			m.holder, m.granted = tu.name, true
			close(tu.fg)
			close(tu.ready)
		}
		return
	}
	if m.starting && m.co == nil {
		if tu := m.pickLocked(func(w *turn) bool { return w.coStart }); tu != nil {
			m.co, m.coUp, m.coIsUp = tu, make(chan struct{}), false
			close(tu.ready)
		}
	}
}

// coStartedLocked notes that the co-started test's gateway is up (or that
// the test gave up).
func (m *machine) coStartedLocked() {
	if !m.coIsUp {
		m.coIsUp = true
		close(m.coUp)
	}
}

// pickLocked removes and returns the first waiting test by rank, then by
// arrival, among those ok accepts.
func (m *machine) pickLocked(ok func(*turn) bool) *turn {
	best := -1
	for i, w := range m.waiting {
		if ok(w) && (best < 0 || w.rank < m.waiting[best].rank) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	tu := m.waiting[best]
	m.waiting = slices.Delete(m.waiting, best, best+1)
	return tu
}

// TestMachineTurns: one test in the foreground at a time; while it starts
// a gateway, the first waiting test that may co-start runs up to its own
// gateway's start; the foreground test goes on once both ports are open,
// and the co-started test is next in the foreground, before tests that
// asked earlier.
func TestMachineTurns(t *testing.T) {
	m := &machine{}
	logf := func(format string, args ...any) { t.Logf(format, args...) }
	closedWithin := func(ch <-chan struct{}, d time.Duration) bool {
		select {
		case <-ch:
			return true
		default:
		}
		select {
		case <-ch:
			return true
		case <-time.After(d):
			return false
		}
	}
	a := m.enqueue("A", false)
	if !closedWithin(a.fg, time.Second) {
		t.Fatal("A, alone, did not get the foreground")
	}
	turns := make(chan *turn, 2)
	go func() { turns <- m.enqueue("C", false) }() // asks first, cannot co-start
	time.Sleep(50 * time.Millisecond)
	go func() { turns <- m.enqueue("B", true) }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 2 s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("two tests waiting", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.waiting) == 2
	})
	x, y := <-turns, <-turns
	b, c := x, y
	if b.name != "B" {
		b, c = y, x
	}
	if closedWithin(b.ready, 50*time.Millisecond) || closedWithin(c.ready, 50*time.Millisecond) {
		t.Fatal("a test runs while A holds the machine and starts no gateway")
	}

	m.startBegins("A")
	if !closedWithin(b.ready, time.Second) {
		t.Fatal("B may co-start, but did not run while A starts its gateway")
	}
	if closedWithin(b.fg, 50*time.Millisecond) || closedWithin(c.ready, 50*time.Millisecond) {
		t.Fatal("B got the foreground, or C runs, while A holds it")
	}
	aUp := make(chan struct{})
	go func() { m.startEnds("A", logf); close(aUp) }()
	if closedWithin(aUp, 100*time.Millisecond) {
		t.Fatal("A went on before B's gateway was up")
	}
	bOn := make(chan struct{})
	go func() { m.startEnds("B", logf); close(bOn) }()
	if !closedWithin(aUp, time.Second) {
		t.Fatal("A did not go on once B's gateway was up")
	}
	if closedWithin(bOn, 100*time.Millisecond) {
		t.Fatal("B went on while A holds the machine")
	}
	m.startBegins("A") // a second start of A's: B is co-started already
	m.startEnds("A", logf)
	if closedWithin(c.ready, 50*time.Millisecond) {
		t.Fatal("C co-started though it may not")
	}
	if !m.release("A") {
		t.Fatal("A held the machine, but release says it did not")
	}
	if !closedWithin(bOn, time.Second) || !closedWithin(b.fg, 0) {
		t.Fatal("B did not get the foreground after A, before C")
	}
	if closedWithin(c.ready, 50*time.Millisecond) {
		t.Fatal("C runs beside B")
	}
	m.release("B")
	if !closedWithin(c.fg, time.Second) {
		t.Fatal("C did not get the foreground after B")
	}

	// A co-started test that ends before its gateway is up frees the
	// foreground test at once.
	d := make(chan *turn, 1)
	go func() { d <- m.enqueue("D", true) }()
	dt := <-d
	m.startBegins("C")
	if !closedWithin(dt.ready, time.Second) {
		t.Fatal("D did not co-start")
	}
	cUp := make(chan struct{})
	go func() { m.startEnds("C", logf); close(cUp) }()
	m.release("D") // D failed before its port opened
	if !closedWithin(cUp, time.Second) {
		t.Fatal("C still waits for D, which ended")
	}
	m.release("C")
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder != "" || m.co != nil || len(m.waiting) != 0 {
		t.Fatalf("machine not free at the end: holder %q, co %v, %d waiting", m.holder, m.co, len(m.waiting))
	}
}
