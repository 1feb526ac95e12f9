package wire

import (
	"math/rand/v2"
	"testing"
)

// crlfScan, which jumps between '\r's, ends where crlfStep stepping
// through every byte ends, with and without stopping at "\r\n\r\n", from
// every state: over every string of up to 8 bytes of "\r", "\n" and "a",
// and over random longer ones.
func TestCRLFScanMatchesSteps(t *testing.T) {
	ref := func(state uint8, b []byte, stop bool) (int, uint8) {
		for i, ch := range b {
			state = crlfStep(state, ch)
			if state == 4 {
				if stop {
					return i + 1, 4
				}
				state = 0
			}
		}
		return len(b), state
	}
	check := func(b []byte) {
		for state := uint8(0); state < 4; state++ {
			for _, stop := range []bool{false, true} {
				gi, gs := crlfScan(state, b, stop)
				wi, ws := ref(state, b, stop)
				if gi != wi || gs != ws {
					t.Fatalf("crlfScan(%d, %q, %v) = %d, %d; stepping gives %d, %d", state, b, stop, gi, gs, wi, ws)
				}
			}
		}
	}
	alphabet := []byte("\r\na")
	var walk func(b []byte)
	walk = func(b []byte) {
		check(b)
		if len(b) == 8 {
			return
		}
		for _, c := range alphabet {
			walk(append(b, c))
		}
	}
	walk(nil)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(300))
		for i := range b {
			b[i] = "\r\nab: "[rng.IntN(6)]
		}
		check(b)
	}
}
