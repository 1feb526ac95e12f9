package share

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/holdfast-proxy/holdfast/metrics"
)

// The fair-share rule of limits.admit, step by step: below the limit
// everyone is admitted (one address may fill it); at the limit the newest
// handshake of the address holding the most is displaced when it holds at
// least two more than the newcomer's, else the newcomer is refused.
func TestLimitsAdmitRule(t *testing.T) {
	t.Parallel()
	l := New(4, 1<<20)
	var a []*Lease
	for i := 0; i < 4; i++ {
		ls, r, ds := l.Admit(context.Background(), "a")
		if ls == nil || len(ds) != 0 {
			t.Fatalf("a #%d below the limit: lease %v Refusal %v displaced %d", i, ls != nil, r, len(ds))
		}
		a = append(a, ls)
	}
	if ls, r, _ := l.Admit(context.Background(), "a"); ls != nil || r != (Refusal{metrics.LimitHandshakes, metrics.ScopeGlobal}) {
		t.Fatalf("a at the limit: lease %v Refusal %v; want refused, global", ls != nil, r)
	}
	// b holds 0, a 4: a's newest goes.
	b1, _, ds := l.Admit(context.Background(), "b")
	if b1 == nil || len(ds) != 1 || ds[0].Lease != a[3] || a[3].share != nil {
		t.Fatalf("b: lease %v displaced %v; want a's newest displaced", b1 != nil, ds)
	}
	Displace(ds, nil)
	if !a[3].Displaced() {
		t.Fatal("the displaced lease does not say so")
	}
	// b holds 1, a 3: 3 >= 1+2, a's newest left goes.
	if b2, _, ds := l.Admit(context.Background(), "b"); b2 == nil || len(ds) != 1 || ds[0].Lease != a[2] {
		t.Fatalf("b again: want a's newest displaced, got %v", ds)
	}
	// b holds 2, a 2: b refused (scope address: a holds part).
	if ls, r, _ := l.Admit(context.Background(), "b"); ls != nil || r != (Refusal{metrics.LimitHandshakes, metrics.ScopeAddress}) {
		t.Fatalf("b holding half: lease %v Refusal %v; want refused, address", ls != nil, r)
	}
	// c holds 0, a and b 2: 2 >= 0+2, the newest of one of them goes.
	if c1, _, ds := l.Admit(context.Background(), "c"); c1 == nil || len(ds) != 1 {
		t.Fatalf("c: want one displaced, got %v", ds)
	}
	// A released or displaced lease gives back nothing twice.
	a[3].Release()
	a[0].Release()
	a[0].Release()
	if l.handshakes != 3 {
		t.Fatalf("handshakes %d after releases; want 3", l.handshakes)
	}
}

// Bytes: a frame that does not fit displaces the newest byte holders of
// the address holding the most, while it holds more than the frame's
// address would; otherwise the frame is refused.
func TestLimitsReserveRule(t *testing.T) {
	t.Parallel()
	l := New(100, 1000)
	a1, _, _ := l.Admit(context.Background(), "a")
	a2, _, _ := l.Admit(context.Background(), "a")
	a3, _, _ := l.Admit(context.Background(), "a") // holds nothing: never displaced for bytes
	b1, _, _ := l.Admit(context.Background(), "b")
	for _, x := range []struct {
		ls *Lease
		n  int
	}{{a1, 400}, {a2, 500}} {
		if _, ds, err := x.ls.Reserve(x.n); err != nil || len(ds) != 0 {
			t.Fatalf("reserve %d: %v %v", x.n, err, ds)
		}
	}
	// a holds 900 of 1000. b's 300 does not fit; a (900) > b's 300.
	_, ds, err := b1.Reserve(300)
	if err != nil || len(ds) != 1 || ds[0].Lease != a2 || ds[0].Limit != metrics.LimitPreauthBytes {
		t.Fatalf("b's frame: err %v displaced %v; want a2 displaced", err, ds)
	}
	if l.bytes != 700 || a3.share == nil {
		t.Fatalf("bytes %d, a3 kept %v; want 700 and a3 kept", l.bytes, a3.share != nil)
	}
	// a (400) holds more than b would with 400 more (700)? No: refused,
	// scope address.
	if sc, ds, err := b1.Reserve(400); err != ErrPreauthBudget || sc != metrics.ScopeAddress || len(ds) != 0 {
		t.Fatalf("b over: %v %v %v; want refused, address", err, sc, ds)
	}
	// a's own frame that does not fit, a not holding the most: refused.
	if _, _, err := a1.Reserve(400); err != ErrPreauthBudget {
		t.Fatalf("a over: %v; want refused", err)
	}
	// A displaced lease reserves nothing.
	if _, _, err := a2.Reserve(1); err != ErrDisplaced {
		t.Fatalf("displaced reserve: %v; want ErrDisplaced", err)
	}
	b1.FreeBytes()
	if l.bytes != 400 {
		t.Fatalf("bytes %d after b freed; want 400", l.bytes)
	}
}

