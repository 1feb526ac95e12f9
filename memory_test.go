package main

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
)

// After a burst of sessions, once no request has begun for
// memory.release_after, holdfast returns the heap's free pages, once,
// and counts it; with the key at 0 it never does.
func TestMemoryReleasedAfterBurst(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		after time.Duration
		want  string
	}{
		{"on", 200 * time.Millisecond, "1"},
		{"off", 0, "0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			gw := startGW(t, fakegw.Config{Echo: true})
			cfg := testConfig(gw)
			cfg.Memory.ReleaseAfter = c.after
			r := startServe(t, cfg, "")
			releases := func() string {
				for _, line := range strings.Split(get(t, r.metricsURL()+"/metrics"), "\n") {
					if v, ok := strings.CutPrefix(line, "holdfast_memory_releases_total "); ok {
						return v
					}
				}
				t.Fatal("no holdfast_memory_releases_total on /metrics")
				return ""
			}
			time.Sleep(2 * c.after)
			if got := releases(); got != "0" {
				t.Fatalf("%s releases before any request; want 0", got)
			}
			opts := testclient.Options{URL: "ws://" + r.ls.proxy.String(), Token: testToken}
			for i := range 5 {
				s, res, err := testclient.Connect(context.Background(), opts)
				if err != nil || !res.HelloOK {
					t.Fatalf("client %d: %v %+v", i, err, res)
				}
				echo(t, s, "burst")
				defer s.Close()
			}
			// Garbage the burst leaves (the test process's heap is
			// holdfast's): 64 MiB, referenced by nothing, in pieces too
			// large for the stack.
			for range 512 {
				runtime.KeepAlive(make([]byte, 128<<10))
			}
			if c.want == "1" {
				waitFor(t, 10*time.Second, "a release", func() bool { return releases() == "1" })
			}
			time.Sleep(time.Second) // well past release_after: no second release
			if got := releases(); got != c.want {
				t.Fatalf("%s releases after one burst; want %s", got, c.want)
			}
		})
	}
}
