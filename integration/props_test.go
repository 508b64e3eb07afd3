package integration

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// systemKeys are the system-maintained properties of a sealed image.
var systemKeys = []string{
	"id", "status", "checksum", "os_hash_algo", "os_hash_value", "size",
	"virtual_size", "owner", "created_at", "updated_at", "disk_format",
	"container_format",
}

// ownerKeys are the core properties the owner may set.
var ownerKeys = []string{"name", "visibility", "protected", "min_ram", "min_disk"}

// sealedImage creates images/<name> with a small uploaded VHD and returns
// its id.
func sealedImage(t testing.TB, m *fsMount, name string) string {
	t.Helper()
	fx := makeVHD(t, 2*mib, "fixed")
	id := m.mkimage(name)
	run(t, "cp", fx.Path, m.dataFile(name))
	m.checkSealed(t, name, fx)
	return id
}

// getfattrDump parses `getfattr -d -m - path` into key -> value for user.*
// attributes.
func getfattrDump(t testing.TB, path string) map[string]string {
	t.Helper()
	out := run(t, "getfattr", "-d", "-m", "-", "--absolute-names", "-e", "text", path)
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		key, ok := strings.CutPrefix(k, "user.")
		if !ok {
			t.Errorf("getfattr -d -m - lists %q outside user.*", k)
			continue
		}
		uq, err := strconv.Unquote(v)
		if err != nil {
			uq = v
		}
		got[key] = uq
	}
	return got
}

