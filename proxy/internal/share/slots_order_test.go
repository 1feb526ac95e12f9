package share

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

// blockedAcquires counts goroutines waiting in Slots.Acquire.
func blockedAcquires() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[select") && strings.Contains(g, "(*Slots).Acquire") {
			n++
		}
	}
	return n
}

// Waiters for an address's slots are served in arrival order.
func TestAdmissionOrder(t *testing.T) {
	// Serial: blockedAcquires counts the waiters of every Slots in
	// the process.
	a := NewSlots(1)
	ctx := context.Background()
	first, err := a.Acquire(ctx, time.Now().Add(time.Minute), "k")
	if err != nil {
		t.Fatal(err)
	}
	type grant struct {
		i       int
		release func()
	}
	granted := make(chan grant)
	const n = 5
	for i := range n {
		go func() {
			r, err := a.Acquire(ctx, time.Now().Add(time.Minute), "k")
			if err != nil {
				t.Error(err)
				return
			}
			granted <- grant{i, r}
		}()
		// The next waiter arrives only once this one waits.
		waitFor(t, func() bool { return blockedAcquires() == i+1 })
	}
	release := first
	for want := range n {
		release()
		select {
		case g := <-granted:
			if g.i != want {
				t.Fatalf("slot went to waiter %d; want %d (arrival order)", g.i, want)
			}
			release = g.release
		case <-time.After(5 * time.Second):
			t.Fatalf("no waiter got the slot given back (want %d)", want)
		}
	}
	release()
}
