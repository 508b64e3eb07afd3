package fs

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests below drive every handler of the package through real
// syscalls on an in-process mount (mount_test.go), one behaviour of
// ../docs/layout.md at a time.

func names(t *testing.T, dir string) []string {
	t.Helper()
	ns, err := readdirnames(dir)
	noErr(t, "readdir "+dir, err)
	slices.Sort(ns)
	return ns
}

func wantNames(t *testing.T, dir string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("%s lists %q, want %q", dir, got, want)
	}
}

func TestFixedDirectories(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	wantNames(t, m.mnt, "by-id", "by-property", "by-tag", "images")
	for _, d := range []string{"", "images", "by-id", "by-property", "by-tag"} {
		fi, err := os.Stat(m.path(d))
		noErr(t, "stat "+d, err)
		if !fi.IsDir() {
			t.Errorf("%s/ is not a directory: %v", d, fi.Mode())
		}
	}
	var sfs syscall.Statfs_t
	noErr(t, "statfs", syscall.Statfs(m.mnt, &sfs))
	if sfs.Bsize == 0 || sfs.Blocks == 0 {
		t.Errorf("statfs: %+v", sfs)
	}
	_, err := os.Stat(m.path("nothing"))
	wantErrno(t, "stat of a missing name at the root", err, syscall.ENOENT)
	wantErrno(t, "rmdir images", syscall.Rmdir(m.path("images")), syscall.EPERM)
	id := m.mkdir("a")
	wantErrno(t, "rmdir by-id/<id>", syscall.Rmdir(m.path("by-id", id)), syscall.EPERM)
	wantErrno(t, "rmdir by-property", syscall.Rmdir(m.path("by-property")), syscall.EPERM)
	wantErrno(t, "rmdir by-tag", syscall.Rmdir(m.path("by-tag")), syscall.EPERM)
	if err := os.Mkdir(m.path("other"), 0o755); err == nil {
		t.Error("mkdir at the root succeeded")
	}
	if err := os.Mkdir(m.path("by-id", "x"), 0o755); err == nil {
		t.Error("mkdir in by-id/ succeeded")
	}
}

func TestImagesMkdirRenameRmdir(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	id := m.mkdir("a")
	m.mkdir("c")
	wantNames(t, m.path("images"), "a", "c")
	wantNames(t, m.path("by-id"), id, m.prop("c", "id"))
	wantErrno(t, "mkdir of a taken name", os.Mkdir(m.path("images", "a"), 0o755), syscall.EEXIST)
	if err := os.Mkdir(m.path("images", strings.Repeat("x", 256)), 0o755); err == nil {
		t.Error("mkdir of a 256-byte name succeeded")
	}
	if s := m.prop("a", "status"); s != "queued" {
		t.Errorf("status of a new image %q, want queued", s)
	}
	if o := m.prop("a", "owner"); o != "0" {
		t.Errorf("owner %q, want 0 (the caller)", o)
	}

	noErr(t, "rename a b", os.Rename(m.path("images", "a"), m.path("images", "b")))
	_, err := os.Stat(m.path("images", "a"))
	wantErrno(t, "stat of the old name", err, syscall.ENOENT)
	if n := m.prop("b", "name"); n != "b" {
		t.Errorf("name after the rename %q, want b", n)
	}
	b, err := os.ReadFile(m.path("by-id", id, "properties", "name"))
	noErr(t, "read by-id name", err)
	if string(b) != "b\n" {
		t.Errorf("by-id/<id>/properties/name %q after the rename, want b", b)
	}
	wantErrno(t, "rename NOREPLACE onto a taken name",
		unix.Renameat2(unix.AT_FDCWD, m.path("images", "b"), unix.AT_FDCWD, m.path("images", "c"), unix.RENAME_NOREPLACE), syscall.EEXIST)
	if err := os.Rename(m.path("images", "b"), m.path("by-id", "b")); err == nil {
		t.Error("rename of an image into by-id/ succeeded")
	}

	noErr(t, "rmdir b", syscall.Rmdir(m.path("images", "b")))
	_, err = os.Stat(m.path("by-id", id))
	wantErrno(t, "by-id/<id> after rmdir", err, syscall.ENOENT)
	wantErrno(t, "rmdir of a missing image", syscall.Rmdir(m.path("images", "b")), syscall.ENOENT)
	wantNames(t, m.path("images"), "c")
}

