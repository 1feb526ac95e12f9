package proxy

import (
	"bytes"
	"io"
	"log"
	"log/slog"
	"sync"

	"github.com/gorilla/websocket"
)

// Buffer sizes of the WebSocket legs. gorilla's reader keeps a small buffer
// per socket for its lifetime (it peeks at most a frame header); reads
// from the socket land in the batchConn's own small buffer or, in bursts,
// its pooled chunks. Write buffers are lent by a
// pool only while a message is being written, so an idle session holds none.
const (
	readBufferSize  = 128
	writeBufferSize = 4096
)

// bufferPool implements websocket.BufferPool over sync.Pool.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool { return &bufferPool{} }

// Get returns a pooled buffer or nil (gorilla then allocates one).
func (b *bufferPool) Get() any { return b.p.Get() }

// Put returns a buffer to the pool.
func (b *bufferPool) Put(v any) { b.p.Put(v) }

// slogErrorLog adapts a slog.Logger for the standard library's *log.Logger
// hooks (http.Server.ErrorLog, ReverseProxy.ErrorLog).
func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelWarn)
}

// readMessage reads the next message of ws whole, as ws.ReadMessage does,
// into a slice of its exact size (readAll).
func readMessage(ws *websocket.Conn, pool *chunkPool) (messageType int, data []byte, err error) {
	messageType, r, err := ws.NextReader()
	if err != nil {
		return messageType, nil, err
	}
	data, err = readAll(r, pool)
	return messageType, data, err
}

// readAll reads r to its end through a pooled chunk and returns what it
// read in a slice of that size: a handshake frame costs one allocation of
// its own size, where io.ReadAll grows a buffer from 512 bytes, copying as
// it goes (a 15 KB hello-ok took six).
func readAll(r io.Reader, pool *chunkPool) ([]byte, error) {
	chunk := pool.get()
	defer pool.put(chunk)
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
