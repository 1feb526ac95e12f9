package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
)

// serveFakegw runs internal/fakegw as a child process: a gateway with the
// real one's startup window, 32-per-IP pre-auth budget, token and device
// checks, echoing after hello. Its counters are served as JSON on a second
// listener, because the gateway's own port belongs to the gateway. The
// ready line is "ready GATEWAY-ADDR STATS-ADDR".
func serveFakegw(listen string, window time.Duration) error {
	g, err := fakegw.Start(fakegw.Config{
		Addr:          listen,
		Token:         benchToken,
		StartupWindow: window,
		Echo:          true,
	})
	if err != nil {
		return err
	}
	defer g.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("fakegw stats: %w", err)
	}
	fmt.Fprintf(os.Stdout, "%s%s %s\n", readyPrefix, g.Addr(), l.Addr())
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			st := g.Stats()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(gatewayStats{
				Connects: st.ConnectAttempts,
				HelloOK:  st.HelloOK,
				Upgrades: st.Upgrades,
				Refused:  st.Rejected503,
			})
		}),
	}
	return srv.Serve(l)
}