func TestImageDirectory(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	data := fixedVHD(t, 64<<10)
	id := m.mkdir("a")
	dir := m.path("images", "a")
	fi, err := os.Stat(dir)
	noErr(t, "stat", err)
	if !fi.IsDir() {
		t.Fatalf("images/a: %v", fi.Mode())
	}
	ns := names(t, m.path("images", "a", "properties"))
	for _, k := range []string{"id", "name", "status", "owner", "visibility", "min_ram"} {
		if !slices.Contains(ns, k) {
			t.Errorf("properties/ lists %q, without %s", ns, k)
		}
	}
	wantErrno(t, "unlink properties", syscall.Unlink(m.path("images", "a", "properties")), syscall.EISDIR)
	wantErrno(t, "rmdir properties", syscall.Rmdir(m.path("images", "a", "properties")), syscall.EPERM)
	_, err = os.Stat(m.path("images", "a", "nothing"))
	wantErrno(t, "stat of a missing file", err, syscall.ENOENT)

	// A scratch file (rsync's temporary file) completes the upload when
	// renamed onto image.vhd.
	tmp := filepath.Join(dir, ".image.vhd.XXXXXX")
	noErr(t, "write scratch", writeFile(tmp, data[:4096]))
	if ns := names(t, dir); !slices.Contains(ns, ".image.vhd.XXXXXX") {
		t.Errorf("images/a lists %q, without the scratch file", ns)
	}
	got, err := os.ReadFile(tmp)
	noErr(t, "read scratch", err)
	if !bytes.Equal(got, data[:4096]) {
		t.Error("scratch file reads back other bytes")
	}
	noErr(t, "truncate scratch", os.Truncate(tmp, 0))
	noErr(t, "rewrite scratch", writeFile(tmp, data))
	wantErrno(t, "rename of the scratch file into another image",
		os.Rename(tmp, m.path("by-id", m.mkdir("other"), "x")), syscall.EPERM)
	if err := os.Rename(tmp, filepath.Join(dir, "properties")); err == nil {
		t.Error("rename of the scratch file onto properties/ succeeded")
	}
	// Another scratch file, renamed and removed.
	noErr(t, "write scratch 2", writeFile(filepath.Join(dir, ".y.tmp"), []byte("x")))
	noErr(t, "rename scratch", os.Rename(filepath.Join(dir, ".y.tmp"), filepath.Join(dir, ".z.tmp")))
	noErr(t, "unlink scratch", syscall.Unlink(filepath.Join(dir, ".z.tmp")))
	wantErrno(t, "unlink of a missing scratch", syscall.Unlink(filepath.Join(dir, ".z.tmp")), syscall.ENOENT)
	noErr(t, "rename scratch onto image.vhd", os.Rename(tmp, filepath.Join(dir, "image.vhd")))
	if s := m.prop("a", "status"); s != "active" {
		t.Fatalf("status %q after the rename onto image.vhd, want active", s)
	}
	sum := md5.Sum(data)
	if c := m.prop("a", "checksum"); c != hex.EncodeToString(sum[:]) {
		t.Errorf("checksum %s, want %x", c, sum)
	}
	wantNames(t, dir, "image.vhd", "properties")
	wantNames(t, m.path("by-id", id), "image.vhd", "properties")
	wantErrno(t, "rename image.vhd", os.Rename(filepath.Join(dir, "image.vhd"), filepath.Join(dir, "x")), syscall.EPERM)
	wantErrno(t, "unlink of sealed image.vhd (directory not held)", syscall.Unlink(filepath.Join(dir, "image.vhd")), syscall.EPERM)
	wantErrno(t, "a new file in a sealed image", writeFile(filepath.Join(dir, ".y.tmp"), []byte("x")), syscall.EPERM)

	// The directory's own attributes are not kept.
	wantErrno(t, "chmod image directory", os.Chmod(dir, 0o700), syscall.EOPNOTSUPP)
	wantErrno(t, "utimes of a filled image directory", unix.UtimesNano(dir, []unix.Timespec{{Sec: 1}, {Sec: 1}}), syscall.EOPNOTSUPP)
	// A copy of a directory tree (cp -a) that put nothing into the image
	// it made removes that image at its times call (copyin.go).
	m.mkdir("e")
	noErr(t, "utimes of an unfilled image directory", unix.UtimesNano(m.path("images", "e"), []unix.Timespec{{Sec: 1}, {Sec: 1}}))
	_, err = os.Stat(m.path("images", "e"))
	wantErrno(t, "the unfilled image after its times call", err, syscall.ENOENT)

	// cp FILE.vhd images/NAME/: data uploaded under its own name.
	m.mkdir("c")
	noErr(t, "cp into the directory", writeFile(m.path("images", "c", "superos.vhd"), data))
	if s := m.prop("c", "status"); s != "active" {
		t.Errorf("status %q after cp into the directory, want active", s)
	}
	wantNames(t, m.path("images", "c"), "image.vhd", "properties")
}

