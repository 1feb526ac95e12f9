//go:build !linux

package wire

import (
	"errors"
	"syscall"
	"time"
)

// parkSupported: relays keep their goroutine while they wait.
const parkSupported = false

// poller is not used where parkSupported is false.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.ErrUnsupported }

func (*poller) register(syscall.RawConn, uint32) error      { return errors.ErrUnsupported }
func (*poller) unregister(syscall.RawConn)                  {}
func (*poller) wait(ids []uint32, _ time.Duration) []uint32 { return ids }
func (*poller) kick()                                       {}
func (*poller) close()                                      {}
