package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	_ "unsafe" // go:linkname, for gorillaClientConn

	"github.com/gorilla/websocket"
)

// openUpstream opens the upstream WebSocket for target (a ws:// or wss://
// URL) with the request headers hdr (upstreamHeader's), by deadline: TCP,
// TLS for wss, then holdfast's own upgrade request, written in one write,
// and the gateway's answer, parsed from what the upstream leg's batchConn
// read (a 101 and the challenge behind it usually arrive in one system
// call). It returns the connection in frame mode, its deadlines cleared,
// and the subprotocol the gateway chose.
//
// The answer is judged as gorilla's dialer judges it: a 101 whose Upgrade
// header lists "websocket", whose Connection header lists "upgrade"
// (tokens, any case) and whose Sec-WebSocket-Accept matches the key. A 101
// that fails any of these, or that names an extension (holdfast offers
// none; RFC 6455 §4.1), and any other answer below 400, is an *httpError
// marked broken (holdfast's own 502); an answer of 400 or more is an
// *httpError carrying the gateway's status, headers and body (up to 64
// KiB). Anything else (refused, reset, a deadline, bytes that are not
// HTTP) is returned as the transport error it is.
func (h *Handler) openUpstream(ctx context.Context, target string, hdr http.Header, deadline time.Time) (ws *websocket.Conn, protocol string, err error) {
	t, err := splitTarget(target)
	if err != nil {
		return nil, "", err
	}
	bc, err := h.dialTCP(ctx, t, deadline)
	if err != nil {
		return nil, "", err
	}
	// The upgrade ends as soon as ctx does (the client left, or its
	// handshake was displaced: limits.go), not at the deadline only.
	stop := context.AfterFunc(ctx, func() { _ = bc.SetDeadline(time.Now()) })
	defer func() {
		stop()
		if err != nil {
			_ = bc.Close()
			if ctx.Err() != nil {
				err = fmt.Errorf("%w: %w", ctx.Err(), err)
			}
		}
	}()
	_ = bc.SetDeadline(deadline)

	var key [24]byte
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	base64.StdEncoding.Encode(key[:], nonce[:])

	chunk := h.chunks.get()
	req, err := appendUpgradeRequest((*chunk)[:0], t, hdr, key[:])
	if err == nil {
		_, err = bc.Write(req)
	}
	h.chunks.put(chunk)
	if err != nil {
		return nil, "", err
	}

	chunk = h.chunks.get()
	defer h.chunks.put(chunk)
	head, complete, err := readHeaderBlock(bc, *chunk)
	if err != nil {
		return nil, "", err
	}
	accept := acceptKey(key[:])
	if complete {
		if v, ok := parseUpgradeAnswer(head); ok {
			if !v.valid(accept[:]) {
				return nil, "", &httpError{status: http.StatusBadGateway, header: http.Header{}, broken: true,
					body: []byte("holdfast: the gateway answered the upgrade with HTTP 101\n")}
			}
			if len(v.protocol) > 0 {
				protocol = string(v.protocol)
			}
			return h.clientConn(bc), protocol, nil
		}
	}
	// Not a plain 101: net/http reads the answer, whatever it is.
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(head), bc))
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, "", err
	}
	// resp.Body is not closed: closing it would read the rest of a body
	// of any size; the socket is closed instead (every path but the 101's
	// returns an error).
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols && br.Buffered() == 0 && answerFromHeader(resp.Header).valid(accept[:]):
		return h.clientConn(bc), resp.Header.Get("Sec-Websocket-Protocol"), nil
	case resp.StatusCode < 400:
		// Not an upgrade and not a refusal (200, a redirect, a 101 with a
		// wrong accept key): the gateway is broken, and a WebSocket
		// client could do nothing with that answer.
		return nil, "", &httpError{status: http.StatusBadGateway, header: http.Header{}, broken: true,
			body: fmt.Appendf(nil, "holdfast: the gateway answered the upgrade with HTTP %d\n", resp.StatusCode)}
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, "", &httpError{status: resp.StatusCode, header: resp.Header, body: body}
	}
}

