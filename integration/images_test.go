package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestMkdirCreatesImage checks the record mkdir makes.
func TestMkdirCreatesImage(t *testing.T) {
	m := mount(t)
	before := time.Now().UTC().Truncate(time.Second)
	id := m.mkimage("superos-2024.1")
	after := time.Now().UTC()
	if !uuidV4.MatchString(id) {
		t.Errorf("id %q is not a lowercase v4 UUID", id)
	}
	want := map[string]string{
		"id": id, "name": "superos-2024.1", "status": "queued", "owner": "0",
		"visibility": "private", "min_ram": "0", "min_disk": "0", "protected": "false",
		"disk_format": "vhd", "container_format": "bare",
	}
	for k, v := range want {
		if got := m.prop("superos-2024.1", k); got != v {
			t.Errorf("properties/%s = %q, want %q", k, got, v)
		}
		if got, err := unixGet(m.images("superos-2024.1"), "user."+k); err != nil || got != v {
			t.Errorf("user.%s on the image dir = %q (%v), want %q", k, got, err, v)
		}
	}
	for _, k := range []string{"created_at", "updated_at"} {
		v := m.prop("superos-2024.1", k)
		ts, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t.Errorf("%s = %q: not RFC 3339: %v", k, v, err)
			continue
		}
		if !strings.HasSuffix(v, "Z") || ts.Before(before) || ts.After(after) {
			t.Errorf("%s = %q, want a UTC time between %v and %v", k, v, before, after)
		}
	}
	// The image is in both trees, with an empty image.vhd.
	if fi, err := os.Stat(m.byID(id)); err != nil || !fi.IsDir() {
		t.Errorf("by-id/%s: %v", id, err)
	}
	if got := readProp(t, m.byID(id, "properties", "name")); got != "superos-2024.1" {
		t.Errorf("by-id/%s/properties/name = %q", id, got)
	}
	if fi, err := os.Stat(m.dataFile("superos-2024.1")); err != nil || fi.Size() != 0 {
		t.Errorf("image.vhd of a queued image: %v %v", fi, err)
	}
	if names := dirNames(t, m.images()); !slices.Equal(names, []string{"superos-2024.1"}) {
		t.Errorf("images/ lists %v", names)
	}
	if names := dirNames(t, m.Mnt+"/by-id"); !slices.Equal(names, []string{id}) {
		t.Errorf("by-id/ lists %v", names)
	}
	// A taken name.
	wantErrno(t, "mkdir of a taken name", syscall.Mkdir(m.images("superos-2024.1"), 0o755), syscall.EEXIST)
	if r := execCmd("mkdir", m.images("superos-2024.1")); r.code == 0 || !strings.Contains(r.stderr, "File exists") {
		t.Errorf("mkdir(1) of a taken name: %s", r)
	}
	// A second image gets another id.
	if id2 := m.mkimage("other"); id2 == id || !uuidV4.MatchString(id2) {
		t.Errorf("second image id %q (first %q)", id2, id)
	}
}

