package integration

import (
	"os"
	"path/filepath"
	"testing"
)

// reservePath is the store's reserve for deletes on a full disk.
func reservePath(m *fsMount) string {
	return filepath.Join(m.Store, "catalog", "imagefs-reserve")
}

// TestENOSPCDeleteTwice: a delete on a full disk gives back the store's
// 1 MiB reserve; the reserve is made again as soon as there is room (after
// the delete that freed it, or after the next change once the operator
// freed space), so a second delete on a full disk works too.
func TestENOSPCDeleteTwice(t *testing.T) {
	embeddedCatalogOnly(t, "the delete reserve is a file of the embedded catalog (STORE/catalog/imagefs-reserve)")
	m := mount(t)
	requireTools(t, "rm", "find")
	fx := makeVHD(t, 16*mib, "fixed")
	tmpfsStore(t, m, "64m")
	for _, name := range []string{"a", "b", "c"} {
		m.mkimage(name)
		run(t, "cp", fx.Path, m.dataFile(name))
	}
	m.mkimage("r2")
	m.mkimage("r3")
	m.mkimage("r4")
	if _, err := os.Stat(reservePath(m)); err != nil {
		t.Fatalf("the reserve after mount: %v", err)
	}

	// Full disk: the first delete uses the reserve; the data it frees
	// makes room for the reserve again.
	fill := fillDisk(t, m.Store, 0)
	if r := shErr(`rm -rf "$1"`, m.images("b")); r.err != nil || r.stderr != "" {
		t.Fatalf("rm -rf of an image on a full disk: %s, want exit 0", r)
	}
	if _, err := os.Stat(reservePath(m)); err != nil {
		t.Errorf("the reserve after a delete that freed 16 MiB: %v, want it made again", err)
	}
	fill = fillDisk(t, m.Store, 0)
	if r := shErr(`find "$1" -delete`, m.images("a")); r.err != nil || r.stderr != "" {
		t.Errorf("find -delete of an image on a full disk, the second delete: %s, want exit 0", r)
	}

	// Full disk again, and a delete that frees no data (a queued image):
	// the reserve goes and there is no room to make it again.
	fill = fillDisk(t, m.Store, 0)
	if r := shErr(`rmdir "$1"`, m.images("r2")); r.err != nil || r.stderr != "" {
		t.Errorf("rmdir of a queued image on a full disk: %s, want exit 0", r)
	}
	if _, err := os.Stat(reservePath(m)); !os.IsNotExist(err) {
		t.Errorf("the reserve after a delete on a full disk that freed nothing: %v, want it given back", err)
	}
	// A second delete with no space freed in between uses what is left
	// of the reserve's room.
	before := freeBytes(t, m.Store)
	if r := shErr(`rmdir "$1"`, m.images("r4")); r.err != nil || r.stderr != "" {
		t.Errorf("rmdir of a queued image on a full disk right after another delete: %s, want exit 0", r)
	}
	t.Logf("a delete on a full disk: %d bytes free before, %d after", before, freeBytes(t, m.Store))
	// The operator frees space; the next change makes the reserve again.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	writeProp(t, m, "c", "note", "room again")
	if _, err := os.Stat(reservePath(m)); err != nil {
		t.Errorf("the reserve after space was freed and a property changed: %v, want it made again", err)
	}
	fill = fillDisk(t, m.Store, 0)
	if r := shErr(`rm -rf "$1"`, m.images("c")); r.err != nil || r.stderr != "" {
		t.Errorf("rm -rf on a full disk after the reserve was made again: %s, want exit 0", r)
	}
	// Stopped with the reserve given back (a delete that freed nothing)
	// and the disk still full: fsck reports it, and --repair makes it
	// again once there is room.
	fill = fillDisk(t, m.Store, 0)
	if r := shErr(`rmdir "$1"`, m.images("r3")); r.err != nil || r.stderr != "" {
		t.Errorf("rmdir of a queued image on a full disk: %s, want exit 0", r)
	}
	m.stop()
	// (Pebble's open hangs on a disk with 0 bytes free, so fsck too.)
	if free := freeBytes(t, m.Store); free < 512<<10 {
		t.Fatalf("%d bytes free after a delete gave the reserve back, want about 1 MiB", free)
	}
	rep := fsckJSON(t, m.Store)
	if rep.code != 3 || len(rep.Problems) != 1 || rep.Problems[0].Kind != "reserve-missing" || !rep.Problems[0].Repairable {
		t.Errorf("fsck with the reserve given back: exit %d, %+v, want exit 3 and one repairable reserve-missing", rep.code, rep.Problems)
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if rep := fsckJSON(t, m.Store, "--repair"); rep.code != 0 || len(rep.Problems) != 1 || !rep.Problems[0].Repaired {
		t.Errorf("fsck --repair with room again: exit %d, %+v, want the reserve made again", rep.code, rep.Problems)
	}
	if rep := fsckJSON(t, m.Store); rep.code != 0 || len(rep.Problems) != 0 {
		t.Errorf("fsck after deletes on a full disk: exit %d, %v", rep.code, rep.Problems)
	}
}
