package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"golang.org/x/sys/unix"
)

// Tests of issue #4, access control (layout.md "Who sees what",
// concepts.md "Visibility"): with --allow-other, other users do not see
// private images at all, read public ones, use community ones by id only,
// see shared ones once they are members; only the owner (or root) changes
// properties or deletes an image; the owner or root deactivates and
// reactivates; root gives an image to another uid (chown).
//
// Other users act through testutil.SysHelper: this test binary, run as that user
// with setpriv, makes one system call and reports its errno by name, so
// the tests assert errnos rather than the wording of some tool.

const (
	userA = "1001" // owns the images
	userB = "1002" // another user
	userC = "1003" // a third user, never a member
)

// sysResult is what one helper call did: its output and errno (0 for
// success) and the step that failed.
type sysResult struct {
	out   string
	errno syscall.Errno
	step  string
}

func (r sysResult) String() string {
	if r.errno == 0 {
		return "success"
	}
	return fmt.Sprintf("%s at %s", unix.ErrnoName(r.errno), r.step)
}

// actor runs helper operations as one user.
type actor struct {
	t      testing.TB
	helper string
	uid    string
	caps   bool // with CAP_DAC_OVERRIDE and CAP_FOWNER: no kernel mode checks
}

// as returns an actor for uid (with the helper of m).
func (a *accessMount) as(uid string) actor { return actor{t: a.t, helper: a.helper, uid: uid} }

// withCaps returns u with CAP_DAC_OVERRIDE and CAP_FOWNER (still not uid
// 0): the kernel's mode and sticky-bit checks pass, so the request reaches
// imagefs, which must refuse it by itself.
func (u actor) withCaps() actor { u.caps = true; return u }

func (u actor) name() string {
	s := "uid " + u.uid
	if u.caps {
		s += "+caps"
	}
	return s
}

// privArgs returns the arguments of setpriv that run a command as the
// user (the command follows them).
func (u actor) privArgs() []string { return testutil.SetprivArgs(u.uid, u.caps) }

// do runs op path args as the user and returns what happened.
func (u actor) do(op, path string, args ...string) sysResult {
	r := testutil.SysAs(u.helper, u.privArgs(), op, path, args...)
	if r.Err != nil && r.Errno == 0 {
		u.t.Fatalf("%s: %s %s: %s", u.name(), op, path, r)
	}
	return sysResult{out: r.Out, errno: r.Errno, step: r.Step}
}

// must runs op and fails the test unless it succeeds; it returns the
// output.
func (u actor) must(op, path string, args ...string) string {
	u.t.Helper()
	r := u.do(op, path, args...)
	if r.errno != 0 {
		u.t.Fatalf("%s: %s %s %q: %s", u.name(), op, path, args, r)
	}
	return r.out
}

// want runs op and checks that it fails with one of the errnos.
func (u actor) want(op, path string, args []string, errnos ...syscall.Errno) {
	u.t.Helper()
	r := u.do(op, path, args...)
	if !slices.Contains(errnos, r.errno) {
		var names []string
		for _, e := range errnos {
			names = append(names, unix.ErrnoName(e))
		}
		u.t.Errorf("%s: %s %s %q: %s, want %s", u.name(), op, path, args, r, strings.Join(names, " or "))
	}
}

// ls lists dir as the user (nil when the listing fails).
func (u actor) ls(dir string) []string {
	u.t.Helper()
	return strings.Fields(u.must("ls", dir))
}

// accessMount is a mount with --allow-other that other users can reach,
// and the helper they run.
type accessMount struct {
	*fsMount
	t      testing.TB
	helper string
}

// mountAllowOther mounts with --allow-other and the extra arguments.
func mountAllowOther(t *testing.T, args ...string) *accessMount {
	t.Helper()
	requireTools(t, "setpriv")
	m := mount(t)
	m.Args = append([]string{"--allow-other"}, args...)
	m.remount()
	chmodPathForOthers(t, m.Mnt)
	return &accessMount{fsMount: m, t: t, helper: testutil.SysHelper(t)}
}

