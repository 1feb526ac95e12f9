//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// A previous run killed by its timeout may have left a gateway behind.
	reapRecordedGateways()
	defer reapRecordedGateways()
	if !bypass() {
		dir, err := os.MkdirTemp("", "holdfast-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		holdfastBin, buildErr = buildHoldfast(dir)
		if buildErr != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", buildErr)
		}
	}
	return m.Run()
}
