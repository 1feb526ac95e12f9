// Package procs starts, watches and measures the bench harness's child
// processes (proxies, upstreams, fake gateways), and kills them all on the
// way out.
package procs

import (
	"bufio"
	"context"
	"errors"
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
)

// ReadyPrefix starts the line a bench Child prints on stdout once it is
// listening; the rest of the line is its address.
const ReadyPrefix = "ready "

// Children owns every process the harness starts and kills them all in
// killAll. Each Child also gets SIGKILL from the kernel if the harness dies
// (Pdeathsig), so a panic in a goroutine leaves nothing behind.
type Children struct {
	Dir string // stderr logs of the Children go here

	mu    sync.Mutex
	procs []*Child
}

// Child is one process started by the harness.
type Child struct {
	Name string
	Cmd  *exec.Cmd
	Addr string // set by the ready line, or by the caller for holdfast
	Log  string // path of the stderr log
	done chan struct{}
}

// start runs bin with args (and env added to the harness's environment) as
// a Child in its own process group, its stderr going to a log file. When wantReady is set it waits for the ready line on
// stdout (bounded by timeout) and records the address.
func (cs *Children) Start(name, bin string, args []string, wantReady bool, timeout time.Duration, env ...string) (*Child, error) {
	logPath := filepath.Join(cs.Dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdout io.ReadCloser
	if wantReady {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			logf.Close()
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
	} else {
		cmd.Stdout = logf
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	cs.mu.Lock()
	cs.procs = append(cs.procs, c)
	cs.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	if !wantReady {
		return c, nil
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), ReadyPrefix) {
				lines <- strings.TrimPrefix(sc.Text(), ReadyPrefix)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout) // keep the pipe drained
	}()
	select {
	case c.Addr = <-lines:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("start %s: exited before ready (log %s)", name, logPath)
	case <-time.After(timeout):
		return nil, fmt.Errorf("start %s: not ready after %v (log %s)", name, timeout, logPath)
	}
}

// killAll sends SIGKILL to every Child's process group and waits briefly for
// each to be reaped.
func (cs *Children) KillAll() {
	cs.mu.Lock()
	procs := cs.procs
	cs.procs = nil
	cs.mu.Unlock()
	for _, c := range procs {
		c.Kill()
	}
}

// kill sends SIGKILL to the Child's process group and waits up to 2 s.
func (c *Child) Kill() {
	if c.Cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-c.Cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
}

// alive reports whether the Child is still running.
func (c *Child) Alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// rss returns the resident set size of the Child in bytes (VmRSS from
// /proc/PID/status).
func (c *Child) RSS() (int64, error) {
	return RSSOf(c.Cmd.Process.Pid)
}

// RSSOf returns VmRSS of pid in bytes.
func RSSOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, which
// Linux fixes at 100 for user space whatever the kernel's own tick rate.
const userHZ = 100

// cpu returns the CPU time the Child has used so far, user and system, all
// its threads included.
func (c *Child) CPU() (time.Duration, error) {
	return CPUOf(c.Cmd.Process.Pid)
}

// CPUOf returns utime+stime of pid from /proc/PID/stat.
func CPUOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing one. utime and stime are fields 14
	// and 15, so the 12th and 13th after it.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// RaiseFileLimit raises RLIMIT_NOFILE to its hard limit: every idle session
// costs a descriptor in the load generator, two in a proxy and one in the
// upstream.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}

// FreePort returns a 127.0.0.1 address with a port that was free a moment
// ago and that this process never handed out before: the kernel may offer a
// port it offered a moment earlier (that listener was closed at once), and
// two Children given one port would fail at random. Only holdfast and the
// window's gateway need it (their addresses are fixed before they start);
// bench Children listen on port 0 and report their address.
func FreePort() (string, error) {
	issuedPorts.Lock()
	defer issuedPorts.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			return "", err
		}
		if !issuedPorts.m[addr] {
			issuedPorts.m[addr] = true
			return addr, nil
		}
	}
	return "", errors.New("bench: every port the kernel offered was handed out before")
}

// issuedPorts holds every address FreePort handed out.
var issuedPorts = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

// WaitHTTP polls url until it answers 200 or ctx ends.
func WaitHTTP(ctx context.Context, c *Child, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if !c.Alive() {
			return fmt.Errorf("%s exited (log %s)", c.Name, c.Log)
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("%s: %s not ready (log %s)", c.Name, url, c.Log), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
