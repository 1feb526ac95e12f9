package main

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-proxy/holdfast/proxy"
)

func TestShippedConfigIsValidAndDefault(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig("proxy.yaml")
	if err != nil {
		t.Fatalf("proxy.yaml: %v", err)
	}
	// The shipped file documents the defaults: loading it must change
	// nothing.
	def := DefaultConfig()
	if got, want := strings.Join(strings.Fields(strings.ReplaceAll(sprint(cfg), "\n", " ")), " "),
		strings.Join(strings.Fields(strings.ReplaceAll(sprint(def), "\n", " ")), " "); got != want {
		t.Errorf("proxy.yaml differs from the defaults:\n file %s\n code %s", got, want)
	}
	if cfg.Upstream.URL != "ws://127.0.0.1:18789" || cfg.Handshake.Budget != 13500*time.Millisecond {
		t.Errorf("unexpected defaults: %+v", cfg)
	}
}

func TestEmptyConfigTakesDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if sprint(cfg) != sprint(DefaultConfig()) {
		t.Error("an empty file must give the defaults")
	}
}

func TestBadConfigs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"testdata/invalid-unknown-keys.yaml", []string{
			`listne: unknown key (line 2)`,
			`upstream.dial_timeot: unknown key (line 5)`,
		}},
		{"testdata/invalid-values.yaml", []string{
			`listen: must be host:port, got "nowhere"`,
			`trusted_proxies[1]: must be an IP address or CIDR, got "not-an-ip"`,
			`upstream.url: must be a ws:// or wss:// URL with a host, got "http://127.0.0.1:18789"`,
			`upstream.max_preauth_per_address: must be between 1 and 32 (the gateway refuses the 33rd), got 40`,
			`handshake.budget: must be shorter than the clients' 15s connect timeout, got 20s`,
			`handshake.hold_margin: must be a positive duration, got 0s`,
			`handshake.late_dial: must be 0 (off) or shorter than current clients' 15s challenge timeout, got 15s`,
			`log.level: must be debug, info, warn or error, got "loud"`,
			`log.format: must be text or json, got "xml"`,
		}},
		{"testdata/invalid-types.yaml", []string{
			`handshake.budget: must be a duration such as "12s", got 12`,
			`splice.max_message_bytes: must be an integer, got "lots"`,
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, err := LoadConfig(tc.file)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q; got:\n%v", w, err)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) {
				t.Errorf("%d problems reported; want %d:\n%v", n, len(tc.want), err)
			}
			if strings.Contains(err.Error(), "main.") || strings.Contains(err.Error(), "time.Duration") {
				t.Errorf("error shows Go type names:\n%v", err)
			}
		})
	}
}

