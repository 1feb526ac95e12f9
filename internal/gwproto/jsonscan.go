package gwproto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
)

// A minimal scanner over raw JSON that finds an object's members by byte
// offset, so that holdfast can change one value or leave out a member while
// every other byte of a frame stays as the peer wrote it. It assumes valid
// JSON: callers check with ValidJSON (json.Valid's verdict, faster) before
// they change anything. On any other input it reports failure (ok false)
// or reads nonsense, but never reads out of bounds.

// member is one member of a JSON object: data[start:end] is `"key": value`,
// data[vstart:end] the value.
type member struct {
	key        []byte // raw, between the quotes
	escaped    bool   // key holds a backslash escape
	start, end int
	vstart     int
}

// keyIs reports whether the member's key, unescaped, equals k.
func (m *member) keyIs(k string) bool {
	if !m.escaped {
		return string(m.key) == k
	}
	return m.escapedKeyIs(k)
}

// escapedKeyIs is keyIs for a key with an escape.
func (m *member) escapedKeyIs(k string) bool {
	var s string
	quoted := make([]byte, 0, len(m.key)+2)
	quoted = append(append(append(quoted, '"'), m.key...), '"')
	return json.Unmarshal(quoted, &s) == nil && s == k
}

// keyIn reports whether the member's key is one of keys.
func (m *member) keyIn(keys []string) bool {
	for _, k := range keys {
		if m.keyIs(k) {
			return true
		}
	}
	return false
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && data[i] <= ' ' {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string that opens at data[i] ('"').
// It jumps from quote to quote (bytes.IndexByte): a quote ends the string
// unless an odd run of backslashes stands before it.
func skipString(data []byte, i int) (int, bool) {
	for i++; i < len(data); i++ {
		q := bytes.IndexByte(data[i:], '"')
		if q < 0 {
			return 0, false
		}
		i += q
		n := 0
		for j := i - 1; j >= 0 && data[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return i + 1, true
		}
	}
	return 0, false
}

// skipValue returns the index after the value that starts at data[i].
func skipValue(data []byte, i int) (int, bool) {
	if i >= len(data) {
		return 0, false
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			if !structuralByte[data[i]] {
				i++
				continue
			}
			switch data[i] {
			case '"':
				var ok bool
				if i, ok = skipString(data, i); !ok {
					return 0, false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return 0, false
	default:
		start := i
		for i < len(data) {
			switch data[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i, i > start
			}
			i++
		}
		return i, i > start
	}
}

// structuralByte marks the bytes skipValue looks at inside a container.
var structuralByte = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}

// objectMembers appends the members of the object that starts at data[i]
// (after optional space) to dst. ok is false when there is no object there.
func objectMembers(data []byte, i int, dst []member) (members []member, ok bool) {
	i = skipSpace(data, i)
	if i >= len(data) || data[i] != '{' {
		return dst, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return dst, true
	}
	for i < len(data) {
		if data[i] != '"' {
			return dst, false
		}
		m := member{start: i}
		kend, ok := skipString(data, i)
		if !ok {
			return dst, false
		}
		m.key = data[i+1 : kend-1]
		m.escaped = bytes.IndexByte(m.key, '\\') >= 0
		i = skipSpace(data, kend)
		if i >= len(data) || data[i] != ':' {
			return dst, false
		}
		m.vstart = skipSpace(data, i+1)
		if m.end, ok = skipValue(data, m.vstart); !ok {
			return dst, false
		}
		dst = append(dst, m)
		i = skipSpace(data, m.end)
		if i >= len(data) {
			return dst, false
		}
		switch data[i] {
		case '}':
			return dst, true
		case ',':
			i = skipSpace(data, i+1)
		default:
			return dst, false
		}
	}
	return dst, false
}

// find returns the only member named k; dup reports more than one.
func find(ms []member, k string) (m *member, dup bool) {
	for i := range ms {
		if ms[i].keyIs(k) {
			if m != nil {
				return m, true
			}
			m = &ms[i]
		}
	}
	return m, false
}

// maxJSONDepth is encoding/json's nesting limit: deeper documents are not
// valid to json.Valid.
const maxJSONDepth = 10000

// ValidJSON reports whether data is one valid JSON value (surrounding
// space allowed), exactly as json.Valid reports it, nesting limit
// included (a fuzz test holds it to that), several times faster:
// encoding/json's scanner calls a function per byte, and a 15 KB hello-ok
// is most of a handshake's parsing. It allocates nothing for documents
// nested up to 32 deep.
func ValidJSON(data []byte) bool {
	_, ok, _ := scanJSON(data, nil, false, nil, nil)
	return ok
}

// validObjectMembers is ValidJSON and objectMembers in one pass: when data
// is valid JSON whose value is an object, it appends the object's members
// to dst, as objectMembers would, and reports true; otherwise false.
func validObjectMembers(data []byte, dst []member) ([]member, bool) {
	ms, ok, object := scanJSON(data, dst, true, nil, nil)
	return ms, ok && object
}

// pathDepth is how many keys deep scanJSON reads the members of nested
// objects along a path.
const pathDepth = 2

// scanJSON is ValidJSON's scan. With record, it also appends the members
// of the outermost value, when that is an object (object), to top. With
// an arena a too, top is a's free room (a.buf[a.used:]), and for each
// object that is the value of a member path[0] of the outermost object,
// or of a member path[1] of such an object, it places the object's
// members at the back of a's room and notes the object in a.nested (of
// duplicates, the last), so that reading it later need not scan it again.
func scanJSON(data []byte, top []member, record bool, a *memberArena, path []string) (members []member, ok, isObject bool) {
	var small [32]byte
	stack := small[:0] // '{' or '[' per open container
	i := skipSpace(data, 0)
	isObject = i < len(data) && data[i] == '{'
	record = record && isObject
	// Recording, level d (1 the outermost object) is stack depth d: rec
	// levels are read, m[d-1] is level d's member being read (open[d-1]),
	// onPath[d-1] whether its key is path[d-1]. Levels 2 and up are read
	// into a.buf from start[d-1] on (sp the next free member) and placed
	// at the back of the room when their object closes; ends[d-1] is
	// where that object starts in data.
	rec := 0
	if record {
		rec = 1
	}
	if a == nil || len(path) > pathDepth {
		path = nil
	}
	inArena := a != nil // top is still in a.buf
	var m [pathDepth + 1]member
	var open, onPath [pathDepth + 1]bool
	var start, from [pathDepth + 1]int
	sp := 0
	// newKey starts level d's member whose key's string runs from
	// data[s] to before data[kend], its value starting at vstart.
	newKey := func(d, s, kend, vstart int, escaped bool) {
		m[d-1], open[d-1] = newMember(data, s, kend, vstart, escaped), true
		onPath[d-1] = d <= len(path) && m[d-1].keyIs(path[d-1])
	}
	for {
		// A value starts at i.
		if i >= len(data) {
			return top, false, isObject
		}
		switch c := data[i]; {
		case c == '{' || c == '[':
			if len(stack) == maxJSONDepth {
				return top, false, isObject
			}
			stack = append(stack, c)
			d := len(stack)
			vstart := i
			i = skipSpace(data, i+1)
			if i < len(data) && data[i] == c+2 { // '}' or ']'
				stack = stack[:len(stack)-1]
				i++
				break
			}
			if c == '{' {
				if d >= 2 && rec == d-1 && open[d-2] && onPath[d-2] {
					// The value of a member on the path: read it too.
					if d == 2 {
						sp = a.used
						if inArena {
							sp += len(top)
						}
					}
					rec, start[d-1], from[d-1] = d, sp, vstart
				}
				s := i
				var kend int
				var escaped bool
				if kend, i, escaped, ok = memberKey(data, i); !ok {
					return top, false, isObject
				}
				if rec >= d {
					newKey(d, s, kend, i, escaped)
				}
			}
			continue
		case c == '"':
			if i, _, ok = skipValidString(data, i); !ok {
				return top, false, isObject
			}
		case c == '-' || (c >= '0' && c <= '9'):
			if i, ok = skipNumber(data, i); !ok {
				return top, false, isObject
			}
		case c == 't':
			if i, ok = skipLiteral(data, i, "true"); !ok {
				return top, false, isObject
			}
		case c == 'f':
			if i, ok = skipLiteral(data, i, "false"); !ok {
				return top, false, isObject
			}
		case c == 'n':
			if i, ok = skipLiteral(data, i, "null"); !ok {
				return top, false, isObject
			}
		default:
			return top, false, isObject
		}
		// A value ended at i: close containers, or go on to the next one.
		for {
			if d := len(stack); d >= 1 && rec >= d && open[d-1] {
				// Level d's member value ended at i.
				m[d-1].end = i
				open[d-1] = false
				switch {
				case d == 1 && inArena && a.used+len(top) >= a.end():
					// The back of the room is taken: top moves out.
					top = append(top[:len(top):len(top)], m[0])
					inArena = false
				case d == 1:
					top = append(top, m[0])
				case sp < a.end():
					a.buf[sp] = m[d-1]
					sp++
				default:
					rec, sp = d-1, start[d-1] // no room: this level is not kept
				}
			}
			i = skipSpace(data, i)
			if len(stack) == 0 {
				return top, i == len(data), isObject
			}
			if i >= len(data) {
				return top, false, isObject
			}
			t := stack[len(stack)-1]
			if data[i] == t+2 {
				if d := len(stack); d >= 2 && rec == d {
					// A level read along the path closes: to the back.
					n := sp - start[d-1]
					back := a.end() - n
					copy(a.buf[back:], a.buf[start[d-1]:sp])
					a.back += n
					for j := back; j < back+n; j++ { // offsets in the object
						mb := &a.buf[j]
						mb.start -= from[d-1]
						mb.vstart -= from[d-1]
						mb.end -= from[d-1]
					}
					a.nested[d-2] = object{data: data[from[d-1] : i+1], first: back, n: n}
					sp = start[d-1]
					rec = d - 1
				}
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			if data[i] != ',' {
				return top, false, isObject
			}
			i = skipSpace(data, i+1)
			if t == '{' {
				s := i
				var kend int
				var escaped bool
				if kend, i, escaped, ok = memberKey(data, i); !ok {
					return top, false, isObject
				}
				if d := len(stack); rec >= d {
					newKey(d, s, kend, i, escaped)
				}
			}
			break
		}
	}
}

// newMember is the member whose key's string runs from data[start] to
// before data[kend] (escaped: it holds a backslash escape) and whose value
// starts at vstart; its end is set once the value has been read.
func newMember(data []byte, start, kend, vstart int, escaped bool) member {
	return member{key: data[start+1 : kend-1], escaped: escaped, start: start, vstart: vstart}
}

// memberKey reads `"key" :` at data[i] and returns the index after the
// key's string and the index of the value after it (space skipped), and
// whether the key holds an escape.
func memberKey(data []byte, i int) (kend, vstart int, escaped, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return 0, 0, false, false
	}
	kend, escaped, ok = skipValidString(data, i)
	if !ok {
		return 0, 0, false, false
	}
	i = skipSpace(data, kend)
	if i >= len(data) || data[i] != ':' {
		return 0, 0, false, false
	}
	return kend, skipSpace(data, i+1), escaped, true
}

// skipValidString returns the index after the string that opens at data[i],
// checking its escapes and that it holds no control character; escaped
// reports a backslash escape in it. It looks at eight bytes at a time for
// the next one that is a quote, a backslash or a control character.
func skipValidString(data []byte, i int) (end int, escaped, ok bool) {
	i++
	for {
		// To the next byte that is not plain.
		for i+8 <= len(data) {
			if m := specialBytes(binary.LittleEndian.Uint64(data[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		for i < len(data) && plainStringByte[data[i]] {
			i++
		}
		if i >= len(data) {
			return 0, false, false
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1, escaped, true
		case c < 0x20:
			return 0, false, false
		}
		// A backslash.
		escaped = true
		i++
		if i >= len(data) {
			return 0, false, false
		}
		switch data[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		case 'u':
			if i+4 >= len(data) {
				return 0, false, false
			}
			for _, h := range data[i+1 : i+5] {
				if !isHex(h) {
					return 0, false, false
				}
			}
			i += 4
		default:
			return 0, false, false
		}
		i++
	}
}

// specialBytes marks (its high bit) each of the eight bytes of x, from its
// least significant, that is a quote, a backslash or a control character
// (below 0x20), and may mark bytes above a marked one: each test is the
// classic "has a byte less than n" of a word, whose lowest mark is exact.
func specialBytes(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := x ^ (ones * '"')
	b := x ^ (ones * '\\')
	return ((x-ones*0x20)&^x | (q-ones)&^q | (b-ones)&^b) & highs
}

// plainStringByte marks the bytes a string holds as they are: not a
// control character, a quote or a backslash.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// skipNumber returns the index after the JSON number at data[i].
func skipNumber(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	switch {
	case i >= len(data):
		return 0, false
	case data[i] == '0':
		i++
	case data[i] >= '1' && data[i] <= '9':
		i = skipDigits(data, i)
	default:
		return 0, false
	}
	if i < len(data) && data[i] == '.' {
		j := skipDigits(data, i+1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := skipDigits(data, i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}

func skipLiteral(data []byte, i int, lit string) (int, bool) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}