func TestXattrs(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	id := m.upload("a", fixedVHD(t, 8192))
	dir := m.path("images", "a")
	vhd := filepath.Join(dir, "image.vhd")
	buf := make([]byte, 4096)
	for _, p := range []string{dir, vhd, m.path("by-id", id)} {
		n, err := unix.Getxattr(p, "user.name", buf)
		noErr(t, "getxattr user.name "+p, err)
		if string(buf[:n]) != "a" {
			t.Errorf("%s: user.name %q", p, buf[:n])
		}
		n, err = unix.Listxattr(p, buf)
		noErr(t, "listxattr", err)
		if !bytes.Contains(buf[:n], []byte("user.id\x00")) {
			t.Errorf("%s: listxattr %q without user.id", p, buf[:n])
		}
	}
	noErr(t, "setxattr", unix.Setxattr(dir, "user.os_distro", []byte("superos"), 0))
	if v := m.prop("a", "os_distro"); v != "superos" {
		t.Errorf("os_distro %q after setxattr, want superos", v)
	}
	wantErrno(t, "setxattr XATTR_CREATE of a set key", unix.Setxattr(vhd, "user.os_distro", []byte("x"), unix.XATTR_CREATE), syscall.EEXIST)
	wantErrno(t, "setxattr XATTR_REPLACE of a missing key", unix.Setxattr(vhd, "user.nokey", []byte("x"), unix.XATTR_REPLACE), syscall.ENODATA)
	wantErrno(t, "setxattr of a typed key's bad value", unix.Setxattr(vhd, "user.min_ram", []byte("lots"), 0), syscall.EINVAL)
	wantErrno(t, "setxattr of a system key", unix.Setxattr(vhd, "user.status", []byte("killed"), 0), syscall.EPERM)
	noErr(t, "removexattr", unix.Removexattr(vhd, "user.os_distro"))
	_, err := unix.Getxattr(dir, "user.os_distro", buf)
	wantErrno(t, "getxattr of a removed key", err, syscall.ENODATA)
	wantErrno(t, "removexattr of a missing key", unix.Removexattr(dir, "user.os_distro"), syscall.ENODATA)
	_, err = unix.Getxattr(dir, "security.selinux", buf)
	wantErrno(t, "getxattr outside user.*", err, syscall.EOPNOTSUPP)
	wantErrno(t, "setxattr outside user.*", unix.Setxattr(dir, "trusted.x", []byte("x"), 0), syscall.EOPNOTSUPP)
	if err := unix.Removexattr(dir, "trusted.x"); err == nil {
		t.Error("removexattr outside user.* succeeded")
	}
}

