package main

import (
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"github.com/holdfast-proxy/holdfast/bench/internal/procs"
	"github.com/koding/websocketproxy"
)

// proxyOptions are the optional settings of a reference proxy.
type proxyOptions struct {
	// certFile and keyFile, when set, make the proxy serve TLS (wss://)
	// with that PEM pair, behind tls.Listen; the upstream side stays as
	// upstream says.
	certFile, keyFile string
	// forwardFor (tunnel only) passes the client's X-Forwarded-For on with
	// the proxy's own peer appended (httputil.ProxyRequest.SetXForwarded),
	// as a load balancer in front of a gateway does; without it the
	// tunnel sends none.
	forwardFor bool
}

// serveProxy runs one of the reference proxies on listen until the process
// is killed, forwarding to upstream (an http:// or ws:// URL). It prints the
// ready line with its address on stdout.
//
//   - tunnel: net/http/httputil.ReverseProxy, which hands the upgrade to the
//     upstream and copies bytes both ways after the 101;
//   - koding: github.com/koding/websocketproxy with its defaults, which
//     terminates WebSocket on both sides and copies whole messages.
func serveProxy(kind, listen, upstream string, opts proxyOptions) error {
	h, err := proxyHandler(kind, upstream, opts)
	if err != nil {
		return err
	}
	l, err := listenProxy(listen, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "%s%s\n", procs.ReadyPrefix, l.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(l)
}

// listenProxy listens on listen, through tls.Listen when opts name a
// certificate: TLS 1.2 at least and HTTP/1.1 only, as holdfast serves it.
func listenProxy(listen string, opts proxyOptions) (net.Listener, error) {
	if opts.certFile == "" && opts.keyFile == "" {
		l, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		return l, nil
	}
	pair, err := tls.LoadX509KeyPair(opts.certFile, opts.keyFile)
	if err != nil {
		return nil, fmt.Errorf("proxy: tls: %w", err)
	}
	l, err := tls.Listen("tcp", listen, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return l, nil
}

// proxyHandler returns the handler of a reference proxy of kind (tunnel or
// koding) forwarding to upstream.
func proxyHandler(kind, upstream string, opts proxyOptions) (http.Handler, error) {
	up, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream: %w", err)
	}
	var h http.Handler
	switch kind {
	case "tunnel":
		target := *up
		target.Scheme = "http"
		h = &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(&target)
				if opts.forwardFor {
					// Rewrite starts from an outbound request without the
					// inbound X-Forwarded-For: copy it, then append.
					r.Out.Header["X-Forwarded-For"] = r.In.Header["X-Forwarded-For"]
					r.SetXForwarded()
				}
			},
			ErrorLog: log.New(os.Stderr, "tunnel: ", log.LstdFlags),
		}
	case "koding":
		target := *up
		target.Scheme = "ws"
		h = websocketproxy.NewProxy(&target)
	default:
		return nil, fmt.Errorf("proxy: unknown kind %q (want tunnel or koding)", kind)
	}
	return h, nil
}
