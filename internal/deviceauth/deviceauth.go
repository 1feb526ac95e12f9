// Package deviceauth implements the Ed25519 device identity that OpenClaw
// clients present in the connect handshake, and the gateway-side check of it.
//
// Encodings match the OpenClaw gateway exactly:
//   - the public key on the wire is the raw 32-byte Ed25519 key, base64url
//     without padding;
//   - the device id is the lowercase hex SHA-256 of that raw key;
//   - the signature is the raw 64-byte Ed25519 signature, base64url without
//     padding, over the UTF-8 bytes of the "|"-joined v3 (or legacy v2)
//     payload string.
package deviceauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Error is the type of the sentinel errors of this package; compare with
// errors.Is.
type Error string

func (e Error) Error() string { return string(e) }

// Errors returned by Verify and ParsePublicKey.
const (
	// ErrPublicKeyInvalid reports a public key that is not a well-formed
	// Ed25519 key.
	ErrPublicKeyInvalid = Error("device public key invalid")
	// ErrSignatureInvalid reports a signature that verifies over neither the
	// v3 nor the v2 payload.
	ErrSignatureInvalid = Error("device signature invalid")
)

// Identity is an Ed25519 device key pair. The zero value is not usable; use
// NewIdentity or IdentityFromPrivateKey. An Identity is safe for concurrent use.
type Identity struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

// NewIdentity generates a fresh random device identity.
func NewIdentity() (*Identity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("deviceauth: generate key: %w", err)
	}
	return &Identity{pub: pub, priv: priv}, nil
}

// IdentityFromPrivateKey wraps an existing Ed25519 private key. It panics if
// the key does not have ed25519.PrivateKeySize bytes.
func IdentityFromPrivateKey(priv ed25519.PrivateKey) *Identity {
	if len(priv) != ed25519.PrivateKeySize {
		panic("deviceauth: bad private key length")
	}
	return &Identity{pub: priv.Public().(ed25519.PublicKey), priv: priv}
}

// ID returns the device id: lowercase hex SHA-256 of the raw public key.
func (i *Identity) ID() string {
	sum := sha256.Sum256(i.pub)
	return hex.EncodeToString(sum[:])
}

// PublicKey returns the raw public key as base64url without padding, the
// form OpenClaw clients put in connect params device.publicKey.
func (i *Identity) PublicKey() string {
	return base64.RawURLEncoding.EncodeToString(i.pub)
}

// Sign signs p.V3() and returns the signature as base64url without padding,
// the form of connect params device.signature. p.DeviceID should equal i.ID().
func (i *Identity) Sign(p Payload) string {
	return base64.RawURLEncoding.EncodeToString(ed25519.Sign(i.priv, []byte(p.V3())))
}

// SignV2 signs the legacy p.V2() payload, which gateways still accept.
func (i *Identity) SignV2(p Payload) string {
	return base64.RawURLEncoding.EncodeToString(ed25519.Sign(i.priv, []byte(p.V2())))
}

// Payload holds the fields covered by a device signature.
type Payload struct {
	DeviceID   string
	ClientID   string
	ClientMode string
	Role       string
	Scopes     []string
	SignedAtMs int64
	// Token is auth.token, else auth.deviceToken, else auth.bootstrapToken,
	// else "".
	Token string
	Nonce string
	// Platform and DeviceFamily are only in v3; they are trimmed and
	// ASCII-lowercased before joining.
	Platform     string
	DeviceFamily string
}

// V2 returns "v2|deviceId|clientId|clientMode|role|scopes|signedAtMs|token|nonce"
// with scopes joined by ",".
func (p Payload) V2() string {
	return strings.Join(p.base("v2"), "|")
}

// V3 returns the v2 fields under the "v3" tag followed by
// "|platform|deviceFamily", both normalised (trimmed, ASCII-lowercased).
func (p Payload) V3() string {
	return strings.Join(append(p.base("v3"), NormalizeMetadata(p.Platform), NormalizeMetadata(p.DeviceFamily)), "|")
}

func (p Payload) base(version string) []string {
	return []string{
		version,
		p.DeviceID,
		p.ClientID,
		p.ClientMode,
		p.Role,
		strings.Join(p.Scopes, ","),
		strconv.FormatInt(p.SignedAtMs, 10),
		p.Token,
		p.Nonce,
	}
}

// NormalizeMetadata trims surrounding white space (as JavaScript's
// String.prototype.trim does) and lowercases ASCII letters only.
func NormalizeMetadata(s string) string {
	s = strings.TrimFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == '\uFEFF' })
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ParsePublicKey decodes a device public key: base64url (padding optional)
// of the raw 32-byte key, or a PEM "PUBLIC KEY" (SPKI) block.
func ParsePublicKey(publicKey string) (ed25519.PublicKey, error) {
	if strings.Contains(publicKey, "BEGIN") {
		block, _ := pem.Decode([]byte(publicKey))
		if block == nil {
			return nil, ErrPublicKeyInvalid
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, ErrPublicKeyInvalid
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, ErrPublicKeyInvalid
		}
		return pub, nil
	}
	raw, err := decodeBase64URL(publicKey)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, ErrPublicKeyInvalid
	}
	return ed25519.PublicKey(raw), nil
}

// DeviceIDFromPublicKey returns the device id (hex SHA-256 of the raw key)
// for a public key in any form ParsePublicKey accepts.
func DeviceIDFromPublicKey(publicKey string) (string, error) {
	pub, err := ParsePublicKey(publicKey)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:]), nil
}

// Verify checks signature over p.V3(), then over p.V2(), as the gateway
// does. It returns nil if either verifies, ErrPublicKeyInvalid if the key
// cannot be decoded, and ErrSignatureInvalid otherwise.
func Verify(publicKey, signature string, p Payload) error {
	_, err := VerifyVersion(publicKey, signature, p)
	return err
}

// VerifyVersion is Verify that also reports which payload verified: "v3" or
// "v2".
func VerifyVersion(publicKey, signature string, p Payload) (string, error) {
	pub, err := ParsePublicKey(publicKey)
	if err != nil {
		return "", err
	}
	sig, err := decodeBase64URL(signature)
	if err != nil {
		sig, err = base64.StdEncoding.DecodeString(signature)
		if err != nil {
			return "", ErrSignatureInvalid
		}
	}
	if len(sig) != ed25519.SignatureSize {
		return "", ErrSignatureInvalid
	}
	if ed25519.Verify(pub, []byte(p.V3()), sig) {
		return "v3", nil
	}
	if ed25519.Verify(pub, []byte(p.V2()), sig) {
		return "v2", nil
	}
	return "", ErrSignatureInvalid
}

// decodeBase64URL accepts base64url with or without "=" padding.
func decodeBase64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
