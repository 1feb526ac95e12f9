package proxy_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// The per-address cap on unauthenticated upstream sockets is exact as the
// gateway counts them, even while sockets are closed and opened in quick
// succession: a slot is given back only once the gateway has closed its
// end of the socket that held it, not as soon as holdfast closed its own
// (the gateway counts a socket until it has seen it end). A crowd of 60
// clients through a startup window, every connect refused and replayed on
// a fresh socket, never makes the gateway see more than the cap.
func TestPreauthCapExactUnderChurn(t *testing.T) {
	// Serial: the gateway closes every unauthenticated socket after
	// 200 ms (the churn this test needs), so a client gets hello-ok only
	// if its whole handshake through holdfast fits in that; beside the
	// parallel tests (even the heavy ones alone) none did.
	const limit = 4
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: 2 * time.Second, MaxPreauthPerIP: -1, PreauthTimeout: 200 * time.Millisecond})
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		c.MaxPreauthPerAddress = limit
		c.Budget = 12 * time.Second
		c.DialBackoffBase = 10 * time.Millisecond
		c.DialBackoffMax = 50 * time.Millisecond
	}, nil)
	var wg sync.WaitGroup
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, _, _ := testclient.Connect(ctx, testclient.Options{URL: hs.url, Token: token})
			if c != nil {
				c.Close()
			}
		}()
	}
	wg.Wait()
	st := gw.Stats()
	if st.MaxPreauthSeen > limit {
		t.Errorf("gateway saw %d unauthenticated sockets at once from holdfast; want at most %d (upgrades %d)", st.MaxPreauthSeen, limit, st.Upgrades)
	}
	if st.HelloOK == 0 {
		t.Error("no client got hello-ok")
	}
}
