package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxCertFileSize bounds what holdfast reads of a certificate or key file:
// a PEM chain is a few KiB, and anything larger is not one.
const maxCertFileSize = 1 << 20

// readCertFile reads a certificate or key file: only a regular file (a
// symlink to one is fine) of at most maxCertFileSize bytes. It never
// blocks on what is not a regular file: a FIFO is opened without waiting
// for a writer and refused, as are devices such as /dev/zero.
func readCertFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() > maxCertFileSize {
		return nil, fmt.Errorf("%s: %d bytes, over the %d-byte limit for a PEM file", path, fi.Size(), maxCertFileSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCertFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCertFileSize {
		return nil, fmt.Errorf("%s: over the %d-byte limit for a PEM file", path, maxCertFileSize)
	}
	return b, nil
}

// loadKeyPair reads a PEM certificate chain and its private key
// (readCertFile), and checks that they belong together and that the
// certificate parses.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := readCertFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file %q: %w", certFile, err)
	}
	keyPEM, err := readCertFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("key_file %q: %w", keyFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cert_file %q, key_file %q: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("cert_file %q: %w", certFile, err)
		}
		pair.Leaf = leaf
	}
	return &pair, nil
}

// certFiles serves the client listener's certificate and re-reads it when
// its files change (cert-manager and other rotators replace them in place).
// A TLS handshake only reads the pair in use, from an atomic pointer; at
// most once per checkEvery it starts a check of the files' metadata in the
// background, which reloads the pair when either file changed. Reading
// files never happens under anything a handshake waits for, and reads only
// regular files up to maxCertFileSize (readCertFile). A pair that does not
// load is logged once, with its error, and the one in use is kept;
// sessions already open are never touched.
type certFiles struct {
	log        *slog.Logger
	checkEvery time.Duration

	cert     atomic.Pointer[tls.Certificate] // the pair in use
	checked  atomic.Int64                    // when a check last started (UnixNano)
	checking atomic.Bool                     // a background check is under way

	mu       sync.Mutex // serialises checks and setFiles; handshakes never take it
	certFile string
	keyFile  string
	seen     [2]os.FileInfo // of the files when last tried
	statErr  string         // last metadata error logged
}

// newCertFiles loads the pair once; it fails when it does not load.
func newCertFiles(certFile, keyFile string, log *slog.Logger) (*certFiles, error) {
	s := &certFiles{log: log, checkEvery: time.Second}
	if err := s.setFiles(certFile, keyFile); err != nil {
		return nil, err
	}
	return s, nil
}

// setFiles switches to another pair of files (a reload), loading it at once;
// on error the pair in use is kept.
func (s *certFiles) setFiles(certFile, keyFile string) error {
	seen, _ := stat2(certFile, keyFile)
	pair, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.certFile, s.keyFile, s.seen = certFile, keyFile, seen
	s.cert.Store(pair)
	s.checked.Store(time.Now().UnixNano())
	return nil
}

// config returns the listener's TLS configuration: TLS 1.2 at least,
// HTTP/1.1 only (a WebSocket upgrade needs it).
func (s *certFiles) config() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: s.getCertificate,
	}
}

// getCertificate returns the pair in use at once, and starts a background
// check of the files when the last one is checkEvery old.
func (s *certFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now().UnixNano()
	if last := s.checked.Load(); now-last >= int64(s.checkEvery) && s.checked.CompareAndSwap(last, now) &&
		s.checking.CompareAndSwap(false, true) {
		go func() {
			defer s.checking.Store(false)
			s.refresh()
		}()
	}
	return s.cert.Load(), nil
}

// refresh checks the files now (a reload asks for it, and the background
// check runs it).
func (s *certFiles) refresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked.Store(time.Now().UnixNano())
	s.refreshLocked()
}

func (s *certFiles) refreshLocked() {
	seen, err := stat2(s.certFile, s.keyFile)
	if err != nil {
		if err.Error() != s.statErr {
			s.statErr = err.Error()
			s.log.Error("tls: certificate files unreadable; keeping the certificate in use", "err", err)
		}
		return
	}
	s.statErr = ""
	if sameFile(seen[0], s.seen[0]) && sameFile(seen[1], s.seen[1]) {
		return
	}
	s.seen = seen
	pair, err := loadKeyPair(s.certFile, s.keyFile)
	if err != nil {
		s.log.Error("tls: new certificate not loaded; keeping the certificate in use", "err", err)
		return
	}
	s.cert.Store(pair)
	s.log.Info("tls: certificate reloaded", "cert_file", s.certFile, "subject", pair.Leaf.Subject.String(),
		"not_after", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

func stat2(a, b string) ([2]os.FileInfo, error) {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return [2]os.FileInfo{fa, fb}, errors.Join(errA, errB)
}

// sameFile reports whether two observations of a path show the same,
// unchanged file: same inode (a rename over it is a change), size and
// modification time.
func sameFile(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == b
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
