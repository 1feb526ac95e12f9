package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// openUpstream opens the upstream WebSocket for target (a ws:// or wss://
// URL) with the request headers hdr (upstreamHeader's), by deadline: TCP,
// TLS for wss, then the upgrade (wire.Upgrade). It returns the leg in frame
// mode, its deadlines cleared, and the subprotocol the gateway chose.
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
	bc, err := h.dialTCP(ctx, t, deadline)
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
	_ = bc.SetDeadline(time.Time{})
	return bc, protocol, nil
}

// dialTCP opens the upstream leg's socket to t by deadline (TLS for wss),
// wrapped in its wire.Conn. TLS runs below the batching layer, so that a
// burst of frames leaves in one TLS record.
func (h *Handler) dialTCP(ctx context.Context, t wire.Target, deadline time.Time) (*wire.Conn, error) {
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := h.netDialer.DialContext(dctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	if !t.TLS {
		return wire.NewUpstreamConn(c, h.chunks), nil
	}
	tc := tls.Client(c, tlsConfigFor(h.cfg.TLSClientConfig, t.Addr))
	if err := tc.HandshakeContext(dctx); err != nil {
		c.Close()
		return nil, err
	}
	return wire.NewUpstreamConn(tc, h.chunks), nil
}
