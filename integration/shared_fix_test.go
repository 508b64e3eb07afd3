package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