// TestRenameImage checks mv of an image directory: the name follows, the
// by-id path does not move, and a taken name is refused.
func TestRenameImage(t *testing.T) {
	m := mount(t)
	requireTools(t, "cmp")
	fx := makeVHD(t, 3*mib, "dynamic")
	id := m.mkimage("a")
	run(t, "cp", fx.Path, m.dataFile("a"))
	m.checkSealed(t, "a", fx)
	inoDir, inoData := inode(t, m.images("a")), inode(t, m.dataFile("a"))

	run(t, "mv", m.images("a"), m.images("b"))
	if got := m.prop("b", "name"); got != "b" {
		t.Errorf("properties/name after mv = %q, want b", got)
	}
	if got := readProp(t, m.byID(id, "properties", "name")); got != "b" {
		t.Errorf("by-id/%s/properties/name = %q, want b", id, got)
	}
	if got := m.prop("b", "id"); got != id {
		t.Errorf("id after mv = %q, want %q", got, id)
	}
	if _, err := os.Stat(m.images("a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("images/a after mv: %v, want ENOENT", err)
	}
	if names := dirNames(t, m.images()); !slices.Equal(names, []string{"b"}) {
		t.Errorf("images/ lists %v after mv", names)
	}
	cmp(t, fx.Path, m.byID(id, "image.vhd"))
	cmp(t, fx.Path, m.dataFile("b"))
	if a, b := inode(t, m.images("b")), inode(t, m.dataFile("b")); a != inoDir || b != inoData {
		t.Errorf("inodes after mv: dir %s data %s, before %s %s", a, b, inoDir, inoData)
	}
	// The name is free again.
	idA := m.mkimage("a")
	if idA == id {
		t.Fatalf("new image a got the old id")
	}

	// mv onto an existing name fails, both images keep their names.
	r := execCmd("mv", "-T", m.images("b"), m.images("a"))
	if r.code == 0 {
		t.Errorf("mv -T images/b images/a (taken) exited 0")
	}
	wantErrno(t, "rename onto a taken name", syscall.Rename(m.images("b"), m.images("a")), syscall.EEXIST)
	if got, got2 := m.prop("a", "id"), m.prop("b", "id"); got != idA || got2 != id {
		t.Errorf("after refused renames: images/a is %s (want %s), images/b is %s (want %s)", got, idA, got2, id)
	}
	// Renaming through properties/name or user.name: the old name is gone
	// at once (the kernel had it cached), the new one is there.
	inode(t, m.dataFile("b"))
	sh(t, `echo c > "$1"`, m.propFile("b", "name"))
	if got := readProp(t, m.byID(id, "properties", "name")); got != "c" {
		t.Errorf("name after echo c > properties/name = %q", got)
	}
	if got := m.prop("c", "id"); got != id {
		t.Errorf("images/c is %q, want %q", got, id)
	}
	run(t, "setfattr", "-n", "user.name", "-v", "d", m.images("c"))
	if got := m.prop("d", "id"); got != id {
		t.Errorf("images/d is %q, want %q", got, id)
	}
	if names := dirNames(t, m.images()); !slices.Equal(names, []string{"a", "d"}) {
		t.Errorf("images/ lists %v, want [a d]", names)
	}
}

// TestRmdirDeletesImage checks that rmdir deletes an image: gone from both
// trees and its data file removed from the store.
func TestRmdirDeletesImage(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 3*mib, "fixed")
	id := m.mkimage("doomed")
	keep := m.mkimage("kept")
	run(t, "cp", fx.Path, m.dataFile("doomed"))
	run(t, "cp", fx.Path, m.dataFile("kept"))
	m.checkSealed(t, "doomed", fx)
	if _, err := os.Stat(m.backing(id)); err != nil {
		t.Fatalf("backing file of a sealed image: %v", err)
	}
	// rm -r cannot empty a sealed image (image.vhd is immutable); rmdir
	// deletes the whole image.
	run(t, "rmdir", m.images("doomed"))
	// (by-id/<id> itself may be answered from the kernel's entry cache
	// for a moment; what it leads to is gone: TestRmdirGoneFromByIDAtOnce.)
	for _, p := range []string{m.images("doomed"), m.dataFile("doomed"), m.backing(id)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after rmdir: %v, want ENOENT", p, err)
		}
	}
	for _, p := range []string{m.byID(id, "image.vhd"), m.byID(id, "properties", "id")} {
		if _, err := os.ReadFile(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("read %s after rmdir: %v, want ENOENT", p, err)
		}
	}
	if names := dirNames(t, m.images()); !slices.Equal(names, []string{"kept"}) {
		t.Errorf("images/ lists %v after rmdir", names)
	}
	if names := dirNames(t, m.Mnt+"/by-id"); !slices.Equal(names, []string{keep}) {
		t.Errorf("by-id/ lists %v after rmdir", names)
	}
	if _, err := os.Stat(m.backing(keep)); err != nil {
		t.Errorf("the other image's data: %v", err)
	}
	wantErrno(t, "rmdir of a missing image", syscall.Rmdir(m.images("doomed")), syscall.ENOENT)
	// A protected image is not deleted.
	sh(t, `echo true > "$1"`, m.propFile("kept", "protected"))
	wantErrno(t, "rmdir of a protected image", syscall.Rmdir(m.images("kept")), syscall.EPERM)
	sh(t, `echo false > "$1"`, m.propFile("kept", "protected"))
	run(t, "rmdir", m.images("kept"))
	// (A shared catalog's data directory keeps its identity file.)
	if ents, _ := filepath.Glob(filepath.Join(m.Store, "data", "*.vhd")); len(ents) != 0 {
		t.Errorf("STORE/data after deleting every image: %v", ents)
	}
	// The name can be used again, by a new image.
	if id2 := m.mkimage("doomed"); id2 == id {
		t.Errorf("re-created image got the deleted image's id")
	}
}

