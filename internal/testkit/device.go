package testkit

import (
	"testing"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
)

// NewDevice returns a fresh device identity (an Ed25519 key pair, as an
// OpenClaw client keeps one); it fails the test if none can be made.
func NewDevice(t testing.TB) *deviceauth.Identity {
	t.Helper()
	d, err := deviceauth.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
