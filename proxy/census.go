package proxy

import (
	"math"

	"github.com/holdfast-proxy/holdfast/metrics"
)

// connectCensus reads, for holdfast_client_handshakes_total, the protocol
// range a connect offers and its client.mode: nothing else, never an auth
// field. data is a frame classifyConnect found to be a connect (valid
// JSON). Of duplicated keys the last counts, as on the gateway.
func connectCensus(data []byte) (metrics.ClientProtocol, metrics.ClientMode) {
	var a memberArena
	f, ok := a.objectIn(data)
	if !ok {
		return metrics.ProtocolOther, metrics.ModeOf("")
	}
	params, _ := a.object(f, "params")
	minP, ok1 := a.num(params, "minProtocol")
	maxP, ok2 := a.num(params, "maxProtocol")
	whole := func(x float64) bool { return x >= 1 && x <= math.MaxInt32 && x == math.Trunc(x) }
	p := metrics.ProtocolOffered(int(minP), int(maxP), ok1 && ok2 && whole(minP) && whole(maxP))
	client, _ := a.object(params, "client")
	mode, _ := a.str(client, "mode")
	return p, metrics.ModeOf(mode)
}
