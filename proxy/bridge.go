package proxy

import (
	"bytes"
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/holdfast-proxy/holdfast/proxy/internal/wire"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-proxy/holdfast/internal/gwproto"
)

// The legacy bridge carries protocol-3 clients (OpenClaw up to 2026.4.27)
// to protocol-4 gateways (2026.5.12 on), which refuse them with "protocol
// mismatch" and close 1002 (PROTOCOL.md §10):
//
//   - Connect rewrite: a connect with maxProtocol < 4 and minProtocol ≤ 4
//     (and minProtocol ≤ maxProtocol) is sent with maxProtocol 4. Only that
//     number changes; every other byte stays as the client wrote it, so a
//     device signature (which does not cover the protocol numbers) still
//     verifies. Node connects (role and client.mode "node") are left alone:
//     gateways from 2026.7.1 admit them natively. The rewritten frame is
//     the one forwarded, held and replayed.
//   - Envelope filter: once the gateway answers hello-ok with a protocol
//     the client did not offer, the session is bridged. Every text frame
//     the gateway sends it keeps only the keys protocol 3 knows (a
//     whitelist), because the old client drops any frame with an unknown
//     key, and its tick watchdog then closes 4000. No frame is dropped,
//     merged or added, so event seq numbers stay continuous.
//
// Sessions that are not bridged keep the streaming splice untouched.

// bridgeConnect applies the connect rewrite to the client's first frame
// when the bridge is on, and remembers what the client asked for.
func (c *conn) bridgeConnect(first frame, offer gwproto.Offer) frame {
	if c.h.cfg.DisableLegacyBridge || !offer.MayBeLegacy() {
		return first // not a connect the rewrite applies to: no need to read it again
	}
	out, lc, ok := gwproto.RewriteLegacyConnect(first.data)
	if !ok {
		return first
	}
	c.legacy = &lc
	c.h.log.Debug("legacy connect: maxProtocol raised to 4", "client", c.rec.clientAddr, "connect", c.rec.connectWord(),
		"client_id", lc.ClientID, "client_mode", lc.ClientMode, "min_protocol", lc.MinProtocol, "max_protocol", lc.MaxProtocol)
	return frame{typ: first.typ, data: out}
}

// startBridge decides at hello-ok whether the session is bridged: its
// connect was rewritten and the gateway chose a protocol the client did not
// offer (a hello-ok without a protocol counts as such). A bridged session's
// hello frames are filtered like every later frame.
func (c *conn) startBridge(protocol int) {
	lc := c.legacy
	if lc == nil {
		return
	}
	if protocol >= lc.MinProtocol && protocol <= lc.MaxProtocol {
		c.h.log.Debug("legacy connect: the gateway speaks the client's protocol; not bridged",
			"client", c.rec.clientAddr, "protocol", protocol)
		return
	}
	c.bridged = true
	c.h.metrics.BridgedSession()
	for i, f := range c.helloFrames {
		if f.typ == websocket.TextMessage {
			c.helloFrames[i].data = gwproto.FilterV3(f.data)
		}
	}
	c.h.log.Debug("legacy session bridged: gateway frames reduced to protocol 3 envelopes",
		"client", c.rec.clientAddr, "client_id", lc.ClientID, "client_mode", lc.ClientMode, "protocol", protocol)
}

// pumpBridged copies upstream→client on a bridged session: each message is
// read whole (up to the session's message limit), filtered and written.
// A larger message cannot be held; it is passed on unchanged rather than
// dropped.
func (c *conn) pumpBridged() {
	limit := c.maxPayload
	if limit <= 0 {
		limit = c.h.cfg.MaxMessageBytes
	}
	_, toClient := c.h.metrics.MessageCounters()
	err, readSide := copyFiltered(c.cw, c.up.ws, limit, c.h.cfg.WriteTimeout, toClient, &c.rec.toClient)
	c.endUpstreamSide(err, readSide)
}

// filterBufs holds the buffers bridged sessions read messages into. A
// buffer is taken once a message has begun to arrive and given back once
// it is written, so an idle bridged session holds none.
var filterBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledFilterBuf is the largest buffer given back to filterBufs.
const maxPooledFilterBuf = 1 << 20

// copyFiltered relays the gateway's messages from src to the client leg
// dst with the envelope filter: messages of up to limit bytes are read
// whole and text ones pass through gwproto.FilterV3; a larger one is streamed on
// unchanged. The gateway's pings and pongs go on to the client as they
// come, between the frames of a message too.
func copyFiltered(dst, src *wire.Conn, limit int64, writeTimeout time.Duration, count prometheus.Counter, t *tally) (err error, readSide bool) {
	rr := &recordingReader{}
	forward := func(opcode byte, payload []byte) {
		_ = dst.WriteControl(opcode, payload, time.Now().Add(writeTimeout))
	}
	for {
		typ, r, err := src.NextReader(forward)
		if err != nil {
			return err, true
		}
		rr.r, rr.err = r, nil
		buf := filterBufs.Get().(*bytes.Buffer)
		buf.Reset()
		n, err := buf.ReadFrom(io.LimitReader(rr, limit+1))
		if err != nil {
			putFilterBuf(buf)
			return err, true
		}
		var body io.Reader
		if n <= limit {
			data := buf.Bytes()
			if typ == websocket.TextMessage {
				data = gwproto.FilterV3(data)
			}
			body = bytes.NewReader(data)
		} else {
			body = io.MultiReader(bytes.NewReader(buf.Bytes()), rr)
		}
		sent, err := dst.WriteMessage(typ, body, writeTimeout)
		putFilterBuf(buf)
		if err, readSide := relayed(t, sent, err, rr.err, count); err != nil {
			return err, readSide
		}
	}
}

func putFilterBuf(b *bytes.Buffer) {
	if b.Cap() <= maxPooledFilterBuf {
		filterBufs.Put(b)
	}
}
