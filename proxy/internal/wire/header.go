package wire

import (
	"encoding/binary"
	"math/rand/v2"
)

// The bits of a frame header's first two bytes (RFC 6455 §5.2).
const (
	finBit     = 0x80 // byte 0: the final fragment of a message
	rsvBits    = 0x70 // byte 0: RSV1-3, unused (no extension is negotiated)
	opcodeBits = 0x0f // byte 0: the opcode
	maskBit    = 0x80 // byte 1: a mask key follows the length
	lenBits    = 0x7f // byte 1: the length, or 126/127 for a longer one
)

// MaxHeader is the largest WebSocket frame header: 2 bytes, an 8-byte
// extended length and a 4-byte mask key.
const MaxHeader = 14

// MaxControlPayload is the largest control frame payload (RFC 6455 §5.5).
const MaxControlPayload = 125

// HeaderLen returns the length of the frame header whose second byte is
// b1: 2, plus 2 or 8 for an extended length, plus 4 for a mask key.
func HeaderLen(b1 byte) int {
	n := 2
	switch b1 & lenBits {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&maskBit != 0 {
		n += 4
	}
	return n
}

// PayloadLen returns the payload length that h, a whole frame header
// (HeaderLen(h[1]) bytes at least), declares. It does not check the top
// bit of a 64-bit length.
func PayloadLen(h []byte) uint64 {
	switch n := h[1] & lenBits; n {
	case 126:
		return uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		return binary.BigEndian.Uint64(h[2:10])
	default:
		return uint64(n)
	}
}

// maskKey returns the mask key of h, a whole masked frame header.
func maskKey(h []byte) (key [4]byte) {
	n := len(h)
	copy(key[:], h[n-4:n])
	return key
}

// frameHeader fills hdr with the header of a frame of n payload bytes and
// returns its length. A masked header ends with a fresh mask key (§5.3).
func frameHeader(hdr *[MaxHeader]byte, opcode byte, fin, masked bool, n int) int {
	hdr[0] = opcode
	if fin {
		hdr[0] |= finBit
	}
	h := 2
	switch {
	case n <= 125:
		hdr[1] = byte(n)
	case n <= 0xffff:
		hdr[1] = 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(n))
		h = 4
	default:
		hdr[1] = 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(n))
		h = 10
	}
	if !masked {
		return h
	}
	hdr[1] |= maskBit
	binary.LittleEndian.PutUint32(hdr[h:], rand.Uint32())
	return h + 4
}

// maskBytes XORs b with the mask key in place (MaskCopy onto itself).
func maskBytes(key [4]byte, b []byte) {
	MaskCopy(b, b, binary.LittleEndian.Uint32(key[:]))
}
