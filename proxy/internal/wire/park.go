package wire

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Parking: an idle relay gives its goroutine back.
//
// A relay waits for its source in the Go netpoller, as any read does, its
// goroutine parked with a stack of a few KiB. Once a relay has waited
// between bursts for longer than a Parker's after, it parks instead: its
// source's socket joins the Parker's epoll set (one-shot), and its
// goroutine returns. When the socket becomes readable, or when its Conn is
// closed, the Parker starts a goroutine that goes on with the relay where
// it stopped. A parked relay holds its Relay struct and its legs, and no
// goroutine, no stack and no buffer.
//
// Active relays pay nothing for this but one atomic store per burst: the
// Parker's goroutine sweeps its relays every after/4, and asks one that has
// not started a burst since the last sweeps to park, by setting a read
// deadline in the past on its source, which wakes its wait. The relay
// clears the deadline; it parks when the wait was between bursts and
// nothing waits above the socket (parkable), and goes on waiting
// otherwise.
//
// Races, all settled under the relay's pmu: the sweeper asks (ask, the
// deadline) and the relay clears both, so that a deadline the relay sees
// with ask unset is someone else's; a relay parks (registers its fd) only
// while its source is not closed, and Close, which marks the Conn closed
// before it looks for a relay, takes a parked relay out of the epoll set
// before the socket is closed (its fd number may be reused at once) and
// resumes it, so that it reads the closed socket and ends as a relay
// woken by a close always did; a wake and a close at once resume the relay
// once, whichever sees it parked.

// Parker parks idle relays: one epoll set and one goroutine, which runs
// only while relays use the Parker (it starts with the first and ends with
// the last), and the goroutines it starts inherit its profiler labels. A
// nil *Parker parks nothing.
type Parker struct {
	after time.Duration

	mu      sync.Mutex
	relays  map[uint32]*Relay // relays running or parked, by id
	nextID  uint32
	running bool    // the goroutine runs (then poll is open)
	poll    *poller // the epoll set; set while running
	parked  atomic.Int64
	parks   atomic.Uint64 // parks so far
}

// NewParker returns a Parker that parks relays idle for after, or nil
// (no parking) when after is not positive or parking is not supported
// here (only Linux has it).
func NewParker(after time.Duration) *Parker {
	if after <= 0 || !parkSupported {
		return nil
	}
	return &Parker{after: after, relays: make(map[uint32]*Relay)}
}

// Parked returns how many relays are parked now.
func (p *Parker) Parked() int {
	if p == nil {
		return 0
	}
	return int(p.parked.Load())
}

// add registers r, starting the goroutine (and opening the epoll set)
// when r is the first. It reports false when the epoll set could not be
// opened: r then never parks.
func (p *Parker) add(r *Relay) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		poll, err := newPoller()
		if err != nil {
			return false
		}
		p.poll, p.running = poll, true
		go p.loop(poll)
	}
	for {
		p.nextID++
		if _, used := p.relays[p.nextID]; p.nextID != 0 && !used {
			break
		}
	}
	r.id = p.nextID
	r.poll = p.poll
	p.relays[r.id] = r
	return true
}

// remove unregisters r, which has ended; the goroutine ends with the last
// relay.
func (p *Parker) remove(r *Relay) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.relays, r.id)
	if len(p.relays) == 0 {
		// Under mu: the loop closes the set only under it, and its fds
		// may be reused once closed.
		p.poll.kick()
	}
}

// loop waits for parked sockets to become readable and resumes their
// relays; every tick it sweeps the relays, asking those idle for after to
// park. It ends, closing the epoll set, once no relay uses the Parker.
func (p *Parker) loop(poll *poller) {
	tick := p.after / 4
	next := time.Now().Add(tick)
	ids := make([]uint32, 0, 64)
	var woken []*Relay
	for {
		ids = poll.wait(ids[:0], time.Until(next))
		now := time.Now()
		p.mu.Lock()
		if len(p.relays) == 0 {
			p.running, p.poll = false, nil
			p.mu.Unlock()
			poll.close()
			return
		}
		for _, id := range ids {
			if r := p.relays[id]; r != nil {
				woken = append(woken, r)
			}
		}
		if !now.Before(next) {
			for _, r := range p.relays {
				r.sweep(now, p.after)
			}
			next = now.Add(tick)
		}
		p.mu.Unlock()
		for i, r := range woken {
			r.wake()
			woken[i] = nil
		}
		woken = woken[:0]
	}
}

