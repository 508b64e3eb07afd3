package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Full disk (issue #7): the store on a 64 MiB tmpfs.

// tmpfsStore moves m's store onto a fresh tmpfs of size bytes and mounts
// again. The tmpfs is unmounted after the daemon stops.
func tmpfsStore(t *testing.T, m *fsMount, size string) {
	t.Helper()
	requireTools(t, "mount", "umount")
	m.stop()
	if err := os.RemoveAll(m.Store); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(m.Store, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", m.Store)
	if m.catalogArgs != nil {
		// On a shared catalog (IMAGEFS_TEST_CATALOG=etcd) the wiped store
		// gets a fresh catalog too, as a single-host store's catalog goes
		// with its directory: the old one's records name data that is gone
		// (and its data directory's identity, which a mount checks).
		m.catalogArgs = singleHostOnShared(t, filepath.Dir(m.Store), m.Store)
		storeCatalogArgs.Store(m.Store, m.catalogArgs)
	}
	t.Cleanup(func() {
		m.stop()
		if r := execCmd("umount", m.Store); r.err != nil {
			t.Errorf("umount the store's tmpfs: %s", r)
			execCmd("umount", "-l", m.Store)
		}
	})
	m.start()
}

// freeBytes is what df calls available on the filesystem holding path.
func freeBytes(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fillDisk writes a file in dir until the filesystem is full (keep bytes
// left free) and returns its path.
func fillDisk(t testing.TB, dir string, keep int64) string {
	t.Helper()
	path := filepath.Join(dir, "fill")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		free := freeBytes(t, dir)
		if free <= keep {
			return path
		}
		n := min(int64(len(buf)), free-keep)
		if _, err := f.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// TestENOSPCUpload: an upload that does not fit fails at the writer with
// ENOSPC, the image ends killed, the other images and the catalog are
// untouched, the space comes back, and a smaller upload fits afterwards.
func TestENOSPCUpload(t *testing.T) {
	m := mount(t)
	requireTools(t, "cp", "dd", "cmp", "df")
	small := []vhdFixture{makeVHD(t, 4*mib, "fixed"), makeVHD(t, 5*mib, "dynamic")}
	big := makeVHD(t, 80*mib, "fixed") // more than the tmpfs holds
	tmpfsStore(t, m, "64m")

	for i, fx := range small {
		name := "small" + strconv.Itoa(i)
		m.mkimage(name)
		run(t, "cp", fx.Path, m.dataFile(name))
		writeProp(t, m, name, "os_distro", "superos")
		m.checkSealed(t, name, fx)
	}
	before := freeBytes(t, m.Store)
	t.Logf("tmpfs: %d bytes free before the big uploads", before)

	for _, tool := range []string{"cp", "dd"} {
		name := "big-" + tool
		m.mkimage(name)
		var r result
		if tool == "cp" {
			r = execCmd("cp", big.Path, m.dataFile(name))
		} else {
			r = execCmd("dd", "if="+big.Path, "of="+m.dataFile(name), "bs=1M", "status=none")
		}
		if r.err == nil || !strings.Contains(r.stderr, "No space left on device") {
			t.Errorf("%s of %d bytes onto a 64 MiB store: want ENOSPC, got %s", tool, big.Size, r)
		}
		if got := m.prop(name, "status"); got == "active" {
			t.Errorf("%s: status %s after an upload that ran out of space", name, got)
		}
		m.checkKilled(t, name)
		if ents, _ := os.ReadDir(filepath.Join(m.Store, "staging")); len(ents) != 0 {
			t.Errorf("%s: staging still holds %d files after the refused upload", name, len(ents))
		}
		// df back to where it was (the catalog may have grown a little).
		if after := freeBytes(t, m.Store); after < before-mib {
			t.Errorf("%s: %d bytes free after the refused upload, %d before: space not given back", name, after, before)
		}
		for i, fx := range small {
			name := "small" + strconv.Itoa(i)
			cmp(t, fx.Path, m.dataFile(name))
			if got := m.prop(name, "checksum"); got != fx.MD5 {
				t.Errorf("%s checksum %s after the full disk, want %s", name, got, fx.MD5)
			}
			if got := m.prop(name, "os_distro"); got != "superos" {
				t.Errorf("%s os_distro %q after the full disk", name, got)
			}
		}
	}
	t.Logf("df after the refused uploads:\n%s", run(t, "df", "-B1", m.Store))

	// A smaller upload into a killed image works.
	run(t, "cp", small[0].Path, m.dataFile("big-cp"))
	m.checkSealed(t, "big-cp", small[0])

	m.stop()
	if rep := fsckJSON(t, m.Store, "--verify-data"); rep.code != 0 || len(rep.Problems) != 0 {
		t.Errorf("fsck --verify-data after the full disk: exit %d, %v", rep.code, rep.Problems)
	}
}

// TestENOSPCCatalog: when the disk is full (here: a file fills the
// store's tmpfs), property writes, mkdir and renames fail with ENOSPC and
// change nothing; reads go on; once there is space again writes work. The
// catalog (Pebble) itself must never meet the full disk: imagefs refuses
// a commit that does not leave it room.
func TestENOSPCCatalog(t *testing.T) {
	embeddedCatalogOnly(t, "a full disk under the embedded catalog (Pebble); an etcd catalog has its own")
	m := mount(t)
	requireTools(t, "setfattr", "getfattr")
	fx := makeVHD(t, 4*mib, "fixed")
	tmpfsStore(t, m, "64m")
	m.mkimage("img")
	run(t, "cp", fx.Path, m.dataFile("img"))
	writeProp(t, m, "img", "os_distro", "superos")
	id := m.prop("img", "id")

	fill := fillDisk(t, m.Store, 0)
	err := os.WriteFile(m.propFile("img", "os_distro"), []byte("hyperos\n"), 0o644)
	wantErrno(t, "write properties/os_distro on a full disk", err, syscall.ENOSPC)
	err = unix.Setxattr(m.dataFile("img"), "user.os_distro", []byte("hyperos"), 0)
	wantErrno(t, "setxattr user.os_distro on a full disk", err, syscall.ENOSPC)
	err = unix.Setxattr(m.dataFile("img"), "user.new_key", []byte("v"), 0)
	wantErrno(t, "setxattr of a new key on a full disk", err, syscall.ENOSPC)
	wantErrno(t, "mkdir on a full disk", os.Mkdir(m.images("new"), 0o755), syscall.ENOSPC)
	wantErrno(t, "mv on a full disk", os.Rename(m.images("img"), m.images("renamed")), syscall.ENOSPC)
	if got := m.prop("img", "os_distro"); got != "superos" {
		t.Errorf("os_distro = %q after refused writes, want superos", got)
	}
	if _, err := os.Stat(m.propFile("img", "new_key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("new_key exists after a refused setxattr: %v", err)
	}
	wantView(t, m, "os_distro", "superos", "img")
	cmp(t, fx.Path, m.byID(id, "image.vhd"))

	// Space back: writes work again, without a remount.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	writeProp(t, m, "img", "os_distro", "hyperos")
	run(t, "setfattr", "-n", "user.new_key", "-v", "v", m.dataFile("img"))
	run(t, "mkdir", m.images("new"))
	wantView(t, m, "os_distro", "hyperos", "img")

	// Big values on a nearly full disk: the catalog grows by whole
	// records (up to 128 values of 64 KiB); writes are refused before
	// Pebble runs out of room, never half applied, and the daemon lives.
	fill = fillDisk(t, m.Store, 12*mib)
	val := strings.Repeat("x", 60000)
	var refused error
	written := 0
	for i := 0; i < 120 && refused == nil; i++ {
		key := "big" + strconv.Itoa(i)
		refused = unix.Setxattr(m.dataFile("img"), "user."+key, []byte(val+key), 0)
		if refused == nil {
			written++
			continue
		}
		if en := errnoOf(refused); en != syscall.ENOSPC && en != syscall.EIO {
			t.Errorf("setxattr %s on a nearly full disk: %v, want ENOSPC (or EIO)", key, refused)
		}
		if _, err := os.Stat(m.propFile("img", key)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refused %s exists: %v", key, err)
		}
	}
	t.Logf("%d values of 60 KB written before the disk was too full: %v", written, refused)
	if refused == nil {
		t.Errorf("120 values of 60 KB fit in 12 MiB: the test did not fill the disk")
	}
	for i := range written {
		key := "big" + strconv.Itoa(i)
		if got := m.prop("img", key); got != val+key {
			t.Errorf("%s reads back %d bytes", key, len(got))
		}
	}
	os.Remove(fill)
	if errnoOf(refused) == syscall.EIO {
		m.remount() // the catalog failed: it is used again after a remount
	}
	writeProp(t, m, "img", "after", "ok")
	m.stop()
	if rep := fsckJSON(t, m.Store, "--verify-data"); rep.code != 0 || len(rep.Problems) != 0 {
		t.Errorf("fsck --verify-data after the full disk: exit %d, %v", rep.code, rep.Problems)
	}
}
