package main

import (
	"os"
	"runtime"
	"testing"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// TestMain runs sixteen tests per core unless -parallel says otherwise: they
// mostly wait on timers and sockets. No test here owns the process: serve
// and run take their signals as channels and their output as writers.
func TestMain(m *testing.M) {
	testkit.DefaultParallel(16 * runtime.GOMAXPROCS(0))
	os.Exit(m.Run())
}
