package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
)

// TestSharedUmountWaitsForStore: `imagefs umount MNT && imagefs fsck
// STORE` works on a host of a shared catalog too: imagefs umount finds the
// daemon by STORE/imagefs.lock (a shared host's STORE has no catalog/LOCK)
// and returns once it has exited, its catalog snapshot written. Also with
// fsname= (the daemon found by its open lock file and its arguments).
func TestSharedUmountWaitsForStore(t *testing.T) {
	_, env := sharedClusterArgs(t, 0)
	m := hostDirs(t)
	watchHost(t, m)
	cat := "etcd://" + strings.Join(env.Endpoints, ",")
	shared := "catalog=" + cat + ",data=" + env.Data + ",host_id=host-b,config=" + env.Config
	const rounds = 8
	for i := 0; i < rounds; i++ {
		opts := shared + ",log_file=" + m.log
		if i%4 == 3 {
			opts += fmt.Sprintf(",fsname=images-%d", i)
		}
		if r := execCmd(binary, m.Store, m.Mnt, "-o", opts); r.err != nil {
			t.Fatalf("round %d: mount: %s", i, r)
		}
		pid := daemonPID(m.log)
		name := fmt.Sprintf("img-%d", i)
		if err := os.Mkdir(m.images(name), 0o755); err != nil {
			t.Fatal(err)
		}
		sh(t, `echo round-$2 > "$1"`, m.propFile(name, "os_distro"), fmt.Sprint(i))
		if r := execCmd(binary, "umount", m.Mnt); r.err != nil {
			t.Fatalf("round %d: imagefs umount: %s", i, r)
		}
		if !processGone(pid) {
			t.Fatalf("round %d: imagefs umount returned while the daemon (pid %d) still runs", i, pid)
		}
		if _, err := os.Stat(filepath.Join(m.Store, "catalog-snapshot")); err != nil {
			t.Errorf("round %d: no catalog snapshot right after imagefs umount: %v", i, err)
		}
		if r := execCmd(binary, "fsck", "--catalog", cat, "--data", env.Data, "--host-id", "host-b",
			"--config", env.Config, m.Store); r.err != nil {
			t.Fatalf("round %d: imagefs umount && imagefs fsck: %s", i, r)
		}
	}
}

// TestSharedPropertyCreateRace: two hosts create the same new property
// at once (open O_WRONLY|O_CREAT|O_TRUNC, write, close: echo v > k):
// neither sees an error, one value wins and both hosts show it, as on one
// host. With O_EXCL (set -C) exactly one creation succeeds and the other
// gets EEXIST (at the open, the write or the close).
func TestSharedPropertyCreateRace(t *testing.T) {
	hosts, _ := sharedClusterArgs(t, 2)
	a, b := hosts[0], hosts[1]
	a.mkimage("web")
	eventually(t, visible, "host-b: ls images/ lists web", func() bool { return lsHas(b.images(), "web") })

	// create writes value into key on host m, O_EXCL with excl, and
	// returns the first error of open, write and close.
	create := func(m *fsMount, key, value string, excl bool) error {
		flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		if excl {
			flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
		}
		f, err := os.OpenFile(m.propFile("web", key), flags, 0o644)
		if err != nil {
			return err
		}
		_, err = f.Write([]byte(value + "\n"))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	race := func(key string, excl bool) [2]error {
		var errs [2]error
		var wg sync.WaitGroup
		ready := make(chan struct{})
		for i, m := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready
				errs[i] = create(m, key, "v-"+hostID(i), excl)
			}()
		}
		close(ready)
		wg.Wait()
		return errs
	}
	// converged waits until both hosts show one value of key, one of the
	// writers', and returns it.
	converged := func(key string) string {
		var va, vb []byte
		eventually(t, visible, "both hosts show one value of "+key, func() bool {
			var ea, eb error
			va, ea = os.ReadFile(a.propFile("web", key))
			vb, eb = os.ReadFile(b.propFile("web", key))
			return ea == nil && eb == nil && string(va) == string(vb)
		})
		if v := strings.TrimSpace(string(va)); v != "v-host-a" && v != "v-host-b" {
			t.Errorf("%s = %q on both hosts, want one writer's value", key, va)
		}
		return string(va)
	}

	const rounds = 8
	for r := range rounds {
		key := fmt.Sprintf("k%d", r)
		for i, err := range race(key, false) {
			if err != nil {
				t.Errorf("round %d: %s: echo v > properties/%s (no O_EXCL) on a key created at once by the other host: %v", r, hostID(i), key, err)
			}
		}
		converged(key)
	}
	for r := range rounds {
		key := fmt.Sprintf("x%d", r)
		errs := race(key, true)
		failed := 0
		for i, err := range errs {
			if err != nil {
				failed++
				if !errors.Is(err, syscall.EEXIST) {
					t.Errorf("round %d: %s: O_EXCL creation of %s: %v, want EEXIST or success", r, hostID(i), key, err)
				}
			}
		}
		if failed != 1 {
			t.Errorf("round %d: O_EXCL creations of %s from both hosts: %v; want exactly one EEXIST", r, key, errs)
		}
		v := converged(key)
		for i, err := range errs {
			if err == nil && strings.TrimSpace(v) != "v-"+hostID(i) {
				t.Errorf("round %d: %s = %q, want the value of %s, whose O_EXCL creation succeeded", r, key, v, hostID(i))
			}
		}
	}
}

