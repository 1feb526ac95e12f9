package fakegw_test

import (
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
)

// ChallengeDelay holds each socket's challenge after its upgrade, as a
// gateway busy starting sends it late.
func TestChallengeDelay(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	g := startGW(t, fakegw.Config{ChallengeDelay: delay})
	start := time.Now()
	c := dialRaw(t, g.URL(), nil) // returns once the challenge is read
	if took := time.Since(start); took < delay {
		t.Fatalf("challenge after %v; want at least %v", took, delay)
	}
	if c.nonce == "" {
		t.Fatal("challenge without a nonce")
	}
}
