package integration

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
)

// POSIX conformance where imagefs is a plain filesystem, and hostile
// input (issue #7).

// posixScratch are go-fuse's posixtest checks that apply to an image
// directory.
var posixScratch = []string{"ReadDirConsistency", "XAttr", "XAttrLarge"}

// notPlainFile is why the checks that make regular files do not apply: in
// an image directory a file created under a name that is not temporary
// (no leading '.') is an upload of the image's data, sealed or refused at
// its close, one writer at a time; it is not a plain file.
const notPlainFile = "makes regular files under names that are not temporary, which in an image directory are uploads of the image's data (sealed or refused at close, one writer at a time), not plain files"

// posixSkipped are the others, and why they do not apply.
var posixSkipped = map[string]string{
	"AppendWrite":                notPlainFile,
	"DirectIO":                   notPlainFile,
	"FcntlFlockSetLk":            notPlainFile,
	"FdLeak":                     notPlainFile,
	"FileLarge":                  notPlainFile,
	"FstatDeleted":               notPlainFile,
	"LseekEnxioCheck":            notPlainFile,
	"LseekHoleSeeksToEOF":        notPlainFile,
	"NlinkZero":                  notPlainFile,
	"ParallelFileOpen":           notPlainFile,
	"TruncateFile":               notPlainFile,
	"TruncateNoFile":             notPlainFile,
	"DirSeek":                    "makes subdirectories: an image directory holds files and properties/ only (mkdir is EOPNOTSUPP)",
	"MkdirRmdir":                 "makes subdirectories in an image directory",
	"OpenAt":                     "makes subdirectories in an image directory",
	"RenameOpenDir":              "makes subdirectories in an image directory",
	"RenameOverwriteDestExist":   "renames into a subdirectory of an image directory",
	"RenameOverwriteDestNoExist": "renames into a subdirectory of an image directory",
	"Link":                       "imagefs has no hard links (EOPNOTSUPP)",
	"LinkUnlinkRename":           "imagefs has no hard links",
	"SymlinkReadlink":            "no symlinks in image directories (the only ones are the views' links)",
	"SetattrSymlink":             "no symlinks in image directories",
	"OpenSymlinkRace":            "no symlinks in image directories",
	"Fallocate":                  "fallocate is not implemented (EOPNOTSUPP); no upload tool needs it",
	"FallocateKeepSize":          "fallocate is not implemented",
	"FcntlFlockLocksFile":        "imagefs implements no locks: the kernel's local POSIX locks apply, and one process's locks never conflict with each other",
	"FileBasic":                  "checks that a file created 0755 stats 0755: imagefs files keep the modes layout.md gives them (0644 for uploads)",
	"ReadDirBasic":               "wants only the files it made: an image directory always lists image.vhd and properties/ too",
	"Tmpfile":                    "O_TMPFILE is not supported (the test skips itself)",
}

// TestPosix runs the applicable posixtest checks in an image directory
// each, ReadDirConsistency on every kind of directory, and fails when
// go-fuse adds a check nobody has sorted into posixScratch or
// posixSkipped.
func TestPosix(t *testing.T) {
	m := mount(t)
	for name := range posixtest.All {
		if !slices.Contains(posixScratch, name) && posixSkipped[name] == "" {
			t.Errorf("posixtest.%s is new: add it to posixScratch or posixSkipped", name)
		}
	}
	for _, name := range posixScratch {
		t.Run(name, func(t *testing.T) {
			dir := "posix-" + name
			m.mkimage(dir)
			posixtest.All[name](t, m.images(dir))
		})
	}
	for name, why := range posixSkipped {
		t.Run(name, func(t *testing.T) { t.Skip(why) })
	}
	t.Run("ReadDirConsistency-every-directory", func(t *testing.T) {
		id := m.mkimage("listed")
		writeProp(t, m, "listed", "os_distro", "superos")
		for _, dir := range []string{
			m.Mnt, m.images(), filepath.Join(m.Mnt, "by-id"), m.images("listed"),
			m.images("listed", "properties"), m.byID(id, "properties"),
			filepath.Join(m.Mnt, "by-property"), m.view("os_distro"), m.view("os_distro", "superos"),
		} {
			posixtest.ReadDirConsistency(t, dir)
		}
	})
}

