package testkit

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// gateTB is a test as the gate sees it, for tests of the gate that run
// on goroutines (a -parallel slot each would decide their order).
type gateTB struct {
	testing.TB
	cleanups []func()
}

func (g *gateTB) Helper()             {}
func (g *gateTB) Logf(string, ...any) {}
func (g *gateTB) Cleanup(f func())    { g.cleanups = append(g.cleanups, f) }
func (g *gateTB) end()                { runCleanups(g.cleanups) }
func runCleanups(fs []func()) {
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// pass runs body as a test of kind k at g, on a goroutine, and records
// its name in log once it is admitted; done is closed when it has left.
func pass(t *testing.T, g *kindGate, k int, name string, log *kindLog, body func()) (done chan struct{}) {
	done = make(chan struct{})
	go func() {
		defer close(done)
		tb := &gateTB{TB: t}
		g.enter(tb, k)
		log.note(name)
		body()
		tb.end()
	}()
	return done
}

// kindLog records the order in which tests pass a gate.
type kindLog struct {
	mu    sync.Mutex
	order []string
}

func (l *kindLog) note(s string) {
	l.mu.Lock()
	l.order = append(l.order, s)
	l.mu.Unlock()
}

func (l *kindLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.order, " ")
}

func waiting(g *kindGate, k int) func() bool {
	return func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.waiting[k] > 0
	}
}

func wait(t *testing.T, chans ...chan struct{}) {
	t.Helper()
	for _, c := range chans {
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatal("a test did not leave the gate")
		}
	}
}

// A heavy test that comes while another runs joins it, however long a
// prompt test has waited: the turn passes only once the heavy kind has
// nothing left. Before, the heavy kind stopped admitting once a prompt
// test had waited 2 s, and the late heavy test waited for a prompt round.
func TestKindTurnStaysWhileItsTestsCome(t *testing.T) {
	t.Parallel()
	g := newKindGate()
	var log kindLog
	bIn := make(chan struct{})
	a := pass(t, g, kindHeavy, "A", &log, func() {
		select { // A runs until B has joined it
		case <-bIn:
		case <-time.After(5 * time.Second):
			t.Error("the second heavy test did not join the first")
		}
	})
	WaitFor(t, 5*time.Second, "the first heavy test admitted", func() bool { return log.String() == "A" })
	p := pass(t, g, kindPrompt, "P", &log, func() {})
	WaitFor(t, 5*time.Second, "the prompt test waiting", waiting(g, kindPrompt))
	g.mu.Lock()
	g.since[kindPrompt] = time.Now().Add(-time.Minute) // it has waited long
	g.mu.Unlock()
	b := pass(t, g, kindHeavy, "B", &log, func() { close(bIn) })
	wait(t, a, b, p)
	if got := log.String(); got != "A B P" {
		t.Errorf("tests passed the gate in the order %q; want \"A B P\"", got)
	}
}

// Heavy tests have the first turn: a prompt test that comes first, with
// nothing running, waits for settle, and a heavy test that comes meanwhile
// runs first.
func TestKindHeavyFirst(t *testing.T) {
	t.Parallel()
	g := newKindGate()
	g.settle = time.Second // the heavy test surely comes within it
	var log kindLog
	p := pass(t, g, kindPrompt, "P", &log, func() {})
	WaitFor(t, 5*time.Second, "the prompt test waiting", waiting(g, kindPrompt))
	h := pass(t, g, kindHeavy, "H", &log, func() {})
	wait(t, h, p)
	if got := log.String(); got != "H P" {
		t.Errorf("tests passed the gate in the order %q; want \"H P\"", got)
	}
}
