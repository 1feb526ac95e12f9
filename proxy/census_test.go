package proxy_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
)

// The census: after one legacy (protocol 3, bridged) and one current
// client, /metrics counts each by protocol offered, client.mode and
// bridged; when the gateway restarts, the sessions it closed are counted
// by its close code.
func TestCensusMetrics(t *testing.T) {
	t.Parallel()
	gw := startGateway(t, fakegw.Config{Token: token, Generation: fakegw.Protocol4Only})
	hs := startProxy(t, gw.Addr(), nil, nil)
	for _, o := range []testclient.Options{
		{Token: token, Device: newDevice(t), MinProtocol: 3, MaxProtocol: 3, ClientVersion: "2026.4.27", ClientID: "openclaw-tui", Mode: "ui"},
		{Token: token, Device: newDevice(t)},
	} {
		o.URL = hs.url
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, res, err := testclient.Connect(ctx, o)
		cancel()
		if err != nil || !res.HelloOK {
			t.Fatalf("client offering [%d,%d]: %v (%+v)", o.MinProtocol, o.MaxProtocol, err, res)
		}
		t.Cleanup(func() { c.Close() })
	}
	gw.CloseSessions(1012, "service restart")
	hs.waitMetric(2, "holdfast_gateway_closes_total", "code", "1012")

	srv := httptest.NewServer(promhttp.HandlerFor(hs.reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`holdfast_client_handshakes_total{bridged="true",mode="ui",protocol="3"} 1`,
		`holdfast_client_handshakes_total{bridged="false",mode="cli",protocol="4"} 1`,
		`holdfast_client_handshakes_total{bridged="false",mode="ui",protocol="3"} 0`,
		`holdfast_gateway_closes_total{code="1012"} 2`,
		`holdfast_gateway_closes_total{code="other"} 0`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if n := strings.Count(string(body), "\nholdfast_client_handshakes_total{"); n != 3*6*2 {
		t.Errorf("%d client handshake series; want 36 (3 protocols × 6 modes × bridged or not)", n)
	}
}
