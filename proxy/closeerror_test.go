package proxy

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// asTarget is an error that answers errors.As for *websocket.CloseError
// itself, without wrapping one.
type asTarget struct{ ce *websocket.CloseError }

func (a asTarget) Error() string { return "as target" }
func (a asTarget) As(target any) bool {
	if p, ok := target.(**websocket.CloseError); ok {
		*p = a.ce
		return true
	}
	return false
}

// wire.AsCloseError finds what errors.As finds, and allocates nothing.
func TestAsCloseError(t *testing.T) {
	// Serial: testing.AllocsPerRun counts the whole process's allocations
	// (and refuses to run beside parallel tests).
	ce := &websocket.CloseError{Code: 1012, Text: "service restart"}
	other := &websocket.CloseError{Code: 1000}
	for _, err := range []error{
		nil,
		io.EOF,
		ce,
		fmt.Errorf("read: %w", ce),
		fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", ce)),
		errors.Join(io.EOF, ce),
		errors.Join(fmt.Errorf("a: %w", io.EOF), fmt.Errorf("b: %w", ce), other),
		fmt.Errorf("two: %w and %w", io.EOF, ce),
		asTarget{ce},
		fmt.Errorf("wrapped: %w", asTarget{ce}),
	} {
		var want *websocket.CloseError
		errors.As(err, &want)
		if got := wire.AsCloseError(err); got != want {
			t.Errorf("%v: %v; errors.As finds %v", err, got, want)
		}
	}
	wrapped := fmt.Errorf("read: %w", ce)
	if n := testing.AllocsPerRun(100, func() { _ = wire.CloseCode(wrapped) }); n != 0 {
		t.Fatalf("wire.CloseCode: %v allocations; want 0", n)
	}
}
