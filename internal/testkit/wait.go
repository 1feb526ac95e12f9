package testkit

import (
	"flag"
	"strconv"
	"testing"
	"time"
)

// WaitFor polls cond every 10 ms until it holds, and fails the test with
// what if it does not hold within d. Tests wait for the condition they
// assert this way, never for a fixed time; d bounds only the failure path,
// so it can be generous.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DefaultParallel sets go test's -parallel to n unless the command line set
// it. Call it from TestMain before m.Run. The default (GOMAXPROCS) suits
// tests that compute; holdfast's mostly wait on timers and sockets, so on 2
// cores two at a time leaves the machine idle.
func DefaultParallel(n int) {
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.parallel" {
			set = true
		}
	})
	if !set {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
}
