package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
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
