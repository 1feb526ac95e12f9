package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// Warm sockets: a late-dialled client's upstream socket is opened at once
// and its challenge kept until the gateway has started. These tests scale
// the gateway's pre-auth timer down to a second or less, so that a window
// of a few seconds outlasts it several times.

// A window longer than the gateway's pre-auth timer several times over:
// holdfast replaces the warm socket before the timer (here every 0.6 s:
// pre-auth timer 1 s − 2 × hold margin 0.2 s), the client gets the last
// socket's challenge once the gateway has started and reaches hello-ok,
// and the gateway receives exactly one connect and closes no socket on
// its pre-auth timer.
func TestWarmSocketRenewedBeforePreauthTimer(t *testing.T) {
	t.Parallel()
	const (
		timer  = time.Second
		window = 2500 * time.Millisecond
	)
	for _, device := range []bool{true, false} {
		t.Run(kindName(device), func(t *testing.T) {
			t.Parallel()
			testkit.Prompt(t)
			gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: window, PreauthTimeout: timer})
			gwStart := time.Now()
			hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
				c.PreauthTimeout = timer
				c.HoldMargin = 200 * time.Millisecond
				c.Budget = 1500 * time.Millisecond
				c.LateDialMax = 4 * time.Second // the gateway starts first
			}, nil)
			var dev *deviceauth.Identity
			if device {
				dev = newDevice(t)
			}
			o := <-connectAsync(hs.url, dev, "")
			if !o.res.HelloOK {
				t.Fatalf("result %s (error %v); want hello-ok", summarizeLate(o.res), o.res.Error)
			}
			if since := time.Since(gwStart); since < window {
				t.Errorf("hello-ok %v after the gateway started listening; its window was %v", since, window)
			}
			st := gw.Stats()
			if st.ConnectAttempts != 1 || st.StartupRejects != 0 || st.HelloOK != 1 {
				t.Errorf("gateway saw %d connects, %d startup rejections, %d hello-ok; want 1, 0, 1",
					st.ConnectAttempts, st.StartupRejects, st.HelloOK)
			}
			renewed := hs.metric("holdfast_upstream_renewals_total", "reason", "preauth_timer")
			if renewed < 2 {
				t.Errorf("renewals before the pre-auth timer = %v; want at least 2 in a %v window", renewed, window)
			}
			if got := hs.metric("holdfast_upstream_renewals_total", "reason", "gateway_closed"); got != 0 {
				t.Errorf("warm sockets the gateway closed first = %v; want 0", got)
			}
			// Every upgrade but the last was a warm socket replaced
			// unused; none was opened after the window.
			if st.Upgrades != int64(renewed)+1 {
				t.Errorf("gateway saw %d upgrades; want the renewals + 1 = %v", st.Upgrades, renewed+1)
			}
			if got := hs.metric("holdfast_upstream_dials_delayed_total"); got != 1 {
				t.Errorf("dials delayed = %v; want 1", got)
			}
			hs.waitMetric(0, "holdfast_upstream_handshakes_in_flight")
		})
	}
}

// A gateway whose pre-auth timer is shorter than holdfast's
// handshake.preauth_timeout closes the warm socket first (1000, no
// reason): holdfast opens another, and the client still gets hello-ok with
// one connect sent.
//
// The gateway starts just after holdfast has opened the second socket, so
// the challenge handed out then has most of the gateway's timer left for
// the client's connect. (With the gateway started by a timer of its own,
// the connect could reach a socket just as the gateway's timer closed it:
// holdfast, believing the timer is handshake.preauth_timeout, cannot know,
// and the device-signed client then rightly gets 1013.)
func TestWarmSocketClosedByGateway(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Hour, PreauthTimeout: 1500 * time.Millisecond})
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		c.LateDialMax = 4 * time.Second
	}, nil)
	out := connectAsync(hs.url, newDevice(t), "")
	eventually(t, "the gateway's close of the warm socket seen", func() bool {
		return hs.metric("holdfast_upstream_renewals_total", "reason", "gateway_closed") >= 1
	})
	eventually(t, "a second warm socket", func() bool { return gw.Stats().Upgrades >= 2 })
	gw.SetStarted()
	o := <-out
	if !o.res.HelloOK {
		t.Fatalf("result %s (error %v); want hello-ok", summarizeLate(o.res), o.res.Error)
	}
	st := gw.Stats()
	if st.ConnectAttempts != 1 || st.StartupRejects != 0 {
		t.Errorf("gateway saw %d connects and %d startup rejections; want 1 and 0", st.ConnectAttempts, st.StartupRejects)
	}
	if got := hs.metric("holdfast_upstream_renewals_total", "reason", "gateway_closed"); got < 1 {
		t.Errorf("warm sockets the gateway closed = %v; want at least 1", got)
	}
	if got := hs.metric("holdfast_upstream_renewals_total", "reason", "preauth_timer"); got != 0 {
		t.Errorf("renewals before holdfast's pre-auth timer = %v; want 0 (15 s)", got)
	}
	hs.waitMetric(0, "holdfast_upstream_handshakes_in_flight")
}

