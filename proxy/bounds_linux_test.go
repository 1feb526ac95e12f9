//go:build linux

package proxy_test

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/proxy"
)

// fullBacklog returns a 127.0.0.1 address whose listener never accepts and
// whose accept queue is full, so that a further TCP connect hangs (the
// kernel drops its SYN), as a dial to an unreachable host does.
func fullBacklog(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	// Fill the queue until a connect no longer completes.
	for i := 0; i < 16; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("could not fill the accept queue of a listener")
	return ""
}

// A dial that hangs is bounded by upstream.dial_timeout: 504.
func TestPassthroughDialTimeout(t *testing.T) {
	t.Parallel()
	addr := fullBacklog(t)
	hs := startProxy(t, addr, func(c *proxy.Config) {
		c.DialTimeout = 300 * time.Millisecond
	}, nil)
	wantTimeout504(t, hs.http+"/v1/models", 300*time.Millisecond)
}
