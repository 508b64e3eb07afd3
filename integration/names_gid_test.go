package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestNamesOneNamespace (issue #12 item 9, #13 item 16): image names are
// one namespace for all users. A name another user's image holds is taken
// even where that image is hidden: mkdir, mv onto it, writing it to
// properties/name and setfattr user.name all answer EEXIST (mkdir and
// rename agree), while the image itself stays ENOENT to the user.
func TestNamesOneNamespace(t *testing.T) {
	requireTools(t, "mkdir", "mv", "setfattr")
	a := mountAllowOther(t)
	A, B := a.as(userA), a.as(userB)
	A.must("mkdir", a.images("n-private"))
	A.must("mkdir", a.images("n-public"))
	if err := os.WriteFile(a.propFile("n-public", "visibility"), []byte("public\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	B.must("mkdir", a.images("b-own"))
	privateID := a.prop("n-private", "id")

	for _, taken := range []string{"n-private", "n-public"} {
		if taken == "n-private" {
			B.want("stat", a.images(taken), nil, syscall.ENOENT)
			B.want("rename", a.images("b-own"), []string{a.images(taken)}, syscall.EEXIST)
		} else {
			// A name the user sees: the kernel's sticky-bit check of
			// images/ refuses first; past it, imagefs says EEXIST.
			B.want("rename", a.images("b-own"), []string{a.images(taken)}, syscall.EPERM)
			B.withCaps().want("rename", a.images("b-own"), []string{a.images(taken)}, syscall.EEXIST)
		}
		B.want("mkdir", a.images(taken), nil, syscall.EEXIST)
		B.want("write", a.propFile("b-own", "name"), []string{taken + "\n"}, syscall.EEXIST)
		B.want("setxattr", a.images("b-own"), []string{"user.name", taken}, syscall.EEXIST)
		// The tools fail; mkdir and setfattr say why (mv words it its
		// own way, dash's echo says "I/O error" for any failed write).
		for _, c := range []struct{ script, says string }{
			{`mkdir "$1/$2"`, "File exists"},
			{`setfattr -n user.name -v "$2" "$1/b-own"`, "File exists"},
			{`mv "$1/b-own" "$1/$2"`, ""},
			{`echo "$2" > "$1/b-own/properties/name"`, ""},
		} {
			r := asUser(userB, c.script, a.images(), taken)
			if r.err == nil || !strings.Contains(r.stderr, c.says) {
				t.Errorf("uid %s: %s with %s taken: %s, want a failure saying %q", userB, c.script, taken, r, c.says)
			}
		}
	}
	if got := a.prop("b-own", "owner"); got != userB {
		t.Errorf("b-own: owner %q after the refused renames", got)
	}
	if got := a.prop("n-private", "id"); got != privateID {
		t.Errorf("n-private: id %q, want %s", got, privateID)
	}
	if got := B.ls(a.images()); strings.Join(got, " ") != "b-own n-public" {
		t.Errorf("uid %s: ls images/ = %q, want b-own n-public", userB, got)
	}
}

// TestImageGroup (issue #13 item 18): an image's files and directories
// show the gid of the process that created it (uid 1001 with gid 2001
// here), under images/, by-id/ and in the views, and after a remount; an
// image root made shows gid 0.
func TestImageGroup(t *testing.T) {
	requireTools(t, "setpriv", "mkdir", "cp")
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	r := execCmd("setpriv", "--reuid="+userA, "--regid=2001", "--clear-groups", "sh", "-c",
		`mkdir "$1" && cp "$2" "$1/image.vhd" && echo grouped > "$1/properties/os_distro"`, "sh", a.images("g-img"), fx.Path)
	if r.err != nil {
		t.Fatalf("as uid %s gid 2001: %s", userA, r)
	}
	if err := os.Mkdir(a.images("g-root"), 0o755); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		id := a.prop("g-img", "id")
		for _, p := range []string{
			a.images("g-img"), a.dataFile("g-img"), a.images("g-img", "properties"),
			a.propFile("g-img", "name"), a.propFile("g-img", "os_distro"),
			a.byID(id), a.byID(id, "image.vhd"), a.byID(id, "properties"),
			filepath.Join(a.Mnt, "by-property", "os_distro", "grouped", "g-img"),
		} {
			var st syscall.Stat_t
			if err := syscall.Lstat(p, &st); err != nil {
				t.Fatalf("%s: lstat %s: %v", when, p, err)
			}
			if st.Uid != 1001 || st.Gid != 2001 {
				t.Errorf("%s: %s: uid %d gid %d, want 1001 2001", when, p, st.Uid, st.Gid)
			}
		}
		var st syscall.Stat_t
		if err := syscall.Stat(a.propFile("g-root", "name"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: an image root made: uid %d gid %d, want 0 0", when, st.Uid, st.Gid)
		}
	}
	check("after mkdir")
	a.remount()
	check("after a remount")
}