// allowedErrnos are the answers imagefs (or the kernel in front of it)
// gives to hostile requests; anything else (EIO above all) is a bug.
var allowedErrnos = []syscall.Errno{
	syscall.ENOENT, syscall.ENOTDIR, syscall.EISDIR, syscall.ENAMETOOLONG,
	syscall.EACCES, syscall.EPERM, syscall.EINVAL, syscall.EEXIST,
	syscall.ENODATA, syscall.EOPNOTSUPP, syscall.ERANGE, syscall.E2BIG,
	syscall.EXDEV, syscall.ENOTEMPTY, syscall.EBUSY, syscall.ENOSPC,
	syscall.EBADF, syscall.EROFS,
}

func checkErrno(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	en := errnoOf(err)
	if en == 0 || !slices.Contains(allowedErrnos, en) {
		t.Errorf("%s: %v (errno %d): not a clear refusal", what, err, en)
	}
}

// TestHostileNames: image names with odd bytes are refused with a clear
// errno or stored exactly, listed, renamed and removed.
func TestHostileNames(t *testing.T) {
	m := mount(t)
	cases := []struct {
		name string
		want syscall.Errno // 0: accepted
	}{
		// Control characters are refused (a name with a newline read as
		// two lines in properties/name).
		{"new\nline", syscall.EINVAL},
		{"tab\tand space ", syscall.EINVAL},
		{"space and trailing space ", 0},
		{"\xff\xfe\x80", 0},
		{"%2F%25%", 0},
		{"...", 0},
		{"-rf", 0},
		{strings.Repeat("n", 255), 0},
		// FUSE passes names longer than NAME_MAX to the daemon; imagefs's
		// rule refuses them (README: EINVAL for a bad name).
		{strings.Repeat("n", 256), syscall.EINVAL},
		{strings.Repeat("n", 1024), syscall.EINVAL},
		{"ctl\x01\x7f", syscall.EINVAL},
		{"del\x7f", syscall.EINVAL},
		{"properties", 0},
		{"image.vhd", 0},
	}
	for _, c := range cases {
		err := os.Mkdir(m.images(c.name), 0o755)
		if c.want != 0 {
			wantErrno(t, fmt.Sprintf("mkdir %q", c.name), err, c.want)
			continue
		}
		if err != nil {
			t.Errorf("mkdir %.40q: %v", c.name, err)
			continue
		}
		if got := m.prop(c.name, "name"); got != c.name {
			t.Errorf("mkdir %.40q: properties/name = %.40q", c.name, got)
		}
		ents, err := os.ReadDir(m.images())
		if err != nil || !slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.Name() == c.name }) {
			t.Errorf("ls images/ does not list %.40q (%v)", c.name, err)
		}
		// The name through the xattr, and a rename through properties/name.
		v := make([]byte, 300)
		n, err := unix.Getxattr(m.images(c.name), "user.name", v)
		if err != nil || string(v[:n]) != c.name {
			t.Errorf("getxattr user.name of %.40q: %.40q %v", c.name, v[:max(n, 0)], err)
		}
		renamed := c.name + "-2"
		if len(renamed) > 255 {
			renamed = c.name[:250]
		}
		if err := os.Rename(m.images(c.name), m.images(renamed)); err != nil {
			t.Errorf("mv %.40q %.40q: %v", c.name, renamed, err)
			continue
		}
		if err := syscall.Rmdir(m.images(renamed)); err != nil {
			t.Errorf("rmdir %.40q: %v", renamed, err)
		}
	}
	// Names the kernel or imagefs refuses whatever the test does.
	for _, bad := range []string{".", ".."} {
		checkErrno(t, "mkdir "+bad, os.Mkdir(m.images(bad), 0o755))
	}
	run(t, "mkdir", m.images("x"), m.images("y\xff"))
	if err := syscall.Rename(m.images("x"), m.images("x")); err != nil {
		t.Errorf("rename onto itself: %v", err)
	}
	wantErrno(t, "rename onto a taken name", syscall.Rename(m.images("x"), m.images("y\xff")), syscall.EEXIST)
	wantErrno(t, "rename onto a name with a newline", syscall.Rename(m.images("x"), m.images("y\n")), syscall.EINVAL)
}

