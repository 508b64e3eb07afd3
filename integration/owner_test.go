package integration

import (
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
)

// The owner on the mount (store/owner.go, concepts.md's owner row): root
// gives an image to another uid with chown(1) of its directory, nobody
// else may; properties/owner stays read-only, root included; the owner
// deactivates and reactivates its image by writing properties/status
// (concepts.md's status row), and reads no data of it while deactivated.

// lsOwner is ls -lnd's uid and gid of path, as uid.
func lsOwner(t *testing.T, uid, path string) (string, string) {
	t.Helper()
	f := strings.Fields(mustAsUser(t, uid, `ls -lnd "$1"`, path))
	if len(f) < 4 {
		t.Fatalf("ls -lnd %s: %q", path, f)
	}
	return f[2], f[3]
}

// TestOwnerChown: root's chown of images/NAME (and of by-id/ID) gives the
// image to that uid (and group): ls -ln shows it on every file, the
// owner property says it, the new owner changes the image and sees it
// private, the old one no longer does; the owner, another user and root
// writing properties/owner are refused.
func TestOwnerChown(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "img", fx)
	A, B, root := a.as(userA), a.as(userB), a.as("0")

	// Only root: the owner (the kernel refuses a chown to another uid,
	// and imagefs a chgrp), another user.
	if r := asUser(userA, `chown 1002 "$1"`, a.images("img")); r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("the owner's chown 1002: %s, want EPERM", r)
	}
	if r := asUser(userA, `chgrp 1002 "$1"`, a.images("img")); r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("the owner's chgrp 1002: %s, want EPERM", r)
	}
	mustAsUser(t, userA, `chown 1001 "$1"`, a.images("img")) // to the owner it has: nothing to do
	writeProp(t, a.fsMount, "img", "visibility", "public")
	if r := asUser(userB, `chown 1002 "$1"`, a.images("img")); r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("another user's chown: %s, want EPERM", r)
	}
	writeProp(t, a.fsMount, "img", "visibility", "private")
	if got := a.prop("img", "owner"); got != userA {
		t.Fatalf("owner after refused chowns: %s", got)
	}

	run(t, "chown", userB, a.images("img"))
	if got := a.prop("img", "owner"); got != userB {
		t.Fatalf("properties/owner after root's chown 1002: %q", got)
	}
	for _, p := range []string{a.images("img"), a.dataFile("img"), a.propFile("img", "os_distro"), a.byID(id), a.byID(id, "image.vhd")} {
		if u, g := lsOwner(t, "0", p); u != userB || g != userA {
			t.Errorf("ls -lnd %s: %s:%s, want 1002:1001 (the group unchanged)", p[len(a.Mnt):], u, g)
		}
	}
	// The new owner has the image (private: its directory 0700 is now
	// 1002's); the old one does not see it.
	B.must("write", a.propFile("img", "os_distro"), "hyperos\n")
	B.must("read", a.dataFile("img"))
	A.want("stat", a.images("img"), nil, syscall.ENOENT)
	A.want("stat", a.byID(id), nil, syscall.ENOENT)

	// chown UID:GID of by-id/ID sets both.
	run(t, "chown", "1003:1003", a.byID(id))
	if u, g := lsOwner(t, "0", a.images("img")); u != userC || g != userC || a.prop("img", "owner") != userC {
		t.Errorf("after chown 1003:1003 by-id/ID: %s:%s owner %s", u, g, a.prop("img", "owner"))
	}
	B.want("stat", a.images("img"), nil, syscall.ENOENT)

	// properties/owner: system-maintained, root included (EPERM).
	root.want("write", a.propFile("img", "owner"), []string{"1001\n"}, syscall.EPERM)
	root.want("setxattr", a.images("img"), []string{"user.owner", "1001"}, syscall.EPERM)
	if got := a.prop("img", "owner"); got != userC {
		t.Errorf("owner after refused writes: %s", got)
	}
}

