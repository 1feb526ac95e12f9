package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-proxy/holdfast/proxy/internal/forwarded"
)

// newPassthrough builds the reverse proxy for everything but the control
// socket: the Control UI, HTTP APIs, probes and other WebSocket routes
// (httputil.ReverseProxy tunnels upgrades it does not understand).
// Forwarding headers follow the same rules as for the control socket.
func (h *Handler) newPassthrough() *httputil.ReverseProxy {
	target := *h.cfg.Upstream
	switch target.Scheme {
	case "wss":
		target.Scheme = "https"
	default:
		target.Scheme = "http"
	}
	// A gateway that accepts TCP and never answers must not hold a request
	// (and its sockets) forever: the dial, the TLS handshake and the wait
	// for the response header are bounded. The body is not: responses such
	// as streamed completions run as long as they run.
	dialer := &net.Dialer{Timeout: h.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       h.cfg.TLSClientConfig,
		TLSHandshakeTimeout:   h.cfg.DialTimeout,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: h.cfg.PassthroughResponseHeaderTimeout,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&target)
			pr.Out.Host = pr.In.Host // Host unchanged, like the control socket
			a := h.attribute(pr.In)
			// Rewrite sees the client's headers minus Forwarded and
			// X-Forwarded-*; a trusted peer's are put back first.
			if a.TrustedPeer && !a.Local() && !a.Unattributable {
				for k, v := range pr.In.Header {
					if forwarded.IsHeader(k) {
						pr.Out.Header[k] = v
					}
				}
			}
			forwarded.Apply(pr.Out.Header, a, pr.In)
			if pr.Out.Body != nil && pr.Out.Body != http.NoBody {
				pr.Out.Body = &clientBody{ReadCloser: pr.Out.Body}
			}
		},
		Transport:  transport,
		BufferPool: newPassthroughBuffers(),
		ModifyResponse: func(resp *http.Response) error {
			gatewayLeg(resp)
			if resp.StatusCode == http.StatusForbidden {
				body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				resp.Body = io.NopCloser(bytes.NewReader(body))
				if he := (&httpError{status: resp.StatusCode, body: body}); err == nil && he.attributionRequired() {
					h.noteRefusal()
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if cb, ok := r.Body.(*clientBody); ok && cb.failed() {
				// The client's own body is broken (a malformed chunked
				// encoding, a body cut short): its fault, not the
				// gateway's.
				h.log.Debug("passthrough: client's request body unreadable", "path", r.URL.Path, "err", err)
				http.Error(w, "holdfast: malformed request body", http.StatusBadRequest)
				return
			}
			w.Header().Set("Retry-After", "1")
			if isTimeout(err) {
				h.log.Debug("passthrough: gateway did not answer in time", "path", r.URL.Path, "err", err)
				http.Error(w, "holdfast: gateway timeout", http.StatusGatewayTimeout)
				return
			}
			h.log.Debug("passthrough: upstream unreachable", "path", r.URL.Path, "err", err)
			http.Error(w, "holdfast: gateway unreachable", http.StatusBadGateway)
		},
		ErrorLog: slogErrorLog(h.log),
	}
}

// isTimeout reports a dial, TLS handshake or response header wait that ran
// out of time (answered 504; other failures are 502).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// clientBody is a reverse-proxied request's body, as read from the client.
// It remembers whether reading it failed (anything but io.EOF), so that
// a request whose own body is malformed gets 400 rather than the 502 of
// an unreachable gateway. The transport reads it on its own goroutine.
type clientBody struct {
	io.ReadCloser
	broken atomic.Bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.broken.Store(true)
	}
	return n, err
}

// failed reports whether reading the body failed.
func (b *clientBody) failed() bool { return b.broken.Load() }

// passthroughBuffers lends 32 KiB copy buffers to the reverse proxy.
type passthroughBuffers struct{ p *sync.Pool }

func newPassthroughBuffers() passthroughBuffers {
	return passthroughBuffers{p: &sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b passthroughBuffers) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b passthroughBuffers) Put(p []byte) { b.p.Put(&p) }
