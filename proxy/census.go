package proxy

import (
	"github.com/holdfast-proxy/holdfast/internal/gwproto"
	"github.com/holdfast-proxy/holdfast/metrics"
)

// connectCensus labels, for holdfast_client_handshakes_total, the protocol
// range a connect offers and its client.mode (gwproto.ReadOffer): nothing
// else, never an auth field. data is a frame gwproto.ClassifyConnect found
// to be a connect (valid JSON).
func connectCensus(data []byte) (metrics.ClientProtocol, metrics.ClientMode) {
	o := gwproto.ReadOffer(data)
	return metrics.ProtocolOffered(o.MinProtocol, o.MaxProtocol, o.Range), metrics.ModeOf(o.Mode)
}
