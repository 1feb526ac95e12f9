package main

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// pprofEnv names the environment variable that tells a profiling build of
// holdfast where to serve net/http/pprof.
const pprofEnv = "HOLDFAST_BENCH_PPROF"

// pprofSource is added to holdfast's main package, at build time only, when
// a CPU profile is asked for. holdfast serves no pprof itself; this file
// serves it on 127.0.0.1 when pprofEnv is set. It uses DefaultServeMux,
// which holdfast does not.
const pprofSource = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("` + pprofEnv + `"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
`

// pprofOverlay writes pprofSource to dir and returns a go build -overlay
// file that adds it to the package in src, leaving the checkout untouched.
func pprofOverlay(dir, src string) (string, error) {
	root, err := filepath.Abs(src)
	if err != nil {
		return "", err
	}
	file := filepath.Join(dir, "bench_pprof.go")
	if err := os.WriteFile(file, []byte(pprofSource), 0o644); err != nil {
		return "", err
	}
	b, err := json.Marshal(map[string]map[string]string{
		"Replace": {filepath.Join(root, "zz_bench_pprof.go"): file},
	})
	if err != nil {
		return "", err
	}
	overlay := filepath.Join(dir, "overlay.json")
	return overlay, os.WriteFile(overlay, b, 0o644)
}