// TestHostileProperties: keys and values with odd bytes through files and
// xattrs; each is stored exactly or refused with the errno README gives.
func TestHostileProperties(t *testing.T) {
	m := mount(t)
	m.mkimage("img")
	file := func(key string) string { return m.propFile("img", key) }
	data := m.dataFile("img")

	// Keys: printable UTF-8 without '/', 1-255 bytes.
	for _, c := range []struct {
		key  string
		want syscall.Errno
	}{
		{"os_distro", 0},
		{"com.rackspace__1__release_id", 0},
		{"%25%2F", 0},
		{"...", 0},
		{"ключ", 0},
		{"new\nline", syscall.EINVAL},
		{"\xff\xfe", syscall.EINVAL},
		{"ctl\x01", syscall.EINVAL},
		{"os_glance_reserved", syscall.EPERM},
		{"imagefs_kill_reason", syscall.EPERM},
		{"vhd_disk_type", syscall.EPERM},
	} {
		err := os.WriteFile(file(c.key), []byte("v\n"), 0o644)
		xerr := unix.Setxattr(data, "user."+c.key, []byte("v"), 0)
		if c.want == 0 {
			if err != nil || xerr != nil {
				t.Errorf("key %.40q: file %v, xattr %v; want both accepted", c.key, err, xerr)
			} else if got := m.prop("img", c.key); got != "v" {
				t.Errorf("key %.40q reads %q", c.key, got)
			}
			continue
		}
		wantErrno(t, fmt.Sprintf("echo v > properties/%.40q", c.key), err, c.want)
		wantErrno(t, fmt.Sprintf("setxattr user.%.40q", c.key), xerr, c.want)
	}
	// Keys are at most 250 bytes: "user."+key must fit the kernel's
	// 255-byte limit on attribute names. A 250-byte key works both ways;
	// a longer one is refused as a file (EINVAL) and by the kernel as an
	// xattr (ERANGE).
	long := strings.Repeat("k", 255)
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(data, "user."+long[:250], buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr of a 250-byte key: %q %v, want ENODATA", buf[:max(n, 0)], err)
	}
	if err := os.WriteFile(file(long[:250]), []byte("v\n"), 0o644); err != nil {
		t.Errorf("a 250-byte key as a file: %v", err)
	}
	if n, err := unix.Getxattr(data, "user."+long[:250], buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("getxattr of a 250-byte key: %q %v, want v", buf[:max(n, 0)], err)
	}
	wantErrno(t, "a 251-byte key as a file", os.WriteFile(file(long[:251]), []byte("v\n"), 0o644), syscall.EINVAL)
	wantErrno(t, "a 255-byte key as a file", os.WriteFile(file(long), []byte("v\n"), 0o644), syscall.EINVAL)
	wantErrno(t, "setxattr of a 255-byte key", unix.Setxattr(data, "user."+long, []byte("v"), 0), syscall.ERANGE)
	wantErrno(t, "a 256-byte key as a file", os.WriteFile(file(long+"k"), []byte("v"), 0o644), syscall.EINVAL)
	checkErrno(t, "setxattr user.", unix.Setxattr(data, "user.", []byte("v"), 0))
	checkErrno(t, "setxattr trusted.x", unix.Setxattr(data, "trusted.x", []byte("v"), 0))

	// Values: any bytes up to 65535; through a file one trailing
	// newline is stripped.
	for _, v := range []string{"", "line1\nline2", "\xff\xfe\x00\x01", "%2F/..", strings.Repeat("v", 65535)} {
		if err := unix.Setxattr(data, "user.val", []byte(v), 0); err != nil {
			t.Errorf("setxattr a %d-byte value: %v", len(v), err)
			continue
		}
		if got, err := os.ReadFile(file("val")); err != nil || string(got) != v+"\n" {
			t.Errorf("a %d-byte value reads back as %d bytes (%v)", len(v), len(got), err)
		}
		if strings.ContainsRune(v, 0) {
			continue // a file write of NUL bytes is the same value; covered by the xattr
		}
		if err := os.WriteFile(file("val2"), []byte(v+"\n"), 0o644); err != nil {
			t.Errorf("write a %d-byte value: %v", len(v), err)
		} else if got := m.prop("img", "val2"); got != v {
			t.Errorf("a %d-byte value written as a file reads back as %d bytes", len(v), len(got))
		}
	}
	big := strings.Repeat("v", 65536)
	wantErrno(t, "setxattr a 65536-byte value", unix.Setxattr(data, "user.val", []byte(big), 0), syscall.E2BIG)
	wantErrno(t, "write a 65536-byte value", os.WriteFile(file("val"), []byte(big+"x\n"), 0o644), syscall.E2BIG)
	if got := m.prop("img", "val"); len(got) != 65535 {
		t.Errorf("a refused value changed val: now %d bytes", len(got))
	}
	for _, v := range []string{"abc", "-1", "1e3", "\xff", " 1"} {
		wantErrno(t, "min_ram="+v, os.WriteFile(file("min_ram"), []byte(v+"\n"), 0o644), syscall.EINVAL)
	}
	if got := m.prop("img", "min_ram"); got != "0" {
		t.Errorf("min_ram %q after refused writes", got)
	}
}

