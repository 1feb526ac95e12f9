package wire

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// UpgradeError is an upgrade the gateway refused or broke.
type UpgradeError struct {
	// Status is the gateway's status, or 502 when Broken.
	Status int
	// Header and Body (up to 64 KiB) are the gateway's answer; empty when
	// Broken.
	Header http.Header
	Body   []byte
	// Broken: the answer was neither a valid 101 nor a refusal (a status
	// below 400): holdfast's own 502.
	Broken bool
}

func (e *UpgradeError) Error() string {
	return fmt.Sprintf("upstream refused the upgrade: HTTP %d", e.Status)
}

// Upgrade runs the client side of the WebSocket upgrade on c, a fresh
// upstream Conn whose deadline the caller has set: the request for t with
// the headers hdr (see appendUpgradeRequest), written in one write, then
// the gateway's answer, parsed from what c read (a 101 and the first frame
// behind it usually arrive in one system call). On success c is in frame
// mode, and protocol is the subprotocol the gateway chose.
//
// The answer is judged as gorilla's dialer judges it: a 101 whose Upgrade
// header lists "websocket", whose Connection header lists "upgrade"
// (tokens, any case) and whose Sec-WebSocket-Accept matches the key. A 101
// that fails any of these, or that names an extension (holdfast offers
// none; RFC 6455 §4.1), and any other answer below 400, is an
// *UpgradeError marked Broken; an answer of 400 or more is an
// *UpgradeError carrying the gateway's status, headers and body (up to 64
// KiB). Anything else is returned as the transport error it is.
func Upgrade(c *Conn, t Target, hdr http.Header, pool *Pool) (protocol string, err error) {
	var key [24]byte
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	base64.StdEncoding.Encode(key[:], nonce[:])

	chunk := pool.Get()
	req, err := appendUpgradeRequest((*chunk)[:0], t, hdr, key[:])
	if err == nil {
		_, err = c.Write(req)
	}
	pool.Put(chunk)
	if err != nil {
		return "", err
	}

	chunk = pool.Get()
	defer pool.Put(chunk)
	head, complete, err := readHeaderBlock(c, *chunk)
	if err != nil {
		return "", err
	}
	accept := acceptKey(key[:])
	if complete {
		if v, ok := parseUpgradeAnswer(head); ok {
			if !v.valid(accept[:]) {
				return "", &UpgradeError{Status: http.StatusBadGateway, Header: http.Header{}, Broken: true,
					Body: []byte("holdfast: the gateway answered the upgrade with HTTP 101\n")}
			}
			c.FrameMode()
			return string(v.protocol), nil
		}
	}
	// Not a plain 101: net/http reads the answer, whatever it is.
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(head), c))
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return "", err
	}
	// resp.Body is not closed: closing it would read the rest of a body
	// of any size; the caller closes the socket instead (every path but
	// the 101's returns an error).
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols && br.Buffered() == 0 && answerFromHeader(resp.Header).valid(accept[:]):
		c.FrameMode()
		return resp.Header.Get("Sec-Websocket-Protocol"), nil
	case resp.StatusCode < 400:
		// Not an upgrade and not a refusal (200, a redirect, a 101 with a
		// wrong accept key): the gateway is broken, and a WebSocket
		// client could do nothing with that answer.
		return "", &UpgradeError{Status: http.StatusBadGateway, Header: http.Header{}, Broken: true,
			Body: fmt.Appendf(nil, "holdfast: the gateway answered the upgrade with HTTP %d\n", resp.StatusCode)}
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return "", &UpgradeError{Status: resp.StatusCode, Header: resp.Header, Body: body}
	}
}

// Target is what a dial needs of an upstream URL.
type Target struct {
	TLS bool
	// addr is host:port to dial, the scheme's port when the URL has none.
	Addr string
	// host is the URL's authority, the Host header when the client sent
	// none.
	Host string
	// requestURI is the path and query to request.
	RequestURI string
}

