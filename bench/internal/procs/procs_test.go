package procs

import (
	"os"
	"testing"
	"time"
)

// TestCPUOf checks that CPUOf reads this process's CPU time: it grows by
// about the CPU spent in a busy loop (the loop's wall time is an upper bound
// of it).
func TestCPUOf(t *testing.T) {
	before, err := CPUOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	x := 0
	for time.Since(start) < 300*time.Millisecond {
		x++
	}
	wall := time.Since(start)
	after, err := CPUOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// On a loaded machine the loop gets less than all of its wall time;
	// it gets some, and never more than wall time per running thread.
	if d := after - before; d < 20*time.Millisecond || d > 4*wall+20*time.Millisecond {
		t.Fatalf("cpu grew by %v over a %v busy loop (x=%d)", d, wall, x)
	}
}

// TestFreePortNeverRepeats: addresses handed out for Children that listen
// later are never handed out twice, even when the kernel offers one again.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[string]bool{}
	for range 300 {
		addr, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
	}
}