// TestManyXattrCalls: thousands of setxattr, getxattr, listxattr and
// removexattr calls in a row leave the properties exact and the daemon
// well.
func TestManyXattrCalls(t *testing.T) {
	m := mount(t)
	m.mkimage("img")
	data, dir := m.dataFile("img"), m.images("img")
	start := time.Now()
	buf := make([]byte, 1<<16)
	const n = 2000
	for i := range n {
		p := data
		if i%2 == 1 {
			p = dir
		}
		key := fmt.Sprintf("user.k%d", i%50)
		val := fmt.Sprintf("value-%d", i)
		if err := unix.Setxattr(p, key, []byte(val), 0); err != nil {
			t.Fatalf("setxattr #%d: %v", i, err)
		}
		if got, err := unix.Getxattr(p, key, buf); err != nil || string(buf[:got]) != val {
			t.Fatalf("getxattr #%d: %q %v", i, buf[:max(got, 0)], err)
		}
		if _, err := unix.Listxattr(p, buf); err != nil {
			t.Fatalf("listxattr #%d: %v", i, err)
		}
		if i%7 == 0 {
			if err := unix.Removexattr(p, key); err != nil {
				t.Fatalf("removexattr #%d: %v", i, err)
			}
			if _, err := unix.Getxattr(p, key, buf); !errors.Is(err, unix.ENODATA) {
				t.Fatalf("getxattr after removexattr #%d: %v", i, err)
			}
		}
	}
	// The last value written to each key survives, or it was removed.
	want := map[string]string{}
	for i := range n {
		key := fmt.Sprintf("k%d", i%50)
		want[key] = fmt.Sprintf("value-%d", i)
		if i%7 == 0 {
			delete(want, key)
		}
	}
	for key, v := range want {
		if got := m.prop("img", key); got != v {
			t.Errorf("%s = %q, want %q", key, got, v)
		}
	}
	t.Logf("%d rounds of setxattr/getxattr/listxattr in %s", n, time.Since(start).Round(time.Millisecond))
	m.remount()
	for key, v := range want {
		if got := m.prop("img", key); got != v {
			t.Errorf("after remount %s = %q, want %q", key, got, v)
		}
	}
}

var hostileOps = flag.Int("hostile-ops", 3000, "TestRandomPaths: how many random path operations")

