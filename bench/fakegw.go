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
//
// With attributed the gateway lists balancerAddr (where holdfast, or the
// load generator without it, connects from) in its trusted proxies, so
// each client counts at its X-Forwarded-For address, and it has every
// device paired, as after an operator approved them: remote devices are
// never silently paired.
func serveFakegw(listen string, window time.Duration, attributed bool) error {
	cfg := fakegw.Config{
		Addr:          listen,
		Token:         benchToken,
		StartupWindow: window,
		Echo:          true,
	}
	if attributed {
		cfg.TrustedProxies = []string{balancerAddr}
		cfg.PairRemoteDevices = true
	}
	g, err := fakegw.Start(cfg)
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
				Connects:   st.ConnectAttempts,
				HelloOK:    st.HelloOK,
				Upgrades:   st.Upgrades,
				Refused:    st.Rejected503,
				MaxPreauth: st.MaxPreauthSeen,
			})
		}),
	}
	return srv.Serve(l)
}