// aLongTimeAgo is the past deadline that asks a relay to park.
var aLongTimeAgo = time.Unix(1, 0)

// sweep asks r to park when it has started no burst for after (its waits
// count unchanged since it was seen last, at since), once per wait. Only
// the Parker's goroutine calls it, under p.mu.
func (r *Relay) sweep(now time.Time, after time.Duration) {
	w := r.waits.Load()
	if w != r.seen {
		r.seen, r.since = w, now.UnixNano()
		return
	}
	if w == r.askedAt || now.UnixNano()-r.since < int64(after) {
		return
	}
	r.askedAt = w
	r.pmu.Lock()
	if !r.parked && !r.closed && !r.src.closing.Load() {
		r.ask = true
		_ = r.src.Conn.SetReadDeadline(aLongTimeAgo)
	}
	r.pmu.Unlock()
}

// asked reports whether err is the Parker's request to park, after
// clearing it (the ask and the deadline that carried it).
func (r *Relay) asked(err error) bool {
	if r.pk == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if !r.ask {
		return false // someone else's deadline
	}
	r.ask = false
	_ = r.src.Conn.SetReadDeadline(time.Time{})
	return true
}

// park registers r's source with the epoll set and reports true, after
// which the calling goroutine must not touch r: a wake or a close may
// resume it on another goroutine at once. It reports false when the source
// is closing or cannot be registered; the relay then goes on reading.
func (r *Relay) park() bool {
	// What was relayed and is still batched leaves now: the ask may have
	// failed the read before it found the socket empty and flushed.
	if peer := r.src.peer.Load(); peer != nil {
		_ = peer.Flush()
	}
	r.addCount()
	r.src.releaseSpare()
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if r.closed || r.src.closing.Load() {
		return false
	}
	if err := r.poll.register(r.src.raw, r.id); err != nil {
		return false
	}
	r.parked = true
	r.pk.parked.Add(1)
	r.pk.parks.Add(1)
	return true
}

// unparkLocked takes a parked r out of the epoll set, under pmu, and
// reports whether it was parked (the caller then resumes it).
func (r *Relay) unparkLocked() bool {
	if !r.parked {
		return false
	}
	r.poll.unregister(r.src.raw)
	r.parked = false
	r.pk.parked.Add(-1)
	return true
}

// wake resumes r if it is parked: its socket became readable.
func (r *Relay) wake() {
	r.pmu.Lock()
	parked := r.unparkLocked()
	r.pmu.Unlock()
	if parked {
		go r.loop()
	}
}

// srcClosing runs when r's source is being closed, before its socket is:
// a parked r leaves the epoll set and resumes, to read the closed socket
// and end.
func (r *Relay) srcClosing() {
	r.pmu.Lock()
	r.closed = true
	parked := r.unparkLocked()
	r.pmu.Unlock()
	if parked {
		go r.loop()
	}
}

// retire unregisters r from its Parker once it has ended, clearing an ask
// it did not see.
func (r *Relay) retire() {
	r.pmu.Lock()
	if r.ask {
		r.ask = false
		_ = r.src.Conn.SetReadDeadline(time.Time{})
	}
	r.closed = true
	r.pmu.Unlock()
	r.pk.remove(r)
}

// parkable reports whether nothing read from the socket waits above it,
// so that a wait on the socket alone sees all data to come: nothing
// pending, no end of stream seen, and on a TLS leg nothing in the
// recordConn, no record begun (crypto/tls would hold its start), and the
// last read of the *tls.Conn drained its plaintext.
func (c *Conn) parkable() bool {
	if c.raw == nil || c.eof || len(c.pending) > 0 {
		return false
	}
	if c.rec != nil {
		return !c.rec.holds() && c.rec.have == 0 && c.rec.rerr == nil && !c.gather
	}
	return true
}