// sharedFixture makes a small dynamic VHD that other users can read.
func sharedFixture(t *testing.T) vhdFixture {
	t.Helper()
	fx := makeVHD(t, 3*mib, "dynamic")
	if err := os.Chmod(fx.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	chmodPathForOthers(t, fx.Path)
	return fx
}

// ownedImage makes images/<name> as uid with a custom property
// os_distro=superos and fx uploaded by uid with cp; it returns the id.
func (a *accessMount) ownedImage(uid, name string, fx vhdFixture) string {
	a.t.Helper()
	mustAsUser(a.t, uid, `mkdir "$1" && cp "$2" "$1/image.vhd" && echo superos > "$1/properties/os_distro"`,
		a.images(name), fx.Path)
	if got := a.prop(name, "owner"); got != uid {
		a.t.Fatalf("images/%s: owner %q, want %s", name, got, uid)
	}
	if got := a.prop(name, "status"); got != "active" {
		a.t.Fatalf("images/%s: status %q, want active", name, got)
	}
	return a.prop(name, "id")
}

// snapshot reads every property of images/<name> as root.
func (a *accessMount) snapshot(name string) map[string]string {
	a.t.Helper()
	dir := a.images(name, "properties")
	ents, err := os.ReadDir(dir)
	if err != nil {
		a.t.Fatalf("ls %s: %v", dir, err)
	}
	out := map[string]string{}
	for _, e := range ents {
		out[e.Name()] = readProp(a.t, filepath.Join(dir, e.Name()))
	}
	return out
}

// unchanged fails the test if images/<name>'s properties differ from
// before.
func (a *accessMount) unchanged(name string, before map[string]string, what string) {
	a.t.Helper()
	after := a.snapshot(name)
	for k, v := range before {
		if after[k] != v {
			a.t.Errorf("after %s: properties/%s = %q, was %q", what, k, after[k], v)
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			a.t.Errorf("after %s: new property %s = %q", what, k, v)
		}
	}
}

// wantHidden checks that u reaches nothing of images/<name> (and
// by-id/<id>): not listed, and every path is ENOENT, for looking at it and
// for changing it.
func wantHidden(t *testing.T, a *accessMount, u actor, name, id string) {
	t.Helper()
	if got := u.ls(a.images()); slices.Contains(got, name) {
		t.Errorf("%s: ls images/ = %q lists %s", u.name(), got, name)
	}
	if got := u.ls(filepath.Join(a.Mnt, "by-id")); slices.Contains(got, id) {
		t.Errorf("%s: ls by-id/ = %q lists %s", u.name(), got, id)
	}
	for _, dir := range []string{a.images(name), a.byID(id)} {
		for _, p := range []string{dir, filepath.Join(dir, "image.vhd"), filepath.Join(dir, "properties"),
			filepath.Join(dir, "properties", "min_ram"), filepath.Join(dir, "properties", "os_distro")} {
			u.want("stat", p, nil, syscall.ENOENT)
		}
		u.want("ls", dir, nil, syscall.ENOENT)
		u.want("ls", filepath.Join(dir, "properties"), nil, syscall.ENOENT)
		u.want("read", filepath.Join(dir, "image.vhd"), nil, syscall.ENOENT)
		u.want("read", filepath.Join(dir, "properties", "name"), nil, syscall.ENOENT)
		u.want("getxattr", filepath.Join(dir, "image.vhd"), []string{"user.name"}, syscall.ENOENT)
		u.want("getxattr", dir, []string{"user.name"}, syscall.ENOENT)
		u.want("write", filepath.Join(dir, "properties", "min_ram"), []string{"64"}, syscall.ENOENT)
		u.want("create", filepath.Join(dir, "properties", "stolen"), []string{"x"}, syscall.ENOENT)
		u.want("unlink", filepath.Join(dir, "properties", "os_distro"), nil, syscall.ENOENT)
		u.want("setxattr", filepath.Join(dir, "image.vhd"), []string{"user.min_ram", "64"}, syscall.ENOENT)
		u.want("setxattr", dir, []string{"user.os_distro", "other"}, syscall.ENOENT)
		u.want("removexattr", dir, []string{"user.os_distro"}, syscall.ENOENT)
		u.want("write", filepath.Join(dir, "image.vhd"), []string{"x"}, syscall.ENOENT)
		u.want("truncate", filepath.Join(dir, "image.vhd"), []string{"0"}, syscall.ENOENT)
		u.want("rmdir", dir, nil, syscall.ENOENT)
	}
	u.want("rename", a.images(name), []string{a.images(name + "-stolen")}, syscall.ENOENT)
}

// TestAccessPrivate: another user neither lists nor reaches a private
// image, by name or by id, and every attempt to read, change or delete it
// is ENOENT and changes nothing; the owner and root see it all.
func TestAccessPrivate(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-private", fx)
	before := a.snapshot("a-private")
	if before["visibility"] != "private" {
		t.Fatalf("new image: visibility %q, want private", before["visibility"])
	}
	A, B := a.as(userA), a.as(userB)

	wantHidden(t, a, B, "a-private", id)
	// Without the kernel's mode checks (CAP_DAC_OVERRIDE, CAP_FOWNER)
	// imagefs still shows uid 1002 nothing.
	wantHidden(t, a, B.withCaps(), "a-private", id)
	a.unchanged("a-private", before, "uid 1002's attempts")
	cmp(t, fx.Path, a.dataFile("a-private"))
	if got := a.prop("a-private", "os_distro"); got != "superos" {
		t.Errorf("os_distro = %q after uid 1002's attempts", got)
	}

	// The owner and root list it and read it by both paths.
	for _, u := range []actor{A, a.as("0")} {
		if got := u.ls(a.images()); !slices.Contains(got, "a-private") {
			t.Errorf("%s: ls images/ = %q, lacks a-private", u.name(), got)
		}
		if got := u.ls(filepath.Join(a.Mnt, "by-id")); !slices.Contains(got, id) {
			t.Errorf("%s: ls by-id/ = %q, lacks %s", u.name(), got, id)
		}
		for _, p := range []string{a.dataFile("a-private"), a.byID(id, "image.vhd")} {
			if got := u.must("read", p); got != string(mustRead(t, fx.Path)) {
				t.Errorf("%s: read %s: %d bytes differ from the upload", u.name(), p, len(got))
			}
		}
		if got := u.must("read", a.byID(id, "properties", "os_distro")); got != "superos\n" {
			t.Errorf("%s: by-id/%s/properties/os_distro = %q", u.name(), id, got)
		}
	}

	// The name is still taken for everyone: mkdir by uid 1002 fails and
	// creates nothing.
	B.want("mkdir", a.images("a-private"), nil, syscall.EEXIST)
	a.unchanged("a-private", before, "uid 1002's mkdir")
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantListed checks that u lists images/<name> and by-id/<id> and reads
// the data (the same bytes as src) and a property through both paths.
func wantListed(t *testing.T, a *accessMount, u actor, name, id, src string) {
	t.Helper()
	if got := u.ls(a.images()); !slices.Contains(got, name) {
		t.Errorf("%s: ls images/ = %q, lacks %s", u.name(), got, name)
	}
	if got := u.ls(filepath.Join(a.Mnt, "by-id")); !slices.Contains(got, id) {
		t.Errorf("%s: ls by-id/ = %q, lacks %s", u.name(), got, id)
	}
	wantUsableByID(t, a, u, id, src)
	if got := u.must("read", a.dataFile(name)); got != string(mustRead(t, src)) {
		t.Errorf("%s: images/%s/image.vhd: %d bytes that differ from the upload", u.name(), name, len(got))
	}
	if got := u.must("read", a.propFile(name, "id")); got != id+"\n" {
		t.Errorf("%s: images/%s/properties/id = %q", u.name(), name, got)
	}
}

// wantUsableByID checks that u reads by-id/<id>: data (the bytes of src),
// a property file and an xattr.
func wantUsableByID(t *testing.T, a *accessMount, u actor, id, src string) {
	t.Helper()
	if got := u.must("read", a.byID(id, "image.vhd")); got != string(mustRead(t, src)) {
		t.Errorf("%s: by-id/%s/image.vhd: %d bytes that differ from the upload", u.name(), id, len(got))
	}
	if got := u.must("read", a.byID(id, "properties", "os_distro")); got != "superos\n" {
		t.Errorf("%s: by-id/%s/properties/os_distro = %q", u.name(), id, got)
	}
	if got := u.must("getxattr", a.byID(id, "image.vhd"), "user.id"); got != id {
		t.Errorf("%s: getfattr user.id by-id/%s/image.vhd = %q", u.name(), id, got)
	}
}

// TestAccessPublic: only root makes an image public (the owner gets
// EPERM, by file and by xattr, and the value stays); then every user lists
// it under images/ and by-id/ and reads the same bytes.
func TestAccessPublic(t *testing.T) {
	a := mountAllowOther(t)
	requireTools(t, "setfattr")
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-public", fx)
	A, B := a.as(userA), a.as(userB)

	A.want("write", a.propFile("a-public", "visibility"), []string{"public\n"}, syscall.EPERM)
	A.want("setxattr", a.images("a-public"), []string{"user.visibility", "public"}, syscall.EPERM)
	// On the sealed image.vhd (0444) the kernel refuses the owner's
	// setxattr before imagefs sees it (EACCES): user.* attributes need
	// write permission on the file.
	A.want("setxattr", a.dataFile("a-public"), []string{"user.visibility", "public"}, syscall.EPERM, syscall.EACCES)
	if r := asUser(userA, `setfattr -n user.visibility -v public "$1"`, a.images("a-public")); r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("uid 1001: setfattr -n user.visibility -v public: %s, want EPERM", r)
	}
	if got := a.prop("a-public", "visibility"); got != "private" {
		t.Fatalf("visibility = %q after the owner's refused attempts, want private", got)
	}
	wantHidden(t, a, B, "a-public", id)

	writeProp(t, a.fsMount, "a-public", "visibility", "public")
	for _, u := range []actor{B, a.as(userC), A} {
		wantListed(t, a, u, "a-public", id, fx.Path)
	}
	if got := B.ls(a.view("os_distro", "superos")); !slices.Equal(got, []string{"a-public"}) {
		t.Errorf("uid 1002: ls by-property/os_distro/superos = %q, want [a-public]", got)
	}
	cmp(t, fx.Path, a.dataFile("a-public"))
	// cmp(1) as another user, as the issue puts it.
	mustAsUser(t, userB, `cmp "$1" "$2" && cmp "$1" "$3"`, fx.Path, a.dataFile("a-public"), a.byID(id, "image.vhd"))
}

// TestAccessCommunity: a community image is usable by id by everyone
// (data, properties, xattrs) but listed only for its owner (and root);
// images/<name> is ENOENT for the others.
func TestAccessCommunity(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-community", fx)
	A, B := a.as(userA), a.as(userB)
	A.must("write", a.propFile("a-community", "visibility"), "community\n")
	if got := a.prop("a-community", "visibility"); got != "community" {
		t.Fatalf("visibility = %q after the owner wrote community", got)
	}

	for _, u := range []actor{B, B.withCaps(), a.as(userC)} {
		wantUsableByID(t, a, u, id, fx.Path)
		if got := u.must("read", a.byID(id, "properties", "visibility")); got != "community\n" {
			t.Errorf("%s: by-id/%s/properties/visibility = %q", u.name(), id, got)
		}
		u.must("stat", a.byID(id))
		if got := u.ls(a.byID(id)); !slices.Equal(got, []string{"image.vhd", "properties"}) {
			t.Errorf("%s: ls by-id/%s = %q", u.name(), id, got)
		}
		if got := u.ls(a.images()); slices.Contains(got, "a-community") {
			t.Errorf("%s: ls images/ = %q lists a community image", u.name(), got)
		}
		if got := u.ls(filepath.Join(a.Mnt, "by-id")); slices.Contains(got, id) {
			t.Errorf("%s: ls by-id/ = %q lists a community image", u.name(), got)
		}
		for _, p := range []string{a.images("a-community"), a.dataFile("a-community"), a.propFile("a-community", "id")} {
			u.want("stat", p, nil, syscall.ENOENT)
		}
		u.want("read", a.dataFile("a-community"), nil, syscall.ENOENT)
		// Usable is not writable.
		u.want("write", a.byID(id, "properties", "min_ram"), []string{"64\n"}, syscall.EACCES, syscall.EPERM)
		u.want("rmdir", a.images("a-community"), nil, syscall.ENOENT)
	}
	for _, u := range []actor{A, a.as("0")} {
		wantListed(t, a, u, "a-community", id, fx.Path)
	}
}

// TestAccessShared: a shared image is hidden from others until the owner
// adds their uid to properties/members; then they list and read it, while
// a user who is not a member still sees nothing. Taking the uid out hides
// it again.
func TestAccessShared(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-shared", fx)
	A, B, C := a.as(userA), a.as(userB), a.as(userC)
	A.must("write", a.propFile("a-shared", "visibility"), "shared\n")
	wantHidden(t, a, B, "a-shared", id)

	// As the issue writes it: printf '1002\n' > properties/members.
	mustAsUser(t, userA, `printf '1002\n' > "$1"`, a.propFile("a-shared", "members"))
	if got := memberStatuses(a.prop("a-shared", "members")); got != "1002 pending" {
		t.Fatalf("members = %q, want 1002 pending", got)
	}
	// Pending: by id only (as Glance: usable, not listed), until the
	// member accepts.
	if got := B.ls(a.images()); slices.Contains(got, "a-shared") {
		t.Fatalf("a pending member lists the image: %v", got)
	}
	mustAsUser(t, userB, `cmp "$1" "$2"`, fx.Path, a.byID(id, "image.vhd"))
	B.must("write", a.byID(id, "properties", "members"), "accepted\n")
	wantListed(t, a, B, "a-shared", id, fx.Path)
	mustAsUser(t, userB, `cmp "$1" "$2"`, fx.Path, a.dataFile("a-shared"))
	wantHidden(t, a, C, "a-shared", id)
	// A member reads but does not change it or its members.
	B.want("write", a.propFile("a-shared", "members"), []string{"1002\n1003\n"}, syscall.EACCES, syscall.EPERM)
	B.withCaps().want("write", a.propFile("a-shared", "members"), []string{"1002\n1003\n"}, syscall.EACCES)
	B.want("rmdir", a.images("a-shared"), nil, syscall.EACCES, syscall.EPERM)
	B.withCaps().want("rmdir", a.images("a-shared"), nil, syscall.EACCES)
	if got := memberStatuses(a.prop("a-shared", "members")); got != "1002 accepted" {
		t.Errorf("members = %q after the member's attempts, want 1002 accepted", got)
	}
	wantHidden(t, a, C, "a-shared", id)

	// members is one ID or ID STATUS per line.
	A.want("write", a.propFile("a-shared", "members"), []string{"bob smith\n"}, syscall.EINVAL)
	if got := memberStatuses(a.prop("a-shared", "members")); got != "1002 accepted" {
		t.Errorf("members = %q after an invalid value, want 1002 accepted", got)
	}

	A.must("write", a.propFile("a-shared", "members"), "1003\n")
	a.acceptAs(t, userC, "a-shared")
	wantListed(t, a, C, "a-shared", id, fx.Path)
	wantHidden(t, a, B, "a-shared", id)
}

// TestAccessNonOwnerChanges: a user who sees an image (public) but does
// not own it changes nothing: property files (by name and by id),
// xattrs, custom properties, the name (mv) and the image itself (rmdir)
// fail with EACCES or EPERM, from the kernel's mode checks or, with those
// checks bypassed (CAP_DAC_OVERRIDE, CAP_FOWNER), from imagefs itself.
// The owner then does each of these.
func TestAccessNonOwnerChanges(t *testing.T) {
	a := mountAllowOther(t)
	requireTools(t, "setfattr")
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-img", fx)
	writeProp(t, a.fsMount, "a-img", "visibility", "public")
	before := a.snapshot("a-img")
	A, B := a.as(userA), a.as(userB)

	for _, u := range []actor{B, B.withCaps()} {
		t.Run(strings.ReplaceAll(u.name(), " ", "-"), func(t *testing.T) {
			u.t = t
			for _, dir := range []string{a.images("a-img"), a.byID(id)} {
				props := filepath.Join(dir, "properties")
				for _, k := range []string{"min_ram", "name", "visibility", "protected", "os_distro"} {
					u.want("write", filepath.Join(props, k), []string{"1\n"}, syscall.EACCES, syscall.EPERM)
					u.want("truncate", filepath.Join(props, k), []string{"0"}, syscall.EACCES, syscall.EPERM)
				}
				u.want("create", filepath.Join(props, "new_key"), []string{"x\n"}, syscall.EACCES, syscall.EPERM)
				u.want("unlink", filepath.Join(props, "os_distro"), nil, syscall.EACCES, syscall.EPERM)
				u.want("rename", filepath.Join(props, "os_distro"), []string{filepath.Join(props, "os_version")}, syscall.EACCES, syscall.EPERM)
				for _, p := range []string{dir, filepath.Join(dir, "image.vhd")} {
					u.want("setxattr", p, []string{"user.min_ram", "1"}, syscall.EACCES, syscall.EPERM)
					u.want("setxattr", p, []string{"user.os_distro", "other"}, syscall.EACCES, syscall.EPERM)
					u.want("setxattr", p, []string{"user.new_key", "x"}, syscall.EACCES, syscall.EPERM)
					u.want("removexattr", p, []string{"user.os_distro"}, syscall.EACCES, syscall.EPERM)
				}
				u.want("create", filepath.Join(dir, "scratch.vhd"), []string{"x"}, syscall.EACCES, syscall.EPERM)
			}
			u.want("rename", a.images("a-img"), []string{a.images("b-img")}, syscall.EACCES, syscall.EPERM)
			u.want("rmdir", a.images("a-img"), nil, syscall.EACCES, syscall.EPERM)
			a.unchanged("a-img", before, u.name()+"'s attempts")
			cmp(t, fx.Path, a.byID(id, "image.vhd"))
		})
	}
	// The shell tools tell the user.
	for _, script := range []string{
		`echo 1 > "$1/properties/min_ram"`,
		`setfattr -n user.os_distro -v other "$1/image.vhd"`,
		`setfattr -x user.os_distro "$1"`,
		`rm -f "$1/properties/os_distro"`,
		`mv "$1" "$1-moved"`,
		`rmdir "$1"`,
	} {
		r := asUser(userB, script, a.images("a-img"))
		if r.code == 0 || !(strings.Contains(r.stderr, "Permission denied") || strings.Contains(r.stderr, "Operation not permitted")) {
			t.Errorf("uid 1002: %s: %s, want EACCES or EPERM", script, r)
		}
	}
	a.unchanged("a-img", before, "uid 1002's shell tools")

	// The owner does it all.
	A.must("write", a.propFile("a-img", "min_ram"), "512\n")
	A.must("setxattr", a.images("a-img"), "user.os_version", "2024.1")
	A.must("unlink", a.propFile("a-img", "os_distro"))
	A.must("rename", a.images("a-img"), a.images("a-renamed"))
	got := a.snapshot("a-renamed")
	if got["min_ram"] != "512" || got["os_version"] != "2024.1" || got["name"] != "a-renamed" || got["id"] != id {
		t.Errorf("after the owner's changes: min_ram %q os_version %q name %q id %q", got["min_ram"], got["os_version"], got["name"], got["id"])
	}
	if _, ok := got["os_distro"]; ok {
		t.Errorf("os_distro still there after the owner removed it")
	}
	A.must("rmdir", a.images("a-renamed"))
	for _, p := range []string{a.images("a-renamed"), a.byID(id), a.backing(id)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after the owner's rmdir: lstat %s: %v, want ENOENT", p, err)
		}
	}
}

