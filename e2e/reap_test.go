//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// TestReapSparesGatewaysOfARunningSuite: a gateway recorded by a test
// binary that still runs (a suite running beside this one) is not a
// leftover; one recorded by a binary that has exited, or by this one, is.
// Before records named their owner, a second suite's start or end stopped
// the first suite's gateways mid-test (SIGTERM while starting).
func TestReapSparesGatewaysOfARunningSuite(t *testing.T) {
	owner := exec.Command("sleep", "30")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Process.Kill(); _, _ = owner.Process.Wait() })

	pgid, got, err := parseRecord([]byte("4242 " + strconv.Itoa(owner.Process.Pid) + "\n"))
	if err != nil || pgid != 4242 || got != owner.Process.Pid {
		t.Fatalf("parseRecord = %d, %d, %v", pgid, got, err)
	}
	if !ownerAlive(got) {
		t.Errorf("the owner %d runs, but its gateway would be reaped", got)
	}
	if ownerAlive(os.Getpid()) {
		t.Error("this binary's own records must be reaped at its end")
	}
	if _, owner0, err := parseRecord([]byte("4242")); err != nil || ownerAlive(owner0) {
		t.Errorf("a record without an owner (from before) must be reapable: owner %d, %v", owner0, err)
	}
	_ = owner.Process.Kill()
	_, _ = owner.Process.Wait()
	if ownerAlive(got) {
		t.Errorf("owner %d has exited, but its gateway would be spared", got)
	}
}
