package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// readyPrefix starts the line a bench child prints on stdout once it is
// listening; the rest of the line is its address.
const readyPrefix = "ready "

// children owns every process the harness starts and kills them all in
// killAll. Each child also gets SIGKILL from the kernel if the harness dies
// (Pdeathsig), so a panic in a goroutine leaves nothing behind.
type children struct {
	dir string // stderr logs of the children go here

	mu    sync.Mutex
	procs []*child
}

// child is one process started by the harness.
type child struct {
	name string
	cmd  *exec.Cmd
	addr string // set by the ready line, or by the caller for holdfast
	log  string // path of the stderr log
	done chan struct{}
}

// start runs bin with args (and env added to the harness's environment) as
// a child in its own process group, its stderr going to a log file. When wantReady is set it waits for the ready line on
// stdout (bounded by timeout) and records the address.
func (cs *children) start(name, bin string, args []string, wantReady bool, timeout time.Duration, env ...string) (*child, error) {
	logPath := filepath.Join(cs.dir, name+".log")
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
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
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
			if strings.HasPrefix(sc.Text(), readyPrefix) {
				lines <- strings.TrimPrefix(sc.Text(), readyPrefix)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout) // keep the pipe drained
	}()
	select {
	case c.addr = <-lines:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("start %s: exited before ready (log %s)", name, logPath)
	case <-time.After(timeout):
		return nil, fmt.Errorf("start %s: not ready after %v (log %s)", name, timeout, logPath)
	}
}

// killAll sends SIGKILL to every child's process group and waits briefly for
// each to be reaped.
func (cs *children) killAll() {
	cs.mu.Lock()
	procs := cs.procs
	cs.procs = nil
	cs.mu.Unlock()
	for _, c := range procs {
		c.kill()
	}
}

// kill sends SIGKILL to the child's process group and waits up to 2 s.
func (c *child) kill() {
	if c.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
}

// alive reports whether the child is still running.
func (c *child) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// rss returns the resident set size of the child in bytes (VmRSS from
// /proc/PID/status).
func (c *child) rss() (int64, error) {
	return rssOf(c.cmd.Process.Pid)
}

// rssOf returns VmRSS of pid in bytes.
func rssOf(pid int) (int64, error) {
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

// cpu returns the CPU time the child has used so far, user and system, all
// its threads included.
func (c *child) cpu() (time.Duration, error) {
	return cpuOf(c.cmd.Process.Pid)
}

// cpuOf returns utime+stime of pid from /proc/PID/stat.
func cpuOf(pid int) (time.Duration, error) {
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

// raiseFileLimit raises RLIMIT_NOFILE to its hard limit: every idle session
// costs a descriptor in the load generator, two in a proxy and one in the
// upstream.
func raiseFileLimit() (uint64, error) {
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

// freePort returns a 127.0.0.1 address with a port that was free a moment
// ago and that this process never handed out before: the kernel may offer a
// port it offered a moment earlier (that listener was closed at once), and
// two children given one port would fail at random. Only holdfast and the
// window's gateway need it (their addresses are fixed before they start);
// bench children listen on port 0 and report their address.
func freePort() (string, error) {
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

// issuedPorts holds every address freePort handed out.
var issuedPorts = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

// waitHTTP polls url until it answers 200 or ctx ends.
func waitHTTP(ctx context.Context, c *child, url string) error {
	client := newHTTPClient()
	for {
		req, err := httpGet(ctx, url)
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
		if !c.alive() {
			return fmt.Errorf("%s exited (log %s)", c.name, c.log)
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("%s: %s not ready (log %s)", c.name, url, c.log), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
