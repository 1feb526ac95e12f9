//go:build e2e

package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// gatewayBlock is how many ports a gateway's own port reserves: OpenClaw
// derives its browser control port (+2) and its managed browsers' CDP range
// (+11 … +110) from it.
const gatewayBlock = 128

// portAllocator hands out TCP ports on 127.0.0.1 that no other part of this
// test process was given. A port is free only when it is handed out: the
// process that listens on it opens it later, so two callers asking the kernel
// for "a free port" a moment apart could otherwise get the same one (a
// holdfast once listened on the port its gateway was about to open).
//
// Gateway ports come from below the kernel's ephemeral range in blocks of
// gatewayBlock, so neither the kernel's port-0 choices (other listeners,
// outgoing connections' source ports) nor another gateway can land on a
// port a gateway derives from its own. Other ports come from the kernel and
// are never one already handed out.
type portAllocator struct {
	mu       sync.Mutex
	issued   map[int]bool
	blocks   map[int]bool // first port of each gateway block handed out
	kernel   func() (int, error)
	free     func(port int) bool
	lowBound int // first ephemeral port
}

var ports = newPortAllocator()

func newPortAllocator() *portAllocator {
	return &portAllocator{
		issued:   map[int]bool{},
		blocks:   map[int]bool{},
		kernel:   kernelPort,
		free:     portFree,
		lowBound: ephemeralLow(),
	}
}

// kernelPort asks the kernel for a free port on 127.0.0.1.
func kernelPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portFree reports whether port can be listened on at 127.0.0.1 now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 2048 {
		return 32768
	}
	return n
}

// port returns a kernel-chosen port never handed out before.
func (a *portAllocator) port() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range 100 {
		p, err := a.kernel()
		if err != nil {
			return 0, err
		}
		if !a.issued[p] {
			a.issued[p] = true
			return p, nil
		}
	}
	return 0, fmt.Errorf("no port the kernel offered was still unused in this process")
}

// gatewayPort returns the first port of a block of gatewayBlock ports below
// the ephemeral range that no gateway of this process was given, whose own
// port and browser control port are free now.
func (a *portAllocator) gatewayPort() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	const floor = 10240
	n := (a.lowBound - floor) / gatewayBlock
	if n < 1 {
		return 0, fmt.Errorf("no room for gateway ports below the ephemeral range (%d)", a.lowBound)
	}
	start := rand.IntN(n)
	for i := range n {
		p := floor + ((start+i)%n)*gatewayBlock
		if a.blocks[p] || a.issued[p] || a.issued[p+2] || !a.free(p) || !a.free(p+2) {
			continue
		}
		a.blocks[p] = true
		a.issued[p], a.issued[p+2] = true, true
		return p, nil
	}
	return 0, fmt.Errorf("no free gateway port block in %d..%d", floor, a.lowBound)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that nothing else in this test process was given.
func freePort(t testing.TB) int {
	t.Helper()
	p, err := ports.port()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return p
}

// gatewayPort returns a port for a real gateway (see portAllocator).
func gatewayPort(t testing.TB) int {
	t.Helper()
	p, err := ports.gatewayPort()
	if err != nil {
		t.Fatalf("gateway port: %v", err)
	}
	return p
}

// TestPortsNeverHandedOutTwice: the kernel may offer a port it offered
// before (it was closed again at once); the allocator must skip it, and
// gateway blocks never overlap each other or the kernel's range.
func TestPortsNeverHandedOutTwice(t *testing.T) {
	offers := []int{40001, 40002, 40001, 40002, 40003}
	a := &portAllocator{
		issued: map[int]bool{}, blocks: map[int]bool{}, lowBound: 32768,
		kernel: func() (int, error) {
			p := offers[0]
			offers = offers[1:]
			return p, nil
		},
		free: func(int) bool { return true },
	}
	var got []int
	for range 3 {
		p, err := a.port()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	if got[0] != 40001 || got[1] != 40002 || got[2] != 40003 {
		t.Fatalf("ports %v, want 40001 40002 40003 (a repeated offer skipped)", got)
	}
	seen := map[int]bool{}
	for range 50 {
		p, err := a.gatewayPort()
		if err != nil {
			t.Fatal(err)
		}
		if p+gatewayBlock > a.lowBound || p < 1024 {
			t.Fatalf("gateway port %d: its block reaches the ephemeral range %d", p, a.lowBound)
		}
		for q := range seen {
			if p < q+gatewayBlock && q < p+gatewayBlock {
				t.Fatalf("gateway ports %d and %d overlap", p, q)
			}
		}
		seen[p] = true
	}
	// The real allocator: every port distinct across both kinds.
	all := map[int]bool{}
	for range 20 {
		for _, p := range []int{freePort(t), gatewayPort(t)} {
			if all[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			all[p] = true
		}
	}
}