// TestPropertyFiles covers properties/: the file content, setting a value
// by writing the file, custom properties made and removed as files,
// system properties read-only for root, and the file and xattr views
// agreeing at once.
func TestPropertyFiles(t *testing.T) {
	m := mount(t)
	requireTools(t, "getfattr", "setfattr")
	id := sealedImage(t, m, "props")
	props := m.images("props", "properties")

	t.Run("content-is-value-and-newline", func(t *testing.T) {
		names := dirNames(t, props)
		dump := getfattrDump(t, m.dataFile("props"))
		if len(names) != len(dump) {
			t.Errorf("properties/ lists %d files, getfattr -d %d attributes:\n%v\n%v", len(names), len(dump), names, dump)
		}
		for _, k := range names {
			b, err := os.ReadFile(props + "/" + k)
			if err != nil {
				t.Errorf("read %s: %v", k, err)
				continue
			}
			v, ok := dump[k]
			if !ok {
				t.Errorf("properties/%s has no user.%s attribute", k, k)
			}
			if string(b) != v+"\n" {
				t.Errorf("properties/%s = %q, want the xattr value %q and a newline", k, b, v)
			}
			if fi, err := os.Stat(props + "/" + k); err != nil || fi.Size() != int64(len(b)) {
				t.Errorf("stat properties/%s: size %v (%v), content %d bytes", k, fi.Size(), err, len(b))
			}
		}
		for _, k := range append(systemKeys, ownerKeys...) {
			if !slices.Contains(names, k) {
				t.Errorf("properties/ of an active image lacks %s", k)
			}
		}
		if got := m.prop("props", "id"); got != id {
			t.Errorf("id %q, want %q", got, id)
		}
	})

	t.Run("echo-sets-core-values", func(t *testing.T) {
		for _, c := range []struct{ key, value string }{
			{"min_ram", "1024"}, {"min_disk", "40"}, {"visibility", "shared"},
			{"protected", "true"}, {"protected", "false"}, {"min_ram", "0"}, {"min_ram", "2048"},
		} {
			sh(t, `echo "$2" > "$1"`, props+"/"+c.key, c.value)
			if got := readProp(t, props+"/"+c.key); got != c.value {
				t.Errorf("after echo %s > properties/%s: file says %q", c.value, c.key, got)
			}
			for _, p := range []string{m.dataFile("props"), m.images("props"), m.byID(id, "image.vhd")} {
				got := run(t, "getfattr", "--only-values", "-n", "user."+c.key, p)
				if got != c.value {
					t.Errorf("after echo %s > properties/%s: getfattr -n user.%s %s = %q", c.value, c.key, c.key, p, got)
				}
			}
		}
		// Go: open with O_TRUNC, write, close.
		if err := os.WriteFile(props+"/min_disk", []byte("77\n"), 0o644); err != nil {
			t.Errorf("os.WriteFile min_disk: %v", err)
		}
		if got := m.prop("props", "min_disk"); got != "77" {
			t.Errorf("min_disk after os.WriteFile = %q", got)
		}
		// A value the rules refuse fails at the write that completes the
		// line (so that a shell's echo reports it too) and changes nothing.
		f, err := os.OpenFile(props+"/min_ram", os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString("abc\n")
		wantErrno(t, "writing abc to min_ram", err, syscall.EINVAL)
		if err := f.Close(); err != nil {
			t.Errorf("close after a refused write: %v", err)
		}
		if r := shErr(`echo abc > "$1"`, props+"/min_ram"); r.code == 0 {
			t.Errorf("sh: echo abc > properties/min_ram exited 0; want the refused write reported")
		}
		if got := m.prop("props", "min_ram"); got != "2048" {
			t.Errorf("min_ram after a refused write = %q, want 2048", got)
		}
	})

	t.Run("custom-property-files", func(t *testing.T) {
		sh(t, `echo superos > "$1"`, props+"/os_distro")
		if got := run(t, "getfattr", "--only-values", "-n", "user.os_distro", m.dataFile("props")); got != "superos" {
			t.Errorf("getfattr user.os_distro = %q", got)
		}
		if got := m.prop("props", "os_distro"); got != "superos" {
			t.Errorf("properties/os_distro = %q", got)
		}
		if fi, err := os.Stat(props + "/os_distro"); err != nil || fi.Mode() != 0o644 {
			t.Errorf("custom property file mode: %v %v, want -rw-r--r--", fi.Mode(), err)
		}
		if dump := getfattrDump(t, m.images("props")); dump["os_distro"] != "superos" {
			t.Errorf("getfattr -d on the image dir: os_distro = %q", dump["os_distro"])
		}
		// Only one trailing newline is stripped.
		sh(t, `printf 'line1\nline2\n\n' > "$1"`, props+"/com.rackspace__1__release_id")
		v, err := unixGet(props+"/../image.vhd", "user.com.rackspace__1__release_id")
		if err != nil || v != "line1\nline2\n" {
			t.Errorf("multi-line value = %q (%v), want %q", v, err, "line1\nline2\n")
		}
		run(t, "rm", props+"/os_distro")
		r := execCmd("getfattr", "-n", "user.os_distro", m.dataFile("props"))
		if r.code == 0 || !strings.Contains(r.stderr, "No such attribute") {
			t.Errorf("getfattr after rm properties/os_distro: %s", r)
		}
		_, err = unixGet(m.dataFile("props"), "user.os_distro")
		wantErrno(t, "getxattr of a removed property", err, unix.ENODATA)
		_, err = os.Stat(props + "/os_distro")
		wantErrno(t, "stat of a removed property file", err, syscall.ENOENT)
		if slices.Contains(dirNames(t, props), "os_distro") {
			t.Errorf("properties/ still lists os_distro")
		}
	})

	t.Run("system-properties-read-only", func(t *testing.T) {
		before := map[string]string{}
		for _, k := range systemKeys {
			p := props + "/" + k
			before[k] = readProp(t, p)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			want := os.FileMode(0o444)
			if k == "status" {
				want = 0o644 // the owner deactivates a sealed image by writing it
			}
			if fi.Mode() != want {
				t.Errorf("properties/%s: mode %v, want %v", k, fi.Mode(), want)
			}
			wantErrno(t, "unlink properties/"+k, syscall.Unlink(p), syscall.EPERM)
			if k == "status" {
				// The owner or root may deactivate an active image
				// (concepts.md), so they may open its status for
				// writing; any other value is refused at close.
				writeErrno(t, p, "x\n", syscall.EPERM)
				writeErrno(t, p, "queued\n", syscall.EPERM)
				continue
			}
			for _, flag := range []int{syscall.O_WRONLY, syscall.O_WRONLY | syscall.O_TRUNC, syscall.O_RDWR} {
				fd, err := syscall.Open(p, flag, 0)
				if err == nil {
					syscall.Close(fd)
				}
				wantErrno(t, "open properties/"+k+" for writing", err, syscall.EPERM)
			}
			wantErrno(t, "truncate properties/"+k, syscall.Truncate(p, 0), syscall.EPERM)
			r := shErr(`echo x > "$1"`, p)
			if r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
				t.Errorf("echo x > properties/%s: %s", k, r)
			}
		}
		// The status of an image that is not active is nobody's to set.
		m.mkimage("queued")
		qs := m.propFile("queued", "status")
		for _, flag := range []int{syscall.O_WRONLY, syscall.O_WRONLY | syscall.O_TRUNC} {
			fd, err := syscall.Open(qs, flag, 0)
			if err == nil {
				syscall.Close(fd)
			}
			wantErrno(t, "open the status of a queued image for writing", err, syscall.EPERM)
		}
		wantErrno(t, "truncate the status of a queued image", syscall.Truncate(qs, 0), syscall.EPERM)
		if r := shErr(`echo active > "$1"`, qs); r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
			t.Errorf("echo active > status of a queued image: %s", r)
		}
		if got := m.prop("queued", "status"); got != "queued" {
			t.Errorf("status of the queued image = %q", got)
		}
		for _, k := range systemKeys {
			if k == "updated_at" {
				continue
			}
			if got := readProp(t, props+"/"+k); got != before[k] {
				t.Errorf("properties/%s changed from %q to %q", k, before[k], got)
			}
		}
		for _, k := range ownerKeys {
			if fi, err := os.Stat(props + "/" + k); err != nil || fi.Mode() != 0o644 {
				t.Errorf("properties/%s: mode %v (%v), want -rw-r--r--", k, fi.Mode(), err)
			}
		}
		// Core properties cannot be removed.
		for _, k := range ownerKeys {
			if err := syscall.Unlink(props + "/" + k); err == nil {
				t.Errorf("rm properties/%s succeeded", k)
			}
		}
		if got := m.prop("props", "min_ram"); got != "2048" {
			t.Errorf("min_ram after refused rm = %q", got)
		}
	})

	t.Run("views-agree-at-once", func(t *testing.T) {
		file := props + "/build"
		sh(t, `echo 0 > "$1"`, file)
		for i := range 20 {
			v := strings.Repeat("v", i+1) + strconv.Itoa(i)
			run(t, "setfattr", "-n", "user.build", "-v", v, m.images("props"))
			if got := readProp(t, file); got != v {
				t.Errorf("round %d: setfattr %q, then the file says %q", i, v, got)
			}
			if fi, err := os.Stat(file); err != nil || fi.Size() != int64(len(v)+1) {
				t.Errorf("round %d: setfattr %q (%d bytes), then stat size %d (%v)", i, v, len(v), fi.Size(), err)
			}
			w := "w" + strings.Repeat("x", 20-i)
			sh(t, `echo "$2" > "$1"`, file, w)
			if got := run(t, "getfattr", "--only-values", "-n", "user.build", m.dataFile("props")); got != w {
				t.Errorf("round %d: echo %q > file, then getfattr says %q", i, w, got)
			}
			if fi, err := os.Stat(file); err != nil || fi.Size() != int64(len(w)+1) {
				t.Errorf("round %d: echo %q > file, then stat size %d (%v)", i, w, fi.Size(), err)
			}
		}
		// A property made with setfattr is a file at once; removed with
		// setfattr -x it is gone at once.
		run(t, "setfattr", "-n", "user.fresh", "-v", "new", m.dataFile("props"))
		if got := readProp(t, props+"/fresh"); got != "new" {
			t.Errorf("properties/fresh = %q", got)
		}
		run(t, "setfattr", "-x", "user.fresh", m.dataFile("props"))
		if _, err := os.ReadFile(props + "/fresh"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("properties/fresh after setfattr -x: %v, want ENOENT", err)
		}
	})
}

