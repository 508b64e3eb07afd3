package vhd

import (
	"encoding/json"
	"regexp"
	"testing"
)

func TestStrings(t *testing.T) {
	for v, want := range map[Severity]string{Warning: "warning", Unsafe: "unsafe", Invalid: "invalid", 0: "severity(0)"} {
		if v.String() != want {
			t.Errorf("Severity(%d) = %q, want %q", int(v), v.String(), want)
		}
	}
	for v, want := range map[DiskType]string{2: "fixed", 3: "dynamic", 4: "differencing", 5: "unknown(5)", 0: "unknown(0)"} {
		if v.String() != want {
			t.Errorf("DiskType(%d) = %q, want %q", uint32(v), v.String(), want)
		}
	}
	i := &Info{CreatorVersion: 0x000A0000}
	if got := i.CreatorVersionString(); got != "10.0" {
		t.Errorf("CreatorVersionString = %q", got)
	}
	if got := fourCC([4]byte{'t', 'a', 'p', 0}); got != "tap" {
		t.Errorf("fourCC(tap\\0) = %q", got)
	}
	if got := fourCC([4]byte{'w', 'i', 'n', ' '}); got != "win " {
		t.Errorf("fourCC(win ) = %q", got)
	}
	if got := fourCC([4]byte{'a', '\n', 0xff, 0}); got != `a\x0a\xff` {
		t.Errorf("fourCC escapes: %q", got)
	}
}

func TestFindingJSON(t *testing.T) {
	f := Finding{Severity: Unsafe, Rule: "differencing-disk", Message: "m"}
	b, err := json.Marshal(f)
	if err != nil || string(b) != `{"severity":"unsafe","rule":"differencing-disk","message":"m"}` {
		t.Fatalf("%s %v", b, err)
	}
	var back Finding
	if err := json.Unmarshal(b, &back); err != nil || back != f {
		t.Fatalf("%+v %v", back, err)
	}
	if _, err := json.Marshal(Finding{}); err == nil {
		t.Fatal("zero severity marshalled")
	}
}

func TestRules(t *testing.T) {
	kebab := regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	seen := map[string]bool{}
	for _, r := range Rules() {
		if !kebab.MatchString(r.ID) || seen[r.ID] || r.Summary == "" || r.Severity < Warning || r.Severity > Invalid {
			t.Errorf("bad rule %+v", r)
		}
		seen[r.ID] = true
	}
}

func TestRefusalOrder(t *testing.T) {
	i := &Info{}
	i.add("geometry-mismatch", "w")
	i.add("zero-unique-id", "u")
	i.add("footer-checksum", "i")
	if r := i.Refusal(); r == nil || r.Rule != "footer-checksum" {
		t.Fatalf("Refusal = %v", r)
	}
	i.Findings = i.Findings[:2]
	if r := i.Refusal(); r == nil || r.Rule != "zero-unique-id" {
		t.Fatalf("Refusal = %v", r)
	}
	i.Findings = i.Findings[:1]
	if r := i.Refusal(); r != nil || len(i.Warnings()) != 1 {
		t.Fatalf("Refusal = %v, warnings %v", r, i.Warnings())
	}
}

// TestGeometryForSize checks the spec's CHS algorithm at its branch points.
func TestGeometryForSize(t *testing.T) {
	for _, c := range []struct {
		size uint64
		want Geometry
	}{
		{40 << 20, Geometry{963, 5, 17}},      // win8.vhd and xapi.vhd: 41943040 bytes
		{127 << 30, Geometry{65278, 16, 255}}, // the 255-sector branch
		{4 << 30, Geometry{8322, 16, 63}},
		{1 << 40, MaxGeometry},
		{2 << 20, Geometry{60, 4, 17}},
	} {
		if g := GeometryForSize(c.size); g != c.want {
			t.Errorf("GeometryForSize(%d) = %v, want %v", c.size, g, c.want)
		}
	}
}
