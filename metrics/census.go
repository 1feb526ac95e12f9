package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The census: who connects through holdfast, so that an operator can tell
// when every client speaks the gateway's protocol (and the bridge can be
// turned off), and how the gateway ends sessions. Every label comes from a
// closed set; anything else is "other".

// ClientProtocol is the protocol a client's connect offers.
type ClientProtocol string

// The protocols offered.
const (
	// Protocol4: the range includes 4 (current clients, [3,4] or [4,4]).
	Protocol4 ClientProtocol = "4"
	// Protocol3: at most 3 (clients up to 2026.4.27, [3,3]).
	Protocol3 ClientProtocol = "3"
	// ProtocolOther: anything else, or no readable range.
	ProtocolOther ClientProtocol = "other"
)

// ProtocolOffered labels a connect's minProtocol..maxProtocol range (ok
// false when the connect had no readable range).
func ProtocolOffered(minP, maxP int, ok bool) ClientProtocol {
	switch {
	case !ok || minP > maxP:
		return ProtocolOther
	case minP <= 4 && maxP >= 4:
		return Protocol4
	case maxP == 3:
		return Protocol3
	}
	return ProtocolOther
}

// ClientMode is a connect's client.mode, from a closed set.
type ClientMode string

// clientModes are the client.mode values counted by name (PROTOCOL.md §2);
// any other mode, or none, is "other".
var clientModes = []ClientMode{"cli", "ui", "node", "probe", "webchat", "other"}

// ModeOf labels a connect's client.mode.
func ModeOf(mode string) ClientMode {
	for _, m := range clientModes[:len(clientModes)-1] {
		if string(m) == mode {
			return m
		}
	}
	return "other"
}

// gatewayCloseCodes are the close codes counted by number: the gateway's
// own (PROTOCOL.md §8) and 1006 for a session the gateway dropped without a
// close frame. Any other is "other".
var gatewayCloseCodes = []int{1000, 1001, 1002, 1005, 1006, 1008, 1009, 1011, 1012, 1013, 4001}

// census holds the census collectors.
type census struct {
	clients       *prometheus.CounterVec
	gatewayCloses *prometheus.CounterVec
	// clientsBy holds the clients series created up front, so that
	// counting a handshake costs no label lookup. Read-only after
	// newCensus.
	clientsBy map[clientSeries]prometheus.Counter
}

// clientSeries are the labels of one holdfast_client_handshakes_total
// series.
type clientSeries struct {
	p       ClientProtocol
	mode    ClientMode
	bridged bool
}

func newCensus(f promauto.Factory) census {
	c := census{
		clients: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "client_handshakes_total",
			Help:      "Client handshakes that sent a connect, whatever their result, by the protocol the connect offered (3, 4, other), its client.mode (cli, ui, node, probe, webchat, other) and whether the session was bridged to a protocol-4 gateway.",
		}, []string{"protocol", "mode", "bridged"}),
		gatewayCloses: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "holdfast",
			Name:      "gateway_closes_total",
			Help:      "Spliced sessions the gateway ended, by its close code (1006: no close frame; codes outside a fixed set: other).",
		}, []string{"code"}),
	}
	c.clientsBy = make(map[clientSeries]prometheus.Counter)
	for _, p := range []ClientProtocol{Protocol3, Protocol4, ProtocolOther} {
		for _, m := range clientModes {
			for _, b := range []bool{true, false} {
				c.clientsBy[clientSeries{p, m, b}] = c.clients.WithLabelValues(string(p), string(m), strconv.FormatBool(b))
			}
		}
	}
	for _, code := range gatewayCloseCodes {
		c.gatewayCloses.WithLabelValues(strconv.Itoa(code))
	}
	c.gatewayCloses.WithLabelValues("other")
	return c
}

// ClientHandshake records a handshake that sent a connect, when it ends.
func (m *Metrics) ClientHandshake(p ClientProtocol, mode ClientMode, bridged bool) {
	if m == nil {
		return
	}
	c, ok := m.census.clientsBy[clientSeries{p, mode, bridged}]
	if !ok {
		c = m.census.clients.WithLabelValues(string(p), string(mode), strconv.FormatBool(bridged))
	}
	c.Inc()
}

// GatewayClose records a spliced session the gateway ended with close code
// code (1006 when it sent no close frame).
func (m *Metrics) GatewayClose(code int) {
	if m == nil {
		return
	}
	label := "other"
	for _, c := range gatewayCloseCodes {
		if c == code {
			label = strconv.Itoa(code)
			break
		}
	}
	m.census.gatewayCloses.WithLabelValues(label).Inc()
}
