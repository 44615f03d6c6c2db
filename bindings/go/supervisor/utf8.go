package supervisor

import (
	"strings"
	"unicode/utf8"
)

// lenientUTF8 returns s with each ill-formed part replaced by U+FFFD the way
// the Python binding decodes (CPython's "replace", the Unicode standard's
// recommended practice): one U+FFFD per maximal subpart, that is per
// longest prefix of a well-formed sequence, or per byte that begins none.
// So the same child output reads the same in both bindings
// (strings.ToValidUTF8 would fold a run of bad bytes into one U+FFFD).
func lenientUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			b.WriteByte(s[i])
			i++
			continue
		}
		if r, n := utf8.DecodeRuneInString(s[i:]); r != utf8.RuneError || n > 1 {
			b.WriteString(s[i : i+n])
			i += n
			continue
		}
		i += maximalSubpart(s[i:])
		b.WriteRune(utf8.RuneError)
	}
	return b.String()
}

// maximalSubpart is the length of the ill-formed part at the start of s
// (which does not begin a well-formed sequence): its lead byte and the
// continuation bytes that still fit the lead's ranges (Unicode Table 3-7).
func maximalSubpart(s string) int {
	c := s[0]
	need, lo, hi := 0, byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c == 0xED:
		need, hi = 2, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90
	case c == 0xF4:
		need, hi = 3, 0x8F
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	default:
		return 1
	}
	n := 1
	for ; n <= need && n < len(s); n++ {
		if s[n] < lo || s[n] > hi {
			break
		}
		lo, hi = 0x80, 0xBF
	}
	return n
}
