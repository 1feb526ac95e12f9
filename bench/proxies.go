package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"github.com/koding/websocketproxy"
)

// serveProxy runs one of the reference proxies on listen until the process
// is killed, forwarding to upstream (an http:// or ws:// URL). It prints the
// ready line with its address on stdout.
//
//   - tunnel: net/http/httputil.ReverseProxy, which hands the upgrade to the
//     upstream and copies bytes both ways after the 101;
//   - koding: github.com/koding/websocketproxy with its defaults, which
//     terminates WebSocket on both sides and copies whole messages.
func serveProxy(kind, listen, upstream string) error {
	up, err := url.Parse(upstream)
	if err != nil {
		return fmt.Errorf("proxy: upstream: %w", err)
	}
	var h http.Handler
	switch kind {
	case "tunnel":
		target := *up
		target.Scheme = "http"
		h = &httputil.ReverseProxy{
			Rewrite:  func(r *httputil.ProxyRequest) { r.SetURL(&target) },
			ErrorLog: log.New(os.Stderr, "tunnel: ", log.LstdFlags),
		}
	case "koding":
		target := *up
		target.Scheme = "ws"
		h = websocketproxy.NewProxy(&target)
	default:
		return fmt.Errorf("proxy: unknown kind %q (want tunnel or koding)", kind)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	fmt.Fprintf(os.Stdout, "%s%s\n", readyPrefix, l.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(l)
}