// TestRemountPersistence checks that a restart serves the same images,
// property values, bytes and inode numbers.
func TestRemountPersistence(t *testing.T) {
	m := mount(t)
	requireTools(t, "cmp", "getfattr")
	fixed := makeVHD(t, 5*mib, "fixed")
	dyn := makeVHD(t, 5*mib, "dynamic")
	ids := map[string]string{}
	for name, fx := range map[string]vhdFixture{"fixed": fixed, "dynamic": dyn} {
		ids[name] = m.mkimage(name)
		run(t, "cp", fx.Path, m.dataFile(name))
		m.checkSealed(t, name, fx)
	}
	ids["queued"] = m.mkimage("queued")
	sh(t, `echo superos > "$1"`, m.propFile("fixed", "os_distro"))
	sh(t, `echo 4096 > "$1"`, m.propFile("fixed", "min_ram"))
	run(t, "setfattr", "-n", "user.com.rackspace__1__release_id", "-v", "42", m.images("dynamic"))

	type snapshot struct {
		props  map[string]string
		inodes map[string]string
	}
	take := func() map[string]snapshot {
		out := map[string]snapshot{}
		for name, id := range ids {
			s := snapshot{props: map[string]string{}, inodes: map[string]string{}}
			for _, k := range dirNames(t, m.images(name, "properties")) {
				s.props[k] = m.prop(name, k)
				s.inodes["properties/"+k] = inode(t, m.propFile(name, k))
			}
			for _, p := range []string{"", "image.vhd", "properties"} {
				if p == "image.vhd" && name == "queued" {
					continue // by-id/<id>/image.vhd exists once sealed
				}
				s.inodes["images/"+p] = inode(t, m.images(name, p))
				s.inodes["by-id/"+p] = inode(t, m.byID(id, p))
			}
			out[name] = s
		}
		return out
	}
	before := take()
	m.remount()
	after := take()
	for name := range ids {
		b, a := before[name], after[name]
		if len(a.props) != len(b.props) {
			t.Errorf("%s: %d properties before remount, %d after", name, len(b.props), len(a.props))
		}
		for k, v := range b.props {
			if a.props[k] != v {
				t.Errorf("%s: properties/%s = %q before remount, %q after", name, k, v, a.props[k])
			}
		}
		for k, v := range b.inodes {
			if a.inodes[k] != v {
				t.Errorf("%s: inode of %s = %s before remount, %s after", name, k, v, a.inodes[k])
			}
		}
	}
	if got := after["fixed"].props["os_distro"]; got != "superos" {
		t.Errorf("custom property after remount = %q", got)
	}
	if got := after["fixed"].props["min_ram"]; got != "4096" {
		t.Errorf("min_ram after remount = %q", got)
	}
	if got := after["dynamic"].props["com.rackspace__1__release_id"]; got != "42" {
		t.Errorf("release id after remount = %q", got)
	}
	if got := after["queued"].props["status"]; got != "queued" {
		t.Errorf("queued image after remount: status %q", got)
	}
	m.checkSealed(t, "fixed", fixed)
	m.checkSealed(t, "dynamic", dyn)
	if names := dirNames(t, m.images()); !slices.Equal(names, []string{"dynamic", "fixed", "queued"}) {
		t.Errorf("images/ after remount: %v", names)
	}
	// The queued image still takes an upload after the restart.
	run(t, "cp", fixed.Path, m.dataFile("queued"))
	m.checkSealed(t, "queued", fixed)
}