func TestCheckConfigCommand(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if err := run([]string{"-check-config", "-config", "proxy.yaml"}, &out, &errOut, controls{}); err != nil {
		t.Fatalf("check of proxy.yaml: %v %s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "ok") {
		t.Errorf("stdout %q", out.String())
	}
	out.Reset()
	errOut.Reset()
	if err := run([]string{"-check-config", "-config", "testdata/invalid-values.yaml"}, &out, &errOut, controls{}); err == nil {
		t.Fatal("invalid config accepted")
	}
	if got := strings.Count(errOut.String(), "\n  - "); got != 9 {
		t.Errorf("listed %d problems; want 9:\n%s", got, errOut.String())
	}
}

// durationKey is one YAML value of a duration key and the value it must
// give.
type durationKey struct {
	yaml string
	want time.Duration
}

// checkDurationKey parses each case and compares what get reads of the
// configuration with the case's want; then each bad value must be refused
// with an error starting with refusal and ending in the value.
func checkDurationKey(t *testing.T, get func(Config) (time.Duration, error), cases []durationKey, bad []string, badYAML func(v string) string, refusal string) {
	t.Helper()
	for _, tc := range cases {
		cfg, err := ParseConfig([]byte(tc.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		got, err := get(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%q: %v; want %v", tc.yaml, got, tc.want)
		}
	}
	for _, v := range bad {
		_, err := ParseConfig([]byte(badYAML(v)))
		if err == nil || !strings.Contains(err.Error(), refusal) || !strings.Contains(err.Error(), v) {
			t.Errorf("%q: %v; want an error with %q", badYAML(v), err, refusal)
		}
	}
}

// inProxy reads a field of the proxy configuration a Config gives.
func inProxy(field func(proxy.Config) time.Duration) func(Config) (time.Duration, error) {
	return func(c Config) (time.Duration, error) {
		pc, err := c.ProxyConfig()
		return field(pc), err
	}
}

func TestLateDialKey(t *testing.T) {
	t.Parallel()
	checkDurationKey(t, inProxy(func(c proxy.Config) time.Duration { return c.LateDialMax }), []durationKey{
		{"", 9 * time.Second},
		{"handshake:\n  late_dial: 0s\n", -1},
		{"handshake:\n  late_dial: 8s\n", 8 * time.Second},
	}, []string{"-1s"}, func(v string) string { return "handshake:\n  late_dial: " + v + "\n" },
		"handshake.late_dial: must be 0 (off)")
}

// splice.idle_park_after: 500ms by default, 0 never parks (a negative
// proxy.Config.IdleParkAfter), and a negative or tiny value is refused,
// naming the key.
func TestIdleParkAfterKey(t *testing.T) {
	t.Parallel()
	checkDurationKey(t, inProxy(func(c proxy.Config) time.Duration { return c.IdleParkAfter }), []durationKey{
		{"", 500 * time.Millisecond},
		{"splice:\n  idle_park_after: 0s\n", -1},
		{"splice:\n  idle_park_after: 2s\n", 2 * time.Second},
	}, []string{"-1s", "5ms"}, func(v string) string { return "splice:\n  idle_park_after: " + v + "\n" },
		"splice.idle_park_after: must be 0 (never park) or at least 10ms, got ")
}

// memory.release_after: 1s by default, 0 never releases, and a negative or
// tiny value is refused, naming the key.
func TestReleaseAfterKey(t *testing.T) {
	t.Parallel()
	checkDurationKey(t, func(c Config) (time.Duration, error) { return c.Memory.ReleaseAfter, nil }, []durationKey{
		{"", time.Second},
		{"memory:\n  release_after: 0s\n", 0},
		{"memory:\n  release_after: 5s\n", 5 * time.Second},
	}, []string{"-1s", "50ms"}, func(v string) string { return "memory:\n  release_after: " + v + "\n" },
		"memory.release_after: must be 0 (never release) or at least 100ms, got ")
}

func sprint(c Config) string { return fmt.Sprintf("%+v", c) }

func TestBridgeSwitch(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if pc, _ := cfg.ProxyConfig(); pc.DisableLegacyBridge {
		t.Error("the legacy bridge must be on by default")
	}
	cfg, err = ParseConfig([]byte("bridge:\n  enabled: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if pc, _ := cfg.ProxyConfig(); !pc.DisableLegacyBridge {
		t.Error("bridge.enabled: false did not turn the bridge off")
	}
	_, err = ParseConfig([]byte("bridge:\n  enabled: sometimes\n"))
	if err == nil || !strings.Contains(err.Error(), `bridge.enabled: must be true or false, got "sometimes" (line 2)`) {
		t.Errorf("bad bridge.enabled: %v", err)
	}
	_, err = ParseConfig([]byte("bridge:\n  enable: true\n"))
	if err == nil || !strings.Contains(err.Error(), `bridge.enable: unknown key (line 2)`) {
		t.Errorf("misspelt key: %v", err)
	}
}

// The defaults live in proxy.DefaultConfig: the file's defaults, converted
// for the proxy, are exactly those (a default added in config.go alone, or
// differing, fails here).
func TestDefaultsLiveInOnePlace(t *testing.T) {
	t.Parallel()
	got, err := DefaultConfig().ProxyConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := proxy.DefaultConfig()
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range wv.NumField() {
		name := wv.Type().Field(i).Name
		w := wv.Field(i)
		if w.IsZero() {
			continue // no default: nothing to compare
		}
		g := gv.Field(i)
		if !reflect.DeepEqual(g.Interface(), w.Interface()) {
			// Fields the file does not set (MinAttempt) take the proxy's
			// default from zero: that is the same value.
			if g.IsZero() {
				continue
			}
			t.Errorf("proxy.Config.%s: the file's default is %v, proxy.DefaultConfig's %v", name, g.Interface(), w.Interface())
		}
	}
}
