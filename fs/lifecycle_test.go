package fs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDeleteByUnlinkHeldOpen: the walk of rm -r, made with syscalls in
// this process (delete.go): open the image directory, read it, unlink
// image.vhd (which deletes the image), then walk the ghost: properties/
// reads as empty, its removal and the directory's succeed.
func TestDeleteByUnlinkHeldOpen(t *testing.T) {
	m := newTestMount(t, mountConfig{})
	id := m.upload("a", fixedVHD(t, 8192))
	dir, err := os.Open(m.path("images", "a"))
	noErr(t, "opendir", err)
	defer dir.Close()
	ents, err := dir.Readdirnames(-1)
	noErr(t, "readdir", err)
	if len(ents) == 0 || ents[0] != "image.vhd" {
		t.Errorf("image directory lists %q, want image.vhd first", ents)
	}
	if _, err := dir.Seek(0, 0); err != nil {
		t.Errorf("seekdir: %v", err)
	}
	noErr(t, "unlinkat image.vhd with the directory held", unix.Unlinkat(int(dir.Fd()), "image.vhd", 0))
	_, err = os.Stat(m.path("by-id", id))
	wantErrno(t, "by-id/<id> after the delete", err, syscall.ENOENT)
	if ns := names(t, m.path("images")); len(ns) != 0 {
		t.Errorf("images/ lists %q after the delete", ns)
	}
	// The ghost, for the deleting process.
	props, err := os.Open(m.path("images", "a", "properties"))
	noErr(t, "open the ghost's properties/", err)
	pn, err := props.Readdirnames(-1)
	props.Close()
	noErr(t, "readdir the ghost's properties/", err)
	if len(pn) != 0 {
		t.Errorf("the ghost's properties/ lists %q", pn)
	}
	if fi, err := os.Stat(m.path("images", "a")); err != nil {
		t.Errorf("stat of the ghost directory: %v", err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Nlink != 0 {
		t.Errorf("the ghost directory has %d links, want 0", st.Nlink)
	}
	noErr(t, "rmdir the ghost's properties/", syscall.Rmdir(m.path("images", "a", "properties")))
	noErr(t, "rmdir the ghost", syscall.Rmdir(m.path("images", "a")))
	_, err = os.Stat(m.path("images", "a"))
	wantErrno(t, "stat after the walk", err, syscall.ENOENT)
	noErr(t, "mkdir the name again", os.Mkdir(m.path("images", "a"), 0o755))
	if got := m.prop("a", "id"); got == id {
		t.Errorf("the new image has the deleted image's id")
	}
}

// TestDeleteRefusedByTools: rm -r and find -delete of images, one
// protected: the protected one is refused whole (its properties stay),
// the other is deleted; under by-id/ nothing is deleted.
func TestDeleteRefusedByTools(t *testing.T) {
	for _, tool := range []string{"rm", "find"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	m := newTestMount(t, mountConfig{})
	data := fixedVHD(t, 8192)
	m.upload("keep", data)
	id := m.upload("gone", data)
	m.upload("gone2", data)
	noErr(t, "protect", writeFile(m.path("images", "keep", "properties", "protected"), []byte("true\n")))
	noErr(t, "custom", writeFile(m.path("images", "keep", "properties", "os_distro"), []byte("superos\n")))

	out, err := exec.Command("rm", "-r", m.path("images", "keep")).CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("not permitted")) {
		t.Errorf("rm -r of a protected image: %v, %s; want EPERM", err, out)
	}
	if v := m.prop("keep", "os_distro"); v != "superos" {
		t.Errorf("os_distro of the protected image %q after rm -r, want it kept", v)
	}
	out, err = exec.Command("rm", "-r", m.path("by-id", id)).CombinedOutput()
	if err == nil {
		t.Errorf("rm -r under by-id/ succeeded: %s", out)
	}
	if s := m.prop("gone", "status"); s != "active" {
		t.Errorf("status %q after rm -r under by-id/", s)
	}
	if out, err := exec.Command("rm", "-r", m.path("images", "gone")).CombinedOutput(); err != nil {
		t.Errorf("rm -r images/gone: %v, %s", err, out)
	}
	if out, err := exec.Command("find", m.path("images", "gone2"), "-delete").CombinedOutput(); err != nil {
		t.Errorf("find -delete images/gone2: %v, %s", err, out)
	}
	wantNames(t, m.path("images"), "keep")
}

// asUser runs sh -c script as uid:gid 1001 (setpriv: a helper process,
// since a Go program cannot change the ids of one thread), returning its
// combined output and error.
func asUser(t *testing.T, script string) (string, error) {
	t.Helper()
	out, err := exec.Command("setpriv", "--reuid=1001", "--regid=1001", "--clear-groups", "--", "sh", "-c", script).CombinedOutput()
	return string(out), err
}

// TestOtherUser: who sees what, for a second user of an allow_other
// mount (README "Who sees what").
func TestOtherUser(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skipf("setpriv: %v", err)
	}
	m := newTestMount(t, mountConfig{fs: Options{AllowOther: true}})
	// The mountpoint's parent is t.TempDir(), 0700: let uid 1001 through.
	noErr(t, "chmod", os.Chmod(filepath.Dir(m.mnt), 0o755))
	data := fixedVHD(t, 8192)
	privID := m.upload("priv", data)
	pubID := m.upload("pub", data)
	noErr(t, "visibility", writeFile(m.path("images", "pub", "properties", "visibility"), []byte("public\n")))
	q := func(p ...string) string { return "'" + m.path(p...) + "'" }

	out, err := asUser(t, "ls "+q("images"))
	if err != nil || strings.TrimSpace(out) != "pub" {
		t.Errorf("ls images/ as another user: %q, %v; want only pub", out, err)
	}
	for _, p := range []string{q("images", "priv"), q("by-id", privID), q("images", "priv", "properties", "id")} {
		if out, err := asUser(t, "cat "+p+"/ 2>&1; stat "+p); err == nil || !strings.Contains(out, "No such file") {
			t.Errorf("%s as another user: %q, %v; want ENOENT", p, out, err)
		}
	}
	if out, err := asUser(t, "cmp - "+q("by-id", pubID, "image.vhd")+" < "+q("images", "pub", "image.vhd")); err != nil {
		t.Errorf("read of public data as another user: %q, %v", out, err)
	}
	if out, err := asUser(t, "echo x > "+q("images", "pub", "properties", "os_distro")); err == nil || !strings.Contains(out, "denied") {
		t.Errorf("property write of another's image: %q, %v; want EACCES", out, err)
	}
	if out, err := asUser(t, "setfattr -n user.os_distro -v x "+q("images", "pub")+" 2>&1 || echo refused"); !strings.Contains(out, "refused") {
		t.Errorf("setxattr on another's image: %q, %v; want refused", out, err)
	}
	if out, err := asUser(t, "mv "+q("images", "pub")+" "+q("images", "mine")); err == nil {
		t.Errorf("rename of another's image succeeded: %q", out)
	}
	if out, err := asUser(t, "rmdir "+q("images", "pub")); err == nil {
		t.Errorf("rmdir of another's image succeeded: %q", out)
	}
	if out, err := asUser(t, "mkdir "+q("images", "mine")+" && cat "+q("images", "mine", "properties", "owner")); err != nil || strings.TrimSpace(out) != "1001" {
		t.Errorf("mkdir as another user: %q, %v; want owner 1001", out, err)
	}
	if o := m.prop("mine", "owner"); o != "1001" {
		t.Errorf("owner seen by root %q", o)
	}
}

// TestReaper: with a small CacheNodes the reaper drops the kernel's
// entries of image directories not used in the last round, beyond the
// ones it always keeps (reaper.go); the images stay reachable.
func TestReaper(t *testing.T) {
	m := newTestMount(t, mountConfig{fs: Options{CacheNodes: 100}})
	// The reaper always keeps 1024 image directories (reaper.go's
	// maxKnownImages); 200 more are what it may drop.
	const keeps = 1024
	n := keeps + 200
	start := time.Now()
	for i := range n {
		noErr(t, "mkdir", os.Mkdir(m.path("images", fmt.Sprintf("i%04d", i)), 0o755))
	}
	t.Logf("%d images made in %v", n, time.Since(start))
	images := m.fsys.root().GetChild("images")
	if k := len(images.Children()); k < n {
		t.Fatalf("the kernel knows %d image directories, want %d", k, n)
	}
	// Images the daemon served nothing for since the last round are idle:
	// a round or two (the reaper's own ticker may run one in between).
	reaped := 0
	for round := 0; round < 3 && reaped == 0; round++ {
		reaped = m.fsys.reap()
	}
	if reaped == 0 {
		t.Fatalf("the reaper dropped nothing of %d idle image directories with CacheNodes 100", n)
	}
	if reaped > n-keeps {
		t.Errorf("the reaper dropped %d of %d image directories, keeping fewer than %d", reaped, n, keeps)
	}
	// The kernel drops the entries and sends FORGET; go-fuse frees them.
	deadline := time.Now().Add(10 * time.Second)
	for len(images.Children()) > n-reaped && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if k := len(images.Children()); k > n-reaped {
		t.Errorf("%d image directories known 10 s after the reaper dropped %d of %d", k, reaped, n)
	}
	if s := m.prop("i0000", "status"); s != "queued" {
		t.Errorf("a reaped image: status %q", s)
	}
}