// TestAccessInvalidValues: values that break their rule fail with the
// errno of the README's table (EINVAL, E2BIG) through the file and the
// xattr, and change nothing; a value of exactly 65535 bytes is accepted.
func TestAccessInvalidValues(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	a.ownedImage(userA, "a-img", fx)
	A := a.as(userA)
	dir := a.images("a-img")
	props := filepath.Join(dir, "properties")
	// Every key below exists before it is written: a new property file
	// is created with an empty value at open, before the value is known.
	A.must("write", filepath.Join(props, "visibility"), "shared\n") // members need it
	A.must("write", filepath.Join(props, "members"), "1005\n")

	for _, c := range []struct{ key, value string }{
		{"min_ram", "-1"}, {"min_ram", "abc"}, {"min_ram", "1.5"}, {"min_ram", ""},
		{"min_disk", "-1"}, {"min_disk", "abc"},
		{"protected", "yes"}, {"protected", "True"}, {"protected", ""},
		{"visibility", "everyone"}, {"visibility", "Public"}, {"visibility", ""},
		{"name", ""}, {"name", "a/b"}, {"name", "."}, {"name", ".."}, {"name", strings.Repeat("n", 256)},
		{"members", "bob smith"}, {"members", "1005 maybe"}, {"members", "1005\n1005"},
	} {
		before := a.snapshot("a-img")
		what := fmt.Sprintf("%s=%q", c.key, c.value)
		A.want("write", filepath.Join(props, c.key), []string{c.value + "\n"}, syscall.EINVAL)
		if c.value != "" { // setxattr of an empty value: see below
			A.want("setxattr", dir, []string{"user." + c.key, c.value}, syscall.EINVAL)
		}
		a.unchanged("a-img", before, what)
	}
	// An empty value through setxattr is refused for the typed keys too.
	for _, k := range []string{"min_ram", "protected", "visibility", "name"} {
		A.want("setxattr", dir, []string{"user." + k, ""}, syscall.EINVAL)
	}

	// Bad image names at mkdir and rename.
	for _, bad := range []string{strings.Repeat("n", 256)} {
		A.want("mkdir", a.images(bad), nil, syscall.EINVAL)
		A.want("rename", dir, []string{a.images(bad)}, syscall.EINVAL)
	}
	// Bad custom keys: not printable.
	before := a.snapshot("a-img")
	A.want("create", filepath.Join(props, "bad\x01key"), []string{"x\n"}, syscall.EINVAL)
	A.want("setxattr", dir, []string{"user.bad\tkey", "x"}, syscall.EINVAL)
	a.unchanged("a-img", before, "bad keys")

	// Values over 65535 bytes: E2BIG, existing value kept.
	big := strings.Repeat("v", 65536)
	A.want("write", filepath.Join(props, "os_distro"), []string{big}, syscall.E2BIG)
	A.want("write", filepath.Join(props, "os_distro"), []string{big + "\n"}, syscall.E2BIG)
	A.want("setxattr", dir, []string{"user.os_distro", big}, syscall.E2BIG)
	A.want("setxattr", dir, []string{"user.new_key", big}, syscall.E2BIG)
	a.unchanged("a-img", before, "values of 65536 bytes")
	// A shell sees the E2BIG of the write. (Not checked here: the value
	// it leaves. The shell's redirection closes a duplicate of the
	// descriptor right after open(O_TRUNC), and that close sets the
	// property to the empty value before the first write.)
	if r := asUser(userA, `head -c 70000 /dev/zero | tr '\0' v > "$1"`, filepath.Join(props, "os_version")); r.code == 0 || !strings.Contains(r.stderr, "Argument list too long") {
		t.Errorf("uid 1001: 70000 bytes > properties/os_version: %s, want E2BIG (Argument list too long)", r)
	}

	// 65535 bytes is the limit, not over it.
	max := strings.Repeat("m", 65535)
	A.must("write", filepath.Join(props, "os_distro"), max+"\n")
	A.must("setxattr", dir, "user.os_version", max)
	if got := a.prop("a-img", "os_distro"); got != max {
		t.Errorf("os_distro: %d bytes after writing 65535", len(got))
	}
	if got := a.prop("a-img", "os_version"); got != max {
		t.Errorf("os_version: %d bytes after setxattr of 65535", len(got))
	}
}

