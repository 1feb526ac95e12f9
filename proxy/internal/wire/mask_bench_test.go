package wire

import "testing"

// BenchmarkMaskBytes masks a 1 KiB payload, the size of the bench's
// messages.
func BenchmarkMaskBytes(b *testing.B) {
	key := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	buf := make([]byte, 1024)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		maskBytes(key, buf)
	}
}
