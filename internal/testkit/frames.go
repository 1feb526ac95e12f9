package testkit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame is one WebSocket frame as it crosses the wire (RFC 6455 §5.2).
type Frame struct {
	Fin     bool
	RSV     byte // the three RSV bits, in place (0x70 of the first byte)
	Opcode  byte
	Masked  bool
	Key     [4]byte
	Payload []byte // unmasked
}

// AppendFrame appends one frame to b: b0 is its first byte (FIN, RSV and
// opcode); key nil writes it unmasked (a server's frame), otherwise masked
// with *key (a client's). The length takes the shortest form.
func AppendFrame(b []byte, b0 byte, payload []byte, key *[4]byte) []byte {
	b = append(b, b0)
	var m byte
	if key != nil {
		m = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if key == nil {
		return append(b, payload...)
	}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// ErrShort is ParseFrame's error for a frame cut short.
var ErrShort = errors.New("testkit: frame cut short")

// ParseFrame parses the frame at the start of b and returns it with the
// number of bytes it took. A frame cut short (header or payload) is
// ErrShort.
func ParseFrame(b []byte) (Frame, int, error) {
	if len(b) < 2 {
		return Frame{}, 0, ErrShort
	}
	f, h, n := frameHeader(b[0], b[1])
	if len(b) < h {
		return Frame{}, 0, ErrShort
	}
	n = extLength(b[2:h], n)
	if f.Masked {
		copy(f.Key[:], b[h-4:h])
	}
	if uint64(len(b)-h) < n {
		return Frame{}, 0, fmt.Errorf("%w: %d of %d payload bytes", ErrShort, len(b)-h, n)
	}
	f.Payload = append([]byte(nil), b[h:h+int(n)]...)
	f.unmask()
	return f, h + int(n), nil
}

// ReadFrame reads one frame from r. A payload longer than limit is an
// error (limit <= 0: 64 MiB), so that a garbled length cannot make it
// allocate without bound.
func ReadFrame(r io.Reader, limit int) (Frame, error) {
	if limit <= 0 {
		limit = 64 << 20
	}
	var hdr [14]byte
	if _, err := io.ReadFull(r, hdr[:2]); err != nil {
		return Frame{}, err
	}
	f, h, n := frameHeader(hdr[0], hdr[1])
	if _, err := io.ReadFull(r, hdr[2:h]); err != nil {
		return Frame{}, err
	}
	n = extLength(hdr[2:h], n)
	if f.Masked {
		copy(f.Key[:], hdr[h-4:h])
	}
	if n > uint64(limit) {
		return Frame{}, fmt.Errorf("testkit: a frame of %d bytes, over the limit of %d", n, limit)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, err
	}
	f.unmask()
	return f, nil
}

// frameHeader reads the first two bytes: the frame's flags, its header's
// length h and the 7-bit length field.
func frameHeader(b0, b1 byte) (f Frame, h int, n uint64) {
	f = Frame{Fin: b0&0x80 != 0, RSV: b0 & 0x70, Opcode: b0 & 0x0f, Masked: b1&0x80 != 0}
	h, n = 2, uint64(b1&0x7f)
	switch n {
	case 126:
		h += 2
	case 127:
		h += 8
	}
	if f.Masked {
		h += 4
	}
	return f, h, n
}

// extLength is the payload length given the 7-bit field n and the bytes
// after the first two.
func extLength(ext []byte, n uint64) uint64 {
	switch n {
	case 126:
		return uint64(binary.BigEndian.Uint16(ext))
	case 127:
		return binary.BigEndian.Uint64(ext)
	}
	return n
}

func (f *Frame) unmask() {
	if f.Masked {
		for i := range f.Payload {
			f.Payload[i] ^= f.Key[i%4]
		}
	}
}
