package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/holdfast-proxy/holdfast/proxy"
)

// Config is holdfast's configuration file. Every key, its default and its
// meaning are documented in the shipped proxy.yaml and docs/configuration.md.
type Config struct {
	Listen         string          `yaml:"listen"`
	TLS            ListenTLSConfig `yaml:"tls"`
	TrustedProxies []string        `yaml:"trusted_proxies"`
	Upstream       UpstreamConfig  `yaml:"upstream"`
	Handshake      HandshakeConfig `yaml:"handshake"`
	Readiness      ReadinessConfig `yaml:"readiness"`
	Splice         SpliceConfig    `yaml:"splice"`
	Passthrough    PassConfig      `yaml:"passthrough"`
	Limits         LimitsConfig    `yaml:"limits"`
	Bridge         BridgeConfig    `yaml:"bridge"`
	Metrics        MetricsConfig   `yaml:"metrics"`
	Log            LogConfig       `yaml:"log"`
	Shutdown       ShutdownConfig  `yaml:"shutdown"`
	Memory         MemoryConfig    `yaml:"memory"`
}

// UpstreamConfig is the gateway holdfast fronts.
type UpstreamConfig struct {
	URL                  string        `yaml:"url"`
	DialTimeout          time.Duration `yaml:"dial_timeout"`
	MaxPreauthPerAddress int           `yaml:"max_preauth_per_address"`
	TLS                  TLSConfig     `yaml:"tls"`
}

// ListenTLSConfig turns the client listener into wss://.
type ListenTLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// TLSConfig applies to wss:// upstreams.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// HandshakeConfig bounds each client's handshake.
type HandshakeConfig struct {
	Budget          time.Duration `yaml:"budget"`
	LateDial        time.Duration `yaml:"late_dial"`
	PreauthTimeout  time.Duration `yaml:"preauth_timeout"`
	HoldMargin      time.Duration `yaml:"hold_margin"`
	AnswerTimeout   time.Duration `yaml:"answer_timeout"`
	DialBackoffBase time.Duration `yaml:"dial_backoff_base"`
	DialBackoffMax  time.Duration `yaml:"dial_backoff_max"`
}

// ReadinessConfig tunes the shared readiness watcher.
type ReadinessConfig struct {
	PollInterval time.Duration `yaml:"poll_interval"`
	FreshFor     time.Duration `yaml:"fresh_for"`
	ProbeTimeout time.Duration `yaml:"probe_timeout"`
}

// SpliceConfig tunes spliced sessions.
type SpliceConfig struct {
	WriteTimeout    time.Duration `yaml:"write_timeout"`
	CloseGrace      time.Duration `yaml:"close_grace"`
	MaxMessageBytes int64         `yaml:"max_message_bytes"`
	IdleParkAfter   time.Duration `yaml:"idle_park_after"`
}

// PassConfig lists the WebSocket paths that are not the control socket.
type PassConfig struct {
	WebSocketPaths        []string      `yaml:"websocket_paths"`
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
}

// LimitsConfig bounds what clients in their handshake may hold, all
// together.
type LimitsConfig struct {
	Handshakes   int   `yaml:"handshakes"`
	PreauthBytes int64 `yaml:"preauth_bytes"`
}

// BridgeConfig is the legacy bridge: protocol-3 clients carried to
// protocol-4 gateways.
type BridgeConfig struct {
	Enabled bool `yaml:"enabled"`
}

// MetricsConfig is the operational listener.
type MetricsConfig struct {
	Listen string `yaml:"listen"`
}

// LogConfig selects the log output.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
	// Access writes one info line per client connection when it ends
	// (docs/monitoring.md, "Access log").
	Access bool `yaml:"access"`
}

// ShutdownConfig shapes a graceful stop (docs/operations.md, "Drain").
type ShutdownConfig struct {
	DrainDelay time.Duration `yaml:"drain_delay"`
	Drain      time.Duration `yaml:"drain"`
	Grace      time.Duration `yaml:"grace"`
}