// TestAccessPropertyQuota: with --property-quota 3 an image holds 3
// custom properties (the quota counts what the owner adds, as Glance's
// image_property_quota does; core and system-maintained ones do not
// count); a 4th fails with ENOSPC through a new file or an xattr and is
// not created; changing existing values still works, and removing one
// makes room.
func TestAccessPropertyQuota(t *testing.T) {
	a := mountAllowOther(t, "--property-quota", "3")
	A := a.as(userA)
	A.must("mkdir", a.images("q"))
	props := a.images("q", "properties")
	n := len(a.snapshot("q"))
	for i := 17; i < 20; i++ {
		A.must("create", filepath.Join(props, fmt.Sprintf("k%d", i)), "v\n")
	}
	before := a.snapshot("q")
	if len(before) != n+3 {
		t.Fatalf("%d properties after adding 3 to %d, want %d", len(before), n, n+3)
	}
	A.want("create", filepath.Join(props, "one_too_many"), []string{"v\n"}, syscall.ENOSPC)
	A.want("setxattr", a.images("q"), []string{"user.one_too_many", "v"}, syscall.ENOSPC)
	a.as("0").want("setxattr", a.images("q"), []string{"user.root_too", "v"}, syscall.ENOSPC)
	if r := asUser(userA, `echo v > "$1"`, filepath.Join(props, "via_shell")); r.code == 0 || !strings.Contains(r.stderr, "No space left on device") {
		t.Errorf("uid 1001: echo v > properties/via_shell at the quota: %s, want ENOSPC", r)
	}
	a.unchanged("q", before, "properties over the quota")

	// Existing values change; a removed one makes room.
	A.must("write", filepath.Join(props, "k17"), "changed\n")
	A.must("write", filepath.Join(props, "min_ram"), "64\n")
	A.must("unlink", filepath.Join(props, "k18"))
	A.must("setxattr", a.images("q"), "user.now_fits", "v")
	got := a.snapshot("q")
	if len(got) != n+3 || got["k17"] != "changed" || got["now_fits"] != "v" {
		t.Errorf("after changes at the quota: %d properties, k17=%q now_fits=%q", len(got), got["k17"], got["now_fits"])
	}
}

