// Command imagecheck runs holdfast's container image the way the Kubernetes
// manifests (deploy/kubernetes) run it and checks what it does:
//
//	go run ./internal/imagecheck -image holdfast:test -version v1.2.3 \
//	    -run-flags "--runtime runc"
//
// scripts/image.sh builds the image from the Dockerfile and then runs this.
// With podman, every container gets a read-only root filesystem, no
// capabilities, no privilege escalation, user 65532 and its configuration
// mounted read-only at /etc/holdfast, as the manifests' securityContext and
// ConfigMap volume do; it shares the host's network namespace and listens on
// 127.0.0.1 only. The checks:
//
//   - the image runs as 65532:65532 and has no shell;
//   - holdfast -version prints the VERSION the image was built with;
//   - in front of the fake gateway (internal/fakegw) in its startup window,
//     a device-signed client without retry logic that a straight connection
//     fails gets hello-ok through holdfast once the gateway has started;
//   - /readyz and /metrics answer, and holdfast_build_info carries VERSION;
//   - podman stop (SIGTERM, then SIGKILL after shutdown.grace + 5 s, as
//     terminationGracePeriodSeconds does) drains: /readyz answers 503, the
//     open session is closed with 1012, and the container exits 0 within
//     shutdown.grace.
//
// It exits 1 at the first failed check, with the container's log. It is not
// part of the holdfast binary.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/holdfast-proxy/holdfast/internal/deviceauth"
	"github.com/holdfast-proxy/holdfast/internal/fakegw"
	"github.com/holdfast-proxy/holdfast/internal/testclient"
	"github.com/holdfast-proxy/holdfast/internal/uuid"
)

// The drain the check configures: short, so that a stop takes seconds, and
// a grace that covers it as config validation requires.
const (
	drainDelay = 2 * time.Second
	drain      = 2 * time.Second
	grace      = 25 * time.Second
	// stopTimeout is podman stop's wait before SIGKILL, as
	// terminationGracePeriodSeconds is shutdown.grace + 5 s in the manifests.
	stopTimeout = grace + 5*time.Second
)

func main() {
	fs := flag.NewFlagSet("imagecheck", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.image, "image", "holdfast:test", "the image to check")
	fs.StringVar(&o.version, "version", "", "the VERSION build argument the image was built with (required)")
	fs.StringVar(&o.podman, "podman", "podman", "the podman binary")
	runFlags := fs.String("run-flags", "", "extra flags for every podman run, separated by spaces (e.g. \"--runtime runc --ulimit nofile=1024:1024\")")
	timeout := fs.Duration("timeout", 4*time.Minute, "bound on the whole check")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if o.version == "" {
		fmt.Fprintln(os.Stderr, "imagecheck: -version is required")
		os.Exit(2)
	}
	o.runFlags = strings.Fields(*runFlags)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imagecheck: FAIL:", err)
		cancel()
		os.Exit(1)
	}
}

type options struct {
	image, version, podman string
	runFlags               []string
}

// checker runs the checks and says what passed.
type checker struct {
	options
	out io.Writer
}

func (c *checker) okf(format string, args ...any) {
	fmt.Fprintf(c.out, "imagecheck: ok: "+format+"\n", args...)
}

// hardened are the podman run flags that match the manifests' container
// securityContext (and, --network host aside, nothing more).
func (c *checker) hardened() []string {
	return append([]string{"--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
		"--security-opt", "no-new-privileges", "--user", "65532:65532"}, c.runFlags...)
}

// podmanOut runs podman with args and returns its stdout; the error carries
// stderr.
func (c *checker) podmanOut(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.podman, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", c.podman, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func run(ctx context.Context, o options, out io.Writer) error {
	c := &checker{options: o, out: out}
	if err := c.imageConfig(ctx); err != nil {
		return err
	}
	if err := c.versionFlag(ctx); err != nil {
		return err
	}
	return c.serve(ctx)
}

// imageConfig checks the image's user and that it has no shell.
func (c *checker) imageConfig(ctx context.Context) error {
	user, err := c.podmanOut(ctx, "image", "inspect", "--format", "{{.Config.User}}", c.image)
	if err != nil {
		return err
	}
	if u := strings.TrimSpace(user); u != "65532:65532" {
		return fmt.Errorf("image user %q, want \"65532:65532\" (the manifests' runAsUser and runAsGroup)", u)
	}
	args := append(c.hardened(), "--entrypoint", "/bin/sh", c.image, "-c", "true")
	_, err = c.podmanOut(ctx, append([]string{"run"}, args...)...)
	var ee *exec.ExitError
	if err == nil {
		return errors.New("/bin/sh ran in the image: the runtime base must have no shell")
	}
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "no such file or directory") {
		return fmt.Errorf("running /bin/sh in the image failed, but not because it is missing: %w", err)
	}
	c.okf("image user 65532:65532, no /bin/sh")
	return nil
}