// SplitTarget takes apart a ws:// or wss:// URL made by upstreamURL.
func SplitTarget(target string) (Target, error) {
	var t Target
	rest, ok := strings.CutPrefix(target, "ws://")
	if !ok {
		if rest, ok = strings.CutPrefix(target, "wss://"); !ok {
			return t, fmt.Errorf("upstream URL %q: not ws:// or wss://", target)
		}
		t.TLS = true
	}
	t.Host, t.RequestURI = rest, "/"
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		t.Host, t.RequestURI = rest[:i], rest[i:]
		if t.RequestURI[0] == '?' {
			t.RequestURI = "/" + t.RequestURI
		}
	}
	if i := strings.IndexByte(t.RequestURI, '#'); i >= 0 {
		t.RequestURI = t.RequestURI[:i]
	}
	if t.Host == "" || strings.Contains(t.Host, "@") {
		return t, fmt.Errorf("upstream URL %q: no host, or user information", target)
	}
	t.Addr = t.Host
	if i := strings.LastIndexByte(t.Host, ':'); i <= strings.LastIndexByte(t.Host, ']') {
		if t.TLS {
			t.Addr += ":443"
		} else {
			t.Addr += ":80"
		}
	}
	return t, nil
}

// errDuplicateHeader: a header holdfast's upgrade request sets itself came
// with the client's (upstreamHeader drops them all).
var errDuplicateHeader = errors.New("upgrade request: the headers hold one of the WebSocket handshake's own")