// TestStatfs compares df on the mount with df on the store's filesystem.
func TestStatfs(t *testing.T) {
	m := mount(t)
	var onMount, onStore syscall.Statfs_t
	if err := syscall.Statfs(m.Mnt, &onMount); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Statfs(m.Store, &onStore); err != nil {
		t.Fatal(err)
	}
	if onMount.Blocks*uint64(onMount.Bsize) != onStore.Blocks*uint64(onStore.Bsize) {
		t.Errorf("statfs size: mount %d x %d, store %d x %d", onMount.Blocks, onMount.Bsize, onStore.Blocks, onStore.Bsize)
	}
	df := func(p string) (size, avail int64) {
		out := run(t, "df", "-B1", "--output=size,avail", p)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		f := strings.Fields(lines[len(lines)-1])
		if len(f) != 2 {
			t.Fatalf("df %s: %q", p, out)
		}
		size, _ = strconv.ParseInt(f[0], 10, 64)
		avail, _ = strconv.ParseInt(f[1], 10, 64)
		return size, avail
	}
	ms, ma := df(m.Mnt)
	ss, sa := df(m.Store)
	if ms != ss || ms <= 0 {
		t.Errorf("df size: mount %d, store %d", ms, ss)
	}
	if d := ma - sa; d < -64*mib || d > 64*mib {
		t.Errorf("df avail: mount %d, store %d (differ by %d)", ma, sa, d)
	}
}

