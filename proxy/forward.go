package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// localKey is the admission key of every client the gateway will see as
// local: they all share holdfast's own address upstream.
const localKey = "local"

// attribution is how holdfast presents one client to the gateway.
type attribution struct {
	// clientIP is the address the gateway must attribute the client to;
	// invalid for a local client.
	clientIP netip.Addr
	// trustedPeer: the peer is in trusted_proxies, so its forwarding
	// headers (other than X-Forwarded-For, which is rebuilt) are kept.
	trustedPeer bool
	// unattributable: forwarding headers that name no client holdfast can
	// present to the gateway. The gateway answers such a request itself
	// with HTTP 403 proxy_attribution_required, and so does holdfast.
	unattributable bool
}

// local reports whether the client reaches the gateway as a direct-local
// client: no forwarding headers at all.
func (a attribution) local() bool { return !a.unattributable && !a.clientIP.IsValid() }

// key is the admission key: the gateway counts unauthenticated sockets per
// attributed client address.
func (a attribution) key() string {
	if a.local() {
		return localKey
	}
	return a.clientIP.String()
}

// attribute decides who the client of r is, the way the gateway's ingress
// attribution would with holdfast's trusted_proxies as its
// gateway.trustedProxies, and never more trusting:
//
//   - A loopback peer that sent no forwarding header at all is local: the
//     gateway sees holdfast's own loopback socket with no forwarding
//     headers, as if the client had connected directly.
//   - A peer in trusted_proxies that sent forwarding headers speaks for the
//     client: the client is the right-most X-Forwarded-For hop that is
//     neither loopback nor trusted. A chain with no such hop (empty,
//     malformed, or ending in loopback or trusted addresses only) is
//     unattributable: a forwarded chain is remote whatever it claims, and
//     the gateway refuses it with 403.
//   - A trusted peer that sent no forwarding header is unattributable
//     unless it is loopback (then it is local, as above): the gateway
//     refuses it too.
//   - Any other peer is the client, whatever headers it sent, which are
//     dropped; but a loopback peer that sent forwarding headers is a proxy
//     holdfast was not told to trust, and its clients must never look
//     local: unattributable, as on the gateway.
func (h *Handler) attribute(r *http.Request) attribution {
	peer := remoteAddr(r)
	fwd := hasForwardingHeaders(r.Header)
	switch {
	case peer.IsLoopback() && !fwd:
		return attribution{trustedPeer: h.trusted(peer)}
	case h.trusted(peer):
		hops := xffHops(r.Header)
		for i := len(hops) - 1; i >= 0; i-- {
			ip, err := netip.ParseAddr(hops[i])
			if err != nil {
				break // a malformed hop ends what can be believed
			}
			ip = ip.Unmap()
			if ip.IsLoopback() || h.trusted(ip) {
				continue
			}
			return attribution{clientIP: ip, trustedPeer: true}
		}
		return attribution{trustedPeer: true, unattributable: true}
	case !peer.IsValid() || (peer.IsLoopback() && fwd):
		return attribution{unattributable: true}
	default:
		return attribution{clientIP: peer}
	}
}

// hasForwardingHeaders reports whether h carries any header through which a
// client could claim an address or identity.
func hasForwardingHeaders(h http.Header) bool {
	for k := range h {
		if isForwardingHeader(http.CanonicalHeaderKey(k)) {
			return true
		}
	}
	return false
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

func (h *Handler) trusted(ip netip.Addr) bool {
	for _, p := range h.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

func xffHops(h http.Header) []string {
	var hops []string
	for _, v := range h.Values("X-Forwarded-For") {
		for _, hop := range strings.Split(v, ",") {
			if hop = strings.TrimSpace(hop); hop != "" {
				hops = append(hops, hop)
			}
		}
	}
	return hops
}

// isForwardingHeader reports the headers through which a client could claim
// an address or identity: holdfast sets them itself or drops them.
func isForwardingHeader(canonical string) bool {
	switch canonical {
	case "Forwarded", "X-Real-Ip":
		return true
	}
	return strings.HasPrefix(canonical, "X-Forwarded-") || strings.HasPrefix(canonical, "Tailscale-")
}

// applyForwarding rewrites the forwarding headers of out, a copy of the
// client's headers, for the gateway:
//   - from an untrusted peer every client-supplied forwarding header is
//     removed;
//   - a local client gets none at all, nor does an unattributable one
//     (only the gateway's /healthz is passed such a request);
//   - a remote client gets X-Forwarded-For set to its address alone, and
//     X-Forwarded-Proto and X-Forwarded-Host unless a trusted peer gave them.
func applyForwarding(out http.Header, a attribution, r *http.Request) {
	if !a.trustedPeer || a.local() || a.unattributable {
		for k := range out {
			if isForwardingHeader(k) {
				delete(out, k)
			}
		}
	}
	if a.local() || a.unattributable {
		return
	}
	out.Set("X-Forwarded-For", a.clientIP.String())
	if out.Get("X-Forwarded-Proto") == "" {
		proto := "http"
		if r.TLS != nil {
			proto = "https"
		}
		out.Set("X-Forwarded-Proto", proto)
	}
	if out.Get("X-Forwarded-Host") == "" && r.Host != "" {
		out.Set("X-Forwarded-Host", r.Host)
	}
}

// splitTokens splits a comma-separated header value into its tokens.
func splitTokens(v string) []string {
	var out []string
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}