// appendUpgradeRequest appends to b the upgrade request for t with the
// headers hdr and key: the request line, Host (hdr's, or t's authority when
// hdr has none), the WebSocket handshake's headers, then every header of
// hdr as it is, its values with line breaks replaced and surrounding space
// trimmed, as net/http writes them. Content-Length, Transfer-Encoding and
// Trailer are left out (a GET without a body), as net/http leaves them out.
func appendUpgradeRequest(b []byte, t Target, hdr http.Header, key []byte) ([]byte, error) {
	if !validRequestURI(t.RequestURI) {
		return nil, errors.New("upgrade request: control character in the request target")
	}
	host := t.Host
	if vs := hdr["Host"]; len(vs) > 0 && vs[0] != "" {
		host = vs[0]
	}
	if !validHost(host) {
		return nil, errors.New("upgrade request: invalid Host header")
	}
	b = append(b, "GET "...)
	b = append(b, t.RequestURI...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	b = append(b, key...)
	b = append(b, "\r\nSec-WebSocket-Version: 13\r\n"...)
	for k, vs := range hdr {
		name := k
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		case "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions":
			return nil, errDuplicateHeader
		case "Sec-Websocket-Protocol":
			name = "Sec-WebSocket-Protocol" // as RFC 6455 spells it
		}
		for _, v := range vs {
			b = append(b, name...)
			b = append(b, ": "...)
			b = appendHeaderValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	return append(b, "\r\n"...), nil
}

// appendHeaderValue appends v with CR and LF replaced by spaces and
// surrounding space trimmed (net/http's headerNewlineToSpace and
// textproto.TrimString).
func appendHeaderValue(b []byte, v string) []byte {
	v = strings.Trim(v, " \t\r\n")
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

func validRequestURI(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return s != ""
}

// validHost accepts what can stand in a Host header: no space, no control
// characters, nothing that would end the line.
func validHost(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return s != ""
}

// websocketGUID is RFC 6455's key suffix.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptKey is the Sec-WebSocket-Accept that answers key (RFC 6455 §4.2.2).
func acceptKey(key []byte) [28]byte {
	var in [24 + len(websocketGUID)]byte
	n := copy(in[:], key)
	n += copy(in[n:], websocketGUID)
	sum := sha1.Sum(in[:n])
	var out [28]byte
	base64.StdEncoding.Encode(out[:], sum[:])
	return out
}

// readHeaderBlock reads the HTTP header block at the head of bc's stream
// into buf: bc, before frame mode, never hands out bytes past the block's
// end. complete is false when the block does not fit in buf; head then
// holds its start.
func readHeaderBlock(bc *Conn, buf []byte) (head []byte, complete bool, err error) {
	n := 0
	for n < len(buf) {
		k, err := bc.Read(buf[n:])
		n += k
		if bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) {
			return buf[:n], true, nil
		}
		if err != nil {
			if err == io.EOF && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, false, err
		}
	}
	return buf[:n], false, nil
}

// upgradeAnswer is what holdfast checks of a 101.
type upgradeAnswer struct {
	upgrade, connection bool // the tokens "websocket" and "upgrade" were listed
	accept              []byte
	protocol            []byte
	extensions          bool
}

// valid reports a 101 that completes holdfast's upgrade request.
func (a upgradeAnswer) valid(accept []byte) bool {
	return a.upgrade && a.connection && bytes.Equal(a.accept, accept) && !a.extensions
}

// parseUpgradeAnswer reads a complete header block that is a plain
// "HTTP/1.1 101" answer: a status line, then "Name: value" lines. ok is
// false for anything else (another status, a folded or malformed line),
// which net/http then reads. Of repeated headers, Sec-WebSocket-Accept and
// -Protocol count by their first value, as http.Header.Get reads them; the
// token lists by any value.
func parseUpgradeAnswer(head []byte) (a upgradeAnswer, ok bool) {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	code, found := bytes.CutPrefix(line, []byte("HTTP/1.1 101"))
	if !found || (len(code) > 0 && code[0] != ' ') {
		return a, false
	}
	var gotAccept, gotProtocol bool
	for {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(line) == 0 {
			return a, true
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found || !isToken(name) {
			return a, false
		}
		value = bytes.Trim(value, " \t")
		switch {
		case asciiEqualFold(name, "Upgrade"):
			a.upgrade = a.upgrade || hasToken(value, "websocket")
		case asciiEqualFold(name, "Connection"):
			a.connection = a.connection || hasToken(value, "upgrade")
		case asciiEqualFold(name, "Sec-WebSocket-Accept") && !gotAccept:
			a.accept, gotAccept = value, true
		case asciiEqualFold(name, "Sec-WebSocket-Protocol") && !gotProtocol:
			a.protocol, gotProtocol = value, true
		case asciiEqualFold(name, "Sec-WebSocket-Extensions"):
			a.extensions = true
		}
	}
}

// answerFromHeader is upgradeAnswer for a 101 that net/http read.
func answerFromHeader(h http.Header) upgradeAnswer {
	var a upgradeAnswer
	for _, v := range h.Values("Upgrade") {
		a.upgrade = a.upgrade || hasToken([]byte(v), "websocket")
	}
	for _, v := range h.Values("Connection") {
		a.connection = a.connection || hasToken([]byte(v), "upgrade")
	}
	a.accept = []byte(h.Get("Sec-Websocket-Accept"))
	a.protocol = []byte(h.Get("Sec-Websocket-Protocol"))
	_, a.extensions = h["Sec-Websocket-Extensions"]
	return a
}

// hasToken reports whether the comma-separated token list v holds token,
// in any case, read as gorilla reads one: the list ends at the first
// element that is not a token.
func hasToken(v []byte, token string) bool {
	for {
		v = bytes.TrimLeft(v, " \t")
		i := 0
		for i < len(v) && isTokenChar(v[i]) {
			i++
		}
		if i == 0 {
			return false
		}
		t := v[:i]
		v = bytes.TrimLeft(v[i:], " \t")
		if len(v) > 0 && v[0] != ',' {
			return false
		}
		if asciiEqualFold(t, token) {
			return true
		}
		if len(v) == 0 {
			return false
		}
		v = v[1:]
	}
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !isTokenChar(c) {
			return false
		}
	}
	return len(b) > 0
}

// isTokenChar: RFC 9110 tchar.
func isTokenChar(c byte) bool { return tokenChars[c] }

// tokenChars marks the bytes of RFC 9110 tchar.
var tokenChars = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0
	}
	return t
}()

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
