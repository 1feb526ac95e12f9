//go:build linux

package main

import (
	"net"
	"testing"

	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// Client sockets get no TCP keepalive (docs/operations.md, "Keepalive").
func TestClientSocketsHaveNoKeepalive(t *testing.T) {
	t.Parallel()
	ln, err := listenClients("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if testkit.KeepaliveOn(t, a.(*net.TCPConn)) {
		t.Error("SO_KEEPALIVE is set on an accepted client socket")
	}
}
