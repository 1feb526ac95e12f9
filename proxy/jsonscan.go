package proxy

import (
	"bytes"
	"encoding/json"
)

// A minimal scanner over raw JSON that finds an object's members by byte
// offset, so that holdfast can change one value or leave out a member while
// every other byte of a frame stays as the peer wrote it. It assumes valid
// JSON: callers check with json.Valid before they change anything.

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
	for i < len(data) {
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
func skipString(data []byte, i int) (int, bool) {
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
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