// TestAccessProtected: a protected image cannot be deleted, by rmdir or
// rm -rf, by its owner or root: the image, its data and its core
// properties survive. (rm -r unlinks the files it can on its way: custom
// property files; see the README.) Once protected is false, rmdir
// deletes it.
func TestAccessProtected(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-prot", fx)
	A := a.as(userA)
	A.must("write", a.propFile("a-prot", "protected"), "true\n")
	A.must("write", a.propFile("a-prot", "os_version"), "2024.1\n")
	before := a.snapshot("a-prot")
	if before["protected"] != "true" {
		t.Fatalf("protected = %q", before["protected"])
	}

	A.want("rmdir", a.images("a-prot"), nil, syscall.EPERM)
	a.as("0").want("rmdir", a.images("a-prot"), nil, syscall.EPERM)
	for _, u := range []string{userA, "0"} {
		r := asUser(u, `rm -rf "$1"`, a.images("a-prot"))
		if r.code == 0 {
			t.Errorf("uid %s: rm -rf of a protected image exited 0", u)
		}
		if !strings.Contains(r.stderr, "Operation not permitted") {
			t.Errorf("uid %s: rm -rf stderr %q, want EPERM (Operation not permitted)", u, r.stderr)
		}
	}
	if r := asUser(userA, `rmdir "$1"`, a.images("a-prot")); r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("uid 1001: rmdir of a protected image: %s, want EPERM", r)
	}

	// The image, its data and its core properties survive.
	for _, p := range []string{a.images("a-prot"), a.byID(id), a.backing(id)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("after rm -rf: %v", err)
		}
	}
	cmp(t, fx.Path, a.dataFile("a-prot"))
	cmp(t, fx.Path, a.byID(id, "image.vhd"))
	// Every property survives: a protected image's properties cannot be
	// removed either (rm -r unlinks property files before it reaches the
	// directory); their values can still be changed.
	a.unchanged("a-prot", before, "rm -rf of the protected image")
	A.want("unlink", a.propFile("a-prot", "os_distro"), nil, syscall.EPERM)
	A.must("write", a.propFile("a-prot", "os_distro"), "superos2\n")

	A.must("write", a.propFile("a-prot", "protected"), "false\n")
	A.must("rmdir", a.images("a-prot"))
	for _, p := range []string{a.images("a-prot"), a.byID(id), a.backing(id)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after rmdir of the unprotected image: lstat %s: %v, want ENOENT", p, err)
		}
	}
}

