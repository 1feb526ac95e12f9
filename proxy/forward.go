package proxy

import (
	"net/http"

	"github.com/holdfast-proxy/holdfast/proxy/internal/forwarded"
)

// attribute decides who the client of r is (forwarded.Attribute, with
// trusted_proxies).
func (h *Handler) attribute(r *http.Request) forwarded.Attribution {
	return forwarded.Attribute(r, h.cfg.TrustedProxies)
}

// attributionRequired is the gateway's own answer to an unattributable
// request (HTTP 403, type proxy_attribution_required), which holdfast gives
// without asking the gateway.
func (h *Handler) attributionRequired(w http.ResponseWriter, r *http.Request) {
	h.unattributableWarn.Do(func() {
		h.log.Warn("refused a request whose forwarding headers name no client (HTTP 403 proxy_attribution_required): "+
			"a proxy in front of holdfast must be listed in trusted_proxies and set X-Forwarded-For to a client address "+
			"that is neither loopback nor itself trusted", "peer", r.RemoteAddr)
	})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write([]byte(`{"error":{"message":"Proxy client attribution is required: add the proxy to holdfast's trusted_proxies and forward X-Forwarded-For","type":"proxy_attribution_required"}}` + "\n"))
}
