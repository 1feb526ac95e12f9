package testcert

import (
	"crypto/tls"
	"testing"
)

// TestServesLoopbackTLS: a pair made by New serves TLS on 127.0.0.1 to a
// client trusting Pool, and its PEM blocks load as a key pair.
func TestServesLoopbackTLS(t *testing.T) {
	t.Parallel()
	p, err := New("testcert")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM); err != nil {
		t.Fatalf("PEM blocks: %v", err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_ = c.(*tls.Conn).Handshake()
		c.Close()
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: p.Pool()})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "testcert" {
		t.Fatalf("served %q", got)
	}
	if q, _ := New("testcert"); q.Leaf.SerialNumber.Cmp(p.Leaf.SerialNumber) == 0 {
		t.Fatal("two pairs share a serial number")
	}
}
