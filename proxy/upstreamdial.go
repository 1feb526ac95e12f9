package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
	_ "unsafe" // go:linkname, for gorillaClientConn

	"github.com/gorilla/websocket"
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
func (h *Handler) openUpstream(ctx context.Context, target string, hdr http.Header, deadline time.Time) (ws *websocket.Conn, protocol string, err error) {
	t, err := wire.SplitTarget(target)
	if err != nil {
		return nil, "", err
	}
	bc, err := h.dialTCP(ctx, t, deadline)
	if err != nil {
		return nil, "", err
	}
	// The upgrade ends as soon as ctx does (the client left, or its
	// handshake was displaced: limits.go), not at the deadline only.
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
	return h.clientConn(bc), protocol, nil
}

// clientConn makes bc, upgraded, the client end of a WebSocket.
func (h *Handler) clientConn(bc *wire.Conn) *websocket.Conn {
	_ = bc.SetDeadline(time.Time{})
	bc.FrameMode()
	return gorillaClientConn(bc, false, readBufferSize, writeBufferSize, h.bufPool, nil, nil)
}

// gorillaClientConn is gorilla's constructor of a *websocket.Conn over a
// connection whose upgrade is done: what its dialer calls once it has
// checked the 101, with the same arguments (isServer false, holdfast's
// buffer sizes and write buffer pool, no reader or write buffer of its
// own). gorilla exports no way to run a client connection over an upgrade
// made by someone else; go.mod pins the version whose signature this is,
// and every handshake test goes through it.
//
//go:linkname gorillaClientConn github.com/gorilla/websocket.newConn
func gorillaClientConn(conn net.Conn, isServer bool, readBufferSize, writeBufferSize int, writeBufferPool websocket.BufferPool, br *bufio.Reader, writeBuf []byte) *websocket.Conn

// dialTCP opens the upstream leg's socket to t by deadline (TLS for wss),
// wrapped in its wire.Conn. TLS runs below the batching layer, so that a
// burst of frames leaves in one TLS record, over wire's record layer, so
// that the leg idles holding no read buffer.
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
	tc := wire.TLSClient(c, tlsConfigFor(h.cfg.TLSClientConfig, t.Addr), h.chunks)
	if err := tc.HandshakeContext(dctx); err != nil {
		c.Close()
		return nil, err
	}
	return wire.NewUpstreamConn(tc, h.chunks), nil
}
