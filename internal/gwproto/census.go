package gwproto

import "math"

// Offer is what a connect offers, as holdfast's client census counts it:
// the protocol range and the client's mode. It holds nothing else of the
// connect, never an auth field.
type Offer struct {
	// MinProtocol and MaxProtocol are params.minProtocol and
	// params.maxProtocol; both are 0 unless Range.
	MinProtocol, MaxProtocol int
	// Range: both numbers are present and integers in [1, MaxInt32] (the
	// connect schema's "integer ≥ 1"; 3.0 is one). It does not check that
	// MinProtocol ≤ MaxProtocol.
	Range bool
	// Mode is params.client.mode, "" when absent or not a string. The
	// client chooses it: map it to a closed set before it becomes a metric
	// label.
	Mode string
}

// ReadOffer reads the Offer of a connect. Keys match exactly and, of
// duplicated keys, the last counts, as on the gateway. data must be valid
// JSON, as a frame ClassifyConnect classified as a connect is (ReadOffer
// does not check it again); on other input it returns some Offer (the zero
// Offer when data is not an object) and never panics.
func ReadOffer(data []byte) Offer {
	var a memberArena
	f, ok := a.objectIn(data)
	if !ok {
		return Offer{}
	}
	params, _ := a.object(f, "params")
	return a.offer(params)
}

// offer reads the Offer of a connect's params object.
func (a *memberArena) offer(params object) Offer {
	minP, ok1 := a.num(params, "minProtocol")
	maxP, ok2 := a.num(params, "maxProtocol")
	whole := func(x float64) bool { return x >= 1 && x <= math.MaxInt32 && x == math.Trunc(x) }
	var o Offer
	if ok1 && ok2 && whole(minP) && whole(maxP) {
		o = Offer{MinProtocol: int(minP), MaxProtocol: int(maxP), Range: true}
	}
	client, _ := a.object(params, "client")
	o.Mode, _ = a.str(client, "mode")
	return o
}

// MayBeLegacy reports whether a connect offering o can be one
// RewriteLegacyConnect rewrites: one that is has a Range whose
// MaxProtocol is below BridgeProtocol (its protocol numbers are read the
// same way, and a duplicated key on their path, which ReadOffer resolves
// to the last, makes RewriteLegacyConnect leave the frame alone).
func (o Offer) MayBeLegacy() bool {
	return o.Range && o.MaxProtocol < BridgeProtocol
}
