package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects log lines from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A certificate path that turns into something that is not a PEM file (a
// FIFO nobody writes, a file over 1 MiB, /dev/zero) is refused with a log
// line, and the pair in use stays: TLS handshakes go on, each at once,
// with the old certificate. Before, the files were read under the lock
// every handshake takes: the FIFO blocked every handshake until something
// wrote to it, and the 2 MiB file was loaded (/dev/zero, which would grow
// memory without bound, is not run against that code).
func TestTLSCertFileNotRegular(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		replace func(t *testing.T, dir, path string)
		want    string // in the error logged
	}{
		{"fifo", func(t *testing.T, dir, path string) {
			tmp := filepath.Join(dir, "fifo")
			if err := syscall.Mkfifo(tmp, 0o600); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				// Let a reader blocked on the FIFO go, if any.
				if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
			})
		}, "not a regular file"},
		{"file over 1 MiB", func(t *testing.T, dir, path string) {
			// The pair in use, padded: a valid PEM file, but too large.
			pem, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "big.tmp")
			if err := os.WriteFile(p, append(pem, bytes.Repeat([]byte("\n"), 2<<20)...), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(p, path); err != nil {
				t.Fatal(err)
			}
		}, "over the 1048576-byte limit"},
		{"/dev/zero", func(t *testing.T, dir, path string) {
			if _, err := os.Stat("/dev/zero"); err != nil {
				t.Skip("no /dev/zero")
			}
			tmp := filepath.Join(dir, "zero")
			if err := os.Symlink("/dev/zero", tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			certA := certPair(t, dir, "holdfast-a")
			logs := &lockedBuffer{}
			certs, err := newCertFiles(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), slog.New(slog.NewTextHandler(logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			certs.checkEvery = 10 * time.Millisecond
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			tln := tls.NewListener(ln, certs.config())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := tln.Accept()
					if err != nil {
						return
					}
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					_ = c.(*tls.Conn).Handshake()
					c.Close()
				}
			}()
			t.Cleanup(func() {
				ln.Close()
				wg.Wait()
			})
			roots := x509.NewCertPool()
			roots.AddCert(certA)

			tc.replace(t, dir, filepath.Join(dir, "tls.crt"))
			deadline := time.Now().Add(10 * time.Second)
			for i := 0; ; i++ {
				start := time.Now()
				d := &net.Dialer{Timeout: 3 * time.Second}
				c, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
				if err != nil {
					t.Fatalf("handshake %d with the old pair in use: %v (after %v)", i, err, time.Since(start))
				}
				served := c.ConnectionState().PeerCertificates[0]
				c.Close()
				if !served.Equal(certA) {
					t.Fatalf("handshake %d served %s; want the pair in use", i, served.Subject)
				}
				if strings.Contains(logs.String(), "tls: new certificate not loaded") && i >= 5 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no refusal logged after %d handshakes:\n%s", i, logs.String())
				}
				time.Sleep(15 * time.Millisecond)
			}
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("log does not say %q:\n%s", tc.want, logs.String())
			}
		})
	}
}

// readCertFile refuses what is not a regular file at once, and a regular
// file over the cap.
func TestReadCertFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := readCertFile(small); err != nil || string(b) != "pem" {
		t.Errorf("small file: %q, %v", b, err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, maxCertFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCertFile(big); err == nil {
		t.Error("a file over the cap was read")
	}
	if _, err := readCertFile(dir); err == nil {
		t.Error("a directory was read")
	}
	if _, err := readCertFile(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v; want not exist", err)
	}
}
