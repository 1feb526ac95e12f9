package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/holdfast-proxy/holdfast/proxy/internal/forwarded"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
)

// checkUpgrade validates a control upgrade request as the client upgrade
// will, before any upstream socket is opened for it: a request that cannot
// be upgraded must not cost the gateway a socket. It returns the status and
// reason to refuse it with, or 0.
func checkUpgrade(r *http.Request) (int, string) {
	if !headerHasToken(r.Header, "Sec-Websocket-Version", "13") {
		return http.StatusBadRequest, "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header"
	}
	key := r.Header.Values("Sec-Websocket-Key")
	if len(key) != 1 {
		return http.StatusBadRequest, "websocket: not a websocket handshake: exactly one 'Sec-WebSocket-Key' header is required"
	}
	var b [18]byte // a 16-byte key is 24 characters, which decode to at most 18
	if len(key[0]) != 24 {
		return http.StatusBadRequest, "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length"
	}
	if n, err := base64.StdEncoding.Decode(b[:], []byte(key[0])); err != nil || n != 16 {
		return http.StatusBadRequest, "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length"
	}
	return 0, ""
}

// notOriginForm reports a request target other than a path (or "*"): the
// absolute form "GET http://host/path" and the authority form of CONNECT.
// net/http takes the host of an absolute-form target and drops the Host
// header, which the gateway would have read (Origin checks compare the two),
// so holdfast refuses such requests rather than forward a Host the client
// did not send.
func notOriginForm(r *http.Request) bool {
	return r.RequestURI != "" && r.RequestURI != "*" && !strings.HasPrefix(r.RequestURI, "/")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range forwarded.Tokens(v) {
			if strings.EqualFold(t, token) {
				return true
			}
		}
	}
	return false
}

// keepEarlyData wraps the ResponseWriter of a control upgrade so that the
// hijacked connection is a wire.Conn, whatever the listener accepted (a
// *tls.Conn from WrapTLSListener, say): every session's client leg batches
// its writes and takes the frame relay. Bytes the client sent right behind
// its upgrade request (in the same packet, or before holdfast answered)
// survive the hijack: gorilla refuses a connection whose hijacked reader
// holds data, and the HTTP server may have read ahead. Those bytes are
// handed back to the wire.Conn, to be read as the client's first frames.
type keepEarlyData struct {
	http.ResponseWriter
	pool *wire.Pool
}

func (w keepEarlyData) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("proxy: the response writer cannot be hijacked")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nc, brw, err
	}
	bc := wire.ConnOf(nc)
	if bc != nil && brw.Reader.Buffered() == 0 {
		return nc, brw, nil
	}
	if bc == nil {
		bc = wire.NewConn(nc, w.pool)
		bc.TakeBuffered() // what crypto/tls decrypted past the server's reader
	}
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		bc.Unread(early) // copies
	}
	// The server's reader reads the socket beneath; gorilla gets one over
	// bc, small enough that it makes its own.
	return bc, bufio.NewReadWriter(bufio.NewReaderSize(bc, 16), brw.Writer), nil
}

// Unwrap gives http.ResponseController the underlying writer.
func (w keepEarlyData) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// batchedUpgrade wraps the ResponseWriter of a control upgrade whose
// challenge is already in hand: the hijacked connection batches its writes
// (each flush bounded by writeTimeout), so that gorilla's 101 waits for the
// challenge and both leave in one write. The caller flushes and turns
// batching off once the challenge is written.
type batchedUpgrade struct {
	http.ResponseWriter
	writeTimeout time.Duration
}

func (w batchedUpgrade) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("proxy: the response writer cannot be hijacked")
	}
	nc, brw, err := hj.Hijack()
	if bc := wire.ConnOf(nc); bc != nil && err == nil {
		bc.SetBatching(true, w.writeTimeout)
	}
	return nc, brw, err
}

// Unwrap gives http.ResponseController the underlying writer.
func (w batchedUpgrade) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WrapListener wraps the listener holdfast serves clients on, so that spliced
// sessions batch frames into few system calls and hold no buffers while
// idle. Sessions on an unwrapped listener work the same, only slower.
func (h *Handler) WrapListener(ln net.Listener) net.Listener {
	return wire.NewListener(ln, h.chunks)
}

// WrapTLSListener serves TLS on ln with cfg, as tls.NewListener does (each
// connection accepted is a *tls.Conn, so Request.TLS is set), with
// crypto/tls over a record layer that lets the session, once upgraded,
// relay frames below TLS and idle holding no read buffer, as sessions of
// WrapListener's do.
func (h *Handler) WrapTLSListener(ln net.Listener, cfg *tls.Config) net.Listener {
	return wire.NewTLSListener(ln, cfg, h.chunks)
}
