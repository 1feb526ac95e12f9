package proxy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
	"github.com/holdfast-proxy/holdfast/proxy"
)

// A gateway whose pre-auth timer (here 1 s) is shorter than
// handshake.preauth_timeout closes held sockets before holdfast sends
// their connect. Such a socket is lost, not answered: a replayable connect
// waits on fresh sockets and gets hello-ok once the gateway has started;
// a nonce-bound one (signed for the lost socket's challenge) gets 1013 to
// reconnect; the mismatch is logged once. Before, the gateway's 1000 was
// passed to the client as its answer, and the gateway never saw a
// connect.
func TestHeldSocketClosedBeforeConnect(t *testing.T) {
	t.Parallel()
	for _, device := range []bool{false, true} {
		t.Run(kindName(device), func(t *testing.T) {
			t.Parallel()
			// Prompt: a connect sent as the gateway's 1 s timer fires is
			// answered by the close (seen beside the heavy tests).
			testkit.Prompt(t)
			gw := startGateway(t, fakegw.Config{Token: token, StartupWindow: time.Hour, PreauthTimeout: time.Second})
			hs := startProxy(t, gw.Addr(), func(c *proxy.Config) { c.Budget = 10 * time.Second }, nil)
			type result struct {
				helloOK bool
				code    int
			}
			done := make(chan result, 1)
			go func() {
				_, res := connect(t, hs.url, newDeviceOrNil(t, device))
				done <- result{res.HelloOK, res.CloseCode}
			}()
			const mismatch = "its pre-auth timer is shorter than handshake.preauth_timeout"
			if device {
				select {
				case r := <-done:
					if r.helloOK || r.code != 1013 {
						t.Fatalf("nonce-bound connect on a lost socket: %+v; want close 1013", r)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("no answer")
				}
				if !strings.Contains(hs.logs.String(), mismatch) {
					t.Error("the mismatch was not logged")
				}
				return
			}
			// Two held sockets lost, and the client still waiting.
			waitUntil(t, "a second held socket lost", func() bool {
				return gw.Stats().Upgrades >= 3 || len(done) > 0
			})
			if len(done) > 0 {
				t.Fatalf("replayable connect answered before the gateway started: %+v", <-done)
			}
			gw.SetStarted()
			select {
			case r := <-done:
				if !r.helloOK {
					t.Fatalf("replayable connect: %+v; want hello-ok", r)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("no answer")
			}
			if n := strings.Count(hs.logs.String(), mismatch); n != 1 {
				t.Errorf("mismatch logged %d times; want once", n)
			}
			// Every connect the gateway saw was answered: its startup
			// refusals (sent before holdfast knew of the window), and the
			// one after the start.
			if st := gw.Stats(); st.ConnectAttempts != st.StartupRejects+1 {
				t.Errorf("gateway saw %d connects, refused %d for startup; want one more", st.ConnectAttempts, st.StartupRejects)
			}
		})
	}
}

func newDeviceOrNil(t *testing.T, device bool) *deviceauth.Identity {
	if !device {
		return nil
	}
	return newDevice(t)
}
