package testkit

import (
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// FreeAddr returns a 127.0.0.1 address nobody listens on, for a gateway a
// test starts there later (or restarts there) and for dials that must be
// refused. Its port lies below the kernel's ephemeral range (32768 and up
// on Linux, 49152 and up on macOS), so no listener on port 0 and no
// outgoing connection of a test running beside takes it while it is free.
// (A port of the ephemeral range, freed and dialled later, was taken by a
// parallel test's listener: its gateway then saw another test's holdfast.)
//
// The port stays reserved until the process exits, across processes too:
// `go test ./...` runs several packages' test binaries at once, and each
// hands out ports from the same range. A reservation is an exclusive
// flock on a file named after the port in a directory under os.TempDir;
// the kernel drops it when the process ends, however it ends. (Without
// it, one package's gateway found its port taken by another package's
// gateway started on the same port a moment before.)
func FreeAddr(t testing.TB) string {
	t.Helper()
	return freeAddr(t, func() int { return 20000 + rand.IntN(12000) })
}

// freeAddr is FreeAddr with the candidate ports drawn from next.
func freeAddr(t testing.TB, next func() int) string {
	t.Helper()
	for range 200 {
		port := next()
		if !reservePort(t, port) {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // a listener outside the tests; the port stays reserved
		}
		ln.Close()
		return ln.Addr().String()
	}
	t.Fatal("testkit: no free port between 20000 and 32000")
	return ""
}

// reservedPorts are the ports this process reserved, with the locked file
// of each (kept open: closing it would drop the lock).
var reservedPorts = struct {
	sync.Mutex
	files map[int]*os.File
}{files: map[int]*os.File{}}

// reservePort reserves port for this process; it reports false if this
// process or another reserved it before.
func reservePort(t testing.TB, port int) bool {
	t.Helper()
	reservedPorts.Lock()
	defer reservedPorts.Unlock()
	if reservedPorts.files[port] != nil {
		return false
	}
	dir := filepath.Join(os.TempDir(), "holdfast-test-ports")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("testkit: port reservations: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("testkit: port reservations: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false // another process holds it
	}
	reservedPorts.files[port] = f
	return true
}
