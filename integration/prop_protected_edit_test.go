package integration

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestPropEditProtected: editors save a property file of a protected
// image (sed -i and vim -n write a temporary file and rename it onto the
// key; ed rewrites the file in place), leaving no stray property; mv
// within properties/ moves a value; rm of a key stays refused (EPERM).
func TestPropEditProtected(t *testing.T) {
	m := mount(t)
	requireTools(t, "sed", "vim", "ed", "mv", "rm")
	m.mkimage("n")
	writeProp(t, m, "n", "note", "aaa")
	writeProp(t, m, "n", "protected", "true")
	note := m.propFile("n", "note")
	keys := func() []string { return dirNames(t, m.images("n", "properties")) }
	before := keys()

	for _, ed := range []struct{ name, script, want string }{
		{"sed -i", `sed -i s/a/b/ "$1"`, "baa"},
		{"vim -n -es", `vim -u NONE -N -n -es -c 's/a/c/' -c wq "$1"`, "bca"},
		{"ed", `printf ',s/a/d/\nw\nq\n' | ed -s "$1"`, "bcd"},
	} {
		if r := shErr(ed.script, note); r.err != nil || r.stderr != "" {
			t.Errorf("%s on a protected image's property: %s, want exit 0", ed.name, r)
		}
		if got := m.prop("n", "note"); got != ed.want {
			t.Errorf("after %s: note is %q, want %q", ed.name, got, ed.want)
		}
		if got := keys(); !slices.Equal(got, before) {
			t.Errorf("after %s: properties/ lists %v, want %v (no stray temporary key)", ed.name, got, before)
		}
	}

	// mv moves a value; rm of a key is refused, whoever asks.
	run(t, "mv", note, m.propFile("n", "note2"))
	if got := m.prop("n", "note2"); got != "bcd" {
		t.Errorf("after mv note note2: note2 is %q, want bcd", got)
	}
	if _, err := os.Stat(note); !os.IsNotExist(err) {
		t.Errorf("after mv note note2: stat note: %v, want ENOENT", err)
	}
	r := execCmd("rm", m.propFile("n", "note2"))
	if r.err == nil || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("rm of a protected image's property: %s, want EPERM", r)
	}
	if m.prop("n", "protected") != "true" {
		t.Errorf("protected changed")
	}
}
