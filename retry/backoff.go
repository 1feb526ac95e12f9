package retry

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Clock is the time source the policies use. Tests inject a fake one.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Rand returns a pseudo-random float64 in [0, 1). It must be safe for
// concurrent use.
type Rand func() float64

// LockedRand wraps a seeded source so that it can be shared by goroutines.
func LockedRand(seed uint64) Rand {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}
}

// Gateway retry-after bounds, as clients clamp them
// (resolveGatewayStartupRetryAfterMs in the gateway protocol package).
const (
	MinRetryAfter     = 100 * time.Millisecond
	MaxRetryAfter     = 2 * time.Second
	DefaultRetryAfter = 500 * time.Millisecond
)

// ClampRetryAfter applies the gateway clients' clamp to a retryAfterMs value:
// a negative or absent value (ms < 0) means DefaultRetryAfter, and the result
// lies in [MinRetryAfter, MaxRetryAfter].
func ClampRetryAfter(ms int64) time.Duration {
	d := DefaultRetryAfter
	if ms >= 0 {
		d = time.Duration(ms) * time.Millisecond
	}
	return min(max(d, MinRetryAfter), MaxRetryAfter)
}

// Backoff computes the waits between upstream attempts. The zero value is not
// usable; fill Base and Max. It is safe for concurrent use as long as Rand is.
type Backoff struct {
	// Base is the first exponential step for transport failures.
	Base time.Duration
	// Max caps the exponential step.
	Max time.Duration
	// Rand is the jitter source; nil means math/rand/v2's global source.
	Rand Rand
}

func (b Backoff) rand() float64 {
	if b.Rand != nil {
		return b.Rand()
	}
	return rand.Float64()
}

// Dial returns the wait before transport attempt number attempt+1 after
// attempt failed ones (attempt ≥ 1): full jitter over min(Max, Base·2^(attempt−1)),
// with a floor of Base/4 so that a retry never spins.
func (b Backoff) Dial(attempt int) time.Duration {
	step := b.Base
	for i := 1; i < attempt && step < b.Max; i++ {
		step *= 2
	}
	step = min(step, b.Max)
	floor := b.Base / 4
	return floor + time.Duration(b.rand()*float64(step-floor))
}

// RetryAfter returns the wait a server asked for (already clamped with
// ClampRetryAfter), spread by jitter in [d, 1.25·d) so that a crowd rejected
// together does not come back together.
func (b Backoff) RetryAfter(d time.Duration) time.Duration {
	return d + time.Duration(b.rand()*float64(d)/4)
}

// Budget is one connection's overall deadline. Every attempt, hold and wait
// for that connection must fit inside it.
type Budget struct {
	clock    Clock
	deadline time.Time
}

// NewBudget starts a budget of length d at clock.Now().
func NewBudget(clock Clock, d time.Duration) Budget {
	return Budget{clock: clock, deadline: clock.Now().Add(d)}
}

// Deadline is the instant the budget ends.
func (b Budget) Deadline() time.Time { return b.deadline }

// Remaining is the time left, never negative.
func (b Budget) Remaining() time.Duration {
	return max(b.deadline.Sub(b.clock.Now()), 0)
}

// Allows reports whether a wait of d still leaves time for an attempt: the
// budget must outlast the wait by at least reserve.
func (b Budget) Allows(d, reserve time.Duration) bool {
	return b.Remaining() > d+reserve
}
