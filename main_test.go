package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/testkit"
)

// holdfast as a whole: the binary's wiring, its operational endpoints, the
// metrics a scrape sees after real scenarios, and a graceful stop.
func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	testkit.Prompt(t)
	const token = "main-test-token"
	gw, err := fakegw.Start(fakegw.Config{Token: token, StartupWindow: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()

	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Upstream.URL = gw.URL()
	cfg.Readiness.PollInterval = 50 * time.Millisecond
	cfg.Log.Level = "debug"
	cfg.Shutdown.DrainDelay = 0
	cfg.Shutdown.Drain = 0
	r := startServe(t, cfg, "")
	ls, stop, done, logOut := r.ls, r.stop, r.done, r.logs
	base := "http://" + ls.metrics.String()
	wsURL := "ws://" + ls.proxy.String()

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		if got := httpStatus(t, base+path); got != want {
			t.Errorf("GET %s = %d; want %d", path, got, want)
		}
	}

	// During the window: one device-signed and one token-only client,
	// then one with a wrong token after it.
	dev, _ := deviceauth.NewIdentity()
	cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer ccancel()
	type out struct {
		c   *testclient.Conn
		res testclient.Result
	}
	results := make(chan out, 2)
	for _, d := range []*deviceauth.Identity{dev, nil} {
		go func() {
			c, res, _ := testclient.Connect(cctx, testclient.Options{URL: wsURL, Token: token, Device: d})
			results <- out{c, res}
		}()
	}
	var sessions []*testclient.Conn
	for range 2 {
		o := <-results
		if !o.res.HelloOK {
			t.Fatalf("client through holdfast: %+v", o.res)
		}
		sessions = append(sessions, o.c)
	}
	if _, res, _ := testclient.Connect(cctx, testclient.Options{URL: wsURL, Token: "wrong"}); res.HelloOK {
		t.Fatal("wrong token accepted")
	}

	// A scrape may trail what a client has already seen by a scheduling
	// step: wait for what is asserted instead of racing it.
	body := waitMetrics(t, base+"/metrics", []string{
		`holdfast_handshakes_total{result="ok"} 2`,
		`holdfast_handshakes_total{result="rejected"} 1`,
		`holdfast_handshakes_total{result="unavailable"} 0`,
		`holdfast_handshakes_total{result="client_gone"} 0`,
		`holdfast_handshakes_total{result="error"} 0`,
		`holdfast_upstream_retries_total{reason="dial"} 0`,
		`holdfast_handshake_duration_seconds_count 3`,
		`holdfast_sessions_active 2`,
		`holdfast_gateway_state{state="started"} 1`,
		`holdfast_gateway_state{state="starting"} 0`,
		`holdfast_build_info{goversion="` + runtime.Version() + `",version="` + buildVersion() + `"} 1`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	})
	promtoolCheckMetrics(t, body)
	// Neither client sends an Origin: with the default late dial, both
	// waited for the gateway to start before holdfast opened their
	// upstream sockets, so no connect had to be held or replayed.
	if !strings.Contains(body, "holdfast_upstream_dials_delayed_total 2\n") ||
		!regexp.MustCompile(`holdfast_connect_holds_total 0\n`).MatchString(body) {
		t.Errorf("want 2 delayed dials and no holds:\n%s\n%s", grep(body, "holdfast_upstream_dials_delayed_total"), grep(body, "holdfast_connect_holds_total"))
	}
	if strings.Contains(body, "127.0.0.1") || strings.Contains(body, token) {
		t.Error("/metrics carries a client address or a token")
	}
	if l := logOut.String(); strings.Contains(l, token) || strings.Contains(l, "wrong") {
		t.Error("the log carries a token")
	}

	// Graceful stop: spliced sessions get 1012, serve returns nil.
	stop <- struct{}{}
	for _, c := range sessions {
		_ = c.WS().SetReadDeadline(time.Now().Add(5 * time.Second))
		var err error
		for err == nil {
			_, _, err = c.WS().ReadMessage()
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseServiceRestart {
			t.Errorf("session ended with %v; want 1012", err)
		}
		c.Close()
	}
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
}

// syncWriter collects logs from many goroutines.
type syncWriter = testkit.LogBuffer

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitMetrics scrapes url until its body holds every line in want, and
// returns the last body. It fails the test after 5 s, naming what is still
// missing, so a count that never arrives is an error and one that arrives a
// moment late is not.
func waitMetrics(t *testing.T, url string, want []string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		body := get(t, url)
		var missing []string
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return body
		}
		if time.Now().After(deadline) {
			for _, m := range missing {
				t.Errorf("/metrics lacks %q", m)
			}
			return body
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestVersionFlag(t *testing.T) {
	t.Parallel()
	var out, errOut strings.Builder
	if err := run([]string{"-version"}, &out, &errOut, controls{}); err != nil {
		t.Fatalf("holdfast -version: %v (%s)", err, errOut.String())
	}
	want := "holdfast " + buildVersion() + " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if out.String() != want {
		t.Errorf("holdfast -version printed %q; want %q", out.String(), want)
	}
	if buildVersion() == "" {
		t.Error("empty version")
	}
}

// promtoolCheckMetrics lints a scrape with promtool check metrics (names,
// units, help texts, counter suffixes). Without promtool the check is
// skipped, unless HOLDFAST_REQUIRE_PROMTOOL=1 (scripts/test.sh installs it).
func promtoolCheckMetrics(t *testing.T, body string) {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("HOLDFAST_REQUIRE_PROMTOOL") == "1" {
			t.Errorf("promtool not found (HOLDFAST_REQUIRE_PROMTOOL=1): %v", err)
		} else {
			t.Log("promtool check metrics NOT run: promtool not installed (Debian package prometheus)")
		}
		return
	}
	cmd := exec.Command(p, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics on the /metrics scrape: %v\n%s", err, out)
	}
}