// clientConn makes bc, upgraded, the client end of a WebSocket.
func (h *Handler) clientConn(bc *batchConn) *websocket.Conn {
	_ = bc.SetDeadline(time.Time{})
	bc.frameMode()
	return gorillaClientConn(bc, false, readBufferSize, writeBufferSize, h.bufPool, nil, nil)
}

// gorillaClientConn is gorilla's constructor of a *websocket.Conn over a
// connection whose upgrade is done: what its dialer calls once it has
// checked the 101, with the same arguments (isServer false, holdfast's
// buffer sizes and write buffer pool, no reader or write buffer of its
// own). gorilla exports no way to run a client connection over an upgrade
// made by someone else; go.mod pins the version whose signature this is,
// and every handshake test goes through it.
//
//go:linkname gorillaClientConn github.com/gorilla/websocket.newConn
func gorillaClientConn(conn net.Conn, isServer bool, readBufferSize, writeBufferSize int, writeBufferPool websocket.BufferPool, br *bufio.Reader, writeBuf []byte) *websocket.Conn

// upstreamTarget is what a dial needs of an upstream URL.
type upstreamTarget struct {
	tls bool
	// addr is host:port to dial, the scheme's port when the URL has none.
	addr string
	// host is the URL's authority, the Host header when the client sent
	// none.
	host string
	// requestURI is the path and query to request.
	requestURI string
}

// splitTarget takes apart a ws:// or wss:// URL made by upstreamURL.
func splitTarget(target string) (upstreamTarget, error) {
	var t upstreamTarget
	rest, ok := strings.CutPrefix(target, "ws://")
	if !ok {
		if rest, ok = strings.CutPrefix(target, "wss://"); !ok {
			return t, fmt.Errorf("upstream URL %q: not ws:// or wss://", target)
		}
		t.tls = true
	}
	t.host, t.requestURI = rest, "/"
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		t.host, t.requestURI = rest[:i], rest[i:]
		if t.requestURI[0] == '?' {
			t.requestURI = "/" + t.requestURI
		}
	}
	if i := strings.IndexByte(t.requestURI, '#'); i >= 0 {
		t.requestURI = t.requestURI[:i]
	}
	if t.host == "" || strings.Contains(t.host, "@") {
		return t, fmt.Errorf("upstream URL %q: no host, or user information", target)
	}
	t.addr = t.host
	if i := strings.LastIndexByte(t.host, ':'); i <= strings.LastIndexByte(t.host, ']') {
		if t.tls {
			t.addr += ":443"
		} else {
			t.addr += ":80"
		}
	}
	return t, nil
}

// dialTCP opens the upstream leg's socket to t by deadline (TLS for wss),
// wrapped in its batchConn. TLS runs below the batching layer, so that a
// burst of frames leaves in one TLS record.
func (h *Handler) dialTCP(ctx context.Context, t upstreamTarget, deadline time.Time) (*batchConn, error) {
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := h.netDialer.DialContext(dctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	if !t.tls {
		return newUpstreamBatchConn(c, h.chunks), nil
	}
	tc := tls.Client(c, tlsConfigFor(h.cfg.TLSClientConfig, t.addr))
	if err := tc.HandshakeContext(dctx); err != nil {
		c.Close()
		return nil, err
	}
	return newUpstreamBatchConn(tc, h.chunks), nil
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
func appendUpgradeRequest(b []byte, t upstreamTarget, hdr http.Header, key []byte) ([]byte, error) {
	if !validRequestURI(t.requestURI) {
		return nil, errors.New("upgrade request: control character in the request target")
	}
	host := t.host
	if vs := hdr["Host"]; len(vs) > 0 && vs[0] != "" {
		host = vs[0]
	}
	if !validHost(host) {
		return nil, errors.New("upgrade request: invalid Host header")
	}
	b = append(b, "GET "...)
	b = append(b, t.requestURI...)
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
func readHeaderBlock(bc *batchConn, buf []byte) (head []byte, complete bool, err error) {
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
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

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
