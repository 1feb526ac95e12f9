package wire

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"time"

	"github.com/gorilla/websocket"
)

// The message reader: holdfast's own end of the upstream leg reads the
// gateway's handshake frames (the challenge, the connect's answer,
// hello-ok) and a bridged session's messages through it, with the frame
// rules the relay applies (checkHeader, readClose): gorilla is not on this
// leg at all.

// ControlFunc is called with each ping or pong a message reader meets
// between data frames. A nil ControlFunc answers a ping with a pong and
// ignores a pong, as a WebSocket client does.
type ControlFunc func(opcode byte, payload []byte)

// controlWait bounds a control frame holdfast writes on its own while
// reading (a pong, the echo of a close, a 1002 or 1009), as gorilla's
// reader bounds them.
const controlWait = time.Second

// msgState is what a message reader keeps between its calls: the frame
// under way and the error that ended the reading.
type msgState struct {
	left   uint64 // payload bytes of the current data frame not yet read
	fin    bool   // the current data frame ends its message
	active bool   // a message was handed out and not read to its end
	ctl    ControlFunc
	err    error // sticky: every read after a failed one fails the same
}

// NextReader returns the type of the next data message and a reader of its
// payload, which ends (io.EOF) with the message. What was left unread of
// the previous message is discarded. Pings and pongs met on the way go to
// ctl. A close frame is answered with its code (nothing is written on the
// leg after it) and returned as a *websocket.CloseError; a frame that
// breaks RFC 6455 gets close 1002 and returns an error that is not a close;
// the end of the stream is a 1006 *websocket.CloseError, as gorilla reports
// it. An error is returned again by every later call.
//
// Call it from the one goroutine that reads c, in frame mode, before a
// Relay takes c over. Between frames the reader waits holding no buffer
// (WaitData).
func (c *Conn) NextReader(ctl ControlFunc) (typ int, r io.Reader, err error) {
	m := &c.msg
	m.ctl = ctl
	for m.active && m.err == nil {
		if _, err := io.Copy(io.Discard, messageReader{c}); err != nil {
			break
		}
	}
	if m.err != nil {
		return 0, nil, m.err
	}
	op, fin, n, err := c.nextFrame(false)
	if err != nil {
		return 0, nil, err
	}
	m.left, m.fin, m.active = n, fin, true
	return int(op), messageReader{c}, nil
}

// ReadMessage reads the next data message whole, as NextReader finds it,
// into a slice of its own size. A message whose frames declare more than
// limit bytes (limit > 0) gets close 1009 and websocket.ErrReadLimit, as
// soon as the header that goes over it is read, before its payload.
func (c *Conn) ReadMessage(limit int64, ctl ControlFunc) (typ int, data []byte, err error) {
	if limit <= 0 {
		return 0, nil, errors.New("wire: ReadMessage without a limit")
	}
	typ, r, err := c.NextReader(ctl)
	if err != nil {
		return typ, nil, err
	}
	m := &c.msg
	for {
		if uint64(len(data))+m.left > uint64(limit) {
			return typ, nil, c.fail(websocket.ErrReadLimit,
				websocket.FormatCloseMessage(websocket.CloseMessageTooBig, ""))
		}
		if m.left == 0 {
			if m.fin {
				m.active = false
				if data == nil {
					data = []byte{}
				}
				return typ, data, nil
			}
			_, fin, n, err := c.nextFrame(true)
			if err != nil {
				return typ, nil, err
			}
			m.left, m.fin = n, fin
			continue
		}
		start := len(data)
		if data == nil && m.fin {
			data = make([]byte, 0, m.left) // one frame: its exact size
		}
		data = slices.Grow(data, int(m.left))[:start+int(m.left)]
		if _, err := io.ReadFull(r, data[start:]); err != nil {
			return typ, nil, err
		}
	}
}

// messageReader reads the payload of the message NextReader returned.
type messageReader struct{ c *Conn }

