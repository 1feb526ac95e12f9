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
}

// local reports whether the client reaches the gateway as a direct-local
// client: no forwarding headers at all.
func (a attribution) local() bool { return !a.clientIP.IsValid() }

// key is the admission key: the gateway counts unauthenticated sockets per
// attributed client address.
func (a attribution) key() string {
	if a.local() {
		return localKey
	}
	return a.clientIP.String()
}

// attribute decides who the client of r is.
//
//   - A peer in trusted_proxies speaks for the client: the client is the
//     right-most X-Forwarded-For hop that is not itself trusted (the peer
//     when there is none).
//   - Any other peer is the client, whatever headers it sent.
//
// A loopback client is local: the gateway sees holdfast's own loopback
// socket with no forwarding headers. Anyone else must never look local.
func (h *Handler) attribute(r *http.Request) attribution {
	peer := remoteAddr(r)
	a := attribution{clientIP: peer}
	if h.trusted(peer) {
		a.trustedPeer = true
		hops := xffHops(r.Header)
		for i := len(hops) - 1; i >= 0; i-- {
			ip, err := netip.ParseAddr(hops[i])
			if err != nil {
				break // a malformed hop ends what can be believed
			}
			ip = ip.Unmap()
			a.clientIP = ip
			if !h.trusted(ip) {
				break
			}
		}
	}
	if !a.clientIP.IsValid() || a.clientIP.IsLoopback() {
		a.clientIP = netip.Addr{}
	}
	return a
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
//   - a local client gets none at all;
//   - a remote client gets X-Forwarded-For set to its address alone, and
//     X-Forwarded-Proto and X-Forwarded-Host unless a trusted peer gave them.
func applyForwarding(out http.Header, a attribution, r *http.Request) {
	if !a.trustedPeer || a.local() {
		for k := range out {
			if isForwardingHeader(k) {
				delete(out, k)
			}
		}
	}
	if a.local() {
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
