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

// take hands out and records what allow and then advance would, in HTTP
// mode in one scan: over random streams of "\r", "\n" and "a" taken in
// random pieces with random limits.
func TestStreamBoundsTakeMatchesAllowAdvance(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = "\r\na"[rng.IntN(3)]
		}
		var got, want streamBounds
		for len(b) > 0 {
			piece := b[:1+rng.IntN(len(b))]
			limit := 1 + rng.IntN(len(piece)+2)
			n := got.take(piece, limit)
			m := min(want.allow(piece), limit)
			want.advance(piece[:m])
			if n != m || got != want {
				t.Fatalf("%q, limit %d: take %d %+v; allow and advance %d %+v", piece, limit, n, got, m, want)
			}
			b = b[n:]
		}
	}
}
