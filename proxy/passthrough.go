package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"
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
	transport := &http.Transport{
		Proxy:                 nil,
		TLSClientConfig:       h.cfg.TLSClientConfig,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&target)
			pr.Out.Host = pr.In.Host // Host unchanged, like the control socket
			a := h.attribute(pr.In)
			// Rewrite sees the client's headers minus Forwarded and
			// X-Forwarded-*; a trusted peer's are put back first.
			if a.trustedPeer && !a.local() && !a.unattributable {
				for k, v := range pr.In.Header {
					if isForwardingHeader(k) {
						pr.Out.Header[k] = v
					}
				}
			}
			applyForwarding(pr.Out.Header, a, pr.In)
		},
		Transport:  transport,
		BufferPool: newPassthroughBuffers(),
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusForbidden {
				body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				resp.Body = io.NopCloser(bytes.NewReader(body))
				if err == nil {
					h.noteRefusal(&httpError{status: resp.StatusCode, body: body})
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			h.log.Debug("passthrough: upstream unreachable", "path", r.URL.Path, "err", err)
			w.Header().Set("Retry-After", "1")
			http.Error(w, "holdfast: gateway unreachable", http.StatusBadGateway)
		},
		ErrorLog: slogErrorLog(h.log),
	}
}

// passthroughBuffers lends 32 KiB copy buffers to the reverse proxy.
type passthroughBuffers struct{ p *sync.Pool }

func newPassthroughBuffers() passthroughBuffers {
	return passthroughBuffers{p: &sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b passthroughBuffers) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b passthroughBuffers) Put(p []byte) { b.p.Put(&p) }
