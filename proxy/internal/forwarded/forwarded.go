// Package forwarded decides how holdfast presents a client to the gateway:
// the address the gateway must attribute it to, from the peer and the
// forwarding headers of trusted proxies, and the forwarding headers the
// gateway gets. It is never more trusting than the gateway's own ingress
// attribution.
package forwarded

import (
	"iter"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// LocalKey is the admission key of every client the gateway will see as
// local: they all share holdfast's own address upstream.
const LocalKey = "local"

// Attribution is how holdfast presents one client to the gateway.
type Attribution struct {
	// ClientIP is the address the gateway must attribute the client to;
	// invalid for a local client.
	ClientIP netip.Addr
	// TrustedPeer: the peer is in trusted_proxies, so its forwarding
	// headers (other than X-Forwarded-For, which is rebuilt) are kept.
	TrustedPeer bool
	// Unattributable: forwarding headers that name no client holdfast can
	// present to the gateway. The gateway answers such a request itself
	// with HTTP 403 proxy_attribution_required, and so does holdfast.
	Unattributable bool
}

// Local reports whether the client reaches the gateway as a direct-local
// client: no forwarding headers at all.
func (a Attribution) Local() bool { return !a.Unattributable && !a.ClientIP.IsValid() }

// Key is the admission key: the gateway counts unauthenticated sockets per
// attributed client address.
func (a Attribution) Key() string {
	if a.Local() {
		return LocalKey
	}
	return a.ClientIP.String()
}

// Attribute decides who the client of r is, the way the gateway's ingress
// attribution would with holdfast's trusted_proxies (proxies) as its
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
func Attribute(r *http.Request, proxies []netip.Prefix) Attribution {
	peer := remoteAddr(r)
	fwd := HasHeaders(r.Header)
	switch {
	case peer.IsLoopback() && !fwd:
		return Attribution{TrustedPeer: trusted(peer, proxies)}
	case trusted(peer, proxies):
		hops := xffHops(r.Header)
		for i := len(hops) - 1; i >= 0; i-- {
			ip, err := netip.ParseAddr(hops[i])
			if err != nil {
				break // a malformed hop ends what can be believed
			}
			ip = ip.Unmap()
			if ip.IsLoopback() || trusted(ip, proxies) {
				continue
			}
			return Attribution{ClientIP: ip, TrustedPeer: true}
		}
		return Attribution{TrustedPeer: true, Unattributable: true}
	case !peer.IsValid() || (peer.IsLoopback() && fwd):
		return Attribution{Unattributable: true}
	default:
		return Attribution{ClientIP: peer}
	}
}

// HasHeaders reports whether h carries any header through which a
// client could claim an address or identity.
func HasHeaders(h http.Header) bool {
	for k := range h {
		// Canonicalising changes at most the case of a key's first byte,
		// and IsHeader's names start with F, X or T: other keys (most of
		// a request's) need no canonical form.
		if k == "" {
			continue
		}
		if c := k[0] | 0x20; c != 'f' && c != 'x' && c != 't' {
			continue
		}
		if IsHeader(http.CanonicalHeaderKey(k)) {
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

// IsHeader reports the headers through which a client could claim
// an address or identity: holdfast sets them itself or drops them.
func IsHeader(canonical string) bool {
	switch canonical {
	case "Forwarded", "X-Real-Ip":
		return true
	}
	return strings.HasPrefix(canonical, "X-Forwarded-") || strings.HasPrefix(canonical, "Tailscale-")
}

// Apply rewrites the forwarding headers of out, a copy of the
// client's headers, for the gateway:
//   - from an untrusted peer every client-supplied forwarding header is
//     removed;
//   - a local client gets none at all, nor does an unattributable one
//     (only the gateway's /healthz is passed such a request);
//   - a remote client gets X-Forwarded-For set to its address alone, and
//     X-Forwarded-Proto and X-Forwarded-Host unless a trusted peer gave them.
func Apply(out http.Header, a Attribution, r *http.Request) {
	if !a.TrustedPeer || a.Local() || a.Unattributable {
		for k := range out {
			if IsHeader(k) {
				delete(out, k)
			}
		}
	}
	if a.Local() || a.Unattributable {
		return
	}
	// The keys are canonical already: set and read them in the map, as
	// Set and Get would once they had canonicalised them.
	out["X-Forwarded-For"] = []string{a.ClientIP.String()}
	if first(out["X-Forwarded-Proto"]) == "" {
		proto := "http"
		if r.TLS != nil {
			proto = "https"
		}
		out["X-Forwarded-Proto"] = []string{proto}
	}
	if first(out["X-Forwarded-Host"]) == "" && r.Host != "" {
		out["X-Forwarded-Host"] = []string{r.Host}
	}
}

func trusted(ip netip.Addr, proxies []netip.Prefix) bool {
	for _, p := range proxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// UpstreamHeader copies the client's upgrade request headers for the
// upstream dial: end-to-end headers (Origin, Cookie, User-Agent,
// Authorization, subprotocols…) and Host unchanged; hop-by-hop headers and
// the WebSocket key exchange, which the dialer makes itself, dropped.
//
// It copies what it keeps (values into one backing array, as
// http.Header.Clone does) rather than cloning everything and deleting.
func UpstreamHeader(r *http.Request) http.Header {
	// Most headers have one value: room for one each, and Host.
	sv := make([]string, 0, len(r.Header)+1)
	out := make(http.Header, len(r.Header)+1)
	for k, vv := range r.Header {
		if dropped(k) {
			continue
		}
		if vv == nil {
			out[k] = nil
			continue
		}
		n := len(sv)
		sv = append(sv, vv...) // a fresh array if full: the values before keep theirs
		out[k] = sv[n:len(sv):len(sv)]
	}
	for _, f := range r.Header["Connection"] {
		for tok := range Tokens(f) {
			out.Del(tok)
		}
	}
	n := len(sv)
	sv = append(sv, r.Host)
	out["Host"] = sv[n:len(sv):len(sv)]
	return out
}

// dropped reports whether k is one of droppedHeaders.
func dropped(k string) bool {
	switch k {
	case "Connection", "Upgrade", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding",
		"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Sec-Websocket-Accept":
		return true
	}
	return false
}

// droppedHeaders are the headers UpstreamHeader drops, in canonical form
// (dropped's list).
var droppedHeaders = []string{
	"Connection", "Upgrade", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding",
	"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Sec-Websocket-Accept",
}

// first is a header's first value, "" for none (http.Header.Get).
func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// Tokens yields the tokens of a comma-separated header value (space
// around them trimmed, empty ones skipped), allocating nothing.
func Tokens(v string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" && !yield(t) {
				return
			}
		}
	}
}