// Under concurrent use from many addresses, the counts stay exact and
// within the limits, and every address's share is consistent with its
// leases (go test -race).
func TestLimitsConcurrent(t *testing.T) {
	t.Parallel()
	l := New(64, 64<<10)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			var held []*Lease
			for i := 0; i < 3000; i++ {
				key := fmt.Sprint("addr", r.IntN(5))
				switch op := r.IntN(4); {
				case op == 0 || len(held) == 0:
					if ls, _, ds := l.Admit(context.Background(), key); ls != nil {
						Displace(ds, nil)
						held = append(held, ls)
					}
				case op == 1:
					_, ds, _ := held[r.IntN(len(held))].Reserve(r.IntN(4096))
					Displace(ds, nil)
				case op == 2:
					held[r.IntN(len(held))].FreeBytes()
				default:
					k := r.IntN(len(held))
					held[k].Release()
					held = append(held[:k], held[k+1:]...)
				}
			}
			for _, ls := range held {
				ls.Release()
			}
		}()
	}
	wg.Wait()
	if l.handshakes != 0 || l.bytes != 0 || len(l.addrs) != 0 || l.byHandshakes.Len() != 0 || l.byBytes.Len() != 0 {
		t.Fatalf("after every release: %d handshakes, %d bytes, %d addresses; want none", l.handshakes, l.bytes, len(l.addrs))
	}
}

// checkLimits verifies l's bookkeeping against its leases.
func checkLimits(t *testing.T, l *Limits) {
	t.Helper()
	var hs, bs int64
	for key, s := range l.addrs {
		var n, b int64
		for x := s.leases.head; x != nil; x = x.links[0].next {
			n++
			b += x.bytes
		}
		if n != s.handshakes || b != s.bytes {
			t.Fatalf("%s: %d leases holding %d bytes; counted %d and %d", key, n, b, s.handshakes, s.bytes)
		}
		hs += n
		bs += b
	}
	if hs != l.handshakes || bs != l.bytes || hs > l.maxHandshakes || bs > l.maxBytes {
		t.Fatalf("total %d handshakes %d bytes; counted %d and %d, limits %d and %d", hs, bs, l.handshakes, l.bytes, l.maxHandshakes, l.maxBytes)
	}
	if top := l.byHandshakes.top(); top != nil {
		for _, s := range l.addrs {
			if s.handshakes > top.handshakes {
				t.Fatalf("heap top holds %d handshakes, %s holds %d", top.handshakes, s.key, s.handshakes)
			}
		}
	}
	if top := l.byBytes.top(); top != nil {
		for _, s := range l.addrs {
			if s.bytes > top.bytes {
				t.Fatalf("heap top holds %d bytes, %s holds %d", top.bytes, s.key, s.bytes)
			}
		}
	}
}