// MemoryConfig shapes what the process gives back to the operating system
// (docs/operations.md, "Memory").
type MemoryConfig struct {
	// ReleaseAfter: once no request has begun for this long after some
	// did, the heap's free pages are returned (0: never).
	ReleaseAfter time.Duration `yaml:"release_after"`
}

// DefaultConfig returns the configuration a file leaves unchanged: the
// values documented in proxy.yaml (a test pins the two together). The
// proxy's own settings take proxy.DefaultConfig's values: holdfast's
// defaults live there and nowhere else.
func DefaultConfig() Config {
	p := proxy.DefaultConfig()
	return Config{
		Listen: "127.0.0.1:18790",
		Upstream: UpstreamConfig{
			URL:                  "ws://127.0.0.1:18789",
			DialTimeout:          p.DialTimeout,
			MaxPreauthPerAddress: p.MaxPreauthPerAddress,
		},
		Handshake: HandshakeConfig{
			Budget:          p.Budget,
			LateDial:        p.LateDialMax,
			PreauthTimeout:  p.PreauthTimeout,
			HoldMargin:      p.HoldMargin,
			AnswerTimeout:   p.AnswerTimeout,
			DialBackoffBase: p.DialBackoffBase,
			DialBackoffMax:  p.DialBackoffMax,
		},
		Readiness: ReadinessConfig{
			PollInterval: p.ReadinessPollInterval,
			FreshFor:     p.ReadinessFreshFor,
			ProbeTimeout: p.ReadinessProbeTimeout,
		},
		Splice: SpliceConfig{
			WriteTimeout:    p.WriteTimeout,
			CloseGrace:      p.CloseGrace,
			MaxMessageBytes: p.MaxMessageBytes,
			IdleParkAfter:   p.IdleParkAfter,
		},
		Passthrough: PassConfig{
			WebSocketPaths:        p.PassthroughPaths,
			ResponseHeaderTimeout: p.PassthroughResponseHeaderTimeout,
		},
		Metrics: MetricsConfig{Listen: "127.0.0.1:9464"},
		Log:     LogConfig{Level: "info", Format: "text", Access: true},
		Shutdown: ShutdownConfig{
			DrainDelay: 5 * time.Second,
			Drain:      10 * time.Second,
			Grace:      25 * time.Second,
		},
		Bridge: BridgeConfig{Enabled: true},
		Memory: MemoryConfig{ReleaseAfter: time.Second},
		Limits: LimitsConfig{Handshakes: p.MaxHandshakes, PreauthBytes: p.MaxPreauthBytes},
	}
}

// LoadConfig reads a YAML file over DefaultConfig. Unknown keys are errors.
// It returns every problem found, each naming its YAML key.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	return ParseConfig(data)
}

// ParseConfig decodes and validates a configuration document.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		// Type errors leave the rest decoded: report them with every
		// other problem.
		return Config{}, errors.Join(yamlError(te, data), cfg.Validate())
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// yamlError rewords the decoder's messages so that they name the YAML key
// and the expected form, not Go types:
//
//	upstream.dial_timeot: unknown key (line 5)
//	handshake.budget: must be a duration such as "12s", got 12 (line 2)
func yamlError(te *yaml.TypeError, data []byte) error {
	paths := keyPaths(data)
	errs := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		line, rest := 0, e
		if _, err := fmt.Sscanf(e, "line %d:", &line); err == nil {
			rest = strings.TrimSpace(e[strings.Index(e, ":")+1:])
		}
		path := paths[line]
		switch {
		case strings.HasPrefix(rest, "field ") && strings.Contains(rest, " not found in type "):
			errs = append(errs, fmt.Errorf("%s: unknown key (line %d)", path, line))
		case strings.HasPrefix(rest, "cannot unmarshal "):
			// cannot unmarshal !!str `lots` into int64
			got := rest
			if a, b := strings.Index(rest, "`"), strings.LastIndex(rest, "`"); a >= 0 && b > a {
				got = rest[a+1 : b]
			}
			want := rest[strings.LastIndex(rest, " into ")+len(" into "):]
			switch want {
			case "time.Duration":
				want = `a duration such as "12s"`
			case "int", "int64":
				want = "an integer"
			case "bool":
				want = "true or false"
			case "string":
				want = "a string"
			default:
				want = "a " + strings.TrimPrefix(strings.TrimPrefix(want, "[]"), "main.")
			}
			if _, err := strconv.ParseFloat(got, 64); err != nil {
				got = strconv.Quote(got)
			}
			errs = append(errs, fmt.Errorf("%s: must be %s, got %s (line %d)", path, want, got, line))
		default:
			errs = append(errs, fmt.Errorf("config: %s", e))
		}
	}
	return errors.Join(errs...)
}