// A crowd at one address (loopback clients all share holdfast's): holdfast
// keeps at most max_preauth_per_address warm sockets for it, the others
// wait in line, and the gateway never sees more; once it has started every
// client gets hello-ok with one connect, and the clients that held a warm
// socket need no new one.
func TestWarmSocketsKeepPerAddressLimit(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	const (
		limit   = 3
		clients = 10
	)
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Hour})
	hs := startProxy(t, gw.Addr(), func(c *proxy.Config) {
		c.MaxPreauthPerAddress = limit
		c.LateDialMax = 8 * time.Second
	}, nil)
	outs := make([]<-chan lateOut, clients)
	for i := range outs {
		var dev *deviceauth.Identity
		if i%2 == 0 {
			dev = newDevice(t)
		}
		outs[i] = connectAsync(hs.url, dev, "")
	}
	eventually(t, "warm sockets up to the limit", func() bool { return gw.PreauthSockets() == limit })
	// They stay at the limit while the gateway starts.
	time.Sleep(300 * time.Millisecond)
	if n := gw.PreauthSockets(); n != limit {
		t.Errorf("gateway has %d pre-auth sockets; want %d", n, limit)
	}
	gw.SetStarted()
	for i, ch := range outs {
		if o := <-ch; !o.res.HelloOK {
			t.Errorf("client %d: %s (error %v); want hello-ok", i, summarizeLate(o.res), o.res.Error)
		}
	}
	st := gw.Stats()
	if st.MaxPreauthSeen > limit {
		t.Errorf("gateway saw %d pre-auth sockets at one address; want at most %d", st.MaxPreauthSeen, limit)
	}
	if st.ConnectAttempts != clients || st.StartupRejects != 0 || st.Rejected503 != 0 {
		t.Errorf("gateway saw %d connects, %d startup rejections, %d refused upgrades; want %d, 0, 0",
			st.ConnectAttempts, st.StartupRejects, st.Rejected503, clients)
	}
	if st.Upgrades != clients {
		t.Errorf("gateway saw %d upgrades; want one per client (%d)", st.Upgrades, clients)
	}
	hs.waitMetric(0, "holdfast_upstream_handshakes_in_flight")
}

// tlsFront serves TLS on a port of its own and relays every connection, as
// bytes, to backend: a wss gateway made of a plain one. It stops at the
// end of the test.
func tlsFront(t *testing.T, backend string) (addr string, pool *x509.CertPool) {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			track(c)
			track(b)
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(b, c)
				_ = b.(*net.TCPConn).CloseWrite()
			}()
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, b)
				_ = c.Close() // the gateway closed: so does the front
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), pool
}

// A wss gateway closes the warm socket first (its pre-auth timer is
// shorter than holdfast's handshake.preauth_timeout). holdfast does not
// watch a TLS socket while it waits, but it looks before it hands the
// challenge out: the client gets a fresh socket's challenge, not the dead
// one's, and reaches hello-ok with one connect. The gateway starts once it
// has closed the first socket, so the fresh one has the gateway's whole
// timer for the client's connect (see TestWarmSocketClosedByGateway).
func TestWarmSocketOverTLSClosedByGateway(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Hour, PreauthTimeout: time.Second})
	addr, pool := tlsFront(t, gw.Addr())
	hs := startProxy(t, addr, func(c *proxy.Config) {
		c.Upstream.Scheme = "wss"
		c.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		c.LateDialMax = 4 * time.Second
	}, nil)
	out := connectAsync(hs.url, newDevice(t), "")
	eventually(t, "the gateway's close of the warm socket", func() bool {
		return gw.Stats().Upgrades >= 1 && gw.PreauthSockets() == 0
	})
	gw.SetStarted()
	o := <-out
	if !o.res.HelloOK {
		t.Fatalf("result %s (error %v); want hello-ok", summarizeLate(o.res), o.res.Error)
	}
	if st := gw.Stats(); st.ConnectAttempts != 1 || st.HelloOK != 1 {
		t.Errorf("gateway saw %d connects and %d hello-ok; want 1 and 1", st.ConnectAttempts, st.HelloOK)
	}
	if got := hs.metric("holdfast_upstream_renewals_total", "reason", "gateway_closed"); got != 1 {
		t.Errorf("warm sockets found closed = %v; want 1", got)
	}
	hs.waitMetric(0, "holdfast_upstream_handshakes_in_flight")
}
