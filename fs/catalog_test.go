package fs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/imagefs/imagefs/store"
)

// TestCatalogLines: each image is one line that decodes, as JSON, to its
// properties, whatever the bytes of the values.
func TestCatalogLines(t *testing.T) {
	values := []string{"plain", `a "quoted" \ value`, "two\nlines\ttab", "ünïcödé ✓", "<&>", "\x01\x7f"}
	var ims []*store.Image
	for i, v := range values {
		ims = append(ims, &store.Image{ID: "id-" + string(rune('a'+i)), Name: "n" + v, Size: -1, VirtualSize: 2560,
			Visibility: store.VisibilityPublic, Extra: map[string]string{"os_distro": v, "k\"ey": v}})
	}
	sc := bufio.NewScanner(bytes.NewReader(CatalogLines(ims)))
	i := 0
	for ; sc.Scan(); i++ {
		var got map[string]string
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("line %d %q: %v", i, sc.Text(), err)
		}
		im := ims[i]
		want := map[string]string{}
		for _, k := range im.Keys() {
			want[k], _ = im.Property(k)
		}
		if len(got) != len(want) {
			t.Errorf("line %d: %d keys, want %d: %v", i, len(got), len(want), got)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("line %d: %q = %q, want %q", i, k, got[k], v)
			}
		}
		if _, ok := got["size"]; ok {
			t.Errorf("line %d: size of an unsealed image is listed: %v", i, got)
		}
	}
	if i != len(ims) {
		t.Errorf("%d lines, want %d", i, len(ims))
	}
}
