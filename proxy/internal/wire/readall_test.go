package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// ReadAll returns what it read, whole (in a slice of about that size when
// it fits a chunk, not io.ReadAll's doubling), for sizes around a chunk's,
// whatever the reads' sizes; and the reader's error.
func TestReadAll(t *testing.T) {
	t.Parallel()
	pool := NewPool()
	for _, n := range []int{0, 1, 313, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3*ChunkSize + 7} {
		want := make([]byte, n)
		for i := range want {
			want[i] = byte(i * 7)
		}
		for _, r := range []io.Reader{bytes.NewReader(want), iotest.OneByteReader(bytes.NewReader(want)), iotest.HalfReader(bytes.NewReader(want))} {
			got, err := ReadAll(r, pool)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%d bytes: got %d bytes, %v", n, len(got), err)
			}
			if n < ChunkSize && cap(got) > n+n/8+16 { // the allocator's size class at most

				t.Errorf("%d bytes in a slice of capacity %d", n, cap(got))
			}
		}
	}
	boom := errors.New("boom")
	if _, err := ReadAll(io.MultiReader(bytes.NewReader(make([]byte, ChunkSize+5)), iotest.ErrReader(boom)), pool); !errors.Is(err, boom) {
		t.Errorf("error %v; want boom", err)
	}
	if _, err := ReadAll(iotest.ErrReader(boom), pool); !errors.Is(err, boom) {
		t.Errorf("error %v; want boom", err)
	}
}
