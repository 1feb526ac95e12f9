package proxy

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// openUpstream opens the upstream WebSocket for target (a ws:// or wss://
// URL) with the request headers hdr (upstreamHeader's), by deadline: TCP,
// TLS for wss, then the upgrade (wire.Upgrade). It returns the leg in frame
// mode, both its deadlines still at deadline (the caller reads the
// challenge by then, and clears them), and the subprotocol the gateway
// chose.
//
// An upgrade the gateway refused or broke is an *httpError (see
// wire.UpgradeError for which is which). Anything else (refused, reset, a
// deadline, bytes that are not HTTP) is returned as the transport error it
// is.
func (h *Handler) openUpstream(ctx context.Context, target string, hdr http.Header, deadline time.Time) (up *wire.Conn, protocol string, err error) {
	t, err := wire.SplitTarget(target)
	if err != nil {
		return nil, "", err
	}
	bc, err := wire.Dial(ctx, h.netDialer, t, h.cfg.TLSClientConfig, h.chunks, deadline)
	if err != nil {
		return nil, "", err
	}
	// The upgrade ends as soon as ctx does (the client left, or its
	// handshake was displaced: proxy/internal/share), not at the deadline only.
	stop := context.AfterFunc(ctx, func() { _ = bc.SetDeadline(time.Now()) })
	defer func() {
		stop()
		if err != nil {
			_ = bc.Close()
			if ctx.Err() != nil {
				err = fmt.Errorf("%w: %w", ctx.Err(), err)
			}
		}
	}()
	_ = bc.SetDeadline(deadline)
	protocol, err = wire.Upgrade(bc, t, hdr, h.chunks)
	if ue, ok := err.(*wire.UpgradeError); ok {
		return nil, "", &httpError{status: ue.Status, header: ue.Header, body: ue.Body, broken: ue.Broken}
	}
	if err != nil {
		return nil, "", err
	}
	return bc, protocol, nil
}
