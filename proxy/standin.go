package proxy

import (
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
)

// The stand-in challenge. A late-dialled client needs a challenge to send
// a connect at all, and a client whose challenge timer fires closes
// without one ("connect challenge timeout", 10 s for the 2026.4.x
// clients, 15 s for current ones), which it does not treat as the
// gateway's startup. When the client's challenge is due and the gateway
// is down (its port refuses), there is no gateway challenge to give, so
// holdfast gives its own: a connect.challenge with a fresh random nonce,
// the time now, and the capabilities the gateway last announced. The
// client answers it with its connect, and:
//
//   - a device-signed connect has signed holdfast's nonce, which no
//     gateway socket will ever issue: it can never be forwarded (any
//     gateway would refuse it, DEVICE_AUTH_NONCE_MISMATCH), so it is
//     answered at once with the gateway's own startup UNAVAILABLE shape and
//     close 1013 "gateway starting", on which clients reconnect after
//     retryAfterMs (PROTOCOL.md §4) and get a real challenge;
//   - a connect without a device (replayable) carries no nonce, so it is
//     sent on a gateway socket as a replay is, once one can be had within
//     the budget (that socket's challenge is swallowed); else the same
//     UNAVAILABLE and 1013;
//   - anything else goes to the gateway on a socket dialled then, which
//     answers it.
//
// The gateway never receives anything the client did not send, and no
// signature over holdfast's nonce leaves holdfast.

// capsStash keeps the capabilities of a recent challenge a gateway sent
// (raw JSON), for stand-in challenges.
type capsStash struct {
	p    atomic.Pointer[[]byte]
	last atomic.Int64 // when note last read a challenge (Unix nanoseconds)
}

// capsEvery is how often the stash reads a challenge: they change only
// with the gateway's version, and reading costs a parse.
const capsEvery = time.Second

// note records the capabilities of challenge, a valid connect.challenge
// frame, when it has read none for capsEvery and they differ from the ones
// kept.
func (s *capsStash) note(challenge []byte) {
	now := time.Now().UnixNano()
	last := s.last.Load()
	if now-last < int64(capsEvery) || !s.last.CompareAndSwap(last, now) {
		return
	}
	caps, ok := gwproto.ChallengeCapabilities(challenge)
	if !ok {
		return
	}
	if old := s.p.Load(); old != nil && string(*old) == string(caps) {
		return
	}
	c := append([]byte(nil), caps...)
	s.p.Store(&c)
}

// get returns the kept capabilities, nil when none were seen.
func (s *capsStash) get() json.RawMessage {
	if p := s.p.Load(); p != nil {
		return *p
	}
	return nil
}
