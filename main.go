// Command holdfast is a WebSocket reverse proxy for OpenClaw gateways. It
// absorbs the gateway's startup unavailability so that clients without retry
// logic connect anyway, then splices their sessions and exports what it did
// as Prometheus metrics.
//
// Usage:
//
//	holdfast -config proxy.yaml
//	holdfast -check-config -config proxy.yaml
//	holdfast -version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

func main() {
	// SIGTERM or SIGINT: drain; a second one: stop at once. SIGHUP: reload.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	stop := make(chan struct{}, 2)
	reload := make(chan struct{}, 1)
	go func() {
		for sig := range sigs {
			ch := stop
			if sig == syscall.SIGHUP {
				ch = reload
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	err := run(os.Args[1:], os.Stdout, os.Stderr, controls{stop: stop, reload: reload})
	signal.Stop(sigs)
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "holdfast:", err)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// controls is how the process steers serve (signals in main, calls in
// tests).
type controls struct {
	// stop: the first value starts a drain, the next stops at once.
	stop <-chan struct{}
	// reload re-reads the configuration file.
	reload <-chan struct{}
	// ready, if set, receives the bound addresses once serve listens.
	ready chan<- listeners
	// configPath is the file a reload reads (run sets it).
	configPath string
	// heap, if set, stands in for memrelease.HeapStats (tests).
	heap func() (held, live uint64)
}

// run parses args, then serves until a stop and the drain that follows it
// finish.
func run(args []string, stdout, stderr io.Writer, ctl controls) error {
	fs := flag.NewFlagSet("holdfast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "proxy.yaml", "path of the YAML configuration file")
	check := fs.Bool("check-config", false, "validate the configuration as startup would build it, list every problem, and exit")
	showVersion := fs.Bool("version", false, "print the version and the Go version that built holdfast, and exit")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "holdfast: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if *showVersion {
		fmt.Fprintf(stdout, "holdfast %s %s %s/%s\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
	// The same loading and validation for -check-config, startup and a
	// reload (LoadConfig reads the CA file and the certificate pair with
	// the loaders startup uses).
	cfg, err := LoadConfig(*configPath)
	if *check {
		if err != nil {
			fmt.Fprintf(stderr, "%s: invalid:\n", *configPath)
			for _, line := range splitLines(err.Error()) {
				fmt.Fprintf(stderr, "  - %s\n", line)
			}
			return errUsage
		}
		fmt.Fprintf(stdout, "%s: ok\n", *configPath)
		for _, w := range cfg.Warnings() {
			fmt.Fprintf(stdout, "  warning: %s\n", w)
		}
		return nil
	}
	if err != nil {
		return err
	}
	ctl.configPath = *configPath
	return serve(cfg, stderr, ctl)
}

// listeners reports the bound addresses once serve is listening (tests).
type listeners struct {
	proxy, metrics net.Addr
}

// version is set at link time (-ldflags "-X main.version=v1.2.3"); when
// empty, buildVersion falls back to what the Go toolchain stamped.
var version string

// buildVersion is holdfast's version: the linker-set one, else the main
// module's version as the toolchain stamped it (a tag, or a pseudo-version
// of the commit with "+dirty" for a modified tree), else "devel", followed
// by the commit when the toolchain recorded one ("devel+172b7ce1e0a2").
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	v := "devel"
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" {
		v += "+" + rev[:min(12, len(rev))] + dirty
	}
	return v
}

func newLogger(c LogConfig, level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// accessLog is the logger of the access log (log.access): the log itself,
// or nil for none.
func accessLog(c LogConfig, l *slog.Logger) *slog.Logger {
	if !c.Access {
		return nil
	}
	return l
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
