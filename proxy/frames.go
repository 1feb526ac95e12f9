package proxy

import (
	"bytes"
	"encoding/json"
)

// The gateway's startup-unavailable markers (gateway-protocol
// startup-unavailable.ts): a connect answered with this error may be sent
// again once the gateway has started.
const (
	startupReason      = "startup-sidecars"
	startupCloseCode   = 1013
	startupCloseReason = "gateway starting"
)

// connectKind classifies a client's first frame.
type connectKind int

const (
	// notConnect: not a well-formed connect request. It is forwarded as it
	// is and the gateway gives its own answer.
	notConnect connectKind = iota
	// replayable: a connect without params.device. Its bytes can be sent
	// again on a fresh upstream socket.
	replayable
	// nonceBound: a connect with params.device. Its signature covers this
	// upstream socket's challenge nonce, so it can succeed only there.
	nonceBound
)

func (k connectKind) String() string {
	switch k {
	case replayable:
		return "replayable"
	case nonceBound:
		return "nonce-bound"
	default:
		return "not-connect"
	}
}

// classifyConnect reads only what holdfast needs of a first frame: whether
// it is a connect request, its id, and whether it carries a device proof.
// It never looks at, keeps or logs auth fields.
func classifyConnect(data []byte) (kind connectKind, id json.RawMessage) {
	var f struct {
		Type   string          `json:"type"`
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params *struct {
			Device json.RawMessage `json:"device"`
		} `json:"params"`
	}
	if json.Unmarshal(data, &f) != nil || f.Type != "req" || f.Method != "connect" || len(f.ID) == 0 {
		return notConnect, nil
	}
	if f.Params != nil && len(f.Params.Device) > 0 && !bytes.Equal(f.Params.Device, []byte("null")) {
		return nonceBound, f.ID
	}
	return replayable, f.ID
}

// challenge is the gateway's connect.challenge event.
type challenge struct {
	Nonce string
	TS    int64
}

// parseChallenge accepts exactly a connect.challenge event with a non-blank
// nonce.
func parseChallenge(data []byte) (challenge, bool) {
	var f struct {
		Type    string `json:"type"`
		Event   string `json:"event"`
		Payload struct {
			Nonce string `json:"nonce"`
			TS    int64  `json:"ts"`
		} `json:"payload"`
	}
	if json.Unmarshal(data, &f) != nil || f.Type != "event" || f.Event != "connect.challenge" ||
		len(bytes.TrimSpace([]byte(f.Payload.Nonce))) == 0 {
		return challenge{}, false
	}
	return challenge{Nonce: f.Payload.Nonce, TS: f.Payload.TS}, true
}

// answer is the gateway's response to a connect.
type answer struct {
	// isResponse: a res frame whose id equals the connect's.
	isResponse bool
	ok         bool
	helloOK    bool
	// maxPayload is hello-ok's policy.maxPayload, 0 when absent.
	maxPayload int64
	// startup: the error is the retryable startup UNAVAILABLE.
	startup bool
	// retryAfterMs is a startup error's retryAfterMs, -1 when absent.
	retryAfterMs int64
}

// parseAnswer decodes an upstream frame received while a connect with id is
// in flight.
func parseAnswer(data []byte, id json.RawMessage) answer {
	var f struct {
		Type    string          `json:"type"`
		ID      json.RawMessage `json:"id"`
		OK      bool            `json:"ok"`
		Payload *struct {
			Type   string `json:"type"`
			Policy *struct {
				MaxPayload int64 `json:"maxPayload"`
			} `json:"policy"`
		} `json:"payload"`
		Error *struct {
			Code         string `json:"code"`
			Retryable    bool   `json:"retryable"`
			RetryAfterMs *int64 `json:"retryAfterMs"`
			Details      *struct {
				Reason string `json:"reason"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &f) != nil || f.Type != "res" || !bytes.Equal(f.ID, id) {
		return answer{}
	}
	a := answer{isResponse: true, ok: f.OK}
	if f.OK && f.Payload != nil && f.Payload.Type == "hello-ok" {
		a.helloOK = true
		if f.Payload.Policy != nil && f.Payload.Policy.MaxPayload > 0 {
			a.maxPayload = f.Payload.Policy.MaxPayload
		}
	}
	// isRetryableGatewayStartupUnavailableError: all three must hold.
	if e := f.Error; !f.OK && e != nil && e.Code == "UNAVAILABLE" && e.Retryable &&
		e.Details != nil && e.Details.Reason == startupReason {
		a.startup = true
		a.retryAfterMs = -1
		if e.RetryAfterMs != nil {
			a.retryAfterMs = *e.RetryAfterMs
		}
	}
	return a
}
