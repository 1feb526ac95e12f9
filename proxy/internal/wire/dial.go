package wire

import (
	"context"
	"crypto/tls"
	"net"
	"time"
)

// Dial opens the upstream leg's socket to t by deadline, or until ctx ends:
// TCP through d, then for wss TLS through the record layer (TLSClient)
// with tlsBase (nil: TLS 1.2 or later with the system's roots; its
// ServerName, when empty, is t's host). It returns the leg as an upstream
// Conn, ready for Upgrade.
func Dial(ctx context.Context, d *net.Dialer, t Target, tlsBase *tls.Config, pool *Pool, deadline time.Time) (*Conn, error) {
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	if !t.TLS {
		return NewUpstreamConn(c, pool), nil
	}
	tc := TLSClient(c, tlsConfigFor(tlsBase, t.Addr), pool)
	if err := tc.HandshakeContext(dctx); err != nil {
		c.Close()
		return nil, err
	}
	return NewUpstreamConn(tc, pool), nil
}

// tlsConfigFor returns the TLS configuration for dialing addr: base (or
// defaults) with the server name taken from addr when base names none.
func tlsConfigFor(base *tls.Config, addr string) *tls.Config {
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	return cfg
}
