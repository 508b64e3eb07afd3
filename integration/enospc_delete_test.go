package integration

import (
	"os"
	"strconv"
	"syscall"
	"testing"
)

// TestENOSPCDelete: on a full disk (issue 13 item 9) a delete works, by
// rmdir and by rm -rf, and gives its space back; after that the catalog
// takes changes again and fsck finds nothing wrong.
func TestENOSPCDelete(t *testing.T) {
	embeddedCatalogOnly(t, "a delete on a full STORE disk uses the embedded catalog's reserve")
	m := mount(t)
	requireTools(t, "rm", "rmdir")
	fx := makeVHD(t, 4*mib, "fixed")
	tmpfsStore(t, m, "64m")
	var ids []string
	for i := range 3 {
		name := "img" + strconv.Itoa(i)
		m.mkimage(name)
		run(t, "cp", fx.Path, m.dataFile(name))
		writeProp(t, m, name, "os_distro", "superos")
		ids = append(ids, m.prop(name, "id"))
	}
	fill := fillDisk(t, m.Store, 0)
	t.Logf("%d bytes free after filling the store's tmpfs", freeBytes(t, m.Store))

	for i, tool := range []string{"rmdir", "rm -rf"} {
		name := "img" + strconv.Itoa(i)
		before := freeBytes(t, m.Store)
		var st syscall.Stat_t
		if err := syscall.Stat(m.backing(ids[i]), &st); err != nil {
			t.Fatal(err)
		}
		held := st.Blocks * 512 // the data file's allocated bytes
		r := shErr(tool+` "$1"`, m.images(name))
		if r.err != nil || r.stderr != "" {
			t.Errorf("%s of an image on a full disk: %s, want exit 0", tool, r)
		}
		wantDeleted(t, m, tool+" on a full disk", name, ids[i])
		if after := freeBytes(t, m.Store); after < before+held-mib {
			t.Errorf("%s on a full disk: %d bytes free after, %d before: the data's %d bytes not given back", tool, after, before, held)
		}
	}
	// The other image is whole, and with the space back changes work.
	m.checkSealed(t, "img2", fx)
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	writeProp(t, m, "img2", "os_distro", "hyperos")
	m.mkimage("new")
	m.stop()
	if rep := fsckJSON(t, m.Store, "--verify-data"); rep.code != 0 || len(rep.Problems) != 0 {
		t.Errorf("fsck --verify-data after deletes on a full disk: exit %d, %v", rep.code, rep.Problems)
	}
}