// TestSharedMigrateDeletedInodes: a migration never gives an image the
// inode numbers of one the catalog deleted: host-a, mounted on a fresh
// catalog, uploads web (the catalog's first image, inode base 1), looks at
// it and deletes it; a single-host store with legacy (base 1, with data)
// and q (base 2) is migrated. legacy is renumbered (the report says so),
// q keeps its numbers (base 2 was never handed out), and host-a, whose
// kernel may still cache web's inodes, shows legacy whole: its data file,
// properties and data.
func TestSharedMigrateDeletedInodes(t *testing.T) {
	hosts, env := sharedClusterArgs(t, 1)
	a := hosts[0]
	vhd := filepath.Join(t.TempDir(), "small.vhd")
	if err := os.WriteFile(vhd, testutil.FixedVHD(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := md5sum(t, vhd)

	a.mkimage("web")
	run(t, "cp", vhd, a.dataFile("web"))
	webIno := inode(t, a.images("web"))
	run(t, "ls", "-lR", a.images("web")) // the kernel caches web's inodes
	run(t, "rm", "-rf", a.images("web"))

	s := singleHostStore(t)
	s.mkimage("legacy")
	run(t, "cp", vhd, s.dataFile("legacy"))
	s.mkimage("q")
	legacyIno, qIno := inode(t, s.images("legacy")), inode(t, s.images("q"))
	s.stop()
	if legacyIno != webIno {
		t.Fatalf("the test needs legacy's inode (%s) to be web's (%s): each store numbers from 1", legacyIno, webIno)
	}

	r := execCmd(binary, "migrate", s.Store, "--catalog", "etcd://"+strings.Join(env.Endpoints, ","),
		"--data", env.Data, "--config", env.Config)
	t.Logf("migrate: %s", r)
	if r.code != 0 {
		t.Fatalf("migrate: want exit 0: %s", r)
	}
	for _, want := range []string{"renumbered: ", "(legacy)", "1 images renumbered"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("migrate: want %q in\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "(q)") {
		t.Errorf("migrate renumbered q, whose inode base the catalog never handed out:\n%s", r.stdout)
	}
	eventually(t, 5*time.Second, "host-a lists legacy and q", func() bool { return lsHas(a.images(), "legacy", "q") })
	if got := inode(t, a.images("legacy")); got == webIno {
		t.Errorf("host-a: images/legacy has inode %s, the deleted web's", got)
	}
	if got := inode(t, a.images("q")); got != qIno {
		t.Errorf("host-a: images/q has inode %s, want %s (its store's)", got, qIno)
	}
	if !lsHas(a.images("legacy"), "image.vhd", "properties") {
		t.Errorf("host-a: ls images/legacy = %v, want image.vhd and properties", lsSorted(t, a.images("legacy")))
	}
	if got := a.prop("legacy", "name"); got != "legacy" {
		t.Errorf("host-a: images/legacy/properties/name = %q", got)
	}
	if got := md5sum(t, a.dataFile("legacy")); got != sum {
		t.Errorf("host-a: md5sum of legacy = %s, want %s", got, sum)
	}
	// A re-run keeps what the first run gave.
	if r := execCmd(binary, "migrate", s.Store, "--catalog", "etcd://"+strings.Join(env.Endpoints, ","),
		"--data", env.Data, "--config", env.Config); r.code != 0 || !strings.Contains(r.stdout, "2 images: 0 migrated, 2 already there, 0 not migrated") {
		t.Errorf("second run of the migration: want exit 0, everything already there: %s", r)
	}
}
