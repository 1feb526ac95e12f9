package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
)

// After a burst of sessions, once no request has begun for
// memory.release_after, holdfast returns the heap's free pages and counts
// it, and does not again while no request begins; with the key at 0 it
// never does. The heap's figures are a stand-in holding 90 MB beyond its
// 10 MB live (the test process's own heap is shared with every other
// test); the release is the runtime's.
func TestMemoryReleasedAfterBurst(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		after time.Duration
	}{
		{"on", 200 * time.Millisecond},
		{"off", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			gw := startGW(t, fakegw.Config{Echo: true})
			cfg := testConfig(gw)
			cfg.Memory.ReleaseAfter = c.after
			r := startServeWith(t, cfg, controls{heap: func() (uint64, uint64) { return 100 << 20, 10 << 20 }})
			releases := func() string {
				for _, line := range strings.Split(get(t, r.metricsURL()+"/metrics"), "\n") {
					if v, ok := strings.CutPrefix(line, "holdfast_memory_releases_total "); ok {
						return v
					}
				}
				t.Fatal("no holdfast_memory_releases_total on /metrics")
				return ""
			}
			time.Sleep(time.Second)
			if got := releases(); got != "0" {
				t.Fatalf("%s releases before any request; want 0", got)
			}
			// The burst: five sessions at once.
			opts := testclient.Options{URL: "ws://" + r.ls.proxy.String(), Token: testToken}
			var wg sync.WaitGroup
			for i := range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, res, err := testclient.Connect(context.Background(), opts)
					if err != nil || !res.HelloOK {
						t.Errorf("client %d: %v %+v", i, err, res)
						return
					}
					t.Cleanup(func() { _ = s.Close() })
				}()
			}
			wg.Wait()
			after := "0"
			if c.after > 0 {
				waitFor(t, 10*time.Second, "a release", func() bool { return releases() != "0" })
				// A release for connects before the last may have
				// come first: the last one's is due within
				// release_after and a tick of it.
				time.Sleep(2 * c.after)
				after = releases()
			}
			time.Sleep(time.Second) // five times release_after, no request
			if got := releases(); got != after {
				t.Fatalf("%s releases, %s a second before, with no request since", got, after)
			}
		})
	}
}
