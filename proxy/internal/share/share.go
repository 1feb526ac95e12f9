// Package share keeps what holdfast shares between client addresses while
// their handshakes run: its own limits, each shared fairly under
// contention (Limits), and the gateway's cap on unauthenticated sockets
// per address, taken in turn (Slots).
package share

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/holdfast-proxy/holdfast/metrics"
)

// Limits are holdfast's bounds on what clients in their handshake may
// hold: how many are in their handshake at once (from the upgrade request
// to hello-ok or Refusal), and how many bytes of their frames are held
// before hello-ok, all clients together. One client may hold at most 16
// frames of 64 KiB; without a bound a crowd could make holdfast hold any
// amount.
//
// Each limit is shared fairly between attributed client addresses
// (forwarded.Attribution.Key) under contention. Below a limit anyone takes what it
// needs: a crowd from one address (every local client shares one) may fill
// it alone. At a limit, a client from an address holding less than the
// address holding the most takes the place of that address's newest
// handshake, which is displaced (it ends at once: HTTP 503 before its
// upgrade, 1013 after); otherwise the newcomer itself is refused. So one
// address at a limit never locks another out, and whatever is refused is
// always the newest handshake of the heaviest address.
//
// Every decision takes mu once, and costs O(log n) in the number of
// addresses holding anything (two max-heaps of addresses, one per limit,
// and intrusive lists of each address's handshakes). A displaced handshake
// is told through its lease's context, cancelled outside mu. Safe for
// concurrent use.
type Limits struct {
	maxHandshakes int64
	maxBytes      int64

	mu           sync.Mutex
	handshakes   int64             // leases not ended
	bytes        int64             // bytes they hold
	addrs        map[string]*share // every address holding a lease
	byHandshakes shareHeap         // addrs, the most handshakes on top
	byBytes      shareHeap         // addrs, the most bytes on top
}

// New returns the limits of maxHandshakes handshakes and maxBytes bytes
// held before hello-ok.
func New(maxHandshakes int, maxBytes int64) *Limits {
	return &Limits{
		maxHandshakes: int64(maxHandshakes),
		maxBytes:      maxBytes,
		addrs:         make(map[string]*share),
		byHandshakes:  shareHeap{which: heapHandshakes},
		byBytes:       shareHeap{which: heapBytes},
	}
}

// ErrPreauthBudget: a client frame held before hello-ok would take the
// bytes all clients hold over the limit, and no address holds more than
// the client's would with it.
var ErrPreauthBudget = errors.New("holdfast's pre-auth buffer is full")

// ErrDisplaced: the handshake was displaced by a client from an address
// holding less of a limit (see limits).
var ErrDisplaced = errors.New("displaced by a client from an address holding less of holdfast's limits")

// share is what one address holds. Guarded by Limits.mu.
type share struct {
	key        string
	handshakes int64
	bytes      int64
	leases     leaseList // its handshakes, oldest first
	holders    leaseList // those holding bytes, in the order they began to
	idx        [2]int    // positions in byHandshakes and byBytes
}

// lease is one handshake's hold on the limits, from admission to release
// or Displacement.
type Lease struct {
	l   *Limits
	key string // the address (forwarded.Attribution.Key)
	// ctx is cancelled with ErrDisplaced when the handshake is displaced,
	// with nothing in particular when it is released, and when the
	// context it was admitted under ends.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// displaced is set when the handshake is displaced, before ctx is
	// cancelled: ctx may have ended already with its parent.
	displaced atomic.Bool

	// Guarded by l.mu.
	share *share // nil once ended
	bytes int64
	links [2]leaseLinks // in share.leases and share.holders
	held  bool          // in share.holders
}

type leaseLinks struct{ prev, next *Lease }

// leaseList is an intrusive doubly linked list of leases through their
// links[which].
type leaseList struct {
	head, tail *Lease
	which      int
}

func (q *leaseList) pushBack(x *Lease) {
	ln := &x.links[q.which]
	ln.prev, ln.next = q.tail, nil
	if q.tail != nil {
		q.tail.links[q.which].next = x
	} else {
		q.head = x
	}
	q.tail = x
}

