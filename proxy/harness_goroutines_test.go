package proxy_test

import (
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// A harness counts its own holdfast's goroutines, not another's: a spliced
// session on one raises its count and leaves the other's alone, and the
// count is back at its base once the session has ended. The bad-input and
// fault tests rest on this to run beside other tests.
func TestHarnessCountsItsGoroutines(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, Echo: true})
	one := startProxy(t, gw.Addr(), nil, nil)
	other := startProxy(t, gw.Addr(), nil, nil)
	base, otherBase := one.goroutines(), other.goroutines()

	c := dialRaw(t, one.url, nil)
	c.handshake()
	testkit.WaitFor(t, 5*time.Second, "the session's goroutines", func() bool { return one.goroutines() > base })
	if got := other.goroutines(); got != otherBase {
		t.Errorf("the other harness counts %d goroutines; want its base %d", got, otherBase)
	}
	c.ws.Close()
	testkit.WaitFor(t, 10*time.Second, "the count back at its base", func() bool { return one.goroutines() <= base })
}