// keyPaths maps each line of a YAML document that holds a key or a list
// item to its dotted path, such as "upstream.tls.ca_file" or
// "trusted_proxies[1]".
func keyPaths(data []byte) map[int]string {
	var doc yaml.Node
	paths := make(map[int]string)
	if yaml.Unmarshal(data, &doc) != nil {
		return paths
	}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if prefix != "" {
					p = prefix + "." + k.Value
				}
				paths[k.Line] = p
				if v.Line != k.Line || v.Kind != yaml.ScalarNode {
					walk(v, p)
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", prefix, i)
				if _, ok := paths[c.Line]; !ok || c.Line != n.Line {
					paths[c.Line] = p
				}
				walk(c, p)
			}
		}
	}
	walk(&doc, "")
	return paths
}

// Validate checks every key and returns all problems at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	checkAddr := func(key, v string) {
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(key, "must be host:port, got %q", v)
		}
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be a positive duration, got %s", d)
		}
	}
	checkAddr("listen", c.Listen)
	checkAddr("metrics.listen", c.Metrics.Listen)
	if c.Listen == c.Metrics.Listen && !strings.HasSuffix(c.Listen, ":0") { // :0 picks a free port each
		bad("metrics.listen", "must differ from listen (%q)", c.Listen)
	}
	for i, p := range c.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i), "must be an IP address or CIDR, got %q", p)
		}
	}
	if u, err := url.Parse(c.Upstream.URL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		bad("upstream.url", "must be a ws:// or wss:// URL with a host, got %q", c.Upstream.URL)
	}
	positive("upstream.dial_timeout", c.Upstream.DialTimeout)
	if n := c.Upstream.MaxPreauthPerAddress; n < 1 || n > 32 {
		bad("upstream.max_preauth_per_address", "must be between 1 and 32 (the gateway refuses the 33rd), got %d", n)
	}
	if f := c.Upstream.TLS.CAFile; f != "" {
		// The same loader startup uses: what passes here starts.
		if _, err := loadCAPool(f); err != nil {
			bad("upstream.tls.ca_file", "%v", err)
		}
	}
	switch cert, key := c.TLS.CertFile, c.TLS.KeyFile; {
	case cert == "" && key == "":
	case cert == "" || key == "":
		bad("tls", "cert_file and key_file must be set together (cert_file %q, key_file %q)", cert, key)
	default:
		if _, err := loadKeyPair(cert, key); err != nil {
			bad("tls", "%v", err)
		}
	}
	positive("handshake.budget", c.Handshake.Budget)
	positive("handshake.preauth_timeout", c.Handshake.PreauthTimeout)
	positive("handshake.hold_margin", c.Handshake.HoldMargin)
	positive("handshake.answer_timeout", c.Handshake.AnswerTimeout)
	positive("handshake.dial_backoff_base", c.Handshake.DialBackoffBase)
	positive("handshake.dial_backoff_max", c.Handshake.DialBackoffMax)
	if c.Handshake.Budget >= 15*time.Second {
		bad("handshake.budget", "must be shorter than the clients' 15s connect timeout, got %s", c.Handshake.Budget)
	}
	if d := c.Handshake.LateDial; d < 0 || d >= 15*time.Second {
		bad("handshake.late_dial", "must be 0 (off) or shorter than current clients' 15s challenge timeout, got %s", d)
	}
	if c.Handshake.HoldMargin >= c.Handshake.PreauthTimeout && c.Handshake.PreauthTimeout > 0 {
		bad("handshake.hold_margin", "must be shorter than handshake.preauth_timeout (%s), got %s", c.Handshake.PreauthTimeout, c.Handshake.HoldMargin)
	}
	if c.Handshake.DialBackoffMax < c.Handshake.DialBackoffBase {
		bad("handshake.dial_backoff_max", "must be at least handshake.dial_backoff_base (%s), got %s", c.Handshake.DialBackoffBase, c.Handshake.DialBackoffMax)
	}
	positive("readiness.poll_interval", c.Readiness.PollInterval)
	positive("readiness.fresh_for", c.Readiness.FreshFor)
	positive("readiness.probe_timeout", c.Readiness.ProbeTimeout)
	positive("splice.write_timeout", c.Splice.WriteTimeout)
	positive("splice.close_grace", c.Splice.CloseGrace)
	if d := c.Splice.IdleParkAfter; d < 0 || (d > 0 && d < 10*time.Millisecond) {
		bad("splice.idle_park_after", "must be 0 (never park) or at least 10ms, got %s", d)
	}
	if c.Splice.MaxMessageBytes < 65536 {
		bad("splice.max_message_bytes", "must be at least 65536, got %d", c.Splice.MaxMessageBytes)
	}
	positive("passthrough.response_header_timeout", c.Passthrough.ResponseHeaderTimeout)
	for i, p := range c.Passthrough.WebSocketPaths {
		if !strings.HasPrefix(p, "/") || p == "/" {
			bad(fmt.Sprintf("passthrough.websocket_paths[%d]", i), "must be a path prefix starting with / (and not / itself), got %q", p)
		}
	}
	if c.Limits.Handshakes < 1 {
		bad("limits.handshakes", "must be at least 1, got %d", c.Limits.Handshakes)
	}
	if c.Limits.PreauthBytes < 65536 {
		bad("limits.preauth_bytes", "must be at least 65536 (one pre-auth frame), got %d", c.Limits.PreauthBytes)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	if c.Shutdown.DrainDelay < 0 {
		bad("shutdown.drain_delay", "must not be negative, got %s", c.Shutdown.DrainDelay)
	}
	if c.Shutdown.Drain < 0 {
		bad("shutdown.drain", "must not be negative, got %s", c.Shutdown.Drain)
	}
	positive("shutdown.grace", c.Shutdown.Grace)
	if d := c.Memory.ReleaseAfter; d < 0 || (d > 0 && d < 100*time.Millisecond) {
		bad("memory.release_after", "must be 0 (never release) or at least 100ms, got %s", d)
	}
	// The grace must cover the drain and the longest handshake that can be
	// in flight when upgrades stop being served, with their close grace.
	hs := max(c.Handshake.Budget, c.Handshake.PreauthTimeout-c.Handshake.HoldMargin)
	if need := c.Shutdown.DrainDelay + max(c.Shutdown.Drain, hs) + c.Splice.CloseGrace; c.Shutdown.Grace > 0 && c.Handshake.Budget < 15*time.Second && c.Shutdown.Grace < need {
		bad("shutdown.grace", "must be at least shutdown.drain_delay + the longer of shutdown.drain and the longest handshake (%s) + splice.close_grace = %s, got %s",
			hs, need, c.Shutdown.Grace)
	}
	return errors.Join(errs...)
}

