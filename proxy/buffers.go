package proxy

import (
	"log"
	"log/slog"
	"sync"
)

// Buffer sizes of the WebSocket legs. gorilla's reader keeps a small buffer
// per socket for its lifetime (it peeks at most a frame header); reads
// from the socket land in the wire.Conn's own small buffer or, in bursts,
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
