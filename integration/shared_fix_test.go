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