// Warnings lists settings of a valid configuration that cannot do what
// they say, each naming its YAML key: holdfast runs with them, and
// -check-config and startup say so.
func (c Config) Warnings() []string {
	var w []string
	h := c.Handshake
	if h.LateDial > 0 && h.Budget < h.LateDial {
		w = append(w, fmt.Sprintf("handshake.budget: %s is shorter than handshake.late_dial (%s), whose wait comes first: "+
			"clients without an Origin header are held up to late_dial + budget = %s; set handshake.late_dial to 0 to bound every client by the budget",
			h.Budget, h.LateDial, h.LateDial+h.Budget))
	}
	if hold := h.PreauthTimeout - h.HoldMargin; hold > 0 && h.Budget > hold {
		w = append(w, fmt.Sprintf("handshake.budget: %s is longer than a connect can be held on its socket "+
			"(handshake.preauth_timeout - handshake.hold_margin = %s): device-signed clients are answered by then, and only dials and replays use the rest",
			h.Budget, hold))
	}
	if h.LateDial >= 10*time.Second {
		w = append(w, fmt.Sprintf("handshake.late_dial: 2026.4.x clients give up on their challenge after 10s: "+
			"with %s they close before holdfast hands it out while the gateway starts (current clients wait 15s)", h.LateDial))
	}
	return w
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// ProxyConfig converts the file's settings for the proxy package.
func (c Config) ProxyConfig() (proxy.Config, error) {
	u, err := url.Parse(c.Upstream.URL)
	if err != nil {
		return proxy.Config{}, err
	}
	var tlsConfig *tls.Config
	if u.Scheme == "wss" {
		tlsConfig = &tls.Config{
			ServerName:         c.Upstream.TLS.ServerName,
			InsecureSkipVerify: c.Upstream.TLS.InsecureSkipVerify, //nolint:gosec // operator's explicit choice
			MinVersion:         tls.VersionTLS12,
		}
		if f := c.Upstream.TLS.CAFile; f != "" {
			pool, err := loadCAPool(f)
			if err != nil {
				return proxy.Config{}, fmt.Errorf("upstream.tls.ca_file: %w", err)
			}
			tlsConfig.RootCAs = pool
		}
	}
	var trusted []netip.Prefix
	for _, p := range c.TrustedProxies {
		pf, _ := parsePrefix(p)
		trusted = append(trusted, pf)
	}
	return proxy.Config{
		Upstream:                         u,
		TLSClientConfig:                  tlsConfig,
		TrustedProxies:                   trusted,
		PassthroughPaths:                 c.Passthrough.WebSocketPaths,
		PassthroughResponseHeaderTimeout: c.Passthrough.ResponseHeaderTimeout,
		Budget:                           c.Handshake.Budget,
		LateDialMax:                      lateDialMax(c.Handshake.LateDial),
		DialTimeout:                      c.Upstream.DialTimeout,
		PreauthTimeout:                   c.Handshake.PreauthTimeout,
		HoldMargin:                       c.Handshake.HoldMargin,
		AnswerTimeout:                    c.Handshake.AnswerTimeout,
		MaxPreauthPerAddress:             c.Upstream.MaxPreauthPerAddress,
		DialBackoffBase:                  c.Handshake.DialBackoffBase,
		DialBackoffMax:                   c.Handshake.DialBackoffMax,
		WriteTimeout:                     c.Splice.WriteTimeout,
		CloseGrace:                       c.Splice.CloseGrace,
		MaxMessageBytes:                  c.Splice.MaxMessageBytes,
		IdleParkAfter:                    idleParkAfter(c.Splice.IdleParkAfter),
		MaxHandshakes:                    c.Limits.Handshakes,
		MaxPreauthBytes:                  c.Limits.PreauthBytes,
		ReadinessPollInterval:            c.Readiness.PollInterval,
		ReadinessFreshFor:                c.Readiness.FreshFor,
		ReadinessProbeTimeout:            c.Readiness.ProbeTimeout,
		DisableLegacyBridge:              !c.Bridge.Enabled,
	}, nil
}

// lateDialMax maps handshake.late_dial (0: off) to proxy.Config.LateDialMax
// (0: the default, negative: off).
func lateDialMax(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// idleParkAfter maps splice.idle_park_after to proxy.Config.IdleParkAfter:
// 0, never park, is negative there.
func idleParkAfter(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// loadCAPool reads a PEM file of CA certificates. Validate and ProxyConfig
// both use it, so that -check-config refuses what startup would.
func loadCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot be read: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %q", path)
	}
	return pool, nil
}
