package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/holdfast-proxy/holdfast/bench/internal/procs"
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
//
// A POST to /restart?window=D on the stats listener restarts the gateway
// the way a real one restarts (Gateway.Restart: every socket gets 1012
// "service restart", the port is closed, then it listens again with a
// startup window of D) and answers 204 once it listens again; the soak
// (soak.go) restarts the gateway this way.
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
	fmt.Fprintf(os.Stdout, "%s%s %s\n", procs.ReadyPrefix, g.Addr(), l.Addr())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		st := g.Stats()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(gatewayStats{
			Connects:   st.ConnectAttempts,
			HelloOK:    st.HelloOK,
			Upgrades:   st.Upgrades,
			Refused:    st.Rejected503,
			MaxPreauth: st.MaxPreauthSeen,
		})
	})
	mux.HandleFunc("POST /restart", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("window"))
		if err != nil {
			http.Error(w, "window: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := g.Restart(d); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: mux}
	return srv.Serve(l)
}