// versionFlag checks holdfast -version against the build argument.
func (c *checker) versionFlag(ctx context.Context) error {
	args := append(c.hardened(), c.image, "-version")
	got, err := c.podmanOut(ctx, append([]string{"run"}, args...)...)
	if err != nil {
		return err
	}
	got = strings.TrimSpace(got)
	if !strings.HasPrefix(got, "holdfast "+c.version+" go") {
		return fmt.Errorf("holdfast -version printed %q, want \"holdfast %s go…\"", got, c.version)
	}
	c.okf("-version: %s", got)
	return nil
}

// container is one running holdfast container; its output is kept for
// failure reports.
type container struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
}

// serve runs holdfast in front of the fake gateway and checks a client's
// way through the startup window, the operational endpoints and the stop.
func (c *checker) serve(ctx context.Context) (err error) {
	token := uuid.New()
	dev, err := deviceauth.NewIdentity()
	if err != nil {
		return err
	}
	// The window lasts until the check ends it, once holdfast has held the
	// client for it; the bound only matters if the check fails first.
	gw, err := fakegw.Start(fakegw.Config{Addr: "127.0.0.1:0", Token: token, StartupWindow: 3 * time.Minute})
	if err != nil {
		return err
	}
	defer gw.Close()

	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	listen, metricsAddr := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	dir, err := os.MkdirTemp("", "holdfast-imagecheck-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := writeConfig(dir, listen, metricsAddr, gw.URL()); err != nil {
		return err
	}

	ct, err := c.start(dir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n--- container log ---\n%s", err, ct.log.String())
		}
		select {
		case <-ct.done:
		default:
			_, _ = c.podmanOut(context.Background(), "rm", "--force", "--time", "0", ct.name)
			<-ct.done
		}
	}()

	mbase := "http://" + metricsAddr
	if err := waitStatus(ctx, ct, mbase+"/readyz", http.StatusOK, time.Minute); err != nil {
		return err
	}
	c.okf("/readyz answers 200 (config mounted read-only, %s)", listen)

	// Straight to the gateway the client fails: the window is real.
	direct, res, _ := testclient.Connect(ctx, testclient.Options{URL: gw.URL(), Token: token, Device: dev})
	if direct != nil {
		_ = direct.Close()
	}
	if res.HelloOK {
		return errors.New("the client got hello-ok straight from a gateway in its startup window")
	}

	// Through holdfast it waits out the window, which ends once holdfast
	// has held the client for it.
	type result struct {
		conn *testclient.Conn
		res  testclient.Result
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		conn, res, err := testclient.Connect(ctx, testclient.Options{URL: "ws://" + listen, Token: token, Device: dev})
		resc <- result{conn, res, err}
	}()
	held := []string{"holdfast_upstream_dials_delayed_total", "holdfast_connect_holds_total", "holdfast_upstream_retries_total"}
	if err := waitMetric(ctx, ct, mbase+"/metrics", held, 30*time.Second); err != nil {
		return fmt.Errorf("holdfast did not hold the client for the startup window: %w", err)
	}
	gw.SetStarted()
	r := <-resc
	if r.conn == nil || !r.res.HelloOK {
		return fmt.Errorf("device-signed client through holdfast: no hello-ok: %v (close %d %q)", r.err, r.res.CloseCode, r.res.CloseReason)
	}
	session := r.conn
	defer session.Close()
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	payload, err := session.Call(hctx, "health", nil)
	hcancel()
	if err != nil {
		return fmt.Errorf("health call through holdfast: %w", err)
	}
	if st := gw.Stats(); st.HelloOK < 1 {
		return fmt.Errorf("the gateway counted %d hello-ok, want at least 1", st.HelloOK)
	}
	c.okf("device-signed client without retries: refused straight, hello-ok through holdfast across the window; health %s", compact(payload))

	body, err := get(ctx, mbase+"/metrics")
	if err != nil {
		return err
	}
	if !hasSeries(body, "holdfast_build_info", fmt.Sprintf("version=%q", c.version)) {
		return fmt.Errorf("/metrics lacks holdfast_build_info with version %q", c.version)
	}
	c.okf("/metrics answers, holdfast_build_info version %q", c.version)

	return c.stop(ctx, ct, mbase, session)
}

// stop sends podman stop and checks the drain and the exit.
func (c *checker) stop(ctx context.Context, ct *container, mbase string, session *testclient.Conn) error {
	t0 := time.Now()
	stopErr := make(chan error, 1)
	go func() {
		_, err := c.podmanOut(ctx, "stop", "--time", strconv.Itoa(int(stopTimeout/time.Second)), ct.name)
		stopErr <- err
	}()
	if err := waitStatus(ctx, ct, mbase+"/readyz", http.StatusServiceUnavailable, grace); err != nil {
		return fmt.Errorf("after podman stop: %w", err)
	}
	// The session ends with 1012 once the drain reaches it.
	rctx, rcancel := context.WithTimeout(ctx, grace)
	defer rcancel()
	var closeErr *websocket.CloseError
	for {
		_, err := session.ReadMessage(rctx)
		if err == nil {
			continue
		}
		if !errors.As(err, &closeErr) || closeErr.Code != websocket.CloseServiceRestart {
			return fmt.Errorf("the open session ended with %v during the drain, want close 1012", err)
		}
		break
	}
	select {
	case <-ct.done:
	case <-time.After(grace):
		return fmt.Errorf("the container still ran %v after podman stop (shutdown.grace)", time.Since(t0).Round(time.Millisecond))
	}
	took := time.Since(t0)
	if err := <-stopErr; err != nil {
		return err
	}
	if ct.err != nil {
		return fmt.Errorf("container exit after podman stop: %w, want exit 0", ct.err)
	}
	if took >= grace {
		return fmt.Errorf("the container took %v to stop, want less than shutdown.grace %v", took, grace)
	}
	c.okf("podman stop: /readyz 503, session closed 1012 %q, exit 0 after %v (grace %v)", closeErr.Text, took.Round(time.Millisecond), grace)
	return nil
}