// TestAccessDeactivated: root deactivates an active image by writing
// properties/status; then nobody but root reads its data (EACCES), the
// owner included, while its properties stay readable; only the owner and
// root may deactivate or reactivate (others: EACCES from the 0644 mode,
// EPERM from imagefs), and no other status can be written, root included
// (EPERM).
func TestAccessDeactivated(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-img", fx)
	writeProp(t, a.fsMount, "a-img", "visibility", "public")
	A, B, root := a.as(userA), a.as(userB), a.as("0")

	writeProp(t, a.fsMount, "a-img", "status", "deactivated")
	if got := a.prop("a-img", "status"); got != "deactivated" {
		t.Fatalf("status = %q after root wrote deactivated", got)
	}
	for _, u := range []actor{A, B, A.withCaps()} {
		for _, p := range []string{a.dataFile("a-img"), a.byID(id, "image.vhd")} {
			u.want("read", p, nil, syscall.EACCES)
		}
		if got := u.must("read", a.propFile("a-img", "status")); got != "deactivated\n" {
			t.Errorf("%s: properties/status = %q", u.name(), got)
		}
		if got := u.must("read", a.byID(id, "properties", "checksum")); got != fx.MD5+"\n" {
			t.Errorf("%s: properties/checksum = %q", u.name(), got)
		}
		if got := u.must("getxattr", a.images("a-img"), "user.os_distro"); got != "superos" {
			t.Errorf("%s: user.os_distro = %q", u.name(), got)
		}
	}
	if r := asUser(userA, `cat "$1" > /dev/null`, a.dataFile("a-img")); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("uid 1001: cat of a deactivated image: %s, want EACCES", r)
	}
	if got := root.must("read", a.dataFile("a-img")); got != string(mustRead(t, fx.Path)) {
		t.Errorf("root: deactivated image.vhd: %d bytes that differ from the upload", len(got))
	}
	cmp(t, fx.Path, a.byID(id, "image.vhd"))

	// Another user may not reactivate (the 0644 mode, or imagefs with
	// the kernel's checks waived).
	B.want("write", a.propFile("a-img", "status"), []string{"active\n"}, syscall.EACCES)
	B.withCaps().want("write", a.propFile("a-img", "status"), []string{"active\n"}, syscall.EPERM)
	B.withCaps().want("setxattr", a.images("a-img"), []string{"user.status", "active"}, syscall.EPERM)
	for _, st := range []string{"killed", "queued", "saving", "pending_delete", "deleted", "deactivated", "Active", ""} {
		root.want("write", a.propFile("a-img", "status"), []string{st + "\n"}, syscall.EPERM)
	}
	if got := a.prop("a-img", "status"); got != "deactivated" {
		t.Fatalf("status = %q after refused writes, want deactivated", got)
	}

	writeProp(t, a.fsMount, "a-img", "status", "active")
	if got := A.must("read", a.dataFile("a-img")); got != string(mustRead(t, fx.Path)) {
		t.Errorf("uid 1001: reactivated image.vhd: %d bytes that differ from the upload", len(got))
	}
	B.must("read", a.byID(id, "image.vhd"))
	B.want("write", a.propFile("a-img", "status"), []string{"deactivated\n"}, syscall.EACCES)
	B.withCaps().want("write", a.propFile("a-img", "status"), []string{"deactivated\n"}, syscall.EPERM)
	for _, st := range []string{"killed", "queued", "saving", "pending_delete", "deleted", "active"} {
		root.want("write", a.propFile("a-img", "status"), []string{st + "\n"}, syscall.EPERM)
		root.want("setxattr", a.images("a-img"), []string{"user.status", st}, syscall.EPERM)
	}
	if got := a.prop("a-img", "status"); got != "active" {
		t.Errorf("status = %q after refused writes, want active", got)
	}
	// The xattr view deactivates too.
	root.must("setxattr", a.dataFile("a-img"), "user.status", "deactivated")
	A.want("read", a.dataFile("a-img"), nil, syscall.EACCES)
	root.must("setxattr", a.images("a-img"), "user.status", "active")
	A.must("read", a.dataFile("a-img"))

	// An image that is not active cannot be deactivated.
	A.must("mkdir", a.images("queued"))
	root.want("write", a.propFile("queued", "status"), []string{"deactivated\n"}, syscall.EPERM)
	if got := a.prop("queued", "status"); got != "queued" {
		t.Errorf("queued image: status %q after a refused deactivation", got)
	}
}

