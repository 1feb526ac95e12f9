package share

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// A free slot is granted at once, whatever the deadline; with every slot
// taken a caller waits until its deadline or a slot is given back.
func TestAdmission(t *testing.T) {
	t.Parallel()
	a := NewSlots(2)
	ctx := context.Background()
	past := time.Now().Add(-time.Second)
	r1, err := a.Acquire(ctx, past, "k")
	if err != nil {
		t.Fatalf("first slot: %v", err)
	}
	if _, err := a.Acquire(ctx, past, "k"); err != nil {
		t.Fatalf("second slot: %v", err)
	}
	if _, err := a.Acquire(ctx, past, "other"); err != nil {
		t.Fatalf("another key's slot: %v", err)
	}
	if _, err := a.Acquire(ctx, time.Now().Add(20*time.Millisecond), "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third slot with two taken: %v; want the deadline", err)
	}

	// A waiter gets the slot given back; a second release gives back
	// nothing more.
	got := make(chan error, 1)
	go func() {
		_, err := a.Acquire(ctx, time.Now().Add(time.Minute), "k")
		got <- err
	}()
	waitFor(t, func() bool { return a.refsOf("k") == 3 })
	r1()
	r1()
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if _, err := a.Acquire(ctx, time.Now().Add(20*time.Millisecond), "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a slot after a double release: %v; want the deadline", err)
	}
}

// refsOf returns how many callers hold or wait for key's slots.
func (a *Slots) refsOf(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if q := a.slots[key]; q != nil {
		return q.refs
	}
	return 0
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, "the condition", cond)
}
