package share

import (
	"context"
	"sync"
	"time"
)

// Slots queues upstream handshakes per attributed client address. The
// gateway admits a fixed number of unauthenticated sockets per address
// (32 by default; the next upgrade gets HTTP 503), and every local client
// shares holdfast's address, so a crowd must take turns instead of spraying
// upgrades that would be refused. Waiters are served in arrival order.
type Slots struct {
	limit int

	mu    sync.Mutex
	slots map[string]*slotQueue
}

type slotQueue struct {
	sem  chan struct{}
	refs int
}

// NewSlots returns the slots of limit upstream handshakes per address.
func NewSlots(limit int) *Slots {
	return &Slots{limit: limit, slots: make(map[string]*slotQueue)}
}

// Acquire takes a slot for key, waiting in line until deadline when every
// slot is taken, and returns its release function, which may be called
// more than once. A free slot costs no timer: the wait's deadline is set
// up only when there is a wait.
func (a *Slots) Acquire(ctx context.Context, deadline time.Time, key string) (release func(), err error) {
	a.mu.Lock()
	q := a.slots[key]
	if q == nil {
		q = &slotQueue{sem: make(chan struct{}, a.limit)}
		a.slots[key] = q
	}
	q.refs++
	a.mu.Unlock()

	unref := func() {
		a.mu.Lock()
		q.refs--
		if q.refs == 0 {
			delete(a.slots, key)
		}
		a.mu.Unlock()
	}
	select {
	case q.sem <- struct{}{}:
	default:
		// A send into a full buffer queues behind the senders already
		// blocked, so a free slot goes to them first either way.
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case q.sem <- struct{}{}:
		case <-ctx.Done():
			unref()
			return nil, ctx.Err()
		case <-t.C:
			unref()
			return nil, context.DeadlineExceeded
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-q.sem
			unref()
		})
	}, nil
}