func (q *leaseList) remove(x *Lease) {
	ln := &x.links[q.which]
	if ln.prev != nil {
		ln.prev.links[q.which].next = ln.next
	} else {
		q.head = ln.next
	}
	if ln.next != nil {
		ln.next.links[q.which].prev = ln.prev
	} else {
		q.tail = ln.prev
	}
	ln.prev, ln.next = nil, nil
}

const (
	heapHandshakes = 0
	heapBytes      = 1
)

// shareHeap is a max-heap of shares by handshakes or bytes
// (container/heap); each share keeps its position in idx[which].
type shareHeap struct {
	s     []*share
	which int
}

func (h *shareHeap) weight(s *share) int64 {
	if h.which == heapHandshakes {
		return s.handshakes
	}
	return s.bytes
}

func (h *shareHeap) Len() int           { return len(h.s) }
func (h *shareHeap) Less(i, j int) bool { return h.weight(h.s[i]) > h.weight(h.s[j]) }
func (h *shareHeap) Swap(i, j int) {
	h.s[i], h.s[j] = h.s[j], h.s[i]
	h.s[i].idx[h.which] = i
	h.s[j].idx[h.which] = j
}
func (h *shareHeap) Push(x any) {
	s := x.(*share)
	s.idx[h.which] = len(h.s)
	h.s = append(h.s, s)
}
func (h *shareHeap) Pop() any {
	n := len(h.s) - 1
	s := h.s[n]
	h.s[n] = nil
	h.s = h.s[:n]
	s.idx[h.which] = -1
	return s
}

// top is the share holding the most, or nil.
func (h *shareHeap) top() *share {
	if len(h.s) == 0 {
		return nil
	}
	return h.s[0]
}

// Refusal is a limit that refused a client, and in which scope.
type Refusal struct {
	Limit metrics.Limit
	Scope metrics.Scope
}

// Displacement is a lease ended to make room, and the limit it made room
// in. Its handshake is told by displace, outside Limits.mu.
type Displacement struct {
	Lease *Lease
	Limit metrics.Limit
}

// displace tells each displaced handshake, and counts it.
func Displace(ds []Displacement, m *metrics.Metrics) {
	for _, d := range ds {
		d.Lease.displaced.Store(true)
		d.Lease.cancel(ErrDisplaced)
		m.Refused(d.Limit, metrics.ScopeAddress)
	}
}

// admit takes a handshake slot for a new client from the address key, or
// reports which limit refuses it. A client that could not have even its
// connect held is refused before it costs anything: while the pre-auth
// bytes are at their limit, unless some other address holds more bytes
// than key. At the handshake limit, the newest handshake of the address
// holding the most is displaced when that address holds at least two more
// than key (one more would only swap their places); otherwise the newcomer
// is refused. The caller passes the displaced to displace.
//
// The lease's context is parent's child: a handshake that waits on it
// (the upstream dial) also ends when parent does (the client's request,
// which ends when the client leaves before its upgrade), with no context
// of its own for that.
func (l *Limits) Admit(parent context.Context, key string) (ls *Lease, refused Refusal, displaced []Displacement) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.addrs[key]
	var holdsHandshakes, holdsBytes int64
	if s != nil {
		holdsHandshakes, holdsBytes = s.handshakes, s.bytes
	}
	if l.bytes >= l.maxBytes {
		if top := l.byBytes.top(); top == nil || top.bytes <= holdsBytes {
			return nil, Refusal{metrics.LimitPreauthBytes, l.scope(holdsBytes == l.bytes)}, nil
		}
	}
	if l.handshakes >= l.maxHandshakes {
		top := l.byHandshakes.top()
		if top == nil || top.handshakes <= holdsHandshakes+1 {
			return nil, Refusal{metrics.LimitHandshakes, l.scope(holdsHandshakes == l.handshakes)}, nil
		}
		v := top.leases.tail
		l.end(v)
		displaced = append(displaced, Displacement{v, metrics.LimitHandshakes})
	}
	if s == nil {
		s = &share{key: key, leases: leaseList{which: 0}, holders: leaseList{which: 1}}
		l.addrs[key] = s
		heap.Push(&l.byHandshakes, s)
		heap.Push(&l.byBytes, s)
	}
	ls = &Lease{l: l, key: key, share: s}
	ls.ctx, ls.cancel = context.WithCancelCause(parent)
	s.leases.pushBack(ls)
	s.handshakes++
	l.handshakes++
	heap.Fix(&l.byHandshakes, s.idx[heapHandshakes])
	return ls, Refusal{}, displaced
}