// TestRandomPaths walks random paths through the mount (random bytes,
// "..", ".", escapes, very long components, real names mixed in) with
// lookups, opens, reads, listings, readlink, xattrs and changes. Every
// call succeeds or fails with a clear errno, never EIO, and the daemon
// stays up.
func TestRandomPaths(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 2*mib, "fixed")
	id := m.mkimage("real")
	run(t, "cp", fx.Path, m.dataFile("real"))
	writeProp(t, m, "real", "os_distro", "a/b%c")
	m.mkimage("other")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 11))
	words := []string{"images", "by-id", "by-property", "real", "other", id, "image.vhd", "properties",
		"os_distro", "a%2Fb%25c", "status", "active", "name", "id", "..", ".", "%2E", "%2E%2E", "%00", "%",
		"%2f", "tmp.vhd", "nonexistent"}
	component := func() string {
		switch r.IntN(4) {
		case 0, 1:
			return words[r.IntN(len(words))]
		case 2:
			b := make([]byte, 1+r.IntN(20))
			for i := range b {
				for b[i] == 0 || b[i] == '/' {
					b[i] = byte(r.IntN(256))
				}
			}
			return string(b)
		}
		return strings.Repeat(string(rune('a'+r.IntN(26))), 1+r.IntN(300))
	}
	buf := make([]byte, 4096)
	for i := range *hostileOps {
		parts := []string{m.Mnt}
		for range 1 + r.IntN(5) {
			parts = append(parts, component())
		}
		p := strings.Join(parts, "/")
		what := fmt.Sprintf("op %d on %.120q", i, p)
		switch r.IntN(12) {
		case 0:
			var st syscall.Stat_t
			checkErrno(t, "lstat "+what, syscall.Lstat(p, &st))
		case 1:
			f, err := os.Open(p)
			checkErrno(t, "open "+what, err)
			if err == nil {
				_, err = f.Read(buf)
				if !errors.Is(err, syscall.EISDIR) && err != nil && err.Error() != "EOF" {
					checkErrno(t, "read "+what, err)
				}
				f.Close()
			}
		case 2:
			_, err := os.ReadDir(p)
			checkErrno(t, "readdir "+what, err)
		case 3:
			_, err := os.Readlink(p)
			checkErrno(t, "readlink "+what, err)
		case 4:
			_, err := unix.Getxattr(p, "user."+component(), buf)
			checkErrno(t, "getxattr "+what, err)
		case 5:
			_, err := unix.Listxattr(p, buf)
			checkErrno(t, "listxattr "+what, err)
		case 6:
			checkErrno(t, "setxattr "+what, unix.Setxattr(p, "user."+component(), []byte(component()), 0))
		case 7:
			checkErrno(t, "mkdir "+what, os.Mkdir(p, 0o755))
		case 8:
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
			checkErrno(t, "create "+what, err)
			if err == nil {
				_, err = f.Write([]byte(component()))
				checkErrno(t, "write "+what, err)
				if err := f.Close(); err != nil {
					checkErrno(t, "close "+what, err)
				}
			}
		case 9:
			checkErrno(t, "unlink "+what, syscall.Unlink(p))
		case 10:
			q := strings.Join(append(parts[:len(parts)-1:len(parts)-1], component()), "/")
			checkErrno(t, "rename "+what, os.Rename(p, q))
		case 11:
			checkErrno(t, "rmdir "+what, syscall.Rmdir(p))
		}
		if t.Failed() && i > 0 && i%100 == 0 {
			break
		}
	}
	// The real image is still whole.
	if _, err := os.Stat(m.byID(id)); err == nil {
		if got, err := os.ReadFile(m.byID(id, "image.vhd")); err == nil {
			want, _ := os.ReadFile(fx.Path)
			if !bytes.Equal(got, want) {
				t.Errorf("by-id/%s/image.vhd changed after random operations", id)
			}
		}
	}
}

// TestRefusedRemovals: rmdir and unlink of what cannot be removed fail
// with EPERM and leave it there. (go-fuse answers OK for a directory
// without an rmdir of its own and forgets the child: rmdir MNT/by-id made
// by-id/ vanish until the next mount.)
func TestRefusedRemovals(t *testing.T) {
	requireTools(t, "setfattr")
	m := mount(t)
	id := m.mkimage("img")
	run(t, "setfattr", "-n", "user.os_distro", "-v", "superos", m.images("img"))
	view := filepath.Join(m.Mnt, "by-property", "os_distro", "superos")
	for _, p := range []string{
		filepath.Join(m.Mnt, "by-id"), filepath.Join(m.Mnt, "images"), filepath.Join(m.Mnt, "by-property"),
		m.byID(id), m.images("img", "properties"), m.byID(id, "properties"),
		filepath.Join(m.Mnt, "by-property", "os_distro"), view,
	} {
		wantErrno(t, "rmdir "+p, syscall.Rmdir(p), syscall.EPERM)
		if _, err := os.Stat(p); err != nil {
			t.Errorf("after rmdir %s: %v", p, err)
		}
	}
	wantErrno(t, "unlink of a view's link", syscall.Unlink(filepath.Join(view, "img")), syscall.EPERM)
	if _, err := os.Stat(filepath.Join(view, "img", "properties")); err != nil {
		t.Errorf("after unlink of the view's link: %v", err)
	}
	if got := m.prop("img", "id"); got != id {
		t.Errorf("properties/id = %q", got)
	}
}
