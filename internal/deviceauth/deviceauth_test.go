package deviceauth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

func samplePayload(id string) Payload {
	return Payload{
		DeviceID:     id,
		ClientID:     "cli",
		ClientMode:   "cli",
		Role:         "operator",
		Scopes:       []string{"operator.admin", "operator.read"},
		SignedAtMs:   1700000000123,
		Token:        "tok",
		Nonce:        "4f1c2a9e-0000-4000-8000-000000000001",
		Platform:     "  Linux ",
		DeviceFamily: "Desktop",
	}
}

func TestPayloadStrings(t *testing.T) {
	t.Parallel()
	p := samplePayload("dev")
	if got, want := p.V2(), "v2|dev|cli|cli|operator|operator.admin,operator.read|1700000000123|tok|4f1c2a9e-0000-4000-8000-000000000001"; got != want {
		t.Errorf("V2 = %q, want %q", got, want)
	}
	if got, want := p.V3(), "v3|dev|cli|cli|operator|operator.admin,operator.read|1700000000123|tok|4f1c2a9e-0000-4000-8000-000000000001|linux|desktop"; got != want {
		t.Errorf("V3 = %q, want %q", got, want)
	}
	empty := Payload{DeviceID: "d", ClientID: "c", ClientMode: "m", Role: "r", Nonce: "n"}
	if got, want := empty.V3(), "v3|d|c|m|r||0||n||"; got != want {
		t.Errorf("empty V3 = %q, want %q", got, want)
	}
}

func TestNormalizeMetadata(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"  MacOS\t", "macos"},
		{"ÄBC", "Äbc"}, // only ASCII letters are lowered
		{"\uFEFFiPhone\n", "iphone"},
	} {
		if got := NormalizeMetadata(tc.in); got != tc.want {
			t.Errorf("NormalizeMetadata(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestIdentityEncodings(t *testing.T) {
	t.Parallel()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(id.PublicKey())
	if err != nil || len(raw) != ed25519.PublicKeySize {
		t.Fatalf("PublicKey %q: not base64url of 32 raw bytes (%v)", id.PublicKey(), err)
	}
	if strings.ContainsAny(id.PublicKey(), "+/=") {
		t.Errorf("PublicKey %q is not unpadded base64url", id.PublicKey())
	}
	sum := sha256.Sum256(raw)
	if id.ID() != hex.EncodeToString(sum[:]) {
		t.Errorf("ID %q is not hex sha256 of the raw key", id.ID())
	}
	got, err := DeviceIDFromPublicKey(id.PublicKey())
	if err != nil || got != id.ID() {
		t.Errorf("DeviceIDFromPublicKey = %q, %v; want %q", got, err, id.ID())
	}
	der, err := x509.MarshalPKIXPublicKey(id.pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if got, err := DeviceIDFromPublicKey(pemKey); err != nil || got != id.ID() {
		t.Errorf("DeviceIDFromPublicKey(PEM) = %q, %v; want %q", got, err, id.ID())
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	p := samplePayload(id.ID())
	sig := id.Sign(p)
	tampered := p
	tampered.Nonce = "other"
	platformCase := p
	platformCase.Platform = "LINUX" // normalises to the same v3 string

	tests := []struct {
		name    string
		key     string
		sig     string
		p       Payload
		version string
		err     error
	}{
		{"v3", id.PublicKey(), sig, p, "v3", nil},
		{"v3 padded", id.PublicKey() + "=", sig + "==", p, "v3", nil},
		{"v3 std base64 signature", id.PublicKey(), base64.StdEncoding.EncodeToString(mustDecode(t, sig)), p, "v3", nil},
		{"v3 platform case", id.PublicKey(), sig, platformCase, "v3", nil},
		{"v2", id.PublicKey(), id.SignV2(p), p, "v2", nil},
		{"tampered nonce", id.PublicKey(), sig, tampered, "", ErrSignatureInvalid},
		{"wrong key", other.PublicKey(), sig, p, "", ErrSignatureInvalid},
		{"garbage signature", id.PublicKey(), "!!!", p, "", ErrSignatureInvalid},
		{"short key", "AAAA", sig, p, "", ErrPublicKeyInvalid},
		{"bad key", "***", sig, p, "", ErrPublicKeyInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := VerifyVersion(tc.key, tc.sig, tc.p)
			if !errors.Is(err, tc.err) || v != tc.version {
				t.Fatalf("VerifyVersion = %q, %v; want %q, %v", v, err, tc.version, tc.err)
			}
			if err := Verify(tc.key, tc.sig, tc.p); !errors.Is(err, tc.err) {
				t.Fatalf("Verify = %v, want %v", err, tc.err)
			}
		})
	}
}

// TestKnownVector pins the encodings with a fixed key so that a change in
// payload layout or encoding is caught.
func TestKnownVector(t *testing.T) {
	t.Parallel()
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	id := IdentityFromPrivateKey(ed25519.NewKeyFromSeed(seed))
	if got, want := id.PublicKey(), "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"; got != want {
		t.Errorf("PublicKey = %q, want %q", got, want)
	}
	p := samplePayload(id.ID())
	sig := id.Sign(p)
	if len(sig) != 86 {
		t.Errorf("signature length %d, want 86 base64url chars", len(sig))
	}
	if err := Verify(id.PublicKey(), sig, p); err != nil {
		t.Error(err)
	}
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