// scope is the Refusal scope: global when the refused client's address
// held all of the limit.
func (l *Limits) scope(holdsAll bool) metrics.Scope {
	if holdsAll {
		return metrics.ScopeGlobal
	}
	return metrics.ScopeAddress
}

// end ends lease x (released or displaced): what it held goes back. Call
// with l.mu held.
func (l *Limits) end(x *Lease) {
	s := x.share
	if s == nil {
		return
	}
	x.share = nil
	s.leases.remove(x)
	if x.held {
		s.holders.remove(x)
		x.held = false
	}
	s.handshakes--
	s.bytes -= x.bytes
	l.handshakes--
	l.bytes -= x.bytes
	x.bytes = 0
	if s.handshakes == 0 {
		heap.Remove(&l.byHandshakes, s.idx[heapHandshakes])
		heap.Remove(&l.byBytes, s.idx[heapBytes])
		delete(l.addrs, s.key)
		return
	}
	heap.Fix(&l.byHandshakes, s.idx[heapHandshakes])
	heap.Fix(&l.byBytes, s.idx[heapBytes])
}

// release ends the lease, giving back its slot and the bytes it still
// holds. Safe to call more than once, and after a Displacement.
func (x *Lease) Release() {
	x.l.mu.Lock()
	x.l.end(x)
	x.l.mu.Unlock()
	x.cancel(nil)
}

// displaced reports whether the lease was displaced.
func (x *Lease) Displaced() bool {
	return x.displaced.Load()
}

// reserve accounts n more bytes held before hello-ok by x. When they do
// not fit, the newest byte-holding handshakes of the address holding the
// most bytes are displaced, as long as that address holds more than x's
// would with the n bytes; when that is not enough, the frame is refused
// (ErrPreauthBudget, with the scope). A displaced lease reserves nothing
// (ErrDisplaced). The caller passes the displaced to displace.
func (x *Lease) Reserve(n int) (scope metrics.Scope, displaced []Displacement, err error) {
	l := x.l
	l.mu.Lock()
	defer l.mu.Unlock()
	s := x.share
	if s == nil {
		return "", nil, ErrDisplaced
	}
	need := int64(n)
	for l.bytes+need > l.maxBytes {
		top := l.byBytes.top()
		if top.bytes <= s.bytes+need {
			return l.scope(s.bytes == l.bytes), displaced, ErrPreauthBudget
		}
		v := top.holders.tail
		l.end(v)
		displaced = append(displaced, Displacement{v, metrics.LimitPreauthBytes})
	}
	if need == 0 {
		return "", displaced, nil
	}
	if !x.held {
		s.holders.pushBack(x)
		x.held = true
	}
	x.bytes += need
	s.bytes += need
	l.bytes += need
	heap.Fix(&l.byBytes, s.idx[heapBytes])
	return "", displaced, nil
}

// freeBytes gives back the bytes x holds; it keeps its handshake slot.
func (x *Lease) FreeBytes() {
	l := x.l
	l.mu.Lock()
	defer l.mu.Unlock()
	s := x.share
	if s == nil || x.bytes == 0 {
		return
	}
	s.holders.remove(x)
	x.held = false
	s.bytes -= x.bytes
	l.bytes -= x.bytes
	x.bytes = 0
	heap.Fix(&l.byBytes, s.idx[heapBytes])
}

// Key is the address the lease was taken for.
func (x *Lease) Key() string { return x.key }

// Context is cancelled with ErrDisplaced when the handshake is displaced,
// with nothing in particular when it is released, and when the context it
// was admitted under ends (Admit).
func (x *Lease) Context() context.Context { return x.ctx }

// Cancel ends the lease's context without releasing the lease: its
// handshake is over (the client left, holdfast stops at once), though
// what it holds is given back only by Release. It is no displacement.
func (x *Lease) Cancel() { x.cancel(nil) }

// Bytes is what the lease holds of the pre-auth bytes now.
func (x *Lease) Bytes() int64 {
	x.l.mu.Lock()
	defer x.l.mu.Unlock()
	return x.bytes
}
