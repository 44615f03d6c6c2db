package supervisor

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// The expected strings are what Python's bytes.decode("utf-8", "replace")
// gives (and so what the Python binding delivers) for the same bytes.
func TestLenientUTF8MatchesPython(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"bad \xff\xfe utf", "bad \uFFFD\uFFFD utf"},
		{"\xe2\x82a", "\uFFFDa"},
		{"\xe2\x82\xac", "\u20ac"},
		{"\xf0\x80\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xf0\x9f\x98", "\uFFFD"},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xc0\xaf", "\uFFFD\uFFFD"},
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xe0\x80\xaf", "\uFFFD\uFFFD\uFFFD"},
		{"a\x80b", "a\uFFFDb"},
		{"\xf1\x80\x80\xc3\xa9", "\uFFFD\u00e9"},
		{"\xef\xbf\xbd ok", "\uFFFD ok"},
		{"\xc3", "\uFFFD"},
		{"\xe2", "\uFFFD"},
		{"\xf5\x80", "\uFFFD\uFFFD"},
		{"plain ascii", "plain ascii"},
		{"", ""},
	} {
		if got := lenientUTF8(c.in); got != c.want {
			t.Errorf("lenientUTF8(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Whatever the bytes, the result is valid UTF-8 and valid input is kept.
func TestLenientUTF8IsValidAndKeepsValidText(t *testing.T) {
	var all []byte
	for i := 0; i < 256; i++ {
		for j := 0; j < 256; j += 17 {
			all = append(all, byte(i), byte(j), 'x')
		}
	}
	if got := lenientUTF8(string(all)); !utf8.ValidString(got) {
		t.Fatal("result is not valid UTF-8")
	}
	ok := strings.Repeat("héllo wörld \u20ac \U0001F600 ", 10)
	if lenientUTF8(ok) != ok {
		t.Fatal("valid text changed")
	}
}
