package integration

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

var cacheRaceRounds = flag.Int("cache-race-rounds", 50, "TestCacheRemovedUnderOtherTree: rounds of remove-and-create-again without a pause (try 300 with -race)")

// TestCacheRemovedUnderOtherTree: a property removed under by-id/ (or
// through setfattr -x) can be created again at once under images/, where
// the kernel still had its entry.
func TestCacheRemovedUnderOtherTree(t *testing.T) {
	requireTools(t, "setfattr", "cat", "rm", "sh")
	m := mount(t)
	id := m.mkimage("img")
	props, byID := m.images("img", "properties"), m.byID(id, "properties")
	var err error
	for i, remove := range []string{`rm "$2/j"`, `setfattr -x user.j "$3"`} {
		sh(t, `echo v1 > "$1/j" && cat "$1/j" "$2/j" >/dev/null`, props, byID)
		sh(t, remove, props, byID, m.images("img"))
		sh(t, `echo v2 > "$1/j"`, props) // exits 1 with ENOENT when the entry is stale
		for _, p := range []string{props + "/j", byID + "/j"} {
			if got := run(t, "cat", p); got != "v2\n" {
				t.Errorf("case %d: cat %s = %q, want %q", i, p, got, "v2\n")
			}
		}
	}
	// The same without a process start between the calls: no time for
	// a background entry notification to land first, nor for the read's
	// RELEASE (see TestCacheRecreateWhileOpen, which holds the reader
	// open instead: about one round in 300 failed with ENOENT under
	// -race).
	for i := range *cacheRaceRounds {
		v := fmt.Sprintf("v%d\n", i)
		if _, err := os.ReadFile(props + "/j"); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			err = os.Remove(byID + "/j")
		} else {
			err = unix.Removexattr(m.images("img"), "user.j")
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(props+"/j", []byte(v), 0o644); err != nil {
			t.Fatalf("round %d: creating the property again: %v", i, err)
		}
		if got := string(readFile(byID + "/j")); got != v {
			t.Fatalf("round %d: %q, want %q", i, got, v)
		}
	}
}

// TestCacheTruncateOpenFile: truncate -s (ftruncate of an open file) sets
// the value when the file is closed, and the size is right at once, so an
// append that follows lands after the new end (it landed at the old one,
// leaving NULs in the value).
func TestCacheTruncateOpenFile(t *testing.T) {
	requireTools(t, "truncate", "sh", "stat")
	m := mount(t)
	m.mkimage("img")
	f := m.propFile("img", "t")
	for range 20 {
		sh(t, `echo abcde > "$1" && truncate -s 0 "$1" && echo xy >> "$1"`, f)
		// The empty value reads as "\n" (every value is followed by a
		// newline), and the append comes after it.
		if got := string(readFile(f)); got != "\nxy\n" {
			t.Fatalf("after truncate -s 0 and an append: %q, want %q", got, "\nxy\n")
		}
		if got := strings.TrimSpace(run(t, "stat", "-c", "%s", f)); got != "4" {
			t.Fatalf("stat size %s, want 4", got)
		}
	}
	// The size the ftruncate reply gives is the handle's.
	fd, err := os.OpenFile(f, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fd.Truncate(0); err != nil {
		t.Fatal(err)
	}
	fi, err := fd.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 0 {
		t.Errorf("fstat after ftruncate(0): size %d, want 0", fi.Size())
	}
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(f)); got != "\n" {
		t.Errorf("after ftruncate(0) and close: %q, want %q (the empty value)", got, "\n")
	}
}

// TestCacheNoOlderValue: while one writer sets ever larger values through
// an xattr, no reader, with a file held open or opening it afresh, ever
// reads a value older than one whose setxattr had returned before the
// read began. (Opens store the value in the kernel's pages; a store that
// raced with a change used to put an older value back for everyone.)
func TestCacheNoOlderValue(t *testing.T) {
	m := mount(t)
	id := m.mkimage("img")
	dir := m.images("img")
	paths := []string{m.propFile("img", "c"), m.byID(id, "properties", "c")}
	if err := unix.Setxattr(dir, "user.c", []byte("00000"), 0); err != nil {
		t.Fatal(err)
	}
	var published atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	type stale struct{ before, got int64 }
	errs := make(chan stale, 100)
	read := func(r int) {
		defer wg.Done()
		var held *os.File
		if r < 2 {
			f, err := os.Open(paths[r%2])
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			held = f
		}
		buf := make([]byte, 64)
		for !stop.Load() {
			before := published.Load()
			var b []byte
			if held != nil {
				n, _ := held.ReadAt(buf, 0)
				b = buf[:n]
			} else {
				var err error
				if b, err = os.ReadFile(paths[r%2]); err != nil {
					t.Error(err)
					return
				}
			}
			got, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				continue // an empty read: the file is being replaced
			}
			if got < before {
				select {
				case errs <- stale{before, got}:
				default:
				}
			}
		}
	}
	for r := range 6 {
		wg.Add(1)
		go read(r)
	}
	for i := int64(1); i <= 1500; i++ {
		if err := unix.Setxattr(dir, "user.c", []byte(fmt.Sprintf("%05d", i)), 0); err != nil {
			t.Fatal(err)
		}
		published.Store(i)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	n := 0
	for e := range errs {
		if n++; n <= 3 {
			t.Errorf("read %d after %d was set", e.got, e.before)
		}
	}
}
