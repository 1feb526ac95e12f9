package testkit

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// A port that another process reserved is not handed out, and neither is
// one this process handed out before. The other process is stood for by
// a lock on a file opened apart from testkit's (flock locks belong to the
// open file, so two opens conflict as two processes do).
func TestFreeAddrSkipsReservedPorts(t *testing.T) {
	taken, mine, free := 31990, 31991, 31992
	for _, p := range []int{taken, mine, free} {
		if reservedPorts.files[p] != nil {
			t.Skipf("port %d was handed out before this test", p) // a second run in one process (-count)
		}
	}
	dir := filepath.Join(os.TempDir(), "holdfast-test-ports")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	other, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(taken)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Skipf("port %d is reserved by a test process running beside: %v", taken, err)
	}

	if got := freeAddr(t, seq(mine)); got != "127.0.0.1:"+strconv.Itoa(mine) {
		t.Fatalf("freeAddr = %s; want port %d", got, mine)
	}
	want := "127.0.0.1:" + strconv.Itoa(free)
	if got := freeAddr(t, seq(taken, mine, free)); got != want {
		t.Fatalf("freeAddr = %s; want %s: ports %d (another process's) and %d (handed out) are taken", got, want, taken, mine)
	}
}

// seq returns the ports in turn.
func seq(ports ...int) func() int {
	return func() int {
		p := ports[0]
		ports = ports[1:]
		return p
	}
}