// unixGet reads attribute name of path with a buffer large enough.
func unixGet(path, name string) (string, error) {
	buf := make([]byte, 1<<17)
	n, err := unix.Getxattr(path, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// TestXattrs checks the xattr view and its errnos on image.vhd and on the
// image directory.
func TestXattrs(t *testing.T) {
	m := mount(t)
	requireTools(t, "getfattr", "setfattr")
	id := sealedImage(t, m, "x")
	for _, target := range []struct{ name, path string }{
		{"image.vhd", m.dataFile("x")},
		{"image-dir", m.images("x")},
		{"by-id-image.vhd", m.byID(id, "image.vhd")},
		{"by-id-dir", m.byID(id)},
	} {
		t.Run(target.name, func(t *testing.T) {
			p := target.path
			run(t, "setfattr", "-n", "user.os_distro", "-v", "superos", p)
			dump := getfattrDump(t, p)
			for _, k := range append(append(systemKeys, ownerKeys...), "os_distro") {
				if _, ok := dump[k]; !ok {
					t.Errorf("getfattr -d does not list user.%s", k)
				}
			}
			if dump["os_distro"] != "superos" || dump["status"] != "active" || dump["id"] != id {
				t.Errorf("getfattr -d: os_distro %q status %q id %q", dump["os_distro"], dump["status"], dump["id"])
			}

			// Listxattr: the size query, a short buffer, the full list.
			n, err := unix.Listxattr(p, nil)
			if err != nil || n <= 0 {
				t.Fatalf("listxattr size: %d %v", n, err)
			}
			list := make([]byte, n)
			if got, err := unix.Listxattr(p, list); err != nil || got != n {
				t.Errorf("listxattr: %d %v, want %d", got, err, n)
			}
			var names []string
			for _, s := range bytes.Split(bytes.TrimSuffix(list, []byte{0}), []byte{0}) {
				names = append(names, string(s))
			}
			if len(names) != len(dump) || !slices.Contains(names, "user.os_distro") {
				t.Errorf("listxattr gives %v; getfattr -d lists %d", names, len(dump))
			}
			_, err = unix.Listxattr(p, make([]byte, n-1))
			wantErrno(t, "listxattr with a short buffer", err, unix.ERANGE)

			// Getxattr: the size query, a short buffer, a missing key.
			if n, err := unix.Getxattr(p, "user.id", nil); err != nil || n != len(id) {
				t.Errorf("getxattr user.id size: %d %v, want %d", n, err, len(id))
			}
			_, err = unix.Getxattr(p, "user.id", make([]byte, 10))
			wantErrno(t, "getxattr with a short buffer", err, unix.ERANGE)
			_, err = unix.Getxattr(p, "user.no_such_key", make([]byte, 100))
			wantErrno(t, "getxattr of a missing key", err, unix.ENODATA)

			// Setxattr flags.
			err = unix.Setxattr(p, "user.min_ram", []byte("1"), unix.XATTR_CREATE)
			wantErrno(t, "XATTR_CREATE on user.min_ram", err, unix.EEXIST)
			err = unix.Setxattr(p, "user.os_distro", []byte("other"), unix.XATTR_CREATE)
			wantErrno(t, "XATTR_CREATE on an existing custom key", err, unix.EEXIST)
			err = unix.Setxattr(p, "user.missing_key", []byte("v"), unix.XATTR_REPLACE)
			wantErrno(t, "XATTR_REPLACE on a missing key", err, unix.ENODATA)
			if _, err := unixGet(p, "user.missing_key"); errnoOf(err) != unix.ENODATA {
				t.Errorf("XATTR_REPLACE created the key: %v", err)
			}
			if err := unix.Setxattr(p, "user.os_distro", []byte("replaced"), unix.XATTR_REPLACE); err != nil {
				t.Errorf("XATTR_REPLACE on an existing key: %v", err)
			}
			if err := unix.Setxattr(p, "user.created_key", []byte("c"), unix.XATTR_CREATE); err != nil {
				t.Errorf("XATTR_CREATE on a new key: %v", err)
			}
			if got := m.prop("x", "created_key"); got != "c" {
				t.Errorf("properties/created_key = %q", got)
			}

			// System properties.
			for _, k := range []string{"status", "id", "checksum", "size", "owner", "os_hash_value", "imagefs_x"} {
				before, _ := unixGet(p, "user."+k)
				err := unix.Setxattr(p, "user."+k, []byte("x"), 0)
				wantErrno(t, "setxattr user."+k, err, unix.EPERM)
				if after, _ := unixGet(p, "user."+k); after != before {
					t.Errorf("user.%s changed from %q to %q", k, before, after)
				}
				if k != "imagefs_x" {
					wantErrno(t, "removexattr user."+k, unix.Removexattr(p, "user."+k), unix.EPERM)
				}
			}

			// Value size limits: 65535 bytes is the largest value.
			big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 65536
			err = unix.Setxattr(p, "user.big", big, 0)
			wantErrno(t, "setxattr of 65536 bytes", err, unix.E2BIG)
			err = unix.Setxattr(p, "user.big", append(big, 'x'), 0)
			wantErrno(t, "setxattr of 65537 bytes", err, unix.E2BIG)
			if err := unix.Setxattr(p, "user.big", big[:65535], 0); err != nil {
				t.Errorf("setxattr of 65535 bytes: %v", err)
			}
			if v, err := unixGet(p, "user.big"); err != nil || v != string(big[:65535]) {
				t.Errorf("getxattr user.big: %d bytes, %v", len(v), err)
			}
			if b, err := os.ReadFile(m.propFile("x", "big")); err != nil || string(b) != string(big[:65535])+"\n" {
				t.Errorf("properties/big: %d bytes, %v; want 65536", len(b), err)
			}

			// Typed values.
			for _, c := range []struct{ key, bad, keep string }{
				{"min_ram", "abc", "512"}, {"min_ram", "-1", "512"}, {"min_disk", "1.5", "3"},
				{"protected", "yes", "false"}, {"visibility", "everyone", "private"},
			} {
				if err := unix.Setxattr(p, "user."+c.key, []byte(c.keep), 0); err != nil {
					t.Fatalf("setxattr user.%s=%s: %v", c.key, c.keep, err)
				}
				err := unix.Setxattr(p, "user."+c.key, []byte(c.bad), 0)
				wantErrno(t, "setxattr user."+c.key+"="+c.bad, err, unix.EINVAL)
				if got := m.prop("x", c.key); got != c.keep {
					t.Errorf("%s after a refused %q = %q, want %q", c.key, c.bad, got, c.keep)
				}
			}
			r := execCmd("setfattr", "-n", "user.min_ram", "-v", "abc", p)
			if r.code == 0 || !strings.Contains(r.stderr, "Invalid argument") {
				t.Errorf("setfattr user.min_ram=abc: %s", r)
			}

			// Name length: the kernel refuses names over 255 bytes.
			long := "user." + strings.Repeat("k", 251) // 256 bytes
			err = unix.Setxattr(p, long, []byte("v"), 0)
			wantErrno(t, "setxattr with a 256-byte name", err, unix.ERANGE)
			_, err = unix.Getxattr(p, long, make([]byte, 10))
			wantErrno(t, "getxattr with a 256-byte name", err, unix.ERANGE)
			longest := "user." + strings.Repeat("k", 250) // 255 bytes
			if err := unix.Setxattr(p, longest, []byte("v"), 0); err != nil {
				t.Errorf("setxattr with a 255-byte name: %v", err)
			}

			// Removal.
			for _, k := range []string{"os_distro", "created_key", "big", strings.TrimPrefix(longest, "user.")} {
				if err := unix.Removexattr(p, "user."+k); err != nil {
					t.Errorf("removexattr user.%s: %v", k, err)
				}
				_, err := unixGet(p, "user."+k)
				wantErrno(t, "getxattr after removexattr user."+k, err, unix.ENODATA)
			}
			wantErrno(t, "removexattr of a missing key", unix.Removexattr(p, "user.os_distro"), unix.ENODATA)
			if err := unix.Removexattr(p, "user.min_ram"); err == nil {
				t.Errorf("removexattr of core user.min_ram succeeded")
			}
		})
	}
}

// writeErrno writes value to path with open(O_WRONLY|O_TRUNC), write and
// close, and checks that the first failing step fails with want.
func writeErrno(t testing.TB, path, value string, want syscall.Errno) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		_, err = f.WriteString(value)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	wantErrno(t, "write "+strings.TrimSpace(value)+" to "+path, err, want)
}
