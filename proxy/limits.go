package proxy

import (
	"errors"
	"sync/atomic"

	"github.com/holdfast-proxy/holdfast/metrics"
)

// limits are holdfast's global bounds on what clients in their handshake
// may hold, whoever they are: how many are in their handshake at once
// (from the upgrade request to hello-ok or refusal), and how many bytes of
// their frames are held before hello-ok, all clients together. One client
// may hold at most 16 frames of 64 KiB; without a global bound a crowd
// could make holdfast hold any amount. Safe for concurrent use.
type limits struct {
	maxHandshakes int64
	maxBytes      int64
	handshakes    atomic.Int64
	bytes         atomic.Int64
}

// errPreauthBudget: a client frame held before hello-ok would take the
// bytes all clients hold over the global limit.
var errPreauthBudget = errors.New("holdfast's pre-auth buffer is full")

// admit takes a handshake slot for a new client, or reports which limit
// refuses it: the handshakes in progress, or the pre-auth bytes held (a
// client that could not have even its connect held is refused before it
// costs anything).
func (l *limits) admit() (release func(), refused metrics.Limit) {
	if l.bytes.Load() >= l.maxBytes {
		return nil, metrics.LimitPreauthBytes
	}
	if l.handshakes.Add(1) > l.maxHandshakes {
		l.handshakes.Add(-1)
		return nil, metrics.LimitHandshakes
	}
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			l.handshakes.Add(-1)
		}
	}, ""
}

// reserve accounts n more bytes held before hello-ok, unless that would
// exceed the limit.
func (l *limits) reserve(n int) bool {
	if l.bytes.Add(int64(n)) > l.maxBytes {
		l.bytes.Add(-int64(n))
		return false
	}
	return true
}

// free gives back n bytes reserved.
func (l *limits) free(n int) { l.bytes.Add(-int64(n)) }

// reservePreauth accounts a frame the client reader is about to queue
// before hello-ok. Call it with c.mu held.
func (c *conn) reservePreauth(n int) error {
	if !c.h.limits.reserve(n) {
		return errPreauthBudget
	}
	c.preauthBytes += n
	return nil
}

// freePreauth gives back what this connection's queue held. The handler
// calls it once the handshake is over: by then the queue was flushed to the
// gateway or dropped, and the reader queues no more.
func (c *conn) freePreauth() {
	c.mu.Lock()
	n := c.preauthBytes
	c.preauthBytes = 0
	c.mu.Unlock()
	c.h.limits.free(n)
}