func (r messageReader) Read(p []byte) (int, error) {
	c := r.c
	m := &c.msg
	if m.err != nil {
		return 0, m.err
	}
	for m.left == 0 {
		if !m.active || m.fin {
			m.active = false
			return 0, io.EOF
		}
		_, fin, n, err := c.nextFrame(true)
		if err != nil {
			return 0, err
		}
		m.left, m.fin = n, fin
	}
	n, err := c.Read(p[:min(uint64(len(p)), m.left)])
	m.left -= uint64(n)
	switch {
	case err == io.EOF:
		return n, c.fail(errUnexpectedEOF, nil)
	case err != nil:
		return n, c.fail(err, nil)
	}
	return n, nil
}

// nextFrame reads frame headers until a data frame's, and returns it: a
// continuation when inMessage, else a text or binary frame. Control frames
// on the way are handled (ctl, the echo of a close). The data frame's
// payload is left to read.
func (c *Conn) nextFrame(inMessage bool) (opcode byte, fin bool, n uint64, err error) {
	for {
		_ = c.WaitData() // an error shows in the read
		var h [MaxHeader]byte
		if _, err := io.ReadFull(c, h[:2]); err != nil {
			return 0, false, 0, c.readFailed(err)
		}
		if problem := checkHeader(h[0], h[1], inMessage, !c.masks); problem != "" {
			return 0, false, 0, c.fail(errors.New("websocket: "+problem), protocolClose(problem))
		}
		hl := HeaderLen(h[1])
		if _, err := io.ReadFull(c, h[2:hl]); err != nil {
			return 0, false, 0, c.readFailed(err)
		}
		n = PayloadLen(h[:hl])
		if n>>63 != 0 {
			const problem = "length with its most significant bit set"
			return 0, false, 0, c.fail(errors.New("websocket: "+problem), protocolClose(problem))
		}
		opcode, fin = h[0]&opcodeBits, h[0]&finBit != 0
		if opcode < websocket.CloseMessage {
			return opcode, fin, n, nil
		}
		var p [MaxControlPayload]byte
		if _, err := io.ReadFull(c, p[:n]); err != nil {
			return 0, false, 0, c.readFailed(err)
		}
		if !c.masks {
			// A client's control frame (the server side reads it): unmask.
			maskBytes(maskKey(h[:hl]), p[:n])
		}
		switch opcode {
		case websocket.CloseMessage:
			ce, problem := readClose(p[:n])
			if problem != "" {
				return 0, false, 0, c.fail(errors.New("websocket: "+problem), protocolClose(problem))
			}
			return 0, false, 0, c.fail(ce, websocket.FormatCloseMessage(ce.Code, ""))
		case websocket.PingMessage:
			if c.msg.ctl == nil {
				_ = c.WriteControl(websocket.PongMessage, p[:n], time.Now().Add(controlWait))
				continue
			}
		}
		if c.msg.ctl != nil {
			c.msg.ctl(opcode, bytes.Clone(p[:n]))
		}
	}
}

// readFailed is fail for a failed socket read: the end of the stream is
// a 1006 close, as gorilla reports it.
func (c *Conn) readFailed(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = errUnexpectedEOF
	}
	return c.fail(err, nil)
}

// fail ends the reading with err, after writing a close frame with
// payload on the leg when payload is not nil.
func (c *Conn) fail(err error, payload []byte) error {
	if payload != nil {
		_ = c.WriteClose(payload, time.Now().Add(controlWait))
	}
	c.msg.err = err
	c.msg.active = false
	return err
}

// WriteControl writes a ping or a pong (payload of at most 125 bytes)
// whole, under the write lock, by deadline: into the batch when the leg
// batches, else to the socket at once.
func (c *Conn) WriteControl(opcode byte, payload []byte, deadline time.Time) error {
	if len(payload) > MaxControlPayload {
		return errors.New("websocket: control payload over 125 bytes")
	}
	_ = c.SetWriteDeadline(deadline)
	return c.WriteFrame(opcode, true, payload)
}

// WriteMessageBytes writes data as one message of type typ (WriteMessage).
func (c *Conn) WriteMessageBytes(typ int, data []byte, writeTimeout time.Duration) error {
	_, err := c.WriteMessage(typ, bytes.NewReader(data), writeTimeout)
	return err
}
