package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel keeps the entries, attributes and pages of image directories
// and property files until the image's record changes; every change drops
// them before the request that made it replies (fs/invalidate.go). These
// tests change records in every way there is and read back at once with
// real tools, through both trees, with values of the same length set
// within the same second (so neither the size nor the mtime tells the
// kernel that its pages are stale).

func TestCacheFollowsXattrAndFile(t *testing.T) {
	requireTools(t, "setfattr", "getfattr", "cat", "sh", "stat")
	m := mount(t)
	id := m.mkimage("img")
	byID := m.byID(id, "properties", "os_version")
	for i := range 60 {
		v := fmt.Sprintf("v%03d", i) // the same length every time
		switch i % 3 {
		case 0: // xattr, then the file in both trees
			run(t, "setfattr", "-n", "user.os_version", "-v", v, m.images("img"))
		case 1: // the file, then the xattr
			sh(t, `echo "$2" > "$1"`, m.propFile("img", "os_version"), v)
		case 2: // the other tree's file
			sh(t, `echo "$2" > "$1"`, byID, v)
		}
		for _, path := range []string{m.propFile("img", "os_version"), byID} {
			if got := run(t, "cat", path); got != v+"\n" {
				t.Fatalf("round %d: cat %s = %q, want %q", i, path, got, v+"\n")
			}
		}
		if got := strings.TrimSpace(run(t, "getfattr", "--only-values", "-n", "user.os_version", m.images("img"))); got != v {
			t.Fatalf("round %d: getfattr = %q, want %q", i, got, v)
		}
	}
	// A longer value: stat sees the new size at once.
	run(t, "setfattr", "-n", "user.os_version", "-v", "a-much-longer-value", m.images("img"))
	if got := strings.TrimSpace(run(t, "stat", "-c", "%s", m.propFile("img", "os_version"))); got != "20" {
		t.Errorf("stat -c %%s after a longer value = %s, want 20", got)
	}
	if got := run(t, "cat", byID); got != "a-much-longer-value\n" {
		t.Errorf("cat after a longer value = %q", got)
	}
}

// TestCacheOpenReader: a reader that keeps its file open reads the new
// value after a change (its pages were dropped), as with a file rewritten
// in place.
func TestCacheOpenReader(t *testing.T) {
	requireTools(t, "setfattr")
	m := mount(t)
	m.mkimage("img")
	run(t, "setfattr", "-n", "user.k", "-v", "one", m.images("img"))
	f, err := os.Open(m.propFile("img", "k"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64)
	n, _ := f.ReadAt(buf, 0)
	if got := string(buf[:n]); got != "one\n" {
		t.Fatalf("read = %q", got)
	}
	run(t, "setfattr", "-n", "user.k", "-v", "two", m.images("img"))
	n, _ = f.ReadAt(buf, 0)
	if got := string(buf[:n]); got != "two\n" {
		t.Errorf("read of the open file after the change = %q, want %q", got, "two\n")
	}
}

// TestCacheRemoveRenameVisibility: a property removed through an xattr is
// gone from the file tree at once; a file renamed in properties/ (mv,
// sed -i) reads as its new name at once; a visibility change shows in
// the directories' modes at once; an image renamed is found under its new
// name with the new name in properties/name.
func TestCacheRemoveRenameVisibility(t *testing.T) {
	requireTools(t, "setfattr", "cat", "sed", "mv", "stat", "ls")
	m := mount(t)
	m.mkimage("img")
	props := m.images("img", "properties")

	run(t, "setfattr", "-n", "user.gone", "-v", "x", m.images("img"))
	run(t, "cat", props+"/gone") // cached now
	run(t, "setfattr", "-x", "user.gone", m.images("img"))
	r := execCmd("cat", props+"/gone")
	if r.err == nil || !strings.Contains(r.stderr, "No such file") {
		t.Errorf("cat of a property removed through setfattr -x: %s", r)
	}
	_, err := os.Stat(props + "/gone")
	wantErrno(t, "stat of a removed property", err, unix.ENOENT)
	if ls := run(t, "ls", props); strings.Contains(ls, "gone") {
		t.Errorf("ls properties/ still lists the removed property:\n%s", ls)
	}

	// mv a new file onto a name the kernel has cached, then onto a new
	// name: each reads as its new name at once, with its own inode.
	for i := range 5 {
		v := fmt.Sprintf("value-%d", i)
		run(t, "setfattr", "-n", "user.target", "-v", "old", m.images("img"))
		run(t, "cat", props+"/target")
		sh(t, `echo "$2" > "$1/tmp$3" && mv "$1/tmp$3" "$1/target" && cat "$1/target" >/dev/null`, props, v, fmt.Sprint(i))
		if got := run(t, "cat", props+"/target"); got != v+"\n" {
			t.Fatalf("cat after mv onto a cached name = %q, want %q", got, v+"\n")
		}
		sh(t, `mv "$1/target" "$1/moved$2"`, props, fmt.Sprint(i))
		if got := run(t, "cat", props+"/moved"+fmt.Sprint(i)); got != v+"\n" {
			t.Fatalf("cat after mv to a new name = %q, want %q", got, v+"\n")
		}
		if got, want := inode(t, props+"/moved"+fmt.Sprint(i)), lsInode(t, props, "moved"+fmt.Sprint(i)); got != want {
			t.Errorf("stat inode %s, ls -i %s", got, want)
		}
	}
	run(t, "setfattr", "-n", "user.os_distro", "-v", "superos", m.images("img"))
	run(t, "cat", props+"/os_distro")
	run(t, "sed", "-i", "s/super/hyper/", props+"/os_distro")
	if got := run(t, "cat", props+"/os_distro"); got != "hyperos\n" {
		t.Errorf("cat after sed -i = %q", got)
	}

	mode := func(p string) string { return strings.TrimSpace(run(t, "stat", "-c", "%a", p)) }
	if a, b := mode(m.images("img")), mode(props); a != "700" || b != "700" {
		t.Fatalf("private image: modes %s and %s, want 700", a, b)
	}
	sh(t, `echo shared > "$1"`, props+"/visibility")
	if a, b := mode(m.images("img")), mode(props); a != "755" || b != "755" {
		t.Errorf("after visibility=shared: modes %s and %s, want 755", a, b)
	}
	run(t, "setfattr", "-n", "user.visibility", "-v", "private", m.images("img"))
	if a, b := mode(m.images("img")), mode(props); a != "700" || b != "700" {
		t.Errorf("after visibility=private: modes %s and %s, want 700", a, b)
	}

	run(t, "mv", m.images("img"), m.images("img2"))
	if got := m.prop("img2", "name"); got != "img2" {
		t.Errorf("properties/name after mv = %q", got)
	}
	sh(t, `echo img3 > "$1"`, m.propFile("img2", "name"))
	if _, err := os.Stat(m.images("img2")); err == nil {
		t.Errorf("images/img2 still resolves after the name was set to img3")
	}
	if got := m.prop("img3", "name"); got != "img3" {
		t.Errorf("properties/name after setting it = %q", got)
	}
}

// lsInode returns the inode number ls -i lists for name in dir (from
// READDIR, not from the kernel's cached inode).
func lsInode(t *testing.T, dir, name string) string {
	t.Helper()
	for _, line := range strings.Split(run(t, "ls", "-i", dir), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == name {
			return f[0]
		}
	}
	t.Fatalf("ls -i %s lists no %s", dir, name)
	return ""
}