func TestDataFile(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	data := fixedVHD(t, 1<<20)
	id := m.mkdir("a")
	vhd := m.path("images", "a", "image.vhd")

	// Upload by write and close, out of order, with an fsync.
	w, err := os.OpenFile(vhd, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	noErr(t, "open for upload", err)
	_, err = os.OpenFile(vhd, os.O_WRONLY, 0)
	wantErrno(t, "a second writer", err, syscall.EBUSY)
	_, err = w.WriteAt(data[len(data)-512:], int64(len(data)-512))
	noErr(t, "write footer", err)
	_, err = w.WriteAt(data[:len(data)-512], 0)
	noErr(t, "write data", err)
	noErr(t, "fsync upload", w.Sync())
	noErr(t, "chmod upload (ignored)", os.Chmod(vhd, 0o600))
	_, err = os.ReadFile(vhd)
	wantErrno(t, "read of an unsealed image", err, syscall.EACCES)
	fi, err := w.Stat()
	noErr(t, "fstat upload", err)
	if fi.Size() != int64(len(data)) {
		t.Errorf("upload size %d, want %d", fi.Size(), len(data))
	}
	noErr(t, "close (seal)", w.Close())
	if s := m.prop("a", "status"); s != "active" {
		t.Fatalf("status %q, want active", s)
	}

	// Sealed: read (passthrough where the kernel offers it), immutable.
	for _, p := range []string{vhd, m.path("by-id", id, "image.vhd")} {
		got, err := os.ReadFile(p)
		noErr(t, "read sealed "+p, err)
		if !bytes.Equal(got, data) {
			t.Errorf("%s reads back other bytes", p)
		}
		fi, err := os.Stat(p)
		noErr(t, "stat sealed", err)
		if fi.Mode().Perm() != 0o444 || fi.Size() != int64(len(data)) {
			t.Errorf("%s: mode %v size %d, want 0444 and %d", p, fi.Mode(), fi.Size(), len(data))
		}
	}
	r, err := os.Open(vhd)
	noErr(t, "open sealed", err)
	defer r.Close()
	off, err := unix.Seek(int(r.Fd()), 0, unix.SEEK_DATA)
	noErr(t, "SEEK_DATA", err)
	if off != 0 {
		t.Errorf("SEEK_DATA from 0: %d", off)
	}
	off, err = unix.Seek(int(r.Fd()), 0, unix.SEEK_HOLE)
	noErr(t, "SEEK_HOLE", err)
	if off != int64(len(data)) {
		t.Errorf("SEEK_HOLE from 0: %d, want the end %d", off, len(data))
	}
	_, err = unix.Seek(int(r.Fd()), int64(len(data))+1, unix.SEEK_DATA)
	wantErrno(t, "SEEK_DATA past the end", err, syscall.ENXIO)
	noErr(t, "fsync of sealed data", r.Sync())
	if _, err := r.Stat(); err != nil {
		t.Errorf("fstat sealed: %v", err)
	}

	_, err = os.OpenFile(vhd, os.O_WRONLY, 0)
	wantErrno(t, "open sealed for write", err, syscall.EPERM)
	_, err = os.OpenFile(vhd, os.O_RDONLY|os.O_TRUNC, 0)
	wantErrno(t, "open sealed O_TRUNC", err, syscall.EPERM)
	wantErrno(t, "chmod sealed", os.Chmod(vhd, 0o644), syscall.EPERM)
	wantErrno(t, "chown sealed", os.Chown(vhd, 1, 1), syscall.EPERM)
	wantErrno(t, "utimes sealed", unix.UtimesNano(vhd, []unix.Timespec{{Sec: 1}, {Sec: 1}}), syscall.EPERM)
	if err := os.Truncate(vhd, 4096); err == nil {
		t.Error("truncate of sealed data succeeded")
	}
	if got, _ := os.ReadFile(vhd); !bytes.Equal(got, data) {
		t.Error("sealed data changed after the refused changes")
	}
}

func TestRefusedUpload(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	m.mkdir("a")
	vhd := m.path("images", "a", "image.vhd")
	wantErrno(t, "close of a garbage upload", writeFile(vhd, bytes.Repeat([]byte("x"), 3000)), syscall.EINVAL)
	if s := m.prop("a", "status"); s != "killed" {
		t.Errorf("status %q after a refused upload, want killed", s)
	}
	if r := m.prop("a", "imagefs_kill_reason"); r == "" {
		t.Error("no kill reason")
	}
	// A killed image takes a new upload; unlink discards one.
	data := fixedVHD(t, 8192)
	w, err := os.OpenFile(vhd, os.O_WRONLY|os.O_TRUNC, 0)
	noErr(t, "reopen killed", err)
	_, err = w.Write(data[:100])
	noErr(t, "write", err)
	noErr(t, "ftruncate upload", w.Truncate(50))
	if fi, _ := w.Stat(); fi == nil || fi.Size() != 50 {
		t.Errorf("size after ftruncate: %v", fi)
	}
	w.Close() // refused: incomplete
	noErr(t, "unlink of the unsealed image.vhd", syscall.Unlink(vhd))
	_, err = os.Stat(vhd)
	wantErrno(t, "stat after unlink", err, syscall.ENOENT)
	noErr(t, "upload again", writeFile(vhd, data))
	if s := m.prop("a", "status"); s != "active" {
		t.Errorf("status %q, want active", s)
	}
}

func readProp(t *testing.T, p string) (string, error) {
	t.Helper()
	b, err := os.ReadFile(p)
	return string(b), err
}

// eventually reads the file at p until it reads want, for up to 5 s, and
// returns the last read.
func eventually(t *testing.T, p, want string) (string, error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := readProp(t, p)
		if (err == nil && v == want) || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPropertyFiles(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	m.mkdir("a")
	props := m.path("images", "a", "properties")
	p := func(k string) string { return filepath.Join(props, k) }

	// echo 1024 > min_ram
	noErr(t, "echo > min_ram", writeFile(p("min_ram"), []byte("1024\n")))
	if v := m.prop("a", "min_ram"); v != "1024" {
		t.Errorf("min_ram %q, want 1024", v)
	}
	// A refused value fails at the write and changes nothing.
	f, err := os.OpenFile(p("min_ram"), os.O_WRONLY|os.O_TRUNC, 0)
	noErr(t, "open min_ram", err)
	_, err = f.Write([]byte("lots\n"))
	wantErrno(t, "write of a bad min_ram", err, syscall.EINVAL)
	f.Close()
	if v := m.prop("a", "min_ram"); v != "1024" {
		t.Errorf("min_ram %q after a refused write, want 1024", v)
	}
	// System properties refuse writes.
	_, err = os.OpenFile(p("status"), os.O_WRONLY|os.O_TRUNC, 0)
	wantErrno(t, "open status for write", err, syscall.EPERM)
	fi, err := os.Stat(p("status"))
	noErr(t, "stat status", err)
	if fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("status mode %v, want read-only", fi.Mode())
	}
	wantErrno(t, "unlink of a core property", syscall.Unlink(p("min_ram")), syscall.EPERM)
	_, err = os.ReadFile(p("nokey"))
	wantErrno(t, "read of a missing property", err, syscall.ENOENT)

	// A new custom property by echo, by touch, by ": >".
	noErr(t, "echo > os_distro", writeFile(p("os_distro"), []byte("superos\n")))
	if v := m.prop("a", "os_distro"); v != "superos" {
		t.Errorf("os_distro %q", v)
	}
	f, err = os.OpenFile(p("touched"), os.O_WRONLY|os.O_CREATE, 0o644)
	noErr(t, "touch", err)
	if _, err := f.Stat(); err != nil {
		t.Errorf("fstat of a created property: %v", err)
	}
	noErr(t, "close touched", f.Close())
	// A file closed without a write is set at RELEASE (props.go), which
	// the kernel sends after close(2) has returned: wait for it.
	if v, err := eventually(t, p("touched"), "\n"); err != nil || v != "\n" {
		t.Errorf("touched property: %q, %v; want an empty value", v, err)
	}
	noErr(t, ": > os_distro", writeFile(p("os_distro"), nil))
	if v, err := eventually(t, p("os_distro"), "\n"); err != nil || v != "\n" {
		t.Errorf("os_distro %q, %v after : >, want empty", v, err)
	}
	// Write, fsync, write more, close.
	f, err = os.OpenFile(p("editor"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	noErr(t, "create editor", err)
	_, err = f.Write([]byte("one"))
	noErr(t, "write", err)
	noErr(t, "fsync", f.Sync())
	if v := m.prop("a", "editor"); v != "one" {
		t.Errorf("editor %q after fsync, want one", v)
	}
	_, err = f.Write([]byte(" two\n"))
	noErr(t, "write more", err)
	got := make([]byte, 64)
	n, _ := f.ReadAt(got, 0)
	if string(got[:n]) != "one two\n" {
		t.Errorf("read through the writer's fd %q", got[:n])
	}
	noErr(t, "close", f.Close())
	if v := m.prop("a", "editor"); v != "one two" {
		t.Errorf("editor %q, want \"one two\"", v)
	}
	// ftruncate of a written value, then more: "ab" + "c" at offset 2.
	f, err = os.OpenFile(p("editor2"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	noErr(t, "create editor2", err)
	_, err = f.Write([]byte("abcdef"))
	noErr(t, "write editor2", err)
	noErr(t, "ftruncate editor2", f.Truncate(2))
	_, err = f.WriteAt([]byte("c\n"), 2)
	noErr(t, "write editor2 at 2", err)
	noErr(t, "close editor2", f.Close())
	if v := m.prop("a", "editor2"); v != "abc" {
		t.Errorf("editor2 %q after write, ftruncate 2, write at 2; want abc", v)
	}
	// truncate by path keeps the first bytes.
	noErr(t, "truncate editor", os.Truncate(p("editor"), 3))
	if v := m.prop("a", "editor"); v != "one" {
		t.Errorf("editor %q after truncate 3, want one", v)
	}
	// A new file whose value is refused leaves nothing behind.
	wantErrno(t, "create of a system key", writeFile(p("checksum"), []byte("x\n")), syscall.EPERM)

	// Rename onto a key: sed -i, write-temp-then-rename.
	noErr(t, "write temp", writeFile(p("sedXYZ"), []byte("2048\n")))
	noErr(t, "rename onto min_ram", os.Rename(p("sedXYZ"), p("min_ram")))
	if v := m.prop("a", "min_ram"); v != "2048" {
		t.Errorf("min_ram %q after the rename, want 2048", v)
	}
	if ns := names(t, props); slices.Contains(ns, "sedXYZ") {
		t.Errorf("the renamed file is still listed: %q", ns)
	}
	noErr(t, "write temp 2", writeFile(p("tmp2"), []byte("lots\n")))
	wantErrno(t, "rename of a bad value onto min_ram", os.Rename(p("tmp2"), p("min_ram")), syscall.EPERM)
	wantErrno(t, "rename NOREPLACE onto a set key",
		unix.Renameat2(unix.AT_FDCWD, p("tmp2"), unix.AT_FDCWD, p("min_ram"), unix.RENAME_NOREPLACE), syscall.EEXIST)
	noErr(t, "mv to a new key", unix.Renameat2(unix.AT_FDCWD, p("tmp2"), unix.AT_FDCWD, p("tmp3"), unix.RENAME_NOREPLACE))
	if err := os.Rename(p("tmp3"), m.path("images", "a", "x")); err == nil {
		t.Error("rename of a property file out of properties/ succeeded")
	}
	noErr(t, "rm custom", syscall.Unlink(p("tmp3")))
	noErr(t, "rm custom 2", syscall.Unlink(p("touched")))
	_, err = os.Stat(p("touched"))
	wantErrno(t, "stat of a removed property", err, syscall.ENOENT)
	if err := os.Chmod(p("editor"), 0o600); err == nil {
		if fi, _ := os.Stat(p("editor")); fi != nil && fi.Mode().Perm() == 0o600 {
			t.Error("chmod of a property file was kept")
		}
	}
}

func TestViewsAndCatalog(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	id := m.mkdir("a")
	noErr(t, "set visibility", writeFile(m.path("images", "a", "properties", "visibility"), []byte("public\n")))
	noErr(t, "set os_distro", unix.Setxattr(m.path("images", "a"), "user.os_distro", []byte("super/os"), 0))
	if ns := names(t, m.path("by-property")); !slices.Contains(ns, "os_distro") {
		t.Errorf("by-property/ lists %q, without os_distro", ns)
	}
	wantNames(t, m.path("by-property", "os_distro"), "super%2Fos")
	wantNames(t, m.path("by-property", "os_distro", "super%2Fos"), "a")
	link := m.path("by-property", "os_distro", "super%2Fos", "a")
	target, err := os.Readlink(link)
	noErr(t, "readlink", err)
	if target != "../../../by-id/"+id {
		t.Errorf("link target %q", target)
	}
	fi, err := os.Lstat(link)
	noErr(t, "lstat link", err)
	if fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("link mode %v", fi.Mode())
	}
	if b, err := os.ReadFile(filepath.Join(link, "properties", "name")); err != nil || string(b) != "a\n" {
		t.Errorf("name through the view: %q, %v", b, err)
	}
	wantErrno(t, "unlink of a view link", syscall.Unlink(link), syscall.EPERM)
	wantErrno(t, "rmdir of a view value", syscall.Rmdir(m.path("by-property", "os_distro", "super%2Fos")), syscall.EPERM)
	wantErrno(t, "rmdir of a view key", syscall.Rmdir(m.path("by-property", "os_distro")), syscall.EPERM)
	var sx unix.Statx_t
	noErr(t, "GETATTR of a view value", unix.Statx(unix.AT_FDCWD, m.path("by-property", "os_distro", "super%2Fos"),
		unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &sx))
	if sx.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("view value mode %o", sx.Mode)
	}
	_, err = os.Stat(m.path("by-property", "os_distro", "nothing"))
	wantErrno(t, "stat of a missing value", err, syscall.ENOENT)
	_, err = os.Stat(m.path("by-property", "os_distro", "super%2Fos", "b"))
	wantErrno(t, "stat of a missing link", err, syscall.ENOENT)
	buf := make([]byte, 256)
	if _, err := unix.Getxattr(m.path("by-property", "os_distro"), "user.x", buf); err == nil {
		t.Error("getxattr on a view directory succeeded")
	}
	if _, err := unix.Listxattr(m.path("by-property", "os_distro"), buf); err != nil {
		t.Errorf("listxattr on a view directory: %v", err)
	}

	// The view changes with the property, at once.
	noErr(t, "change os_distro", writeFile(m.path("images", "a", "properties", "os_distro"), []byte("other\n")))
	wantNames(t, m.path("by-property", "os_distro"), "other")
	_, err = os.Stat(link)
	wantErrno(t, "old link after the change", err, syscall.ENOENT)

	// .catalog: found, not listed.
	wantNames(t, m.path(".catalog"), "by-property", "images")
	b, err := os.ReadFile(m.path(".catalog", "images"))
	noErr(t, "read .catalog/images", err)
	if !bytes.Contains(b, []byte(`"name":"a"`)) || bytes.Count(b, []byte("\n")) != 1 {
		t.Errorf(".catalog/images: %q", b)
	}
	b, err = os.ReadFile(m.path(".catalog", "by-property", "os_distro", "other"))
	noErr(t, "read a catalog view", err)
	if !bytes.Contains(b, []byte(id)) {
		t.Errorf("catalog view: %q", b)
	}
	_, err = os.Stat(m.path(".catalog", "nothing"))
	wantErrno(t, "stat of a missing catalog file", err, syscall.ENOENT)
	if _, err := os.Stat(m.path(".catalog", "by-property", "os_distro")); err != nil {
		t.Errorf("stat catalog key dir: %v", err)
	}
}

// TestInvalidation: a change through one path is seen at once through
// every other (the kernel's caches are dropped before the change replies).
func TestInvalidation(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	id := m.upload("a", fixedVHD(t, 8192))
	byName := m.path("images", "a", "properties", "os_distro")
	byID := m.path("by-id", id, "properties", "os_distro")
	for i, v := range []string{"one", "two", "three"} {
		switch i {
		case 0:
			noErr(t, "echo by name", writeFile(byName, []byte(v+"\n")))
		case 1:
			noErr(t, "setxattr by id", unix.Setxattr(m.path("by-id", id, "image.vhd"), "user.os_distro", []byte(v), 0))
		case 2:
			noErr(t, "echo by id", writeFile(byID, []byte(v+"\n")))
		}
		for _, p := range []string{byName, byID} {
			if got, err := readProp(t, p); err != nil || got != v+"\n" {
				t.Errorf("after setting %q: %s reads %q, %v", v, p, got, err)
			}
			fi, err := os.Stat(p)
			noErr(t, "stat", err)
			if fi.Size() != int64(len(v)+1) {
				t.Errorf("after setting %q: %s size %d", v, p, fi.Size())
			}
		}
		buf := make([]byte, 64)
		n, err := unix.Getxattr(m.path("images", "a"), "user.os_distro", buf)
		if err != nil || string(buf[:n]) != v {
			t.Errorf("xattr after setting %q: %q, %v", v, buf[:n], err)
		}
	}
	noErr(t, "rm by id", syscall.Unlink(byID))
	_, err := os.Stat(byName)
	wantErrno(t, "stat by name after rm by id", err, syscall.ENOENT)
	noErr(t, "rename", os.Rename(m.path("images", "a"), m.path("images", "b")))
	if b, err := os.ReadFile(m.path("by-id", id, "properties", "name")); err != nil || string(b) != "b\n" {
		t.Errorf("name by id after the rename: %q, %v", b, err)
	}
	_, err = os.Stat(m.path("images", "a", "image.vhd"))
	wantErrno(t, "old name after the rename", err, syscall.ENOENT)
}
