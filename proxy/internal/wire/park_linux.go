//go:build linux

package wire

import (
	"syscall"
	"time"
)

// parkSupported: relays park in an epoll set of holdfast's own.
const parkSupported = true

// poller is a Parker's epoll set, with the read end of a pipe in it that
// kick makes readable (its id is 0, which no relay has).
type poller struct {
	epfd   int
	rd, wr int // the pipe
	events [128]syscall.EpollEvent
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		_ = syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fds[0], &ev); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(fds[0])
		_ = syscall.Close(fds[1])
		return nil, err
	}
	return &poller{epfd: epfd, rd: fds[0], wr: fds[1]}, nil
}

// register adds the socket of raw to the set, one-shot, under id.
func (p *poller) register(raw syscall.RawConn, id uint32) error {
	var err error
	cerr := raw.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(id)}
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// unregister takes the socket of raw out of the set. Call it before the
// socket is closed.
func (p *poller) unregister(raw syscall.RawConn) {
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// wait appends to ids those of the sockets that became readable within d
// (at least a millisecond), and returns them; a kick ends the wait.
func (p *poller) wait(ids []uint32, d time.Duration) []uint32 {
	ms := int(min(max(d, time.Millisecond), time.Minute) / time.Millisecond)
	n, err := syscall.EpollWait(p.epfd, p.events[:], ms)
	if err != nil {
		return ids // EINTR: the caller waits again
	}
	for _, ev := range p.events[:n] {
		if ev.Fd == 0 {
			var b [64]byte
			for {
				if k, err := syscall.Read(p.rd, b[:]); k <= 0 || err != nil {
					break
				}
			}
			continue
		}
		ids = append(ids, uint32(ev.Fd))
	}
	return ids
}

// kick ends a wait under way, or the next one.
func (p *poller) kick() {
	_, _ = syscall.Write(p.wr, []byte{0})
}

func (p *poller) close() {
	_ = syscall.Close(p.epfd)
	_ = syscall.Close(p.rd)
	_ = syscall.Close(p.wr)
}
