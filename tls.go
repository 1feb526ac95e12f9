package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// loadKeyPair reads a PEM certificate chain and its private key, and checks
// that they belong together and that the certificate parses.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
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
// its files change (cert-manager and other rotators replace them in place):
// each TLS handshake looks at the files' metadata, at most once per
// checkEvery, and reloads the pair when either file changed. A pair that
// does not load is logged once, with its error, and the one in use is
// kept; sessions already open are never touched.
type certFiles struct {
	log        *slog.Logger
	checkEvery time.Duration

	mu       sync.Mutex
	certFile string
	keyFile  string
	cert     *tls.Certificate
	seen     [2]os.FileInfo // of the files when last tried
	checked  time.Time
	statErr  string // last metadata error logged
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
	s.certFile, s.keyFile, s.cert, s.seen, s.checked = certFile, keyFile, pair, seen, time.Now()
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

func (s *certFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); now.Sub(s.checked) >= s.checkEvery {
		s.checked = now
		s.refreshLocked()
	}
	return s.cert, nil
}

// refresh checks the files now (a reload asks for it).
func (s *certFiles) refresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = time.Now()
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
	s.cert = pair
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

// newTLSListener serves TLS on ln with the certificate of certs.
func newTLSListener(ln net.Listener, certs *certFiles) net.Listener {
	return tls.NewListener(ln, certs.config())
}