// The access log comes in the configured format (here JSON), one line per
// connection with every key, and log.access: false turns it off.
func TestAccessLogConfig(t *testing.T) {
	t.Parallel()
	const token = "access-log-test-token"
	gw, err := fakegw.Start(fakegw.Config{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	for _, access := range []bool{true, false} {
		t.Run(fmt.Sprintf("access=%v", access), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Listen = "127.0.0.1:0"
			cfg.Metrics.Listen = "127.0.0.1:0"
			cfg.Upstream.URL = gw.URL()
			cfg.Log.Format = "json"
			cfg.Log.Access = access
			cfg.Shutdown.DrainDelay = 0
			cfg.Shutdown.Drain = 0
			r := startServe(t, cfg, "")
			ls, stop, done, logOut := r.ls, r.stop, r.done, r.logs
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, res, err := testclient.Connect(ctx, testclient.Options{URL: "ws://" + ls.proxy.String() + "/", Token: token})
			if err != nil || !res.HelloOK {
				t.Fatalf("connect: %v %+v", err, res)
			}
			c.Close()
			// The line is written when the session has ended; a second
			// connection's refusal ends after it.
			_, _, _ = testclient.Connect(ctx, testclient.Options{URL: "ws://" + ls.proxy.String() + "/", Token: "wrong"})
			stop <- struct{}{}
			err = <-done
			done <- err // for the cleanup
			if err != nil {
				t.Fatalf("serve: %v", err)
			}
			var lines []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(logOut.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("log line not JSON (log.format json): %v\n%s", err, l)
				}
				if m["msg"] == "access" {
					lines = append(lines, m)
				}
			}
			if !access {
				if len(lines) != 0 {
					t.Fatalf("log.access false, yet %d access lines", len(lines))
				}
				return
			}
			if len(lines) != 2 {
				t.Fatalf("%d access lines; want 2 (one per connection)\n%s", len(lines), logOut.String())
			}
			for _, k := range []string{"client", "path", "connect", "result", "attempts", "held", "handshake_ms", "hello_ok_ms",
				"session", "session_ms", "msgs_up", "bytes_up", "msgs_down", "bytes_down",
				"client_close_sent", "client_close_sent_reason", "client_close_got", "client_close_got_reason",
				"gateway_close_sent", "gateway_close_sent_reason", "gateway_close_got", "gateway_close_got_reason"} {
				for i, l := range lines {
					if _, ok := l[k]; !ok {
						t.Errorf("access line %d lacks %q: %v", i, k, l)
					}
				}
			}
			results := map[any]bool{}
			for _, l := range lines {
				results[l["result"]] = true
				if l["level"] != "INFO" {
					t.Errorf("access line at %v; want INFO", l["level"])
				}
				if _, ok := l["hello_ok_ms"].(float64); !ok {
					t.Errorf("hello_ok_ms is %T; want a number", l["hello_ok_ms"])
				}
			}
			if !results["ok"] || !results["rejected"] {
				t.Errorf("results %v; want ok and rejected", results)
			}
			if strings.Contains(logOut.String(), token) {
				t.Error("the log carries the token")
			}
		})
	}
}