// start runs the image with the manifests' settings and the config in dir.
func (c *checker) start(dir string) (*container, error) {
	ct := &container{name: fmt.Sprintf("holdfast-imagecheck-%d", os.Getpid()), log: &syncBuffer{}, done: make(chan struct{})}
	args := append([]string{"run", "--name", ct.name}, c.hardened()...)
	args = append(args, "--volume", dir+":/etc/holdfast:ro", c.image)
	ct.cmd = exec.Command(c.podman, args...)
	ct.cmd.Stdout, ct.cmd.Stderr = ct.log, ct.log
	ct.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ct.cmd.Start(); err != nil {
		return nil, fmt.Errorf("podman run: %w", err)
	}
	go func() {
		ct.err = ct.cmd.Wait()
		close(ct.done)
	}()
	return ct, nil
}

// writeConfig writes proxy.yaml into dir, readable by user 65532.
func writeConfig(dir, listen, metricsAddr, upstream string) error {
	cfg := fmt.Sprintf(`# Written by internal/imagecheck: deploy/kubernetes/base/proxy.yaml on
# 127.0.0.1 in front of the fake gateway, with a short drain.
listen: %q
upstream:
  url: %q
metrics:
  listen: %q
log:
  level: info
  format: json
shutdown:
  drain_delay: %s
  drain: %s
  grace: %s
`, listen, upstream, metricsAddr, drainDelay, drain, grace)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "proxy.yaml"), []byte(cfg), 0o644)
}

// freePorts returns n ports of 127.0.0.1 that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// get fetches url and returns its body; a status other than 200 is an error.
func get(ctx context.Context, url string) (string, error) {
	code, body, err := fetch(ctx, url)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d", url, code)
	}
	return body, nil
}

func fetch(ctx context.Context, url string) (int, string, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// poll calls cond every 50 ms until it reports done, the container exits,
// or limit passes.
func poll(ctx context.Context, ct *container, limit time.Duration, what string, cond func() (bool, string)) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		done, state := cond()
		if done {
			return nil
		}
		last = state
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %s)", what, ctx.Err(), last)
		case <-deadline.C:
			return fmt.Errorf("%s: not within %v (last: %s)", what, limit, last)
		case <-ct.done:
			return fmt.Errorf("%s: the container exited: %v", what, ct.err)
		case <-tick.C:
		}
	}
}

// waitStatus waits until url answers want.
func waitStatus(ctx context.Context, ct *container, url string, want int, limit time.Duration) error {
	return poll(ctx, ct, limit, fmt.Sprintf("GET %s answering %d", url, want), func() (bool, string) {
		code, _, err := fetch(ctx, url)
		if err != nil {
			return false, err.Error()
		}
		return code == want, "status " + strconv.Itoa(code)
	})
}

// waitMetric waits until the sum of the named counters (all their series)
// is at least 1.
func waitMetric(ctx context.Context, ct *container, url string, names []string, limit time.Duration) error {
	return poll(ctx, ct, limit, fmt.Sprintf("%s > 0", strings.Join(names, " + ")), func() (bool, string) {
		body, err := get(ctx, url)
		if err != nil {
			return false, err.Error()
		}
		sum := 0.0
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "#") {
				continue
			}
			for _, n := range names {
				if rest, ok := strings.CutPrefix(line, n); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
					f := strings.Fields(line)
					if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
						sum += v
					}
				}
			}
		}
		return sum >= 1, "sum " + strconv.FormatFloat(sum, 'f', -1, 64)
	})
}

// hasSeries reports whether the exposition text has a series of metric
// whose labels include label (name="value").
func hasSeries(body, metric, label string) bool {
	for _, line := range strings.Split(body, "\n") {
		labels, ok := strings.CutPrefix(line, metric+"{")
		if !ok {
			continue
		}
		labels, _, _ = strings.Cut(labels, "}")
		for _, l := range strings.Split(labels, ",") {
			if l == label {
				return true
			}
		}
	}
	return false
}

// compact shortens a JSON payload for a log line.
func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	s := b.String()
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

// syncBuffer is a bytes.Buffer safe for the writes of podman's output
// copier and the reads of a failure report.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
