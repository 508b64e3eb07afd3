package layout

import (
	"strings"
	"testing"
)

// FuzzViewName checks the mapping between property values and the
// directory names of by-property/<key>/ both ways, for any bytes: a value's
// name is a valid single path component (no '/', no NUL, not "." or "..")
// that parses back to the value; a name parses to at most one value, whose
// name is that name again (no two spellings of one value); nothing panics.
//
//	go test -run '^$' -fuzz FuzzViewName -fuzztime 1m ./layout/
func FuzzViewName(f *testing.F) {
	for _, s := range []string{"", ".", "..", "...", "%", "%%", "%2F", "%2f", "%25", "%00", "%2E", "%2E%2E",
		"a/b", "a\x00b", "/", "\xff\xfe", "line\nbreak", "%2", "%zz", strings.Repeat("%", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name := ViewName(s)
		if name == "" && s != "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			t.Fatalf("ViewName(%q) = %q: not a path component", s, name)
		}
		if v, ok := ParseViewName(name); s != "" && (!ok || v != s) {
			t.Fatalf("ParseViewName(ViewName(%q)) = %q, %v", s, v, ok)
		}
		// s as a name someone looks up (the kernel passes no '/' or NUL).
		if strings.ContainsAny(s, "/\x00") {
			return
		}
		if v, ok := ParseViewName(s); ok {
			if ViewName(v) != s {
				t.Fatalf("ParseViewName(%q) = %q, whose name is %q: two names for one value", s, v, ViewName(v))
			}
			if Listed(v) && len(s) > 255 {
				t.Fatalf("value %q listed under a name of %d bytes", v, len(s))
			}
		}
	})
}