// TestRmdirGoneFromByIDAtOnce deletes images whose by-id entries the
// kernel has just looked up: right after rmdir returns, by-id/<id> is no
// longer listed and its data and properties are ENOENT (the kernel may
// still answer a stat of by-id/<id> from its entry cache for a moment).
func TestRmdirGoneFromByIDAtOnce(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 1*mib, "fixed")
	for i := range 10 {
		name := "img" + strconv.Itoa(i)
		id := m.mkimage(name)
		run(t, "cp", fx.Path, m.dataFile(name))
		for _, p := range []string{m.byID(id), m.byID(id, "image.vhd"), m.byID(id, "properties", "name")} {
			if _, err := os.Stat(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := syscall.Rmdir(m.images(name)); err != nil {
			t.Fatalf("rmdir: %v", err)
		}
		round := "round " + strconv.Itoa(i) + ": "
		_, err := os.ReadFile(m.byID(id, "image.vhd"))
		wantErrno(t, round+"read by-id/<id>/image.vhd right after rmdir", err, syscall.ENOENT)
		_, err = os.ReadFile(m.byID(id, "properties", "name"))
		wantErrno(t, round+"read by-id/<id>/properties/name right after rmdir", err, syscall.ENOENT)
		_, err = os.ReadDir(m.byID(id))
		wantErrno(t, round+"readdir by-id/<id> right after rmdir", err, syscall.ENOENT)
		_, err = unix.Getxattr(m.byID(id, "image.vhd"), "user.id", make([]byte, 64))
		if err == nil {
			t.Errorf("%sgetxattr user.id on by-id/<id>/image.vhd right after rmdir succeeded", round)
		}
		if slices.Contains(dirNames(t, m.Mnt+"/by-id"), id) {
			t.Errorf("%sby-id/ still lists the deleted image", round)
		}
		if t.Failed() {
			break
		}
	}
}

// TestCrashDuringUpload SIGKILLs the daemon while cp is writing: after a
// restart the image is killed with a reason (never active), no staged
// data is left, an image sealed before the crash is intact, and a new cp
// works.
func TestCrashDuringUpload(t *testing.T) {
	m := mount(t)
	requireTools(t, "getfattr", "cmp")
	fx := makeVHD(t, 20*mib, "fixed")
	sealedID := m.mkimage("sealed")
	run(t, "cp", fx.Path, m.dataFile("sealed"))
	m.checkSealed(t, "sealed", fx)
	id := m.mkimage("torn")

	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cp := exec.Command("cp", fifo, m.dataFile("torn"))
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	cpDone := make(chan error, 1)
	go func() { cpDone <- cp.Wait() }()
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(m.dataFile("torn")); err == nil && fi.Size() >= int64(len(data)/2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cp did not write half the image within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.crash()
	w.Close()
	select {
	case err := <-cpDone:
		if err == nil {
			t.Errorf("cp into a crashed mount exited 0")
		}
	case <-time.After(10 * time.Second):
		cp.Process.Kill()
		<-cpDone
		t.Errorf("cp still running 10 s after the daemon was killed")
	}

	m.start()
	m.checkKilled(t, "torn")
	if got := m.prop("torn", "id"); got != id {
		t.Errorf("torn image id %q, want %q", got, id)
	}
	if ents, err := os.ReadDir(filepath.Join(m.Store, "staging")); err != nil || len(ents) != 0 {
		t.Errorf("STORE/staging after restart: %v %v", ents, err)
	}
	if _, err := os.Stat(m.backing(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sealed data for the torn upload: %v", err)
	}
	m.checkSealed(t, "sealed", fx)
	cmp(t, fx.Path, m.backing(sealedID))
	run(t, "cp", fx.Path, m.dataFile("torn"))
	m.checkSealed(t, "torn", fx)
}

// TestByIDStableWhileNamesMove reads by-id/<id>/image.vhd over and over
// while the names of that image and others are swapped, deleted and
// reused: every read gives the image's own bytes (or ENOENT), never
// another image's.
func TestByIDStableWhileNamesMove(t *testing.T) {
	m := mount(t)
	fa, fb := makeVHD(t, 3*mib, "fixed"), makeVHD(t, 3*mib, "dynamic")
	ida, idb := m.mkimage("a"), m.mkimage("b")
	run(t, "cp", fa.Path, m.dataFile("a"))
	run(t, "cp", fb.Path, m.dataFile("b"))
	wantA, err := os.ReadFile(fa.Path)
	if err != nil {
		t.Fatal(err)
	}
	wantB, err := os.ReadFile(fb.Path)
	if err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	moverDone := make(chan error, 1)
	go func() {
		var err error
		defer func() { moverDone <- err }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Swap the names a and b; make and delete a third image
			// under a name that was just used.
			steps := []func() error{
				func() error { return os.Rename(m.images("a"), m.images("tmp")) },
				func() error { return os.Rename(m.images("b"), m.images("a")) },
				func() error { return os.Rename(m.images("tmp"), m.images("b")) },
				func() error { return os.Mkdir(m.images("tmp"), 0o755) },
				func() error { return syscall.Rmdir(m.images("tmp")) },
			}
			for _, step := range steps {
				if err = step(); err != nil {
					err = fmt.Errorf("mover round %d: %w", i, err)
					return
				}
			}
		}
	}()
	reads := 0
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); reads++ {
		for _, c := range []struct {
			id   string
			want []byte
		}{{ida, wantA}, {idb, wantB}} {
			got, err := os.ReadFile(m.byID(c.id, "image.vhd"))
			if err != nil {
				t.Fatalf("read by-id/%s/image.vhd while names move: %v", c.id, err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("by-id/%s/image.vhd gave other bytes (%d bytes) while names moved", c.id, len(got))
			}
		}
	}
	close(stop)
	if err := <-moverDone; err != nil {
		t.Fatal(err)
	}
	// Reads through images/<name> follow the current name.
	for name, id := range map[string]string{"a": m.prop("a", "id"), "b": m.prop("b", "id")} {
		want := wantA
		if id == idb {
			want = wantB
		}
		got, err := os.ReadFile(m.dataFile(name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("images/%s/image.vhd (id %s): %d bytes, %v; not that image's data", name, id, len(got), err)
		}
	}
	t.Logf("%d reads of each image while names moved", reads)
}
