//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// sessionEvent is one line of testdata/drain/session.mjs.
type sessionEvent struct {
	Ev      string `json:"ev"`
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	T       int64  `json:"t"`
}

// A real GatewayClient session through holdfast, then SIGTERM: holdfast's
// drain closes it with 1012 "holdfast restarting", and the client, on its
// own, reconnects (here to the holdfast that replaced the first on the same
// port) and gets hello-ok again: the close code is one OpenClaw's client
// reconnects on.
func TestDrainReconnects(t *testing.T) {
	foregroundFromStart(t)
	requireInstalled(t, currentVersion)
	if bypass() {
		t.Skip("the drain is holdfast's; nothing to measure straight to the gateway")
	}
	ctx := context.Background()
	gw := newGateway(t, gatewayOptions{Version: currentVersion})
	gw.Start(t, ctx)
	gw.WaitStarted(t, ctx, 90*time.Second)
	first := startHoldfast(t, gw, holdfastOptions{})

	home := cliHome(t)
	script, _ := filepath.Abs(filepath.Join("testdata", "drain", "session.mjs"))
	runtime := filepath.Join(filepath.Dir(openclawEntry(currentVersion)), "dist", "plugin-sdk", "gateway-runtime.js")
	cmd := exec.Command(nodeBin(), script, runtime, first.URL(), gw.Token)
	cmd.Dir = home
	cmd.Env = isolatedEnv(home, filepath.Join(home, ".openclaw", "openclaw.json"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	events := make(chan sessionEvent, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e sessionEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				events <- e
			} else {
				t.Logf("session.mjs: %s", sc.Text())
			}
		}
		close(events)
	}()
	next := func(want string, limit time.Duration) sessionEvent {
		t.Helper()
		deadline := time.After(limit)
		for {
			select {
			case e, ok := <-events:
				if !ok {
					t.Fatalf("the client exited while waiting for %q", want)
				}
				t.Logf("client: %+v", e)
				if e.Ev == want {
					return e
				}
			case <-deadline:
				t.Fatalf("no %q from the client within %v", want, limit)
			}
		}
	}

	next("hello", 60*time.Second)
	sigterm := time.Now()
	first.Stop() // SIGTERM; returns once holdfast has exited
	stopped := time.Since(sigterm)
	second := startHoldfast(t, gw, holdfastOptions{Port: first.Port})
	closed := next("close", 30*time.Second)
	if closed.Code != 1012 || closed.Reason != "holdfast restarting" {
		t.Errorf("the client saw close %d %q; want 1012 \"holdfast restarting\"", closed.Code, closed.Reason)
	}
	hello := next("hello", 60*time.Second)
	figure(t, "drain: GatewayClient closed %d %q %v after SIGTERM (holdfast exited after %v); hello-ok again through a new holdfast on port %d %v after the close",
		closed.Code, closed.Reason, time.UnixMilli(closed.T).Sub(sigterm).Round(time.Millisecond), stopped.Round(time.Millisecond),
		second.Port, time.UnixMilli(hello.T).Sub(time.UnixMilli(closed.T)).Round(time.Millisecond))
}