// TestOwnerDeactivates: the owner deactivates its image by writing
// properties/status (a shell's echo, the attribute), reads no data of it
// then (nor does anyone but root), and reactivates it; another user may
// not do either.
func TestOwnerDeactivates(t *testing.T) {
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "img", fx)
	writeProp(t, a.fsMount, "img", "visibility", "public")
	A, B, root := a.as(userA), a.as(userB), a.as("0")
	src := string(mustRead(t, fx.Path))

	if mode := fileModeString(mustStat(t, a.propFile("img", "status")).Mode()); mode != "-rw-r--r--" {
		t.Errorf("properties/status of an active image: %s, want -rw-r--r--", mode)
	}
	B.want("write", a.propFile("img", "status"), []string{"deactivated\n"}, syscall.EACCES)
	B.withCaps().want("write", a.propFile("img", "status"), []string{"deactivated\n"}, syscall.EPERM)
	B.withCaps().want("setxattr", a.images("img"), []string{"user.status", "deactivated"}, syscall.EPERM)

	mustAsUser(t, userA, `echo deactivated > "$1"`, a.propFile("img", "status"))
	if got := a.prop("img", "status"); got != "deactivated" {
		t.Fatalf("status after the owner's echo deactivated: %q", got)
	}
	for _, u := range []actor{A, B} {
		for _, p := range []string{a.dataFile("img"), a.byID(id, "image.vhd")} {
			u.want("read", p, nil, syscall.EACCES)
		}
	}
	if r := asUser(userA, `cat "$1" > /dev/null`, a.dataFile("img")); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("the owner's cat of its deactivated image: %s, want EACCES", r)
	}
	if got := root.must("read", a.dataFile("img")); got != src {
		t.Error("root reads other bytes of the deactivated image")
	}
	B.want("write", a.propFile("img", "status"), []string{"active\n"}, syscall.EACCES)
	A.want("write", a.propFile("img", "status"), []string{"queued\n"}, syscall.EPERM)

	mustAsUser(t, userA, `echo active > "$1"`, a.propFile("img", "status"))
	if got := A.must("read", a.dataFile("img")); got != src {
		t.Error("the owner reads other bytes after reactivating")
	}
	B.must("read", a.byID(id, "image.vhd"))

	// The attribute does the same.
	A.must("setxattr", a.images("img"), "user.status", "deactivated")
	B.want("read", a.dataFile("img"), nil, syscall.EACCES)
	A.must("setxattr", a.images("img"), "user.status", "active") // not image.vhd: 0444 sealed data
	B.must("read", a.dataFile("img"))

	// An image that holds no data: its status is imagefs's, the owner's
	// write is refused.
	A.must("mkdir", a.images("queued"))
	if mode := fileModeString(mustStat(t, a.propFile("queued", "status")).Mode()); mode != "-r--r--r--" {
		t.Errorf("properties/status of a queued image: %s, want -r--r--r--", mode)
	}
	A.withCaps().want("write", a.propFile("queued", "status"), []string{"deactivated\n"}, syscall.EPERM)
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// TestAPIKeystoneOwner: the openstack CLI as the admin (Keystone's admin
// role) creates an image for a project no uid maps (--project tp3) and
// gives it to a mapped one (image set --project tp2); the mount shows uid
// 0 and the project, then uid 1002. A member deactivates its own image
// (image set --deactivate), cannot download it then (image save), and
// reactivates it; another project cannot.
func TestAPIKeystoneOwner(t *testing.T) {
	a := mountWithKeystoneAPI(t)
	tp2, tp3 := a.k.Projects["tp2"], a.k.Projects["tp3"]

	vhd := makeVHD(t, 2*mib, "fixed")
	// (--file: without one the CLI uploads its stdin, empty here.)
	id := strings.TrimSpace(a.oscOK("tuadm", "image", "create", "--project", "tp3", "--file", vhd.Path, "--disk-format", "vhd",
		"--container-format", "bare", "--private", "-f", "value", "-c", "id", "for-tp3"))
	var shown map[string]any
	if err := json.Unmarshal([]byte(a.oscOK("tuadm", "image", "show", "-f", "json", id)), &shown); err != nil {
		t.Fatal(err)
	}
	if shown["owner"] != tp3 {
		t.Fatalf("owner through the API: %v, want tp3's id %s", shown["owner"], tp3)
	}
	if got := a.prop("for-tp3", "owner"); got != tp3 {
		t.Fatalf("properties/owner: %q, want tp3's id %s", got, tp3)
	}
	if uid := strings.TrimSpace(run(t, "stat", "-c", "%u", a.images("for-tp3"))); uid != "0" {
		t.Fatalf("images/for-tp3: uid %s, want 0 (a project no uid maps)", uid)
	}
	if r := a.osc("tu1", "image", "set", "--project", "tp1", id); r.err == nil {
		t.Fatalf("a member changed the owner: %s", r)
	}
	a.oscOK("tuadm", "image", "set", "--project", "tp2", id)
	if got := a.prop("for-tp3", "owner"); got != "1002" {
		t.Fatalf("properties/owner after image set --project tp2: %q, want 1002", got)
	}
	if err := json.Unmarshal([]byte(a.oscOK("tu2", "image", "show", "-f", "json", id)), &shown); err != nil {
		t.Fatal(err)
	}
	if shown["owner"] != tp2 {
		t.Fatalf("owner through the API: %v, want tp2's id %s", shown["owner"], tp2)
	}
	if got := strings.Fields(a.oscOK("tuadm", "image", "list", "--project", "tp2", "-f", "value", "-c", "ID")); len(got) != 1 || got[0] != id {
		t.Fatalf("image list --project tp2: %q", got)
	}

	// A member deactivates its own image, then cannot download it;
	// another project (which sees it: public) cannot deactivate it.
	own := strings.TrimSpace(a.oscOK("tu1", "image", "create", "--file", vhd.Path, "--disk-format", "vhd",
		"--container-format", "bare", "-f", "value", "-c", "id", "tp1-img"))
	a.oscOK("tuadm", "image", "set", "--public", own)
	// (The CLI exits 0 whatever the action's answer: openstacksdk's
	// Image._action does not check it. The mount tells.)
	a.osc("tu2", "image", "set", "--deactivate", own)
	if got := a.prop("tp1-img", "status"); got != "active" {
		t.Fatalf("another project deactivated tp1's image: status %q", got)
	}
	a.oscOK("tu1", "image", "set", "--deactivate", own)
	if got := a.prop("tp1-img", "status"); got != "deactivated" {
		t.Fatalf("status on the mount after the owner's --deactivate: %q", got)
	}
	saved := t.TempDir() + "/saved"
	if r := a.osc("tu1", "image", "save", "--file", saved, own); r.err == nil {
		t.Fatalf("the owner downloaded its deactivated image: %s", r)
	}
	if r := asUser(userA, `cat "$1" > /dev/null`, a.dataFile("tp1-img")); r.code == 0 {
		t.Fatalf("uid 1001 (tp1) reads the deactivated image on the mount: %s", r)
	}
	a.oscOK("tu1", "image", "set", "--activate", own)
	a.oscOK("tu1", "image", "save", "--file", saved, own)
	cmp(t, vhd.Path, saved)
}
