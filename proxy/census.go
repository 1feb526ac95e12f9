package proxy

import (
	"github.com/holdfast-proxy/holdfast/internal/gwproto"
	"github.com/holdfast-proxy/holdfast/metrics"
)

// connectCensus labels, for holdfast_client_handshakes_total, the protocol
// range a connect offers and its client.mode (gwproto.ReadOffer, or
// gwproto.ReadConnect's): nothing else, never an auth field.
func connectCensus(o gwproto.Offer) (metrics.ClientProtocol, metrics.ClientMode) {
	return metrics.ProtocolOffered(o.MinProtocol, o.MaxProtocol, o.Range), metrics.ModeOf(o.Mode)
}
