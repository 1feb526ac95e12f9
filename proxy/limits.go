package proxy

import (
	"errors"

	"github.com/holdfast-proxy/holdfast/metrics"
	"github.com/holdfast-proxy/holdfast/proxy/internal/share"
)

// reservePreauth accounts a frame the client reader is about to queue
// before hello-ok: n is the capacity of its buffer, what it holds. Call it with c.mu held; the handshakes it displaced are
// returned for the caller to tell (displace) once it has let go of c.mu.
func (c *conn) reservePreauth(n int) ([]share.Displacement, error) {
	scope, displaced, err := c.lease.Reserve(n)
	if errors.Is(err, share.ErrPreauthBudget) {
		c.h.metrics.Refused(metrics.LimitPreauthBytes, scope)
	}
	return displaced, err
}