// TestAccessDeleteWhileReading: rmdir of an image whose data is open
// removes it from images/, by-id/ and by-property/ at once; the reader
// reads the rest of the same bytes; after its close the data file is gone.
func TestAccessDeleteWhileReading(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-img", fx)
	src := mustRead(t, fx.Path)
	view := a.view("os_distro", "superos")
	if got := a.as(userA).ls(view); !slices.Equal(got, []string{"a-img"}) {
		t.Fatalf("ls by-property/os_distro/superos = %q", got)
	}

	f, err := os.Open(a.byID(id, "image.vhd"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	half := make([]byte, len(src)/2)
	if _, err := io.ReadFull(f, half); err != nil {
		t.Fatal(err)
	}
	a.as(userA).must("rmdir", a.images("a-img"))

	for _, u := range []actor{a.as(userA), a.as("0")} {
		if got := u.ls(a.images()); slices.Contains(got, "a-img") {
			t.Errorf("%s: ls images/ right after rmdir = %q", u.name(), got)
		}
		if got := u.ls(filepath.Join(a.Mnt, "by-id")); slices.Contains(got, id) {
			t.Errorf("%s: ls by-id/ right after rmdir = %q", u.name(), got)
		}
		if r := u.do("ls", view); r.errno != syscall.ENOENT && strings.TrimSpace(r.out) != "" {
			t.Errorf("%s: ls by-property/os_distro/superos right after rmdir: %s %q", u.name(), r, r.out)
		}
		for _, p := range []string{a.images("a-img"), a.byID(id), a.byID(id, "image.vhd"), filepath.Join(view, "a-img")} {
			u.want("stat", p, nil, syscall.ENOENT)
		}
	}
	for _, p := range []string{a.images("a-img"), a.byID(id), a.byID(id, "image.vhd"), filepath.Join(view, "a-img")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lstat %s right after rmdir: %v, want ENOENT", p, err)
		}
	}

	rest, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("reading the rest after rmdir: %v", err)
	}
	if got := append(half, rest...); !bytes.Equal(got, src) {
		t.Errorf("read across the rmdir: %d bytes that differ from the upload (%d bytes)", len(got), len(src))
	}
	if err := f.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := os.Lstat(a.backing(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("STORE/data/%s.vhd after the reader closed: %v, want ENOENT", id, err)
	}
	ents, _ := os.ReadDir(filepath.Join(a.Store, "data"))
	for _, e := range ents {
		if strings.Contains(e.Name(), id) {
			t.Errorf("STORE/data/%s left behind", e.Name())
		}
	}
}

// TestAccessModes: ls -l shows the owner's uid and the visibility in the
// mode bits: a private image's directory and properties/ are 0700, any
// other visibility's 0755. Files keep the modes layout.md gives them for
// every visibility (sealed data and system properties 0444, the rest
// 0644: 3a109ee); the 0700 directories keep others from reaching them.
func TestAccessModes(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	for _, vis := range []string{"private", "shared", "community", "public"} {
		t.Run(vis, func(t *testing.T) {
			id := a.ownedImage(userA, vis, fx)
			writeProp(t, a.fsMount, vis, "visibility", vis)
			dirMode := "drwxr-xr-x"
			if vis == "private" {
				dirMode = "drwx------"
			}
			want := map[string]string{
				a.images(vis):                      dirMode,
				a.byID(id):                         dirMode,
				a.images(vis, "properties"):        dirMode,
				a.byID(id, "properties"):           dirMode,
				a.dataFile(vis):                    "-r--r--r--",
				a.byID(id, "image.vhd"):            "-r--r--r--",
				a.propFile(vis, "id"):              "-r--r--r--",
				a.propFile(vis, "checksum"):        "-r--r--r--",
				a.propFile(vis, "vhd_disk_type"):   "-r--r--r--",
				a.propFile(vis, "min_ram"):         "-rw-r--r--",
				a.propFile(vis, "visibility"):      "-rw-r--r--",
				a.propFile(vis, "os_distro"):       "-rw-r--r--",
				a.byID(id, "properties", "name"):   "-rw-r--r--",
				a.byID(id, "properties", "status"): "-rw-r--r--", // the owner deactivates
			}
			// The mode of a directory looked up just before the change
			// may be cached for one jiffy (the "uncached" timeout, 1 ns,
			// rounded up by the kernel): wait for that, no longer.
			waitMode(t, a.images(vis, "properties"), dirMode)
			waitMode(t, a.byID(id, "properties"), dirMode)
			users := []string{"0", userA}
			if vis == "public" {
				users = append(users, userB)
			}
			for p, mode := range want {
				for _, uid := range users {
					f := strings.Fields(mustAsUser(t, uid, `ls -lnd "$1"`, p))
					if len(f) < 4 || f[0] != mode || f[2] != userA {
						t.Errorf("uid %s: ls -lnd %s: %q, want mode %s owner %s", uid, p[len(a.Mnt)+1:], f, mode, userA)
					}
				}
			}
		})
	}
}

// waitMode waits up to 50 ms (a few jiffies) for ls -ld path to show
// mode; the caller then checks it as each user.
func waitMode(t testing.TB, path, mode string) {
	t.Helper()
	deadline := time.Now().Add(50 * time.Millisecond)
	for {
		fi, err := os.Lstat(path)
		if err == nil && fileModeString(fi.Mode()) == mode || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// fileModeString is ls -l's mode column for m.
func fileModeString(m os.FileMode) string {
	s := []byte("-rwxrwxrwx")
	if m.IsDir() {
		s[0] = 'd'
	}
	for i := 0; i < 9; i++ {
		if m.Perm()&(1<<uint(8-i)) == 0 {
			s[i+1] = '-'
		}
	}
	return string(s)
}