// A random sequence from one goroutine keeps the bookkeeping exact after
// every step, and whatever is refused or displaced belongs to an address
// holding at least as much as the one that got its place.
func TestLimitsRandomSteps(t *testing.T) {
	t.Parallel()
	l := New(16, 8<<10)
	r := rand.New(rand.NewPCG(7, 7))
	var held []*Lease
	drop := func(x *Lease) {
		for i, y := range held {
			if y == x {
				held = append(held[:i], held[i+1:]...)
				return
			}
		}
	}
	for i := 0; i < 20000; i++ {
		key := fmt.Sprint("addr", r.IntN(4))
		switch op := r.IntN(4); {
		case op == 0 || len(held) == 0:
			before := map[string]int64{}
			for k, s := range l.addrs {
				before[k] = s.handshakes
			}
			ls, _, ds := l.Admit(context.Background(), key)
			for _, d := range ds {
				if before[d.Lease.key] < before[key]+2 {
					t.Fatalf("step %d: %s (holding %d) displaced for %s (holding %d)", i, d.Lease.key, before[d.Lease.key], key, before[key])
				}
				drop(d.Lease)
			}
			if ls != nil {
				held = append(held, ls)
			}
		case op == 1:
			x := held[r.IntN(len(held))]
			before := map[string]int64{}
			for k, s := range l.addrs {
				before[k] = s.bytes
			}
			n := r.IntN(3000)
			_, ds, _ := x.Reserve(n)
			for _, d := range ds {
				if before[d.Lease.key] <= before[x.key]+int64(n) && d.Lease.key != x.key {
					t.Fatalf("step %d: %s (holding %d bytes) displaced for %s (holding %d, +%d)", i, d.Lease.key, before[d.Lease.key], x.key, before[x.key], n)
				}
				drop(d.Lease)
			}
		case op == 2:
			held[r.IntN(len(held))].FreeBytes()
		default:
			k := r.IntN(len(held))
			held[k].Release()
			held = append(held[:k], held[k+1:]...)
		}
		checkLimits(t, l)
	}
}

// A lease's context ends with the context it was admitted under (the
// client's request, which ends when the client leaves before its
// upgrade), and that is not a displacement; a displacement is one even
// when that context has ended first.
func TestLeaseContextEndsWithParent(t *testing.T) {
	t.Parallel()
	l := New(2, 1<<20)
	parent, cancel := context.WithCancel(context.Background())
	a, _, _ := l.Admit(parent, "a")
	cancel()
	select {
	case <-a.Context().Done():
	default:
		t.Fatal("the lease's context outlived the context it was admitted under")
	}
	if a.Displaced() {
		t.Fatal("a lease whose parent ended reports a displacement")
	}
	// The newest lease's client leaves, then the lease is displaced.
	parent2, cancel2 := context.WithCancel(context.Background())
	a2, _, _ := l.Admit(parent2, "a")
	cancel2()
	if b, _, ds := l.Admit(context.Background(), "b"); b == nil || len(ds) != 1 || ds[0].Lease != a2 {
		t.Fatalf("b admitted %v, displacing %v; want a's newest displaced", b != nil, ds)
	} else {
		Displace(ds, nil)
	}
	if !a2.Displaced() || a.Displaced() {
		t.Fatalf("displaced: a %v, a2 %v; want a2 only", a.Displaced(), a2.Displaced())
	}
	a.Release()
	a2.Release()
}

// Cancel ends a lease's context and nothing else: the lease still holds
// its handshake until Release, and it is no displacement.
func TestLeaseCancelKeepsTheLease(t *testing.T) {
	t.Parallel()
	l := New(1, 1<<20)
	a, _, _ := l.Admit(context.Background(), "a")
	a.Cancel()
	if a.Context().Err() == nil || a.Displaced() {
		t.Fatalf("after Cancel: context err %v, displaced %v; want ended, not displaced", a.Context().Err(), a.Displaced())
	}
	if b, r, _ := l.Admit(context.Background(), "a"); b != nil || r.Limit == "" {
		t.Fatal("a cancelled lease gave back its handshake before Release")
	}
	a.Release()
	if b, _, _ := l.Admit(context.Background(), "a"); b == nil {
		t.Fatal("a released lease kept its handshake")
	} else {
		b.Release()
	}
}
