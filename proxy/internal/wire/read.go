package wire

import (
	"bytes"
	"io"
)

// ReadAll reads r to its end through a pooled chunk and returns what it
// read in a slice of that size: a handshake frame costs one allocation of
// its own size, where io.ReadAll grows a buffer from 512 bytes, copying as
// it goes (a 15 KB hello-ok took six).
func ReadAll(r io.Reader, pool *Pool) ([]byte, error) {
	chunk := pool.Get()
	defer pool.Put(chunk)
	buf := *chunk
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		switch {
		case err == io.EOF:
			return bytes.Clone(buf[:n:n]), nil
		case err != nil:
			return nil, err
		}
	}
	// Larger than a chunk: the rest is appended.
	out := append(make([]byte, 0, 2*n), buf[:n]...)
	for {
		if len(out) == cap(out) {
			out = append(out, 0)[:len(out)]
		}
		k, err := r.Read(out[len(out):cap(out)])
		out = out[:len(out)+k]
		switch {
		case err == io.EOF:
			return out, nil
		case err != nil:
			return nil, err
		}
	}
}
