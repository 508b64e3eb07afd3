package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Backing up and restoring images (issue 13 item 6): cp -a (or rsync -a)
// of images/NAME backs an image up; imagefs restore makes it again with
// its settable properties and checks the data against the backed-up
// checksum; a cp -a into images/ fails and leaves nothing behind.

// backedUpImage makes images/<name> with data fx and custom and core
// properties, backs it up with cp -a into a new directory and returns
// the backup's path (BACKUP/<name>).
func backedUpImage(t *testing.T, m *fsMount, name string, fx vhdFixture) string {
	t.Helper()
	m.mkimage(name)
	run(t, "cp", fx.Path, m.dataFile(name))
	writeProp(t, m, name, "os_distro", "superos")
	writeProp(t, m, name, "os_version", "2024.1")
	writeProp(t, m, name, "min_ram", "512")
	writeProp(t, m, name, "notes", "line one\nline two")
	writeProp(t, m, name, "protected", "true")
	bk := t.TempDir()
	run(t, "cp", "-a", m.images(name), bk+"/")
	return filepath.Join(bk, name)
}

// wantRestored checks images/<name> against the backup's properties.
func wantRestored(t *testing.T, m *fsMount, name string, fx vhdFixture, oldID string) {
	t.Helper()
	m.checkSealed(t, name, fx)
	for k, v := range map[string]string{
		"os_distro": "superos", "os_version": "2024.1", "min_ram": "512",
		"notes": "line one\nline two", "protected": "true", "checksum": fx.MD5,
	} {
		if got := m.prop(name, k); got != v {
			t.Errorf("restored images/%s: %s = %q, want %q", name, k, got, v)
		}
	}
	if got := m.prop(name, "id"); got == oldID {
		t.Errorf("restored images/%s kept the id %s: ids are new", name, got)
	}
}

func TestRestoreBackup(t *testing.T) {
	m := mount(t)
	requireTools(t, "cp", "rsync")
	fx := makeVHD(t, 3*mib, "dynamic")
	bk := backedUpImage(t, m, "superos", fx)
	oldID := m.prop("superos", "id")
	rs := filepath.Join(t.TempDir(), "superos")
	run(t, "rsync", "-a", m.images("superos")+"/", rs+"/")

	// Delete the original (protected: unprotect first), then restore.
	writeProp(t, m, "superos", "protected", "false")
	run(t, "rm", "-rf", m.images("superos"))
	out := run(t, binary, "restore", bk, m.Mnt)
	if !strings.Contains(out, "restored superos") || !strings.Contains(out, fx.MD5) {
		t.Errorf("imagefs restore said %q", out)
	}
	wantRestored(t, m, "superos", fx, oldID)

	// The name is taken now: refused, nothing changes.
	r := execCmd(binary, "restore", bk, m.Mnt)
	if r.code != 1 || !strings.Contains(r.stderr, "taken") {
		t.Errorf("restore onto a taken name: %s, want exit 1 saying the name is taken", r)
	}
	wantRestored(t, m, "superos", fx, oldID)

	// An rsync -a backup, under another name.
	run(t, binary, "restore", "--name", "superos-rsync", rs, m.Mnt)
	wantRestored(t, m, "superos-rsync", fx, oldID)

	// A backup whose data changed: refused, and the new image removed.
	bad := filepath.Join(t.TempDir(), "superos")
	run(t, "cp", "-a", bk, bad)
	if err := os.Chmod(filepath.Join(bad, "image.vhd"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(bad, "image.vhd"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("bit rot"), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r = execCmd(binary, "restore", "--name", "superos-bad", bad, m.Mnt)
	if r.code != 1 || !strings.Contains(r.stderr, "checksum") || !strings.Contains(r.stderr, "removed") {
		t.Errorf("restore of a changed backup: %s, want exit 1 naming the checksum", r)
	}
	if _, err := os.Lstat(m.images("superos-bad")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("images/superos-bad after the refused restore: %v, want ENOENT", err)
	}

	m.stop()
	if rep := fsckJSON(t, m.Store, "--verify-data"); rep.code != 0 || len(rep.Problems) != 0 {
		t.Errorf("fsck after the restores: exit %d, %v", rep.code, rep.Problems)
	}
}

// TestCopyArchiveIntoImages: cp -a of a backup into images/ cannot
// restore it (mkdir made image.vhd and properties/, so its exclusive
// creates fail); it exits non-zero and leaves no image behind. A plain
// mkdir, and a mkdir followed by another process's touch, keep their
// image.
func TestCopyArchiveIntoImages(t *testing.T) {
	m := mount(t)
	requireTools(t, "cp", "touch")
	fx := makeVHD(t, 2*mib, "fixed")
	bk := backedUpImage(t, m, "orig", fx)
	before, err := os.ReadDir(filepath.Join(m.Mnt, "by-id"))
	if err != nil {
		t.Fatal(err)
	}

	// The backup of "orig" under a free name.
	dir := filepath.Join(t.TempDir(), "copy")
	run(t, "cp", "-a", bk, dir)
	for _, script := range []string{`cp -a "$1" "$2/"`, `cp -R --preserve=all "$1" "$2/"`} {
		r := shErr(script, dir, m.images())
		if r.code == 0 {
			t.Errorf("%s into images/ exited 0: %s", script, r)
		}
		if _, err := os.Lstat(m.images("copy")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after %s: images/copy: %v, want ENOENT (nothing left behind)", script, err)
		}
		after, err := os.ReadDir(filepath.Join(m.Mnt, "by-id"))
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before) {
			t.Errorf("after %s: %d images, %d before", script, len(after), len(before))
		}
	}

	// Not every untouched image goes: a plain mkdir keeps it, and so does
	// a touch by another process.
	m.mkimage("kept")
	execCmd("touch", m.images("kept"))
	if got := m.prop("kept", "status"); got != "queued" {
		t.Errorf("images/kept after mkdir and touch: status %q, want queued", got)
	}
	m.checkSealed(t, "orig", fx)
}
