package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// logSince returns what m's daemon log holds past offset n.
func logSince(m *fsMount, n int) []byte {
	b := readFile(m.log)
	if n > len(b) {
		return nil
	}
	return b[n:]
}

// TestSharedRemountFromSnapshot: host-a's clean unmount writes
// STORE/catalog-snapshot; while host-a is down host-b creates, changes,
// renames and removes images; host-a's next mount starts from its
// snapshot (its log says so) and shows what host-b shows (ls images/,
// every property, the by-property view), and host-b's next change reaches
// it within a second. With the snapshot spoilt, the mount after lists the
// catalog instead (its log says why), with the same view.
func TestSharedRemountFromSnapshot(t *testing.T) {
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	requireTools(t, "getfattr", "mv", "rmdir")
	ids := map[string]string{}
	for i := range 6 {
		name := fmt.Sprintf("snap-%d", i)
		ids[name] = a.mkimage(name)
		if err := os.WriteFile(a.propFile(name, "os_distro"), []byte("debian\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, visible, "host-b lists them", func() bool { return len(lsSorted(t, b.images())) == 6 })
	a.stop()
	snap := filepath.Join(a.Store, "catalog-snapshot")
	if _, err := os.Stat(snap); err != nil {
		t.Fatalf("host-a's clean unmount wrote no snapshot: %v", err)
	}

	// host-a is down.
	ids["late"] = b.mkimage("late")
	if err := os.WriteFile(b.propFile("snap-0", "os_distro"), []byte("alpine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mv", b.images("snap-1"), b.images("moved"))
	ids["moved"] = ids["snap-1"]
	delete(ids, "snap-1")
	run(t, "rmdir", b.images("snap-2"))
	delete(ids, "snap-2")

	same := func(when string) {
		t.Helper()
		la, lb := lsSorted(t, a.images()), lsSorted(t, b.images())
		if !slices.Equal(la, lb) {
			t.Fatalf("%s: ls images/ on host-a %q, on host-b %q", when, la, lb)
		}
		for _, name := range la {
			sameProperties(t, a, b, name, ids[name])
		}
		va, vb := a.viewNames(t, "os_distro", "debian"), b.viewNames(t, "os_distro", "debian")
		if !slices.Equal(va, vb) || len(va) != 4 {
			t.Errorf("%s: by-property/os_distro/debian on host-a %q, on host-b %q, want 4 images", when, va, vb)
		}
	}
	n := len(readFile(a.log))
	a.start()
	if !bytes.Contains(logSince(a, n), []byte("catalog loaded from this host's snapshot")) {
		t.Fatalf("host-a's mount did not start from its snapshot:\n%s", logSince(a, n))
	}
	same("host-a mounted from its snapshot")
	if err := os.WriteFile(b.propFile("late", "os_distro"), []byte("debian\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, visible, "host-b's change after host-a's mount", func() bool { return fileIs(a.propFile("late", "os_distro"), "debian\n") })

	// A spoilt snapshot: the catalog is listed.
	a.stop()
	data, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x10
	if err := os.WriteFile(snap, data, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "rmdir", b.images("snap-3"))
	delete(ids, "snap-3")
	n = len(readFile(a.log))
	a.start()
	log := logSince(a, n)
	if bytes.Contains(log, []byte("catalog loaded from this host's snapshot")) || !bytes.Contains(log, []byte("catalog snapshot unreadable")) {
		t.Fatalf("host-a's mount with a spoilt snapshot did not list the catalog, saying why:\n%s", log)
	}
	same("host-a mounted with a spoilt snapshot")
}

// TestSharedSnapshotRecreatedCluster: the tester's repro. host-a and
// host-b unmount with image w in the catalog; the etcd cluster is
// recreated (scripts/etcd.sh stop --wipe; start) and written to until its
// revision passes the snapshots'. The new cluster has another cluster id
// (scripts/etcd.sh: a random --initial-cluster-token per data directory),
// and host-a's next mount does not start from its snapshot (its log says
// why) and shows no w, as host-b does; a property written on host-a's new
// image reaches host-b.
func TestSharedSnapshotRecreatedCluster(t *testing.T) {
	usePrivateEtcd(t)
	hosts, env := sharedClusterArgs(t, 2)
	a, b := hosts[0], hosts[1]
	a.mkimage("w")
	eventually(t, visible, "host-b lists w", func() bool { return slices.Equal(lsSorted(t, b.images()), []string{"w"}) })
	a.stop()
	b.stop()
	if _, err := os.Stat(filepath.Join(a.Store, "catalog-snapshot")); err != nil {
		t.Fatalf("host-a's clean unmount wrote no snapshot: %v", err)
	}
	cli := func() *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: env.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	status := func(c *clientv3.Client) (cluster uint64, rev int64) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.Get(ctx, "probe")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.ClusterId, resp.Header.Revision
	}
	oldCluster, oldRev := status(cli())

	if r := privateEtcd.script("stop", "--wipe"); r.err != nil {
		t.Fatalf("etcd.sh stop --wipe: %s", r)
	}
	if r := privateEtcd.script("start"); r.err != nil {
		t.Fatalf("etcd.sh start: %s", r)
	}
	c := cli()
	newCluster, rev := status(c)
	if newCluster == oldCluster {
		t.Errorf("the recreated cluster has the same cluster id %x as the earlier one", newCluster)
	}
	for i := 0; rev <= oldRev+10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := c.Put(ctx, fmt.Sprintf("filler/%d", i), "x")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	t.Logf("cluster %x at revision %d before, %x at %d now", oldCluster, oldRev, newCluster, rev)

	n := len(readFile(a.log))
	a.start()
	log := logSince(a, n)
	if bytes.Contains(log, []byte("catalog loaded from this host's snapshot")) || !bytes.Contains(log, []byte("catalog snapshot")) ||
		!bytes.Contains(log, []byte("ignored")) {
		t.Fatalf("host-a's mount on the recreated cluster did not list the catalog, saying why:\n%s", log)
	}
	if got := lsSorted(t, a.images()); len(got) != 0 {
		t.Fatalf("host-a on the recreated cluster lists %q, want nothing", got)
	}
	b.start()
	if got := lsSorted(t, b.images()); len(got) != 0 {
		t.Fatalf("host-b on the recreated cluster lists %q, want nothing", got)
	}
	a.mkimage("w")
	if err := os.WriteFile(a.propFile("w", "os_distro"), []byte("debian\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, visible, "host-a's new w on host-b", func() bool { return fileIs(b.propFile("w", "os_distro"), "debian\n") })
}
