package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
)

// Tests of issue 15, the catalog shared through etcd: two or three imagefs
// daemons (sharedCluster: host-a, host-b, host-c) on one etcd namespace and
// one data directory stand in for hypervisor hosts. What one host does is
// seen by the others within a second (the delays are measured and logged),
// every rule of the single-host store holds across hosts, a host that dies
// mid-upload has its image killed by the others, and etcd outages keep
// sealed images readable while changes fail with EAGAIN.

// visible is how soon a change on one host must show on the others.
const visible = time.Second

// sameProperties fails unless hosts a and b show image name (id) with the
// same properties: the same keys in by-id/<id>/properties/, the same value
// in every file, the same user.* attributes (getfattr -d).
func sameProperties(t testing.TB, a, b *fsMount, name, id string) {
	t.Helper()
	keysA := lsSorted(t, a.byID(id, "properties"))
	keysB := lsSorted(t, b.byID(id, "properties"))
	if !slices.Equal(keysA, keysB) {
		t.Errorf("%s: ls properties/ on host-a = %q, on host-b = %q", name, keysA, keysB)
	}
	for _, k := range keysA {
		va, vb := readOptional(a.byID(id, "properties", k)), readOptional(b.byID(id, "properties", k))
		if va != vb {
			t.Errorf("%s: properties/%s = %q on host-a, %q on host-b", name, k, va, vb)
		}
	}
	xa, xb := getfattrDump(t, a.images(name)), getfattrDump(t, b.images(name))
	if !maps.Equal(xa, xb) {
		t.Errorf("%s: getfattr -d on host-a = %v\non host-b = %v", name, xa, xb)
	}
	if len(xa) < len(keysA) {
		t.Errorf("%s: getfattr -d lists %d attributes, properties/ %d files", name, len(xa), len(keysA))
	}
}

// xattr returns getfattr --only-values -n user.KEY of path.
func xattr(t testing.TB, path, key string) string {
	t.Helper()
	return run(t, "getfattr", "--only-values", "-n", "user."+key, path)
}

// exists reports whether stat(1) of path succeeds.
func exists(path string) bool { return execCmd("stat", path).err == nil }

// gone reports whether path is ENOENT.
func gone(path string) bool {
	_, err := os.Lstat(path)
	return errors.Is(err, os.ErrNotExist)
}

// fileIs reports whether path reads as want.
func fileIs(path, want string) bool {
	b, err := os.ReadFile(path)
	return err == nil && string(b) == want
}

// inodesOf returns stat -c %i of each path (relative to the mountpoint),
// from one stat(1) run.
func inodesOf(t testing.TB, m *fsMount, rels []string) map[string]string {
	t.Helper()
	var paths []string
	for _, r := range rels {
		paths = append(paths, filepath.Join(m.Mnt, r))
	}
	out := strings.Fields(run(t, "stat", append([]string{"-c", "%i"}, paths...)...))
	if len(out) != len(rels) {
		t.Fatalf("stat -c %%i of %d paths printed %d numbers", len(rels), len(out))
	}
	ino := map[string]string{}
	for i, r := range rels {
		ino[r] = out[i]
	}
	return ino
}

// TestSharedCreateReadByID: an image made and uploaded on host-a is seen
// on host-b: ls images/ on host-b lists it within 1 s of the mkdir (delay
// logged), with the same id; once host-a sealed it, host-b's
// by-id/<id>/image.vhd appears within 1 s and has the same bytes (cmp,
// md5sum, qemu-img) and every property, as files and as attributes, is the
// same on both hosts. The shared samples uploaded on host-b read the same
// on host-a.
func TestSharedCreateReadByID(t *testing.T) {
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	requireTools(t, "getfattr", "cmp")
	fx := makeVHD(t, 6*mib, "dynamic")

	id := a.mkimage("superos")
	eventually(t, visible, "host-b: ls images/ lists superos, made on host-a", func() bool {
		return lsHas(b.images(), "superos")
	})
	if got := b.prop("superos", "id"); got != id {
		t.Fatalf("host-b: properties/id = %q, host-a made %q", got, id)
	}
	if got := b.prop("superos", "status"); got != "queued" {
		t.Errorf("host-b: status %q before the upload, want queued", got)
	}
	writeProp(t, a, "superos", "os_distro", "superos")
	run(t, "cp", fx.Path, a.dataFile("superos"))
	a.checkSealed(t, "superos", fx)
	eventually(t, visible, "host-b: by-id/<id>/image.vhd of the image host-a sealed", func() bool {
		return exists(b.byID(id, "image.vhd"))
	})
	b.checkSealed(t, "superos", fx)
	if got := md5sum(t, b.byID(id, "image.vhd")); got != fx.MD5 {
		t.Errorf("host-b: md5sum by-id/%s/image.vhd = %s, want %s", id, got, fx.MD5)
	}
	if got := b.prop("superos", "os_distro"); got != "superos" {
		t.Errorf("host-b: os_distro = %q", got)
	}
	sameProperties(t, a, b, "superos", id)

	// The other way round, with the shared samples: made on host-b, read
	// by id on host-a.
	samples := sampleDir(t)
	for _, s := range []string{"qemu.vhd", "win8.vhd", "xapi.vhd"} {
		name := strings.TrimSuffix(s, ".vhd")
		src := filepath.Join(samples, s)
		sid := b.mkimage(name)
		run(t, "cp", src, b.dataFile(name))
		if got := b.prop(name, "status"); got != "active" {
			t.Fatalf("host-b: %s: status %q after cp, want active", s, got)
		}
		eventually(t, visible, "host-a: by-id/<id>/image.vhd of "+s+" sealed on host-b", func() bool {
			return exists(a.byID(sid, "image.vhd"))
		})
		cmp(t, src, a.byID(sid, "image.vhd"))
		if got, want := md5sum(t, a.byID(sid, "image.vhd")), md5sum(t, src); got != want {
			t.Errorf("host-a: md5sum of %s by id = %s, want %s", s, got, want)
		}
		if got, want := a.prop(name, "checksum"), md5sum(t, src); got != want {
			t.Errorf("host-a: %s checksum = %s, want %s", s, got, want)
		}
		sameProperties(t, a, b, name, sid)
	}
	if got, want := lsSorted(t, a.images()), lsSorted(t, b.images()); !slices.Equal(got, want) {
		t.Errorf("ls images/: host-a %q, host-b %q", got, want)
	}
}

// TestSharedPropertyVisible: property changes on one host reach the other
// host's property files, attributes and by-property/ views within 1 s
// each (delays logged), with the other host's caches warm (it read the
// old value, or found the key missing, just before): a custom property
// written as a file, a core property set with setfattr, a changed value,
// a removed property; and the other way round.
func TestSharedPropertyVisible(t *testing.T) {
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	requireTools(t, "getfattr", "setfattr")
	id := sealedImage(t, a, "props")
	eventually(t, visible, "host-b: props active", func() bool {
		return fileIs(b.propFile("props", "status"), "active\n")
	})

	// Warm host-b's caches: the values, a missing key, the attribute.
	oldRAM := b.prop("props", "min_ram")
	if oldRAM == "2048" {
		t.Fatalf("min_ram is already 2048")
	}
	wantNoProperty(t, b, "props", "os_distro", "host-b before the change")

	writeProp(t, a, "props", "os_distro", "superos")
	eventually(t, visible, "host-b: properties/os_distro = superos, written as a file on host-a", func() bool {
		return fileIs(b.propFile("props", "os_distro"), "superos\n")
	})
	for _, p := range []string{b.images("props"), b.dataFile("props"), b.byID(id)} {
		if got := xattr(t, p, "os_distro"); got != "superos" {
			t.Errorf("host-b: getfattr user.os_distro %s = %q, want superos", p, got)
		}
	}
	wantView(t, b, "os_distro", "superos", "props")

	run(t, "setfattr", "-n", "user.min_ram", "-v", "2048", a.images("props"))
	eventually(t, visible, "host-b: properties/min_ram = 2048, set with setfattr on host-a", func() bool {
		return fileIs(b.propFile("props", "min_ram"), "2048\n")
	})
	if got := xattr(t, b.images("props"), "min_ram"); got != "2048" {
		t.Errorf("host-b: getfattr user.min_ram = %q, want 2048", got)
	}

	writeProp(t, a, "props", "os_distro", "hyperos")
	eventually(t, visible, "host-b: properties/os_distro = hyperos (host-b had read superos)", func() bool {
		return fileIs(b.propFile("props", "os_distro"), "hyperos\n")
	})
	if got := xattr(t, b.images("props"), "os_distro"); got != "hyperos" {
		t.Errorf("host-b: getfattr user.os_distro = %q, want hyperos", got)
	}
	wantView(t, b, "os_distro", "hyperos", "props")
	wantView(t, b, "os_distro", "superos")

	run(t, "rm", a.propFile("props", "os_distro"))
	eventually(t, visible, "host-b: properties/os_distro gone, removed on host-a", func() bool {
		return gone(b.propFile("props", "os_distro"))
	})
	wantNoProperty(t, b, "props", "os_distro", "host-b after rm on host-a")
	wantView(t, b, "os_distro", "hyperos")

	// And from host-b to host-a, whose caches are warm too.
	wantNoProperty(t, a, "props", "os_version", "host-a before the change")
	run(t, "setfattr", "-n", "user.os_version", "-v", "2024.1", b.dataFile("props"))
	eventually(t, visible, "host-a: properties/os_version = 2024.1, set with setfattr on host-b", func() bool {
		return fileIs(a.propFile("props", "os_version"), "2024.1\n")
	})
	if got := xattr(t, a.images("props"), "os_version"); got != "2024.1" {
		t.Errorf("host-a: getfattr user.os_version = %q", got)
	}
	sameProperties(t, a, b, "props", id)
}

// TestSharedRenameWhileReading: 50 renames (mv) of a sealed image on
// host-a while host-b reads it by id over and over (md5sum of
// by-id/<id>/image.vhd, a new open each time): every read on host-b gives
// the sealed bytes; afterwards host-b's images/ lists only the last name
// (within 1 s), with the same id and data.
func TestSharedRenameWhileReading(t *testing.T) {
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	requireTools(t, "cmp")
	fx := makeVHD(t, 4*mib, "fixed")
	id := a.mkimage("r-0")
	run(t, "cp", fx.Path, a.dataFile("r-0"))
	a.checkSealed(t, "r-0", fx)
	eventually(t, visible, "host-b: by-id/<id>/image.vhd", func() bool { return exists(b.byID(id, "image.vhd")) })
	cmp(t, fx.Path, b.byID(id, "image.vhd"))

	type readStats struct {
		n   int
		bad []string
	}
	stop := make(chan struct{})
	stats := make(chan readStats, 1)
	go func() {
		var st readStats
		for {
			select {
			case <-stop:
				stats <- st
				return
			default:
			}
			r := execCmd("md5sum", b.byID(id, "image.vhd"))
			st.n++
			if f := strings.Fields(r.stdout); r.err != nil || len(f) == 0 || f[0] != fx.MD5 {
				st.bad = append(st.bad, fmt.Sprintf("read %d: %s", st.n, r))
			}
		}
	}()
	stopped := false
	halt := func() readStats {
		stopped = true
		close(stop)
		return <-stats
	}
	defer func() {
		if !stopped {
			halt()
		}
	}()
	const renames = 50
	start := time.Now()
	for i := 1; i <= renames; i++ {
		run(t, "mv", a.images(fmt.Sprintf("r-%d", i-1)), a.images(fmt.Sprintf("r-%d", i)))
	}
	took := time.Since(start)
	st := halt()
	t.Logf("%d renames on host-a in %v; %d reads by id on host-b meanwhile", renames, took.Round(time.Millisecond), st.n)
	for _, bad := range st.bad {
		t.Errorf("host-b: md5sum by-id/%s/image.vhd during the renames: %s", id, bad)
	}
	if st.n < 3 {
		t.Errorf("only %d reads on host-b during the renames: the test did not read while renaming", st.n)
	}
	last := fmt.Sprintf("r-%d", renames)
	eventually(t, visible, "host-b: ls images/ lists only "+last, func() bool {
		r := execCmd("ls", "-1", b.images())
		return r.err == nil && strings.Join(strings.Fields(r.stdout), " ") == last
	})
	if got := b.prop(last, "id"); got != id {
		t.Errorf("host-b: images/%s has id %q, want %q", last, got, id)
	}
	if got := readProp(t, b.byID(id, "properties", "name")); got != last {
		t.Errorf("host-b: by-id/%s/properties/name = %q, want %s", id, got, last)
	}
	cmp(t, fx.Path, b.dataFile(last))
	cmp(t, fx.Path, b.byID(id, "image.vhd"))
}

// TestSharedMkdirRace: 100 rounds of host-a and host-b making the same
// name at the same moment (mkdir(2) on each mount, released together):
// every round exactly one succeeds and the other fails with EEXIST;
// afterwards both hosts list exactly the 100 images (no orphan made by a
// loser) under the same ids.
func TestSharedMkdirRace(t *testing.T) {
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	const rounds = 100
	var names []string
	wins := map[string]int{}
	for round := range rounds {
		name := fmt.Sprintf("race-%03d", round)
		names = append(names, name)
		var errs [2]error
		var wg sync.WaitGroup
		ready := make(chan struct{})
		for i, m := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready
				errs[i] = syscall.Mkdir(m.images(name), 0o755)
			}()
		}
		close(ready)
		wg.Wait()
		switch {
		case errs[0] == nil && errnoOf(errs[1]) == syscall.EEXIST:
			wins[hostID(0)]++
		case errs[1] == nil && errnoOf(errs[0]) == syscall.EEXIST:
			wins[hostID(1)]++
		default:
			t.Errorf("round %d: mkdir %s: host-a %v, host-b %v; want one success and one EEXIST", round, name, errs[0], errs[1])
		}
	}
	t.Logf("mkdir races won: %v", wins)
	eventually(t, visible, "both hosts list the 100 names", func() bool {
		return lsHas(a.images(), names...) && lsHas(b.images(), names...)
	})
	for i, m := range hosts {
		if got := lsSorted(t, m.images()); !slices.Equal(got, names) {
			t.Errorf("%s: ls images/ = %d names %q, want the %d race-NNN", hostID(i), len(got), got, rounds)
		}
		if got := lsSorted(t, filepath.Join(m.Mnt, "by-id")); len(got) != rounds {
			t.Errorf("%s: ls by-id/ lists %d ids, want %d", hostID(i), len(got), rounds)
		}
	}
	for _, n := range names {
		if ia, ib := a.prop(n, "id"), b.prop(n, "id"); ia != ib {
			t.Errorf("%s: id %s on host-a, %s on host-b", n, ia, ib)
		}
	}
}

// sharedPropertyQuota lets one image hold the 400 properties of
// TestSharedPropertyRace (the default quota is 128).
const sharedPropertyQuota = "1000"

// TestSharedPropertyRace: host-a and host-b each set 200 different custom
// properties on one image at the same time (a shell loop of echo > file
// on each); every write succeeds, and afterwards all 400 are present with
// their values on both hosts, as files and attributes: no edit is lost.
func TestSharedPropertyRace(t *testing.T) {
	hosts, _ := sharedClusterArgs(t, 2, "--property-quota", sharedPropertyQuota)
	a, b := hosts[0], hosts[1]
	requireTools(t, "getfattr")
	id := a.mkimage("many")
	eventually(t, visible, "host-b: ls images/ lists many", func() bool { return lsHas(b.images(), "many") })

	const per = 200
	script := `i=0; while [ $i -lt "$3" ]; do echo "$2-$i" > "$1/$2_$i" || exit 1; i=$((i+1)); done`
	var wg sync.WaitGroup
	var res [2]result
	var took [2]time.Duration
	ready := make(chan struct{})
	for i, m := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			start := time.Now()
			res[i] = shErr(script, m.images("many", "properties"), string(rune('a'+i)), strconv.Itoa(per))
			took[i] = time.Since(start)
		}()
	}
	close(ready)
	wg.Wait()
	for i := range hosts {
		t.Logf("%s: %d property writes in %v", hostID(i), per, took[i].Round(time.Millisecond))
		if res[i].err != nil {
			t.Errorf("%s: echo > properties/%c_N: %s", hostID(i), 'a'+i, res[i])
		}
	}
	want := map[string]string{}
	var keys []string
	for _, p := range []string{"a", "b"} {
		for i := range per {
			k := fmt.Sprintf("%s_%d", p, i)
			want[k] = fmt.Sprintf("%s-%d", p, i)
			keys = append(keys, k)
		}
	}
	eventually(t, visible, "both hosts list all 400 properties", func() bool {
		return lsHas(a.images("many", "properties"), keys...) && lsHas(b.images("many", "properties"), keys...)
	})
	for i, m := range hosts {
		x := getfattrDump(t, m.images("many"))
		lost := 0
		for _, k := range keys {
			v, err := os.ReadFile(m.propFile("many", k))
			if err != nil || string(v) != want[k]+"\n" || x[k] != want[k] {
				lost++
				if lost <= 5 {
					t.Errorf("%s: properties/%s = %q (%v), user.%s = %q; want %q", hostID(i), k, v, err, k, x[k], want[k])
				}
			}
		}
		if lost > 0 {
			t.Errorf("%s: %d of the %d properties missing or wrong", hostID(i), lost, len(keys))
		}
	}
	sameProperties(t, a, b, "many", id)
}

// TestSharedDeleteWhileOpen: host-b opens a sealed image's data by id and
// reads half of it; host-a deletes the image (rm -rf); within 1 s host-b's
// images/ no longer lists it and images/<name> and by-id/<id> are ENOENT
// there, while host-b's open descriptor reads the rest of the same bytes
// (and all of them again from offset 0) and closes cleanly.
func TestSharedDeleteWhileOpen(t *testing.T) {
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	fx := makeVHD(t, 4*mib, "fixed")
	src := mustRead(t, fx.Path)
	id := a.mkimage("doomed")
	run(t, "cp", fx.Path, a.dataFile("doomed"))
	a.checkSealed(t, "doomed", fx)
	eventually(t, visible, "host-b: by-id/<id>/image.vhd", func() bool { return exists(b.byID(id, "image.vhd")) })

	f, err := os.Open(b.byID(id, "image.vhd"))
	if err != nil {
		t.Fatalf("host-b: open by-id/%s/image.vhd: %v", id, err)
	}
	defer f.Close()
	half := make([]byte, len(src)/2)
	if _, err := io.ReadFull(f, half); err != nil || !bytes.Equal(half, src[:len(half)]) {
		t.Fatalf("host-b: first half read: %v (equal: %v)", err, bytes.Equal(half, src[:len(half)]))
	}

	run(t, "rm", "-rf", a.images("doomed"))
	for _, p := range []string{a.images("doomed"), a.byID(id)} {
		if !gone(p) {
			t.Errorf("host-a: %s still there after rm -rf", p)
		}
	}
	eventually(t, visible, "host-b: doomed gone (ls images/, images/doomed, by-id/<id>), deleted on host-a", func() bool {
		return lsLacks(b.images(), "doomed") && gone(b.images("doomed")) && gone(b.byID(id))
	})
	if got := lsSorted(t, filepath.Join(b.Mnt, "by-id")); slices.Contains(got, id) {
		t.Errorf("host-b: ls by-id/ still lists %s", id)
	}

	rest, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(rest, src[len(half):]) {
		t.Errorf("host-b: reading on after the delete on host-a: %d bytes, %v; equal to the rest: %v", len(rest), err, bytes.Equal(rest, src[len(half):]))
	}
	all := make([]byte, len(src))
	if n, err := f.ReadAt(all, 0); n != len(src) || !bytes.Equal(all, src) {
		t.Errorf("host-b: pread of all %d bytes after the delete: %d, %v", len(src), n, err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("host-b: close after the delete: %v", err)
	}
}

// TestSharedDeactivate: root deactivates an image on host-a (writes
// properties/status); on host-b, within 1 s, the status reads deactivated
// and reads of the data fail as on one host (TestAccessDeactivated): the
// owner, another user and the owner with CAP_DAC_OVERRIDE get EACCES under
// images/ and by-id/, the properties stay readable, root still reads the
// bytes. Reactivated on host-a, host-b serves the data to others again
// within 1 s.
func TestSharedDeactivate(t *testing.T) {
	hosts, _ := sharedClusterArgs(t, 2, "--allow-other")
	requireTools(t, "setpriv")
	helper := testutil.SysHelper(t)
	var am []*accessMount
	for _, h := range hosts {
		chmodPathForOthers(t, h.Mnt)
		am = append(am, &accessMount{fsMount: h, t: t, helper: helper})
	}
	a, b := am[0], am[1]
	fx := sharedFixture(t)
	src := string(mustRead(t, fx.Path))
	id := a.ownedImage(userA, "a-img", fx)
	writeProp(t, a.fsMount, "a-img", "visibility", "public")
	A, B, root := b.as(userA), b.as(userB), b.as("0")
	eventually(t, visible, "host-b: uid 1002 reads the public image by id", func() bool {
		return B.do("read", b.byID(id, "image.vhd")).errno == 0
	})
	if got := B.must("read", b.byID(id, "image.vhd")); got != src {
		t.Fatalf("host-b: uid 1002 read %d bytes that differ from the upload", len(got))
	}

	writeProp(t, a.fsMount, "a-img", "status", "deactivated")
	eventually(t, visible, "host-b: status deactivated, written on host-a", func() bool {
		return fileIs(b.propFile("a-img", "status"), "deactivated\n")
	})
	for _, u := range []actor{A, B, A.withCaps()} {
		for _, p := range []string{b.dataFile("a-img"), b.byID(id, "image.vhd")} {
			u.want("read", p, nil, syscall.EACCES)
		}
		if got := u.must("read", b.propFile("a-img", "status")); got != "deactivated\n" {
			t.Errorf("host-b: %s: properties/status = %q", u.name(), got)
		}
		if got := u.must("read", b.byID(id, "properties", "checksum")); got != fx.MD5+"\n" {
			t.Errorf("host-b: %s: properties/checksum = %q", u.name(), got)
		}
	}
	if r := asUser(userA, `cat "$1" > /dev/null`, b.dataFile("a-img")); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("host-b: uid 1001: cat of a deactivated image: %s, want EACCES", r)
	}
	if got := root.must("read", b.dataFile("a-img")); got != src {
		t.Errorf("host-b: root: deactivated image.vhd: %d bytes that differ from the upload", len(got))
	}
	cmp(t, fx.Path, b.byID(id, "image.vhd"))

	writeProp(t, a.fsMount, "a-img", "status", "active")
	eventually(t, visible, "host-b: uid 1002 reads the reactivated image by id", func() bool {
		return B.do("read", b.byID(id, "image.vhd")).errno == 0
	})
	if got := A.must("read", b.dataFile("a-img")); got != src {
		t.Errorf("host-b: uid 1001: reactivated image.vhd: %d bytes that differ", len(got))
	}
	if got := b.prop("a-img", "status"); got != "active" {
		t.Errorf("host-b: status %q after reactivation on host-a", got)
	}
}

// TestSharedInodes: the inode numbers (stat -c %i) of an image's
// directories, data, property files and view link are the same on both
// hosts; 40 images made at the same moment on both hosts (20 each) have
// distinct inode numbers, the same on both hosts; and host-b, remounted,
// gives every one of them the same numbers again.
func TestSharedInodes(t *testing.T) {
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	fx := makeVHD(t, 2*mib, "fixed")
	id := a.mkimage("ino")
	writeProp(t, a, "ino", "os_distro", "superos")
	writeProp(t, a, "ino", "custom_key", "x")
	run(t, "cp", fx.Path, a.dataFile("ino"))
	a.checkSealed(t, "ino", fx)
	eventually(t, visible, "host-b: by-id/<id>/image.vhd", func() bool { return exists(b.byID(id, "image.vhd")) })

	rels := []string{"images/ino", "images/ino/image.vhd", "images/ino/properties", "by-id/" + id,
		"by-id/" + id + "/image.vhd", "by-id/" + id + "/properties", "by-property/os_distro/superos/ino"}
	for _, k := range []string{"id", "name", "status", "checksum", "min_ram", "os_distro", "custom_key"} {
		rels = append(rels, "images/ino/properties/"+k, "by-id/"+id+"/properties/"+k)
	}

	// 20 images on each host, made at the same moment.
	script := `i=0; while [ $i -lt 20 ]; do mkdir "$1/$2-$i" || exit 1; i=$((i+1)); done`
	var wg sync.WaitGroup
	var res [2]result
	for i, m := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = shErr(script, m.images(), hostID(i))
		}()
	}
	wg.Wait()
	var made []string
	for i := range hosts {
		if res[i].err != nil {
			t.Fatalf("%s: mkdir loop: %s", hostID(i), res[i])
		}
		for j := range 20 {
			made = append(made, fmt.Sprintf("%s-%d", hostID(i), j))
		}
	}
	eventually(t, visible, "both hosts list the 40 new images", func() bool {
		return lsHas(a.images(), made...) && lsHas(b.images(), made...)
	})
	seen := map[string]string{}
	for _, n := range append([]string{"ino"}, made...) {
		rels = append(rels, "images/"+n, "images/"+n+"/properties/id")
	}
	ia := inodesOf(t, a, rels)
	for _, n := range append([]string{"ino"}, made...) {
		ino := ia["images/"+n]
		if other, dup := seen[ino]; dup {
			t.Errorf("images/%s and images/%s have one inode number %s", n, other, ino)
		}
		seen[ino] = n
	}
	compare := func(when string, ib map[string]string) {
		t.Helper()
		for _, r := range rels {
			if ia[r] != ib[r] {
				t.Errorf("%s: stat -c %%i %s: host-a %s, host-b %s", when, r, ia[r], ib[r])
			}
		}
	}
	compare("both mounted", inodesOf(t, b, rels))
	b.remount()
	compare("after host-b's remount", inodesOf(t, b, rels))
}

// TestSharedHostDeath: host-a starts an upload (half a VHD written through
// a descriptor it holds: status saving on every host) and its daemon is
// SIGKILLed; on host-b and host-c the image becomes killed within the
// lease time (3 s) + 5 s (delay logged), with a kill reason naming host-a,
// the same on both. host-a mounted again leaves its STORE/staging empty,
// shows the same killed image, and uploads it again (active on host-b).
func TestSharedHostDeath(t *testing.T) {
	hosts := sharedCluster(t, 3)
	a, b, c := hosts[0], hosts[1], hosts[2]
	requireTools(t, "getfattr", "cmp")
	fx := makeVHD(t, 8*mib, "fixed")
	src := mustRead(t, fx.Path)
	id := a.mkimage("dying")
	eventually(t, visible, "host-b and host-c list dying", func() bool {
		return lsHas(b.images(), "dying") && lsHas(c.images(), "dying")
	})

	f, err := os.OpenFile(a.dataFile("dying"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("host-a: open image.vhd for writing: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(src[:len(src)/2]); err != nil {
		t.Fatalf("host-a: write half the VHD: %v", err)
	}
	if got := a.prop("dying", "status"); got != "saving" {
		t.Fatalf("host-a: status %q while the upload is open, want saving", got)
	}
	staging := filepath.Join(a.Store, "staging")
	if ents, err := os.ReadDir(staging); err != nil || len(ents) == 0 {
		t.Fatalf("host-a: STORE/staging during the upload: %d entries, %v; want the staged file", len(ents), err)
	}
	eventually(t, visible, "host-b and host-c: status saving (host-a's upload)", func() bool {
		return fileIs(b.propFile("dying", "status"), "saving\n") && fileIs(c.propFile("dying", "status"), "saving\n")
	})

	a.crash()
	f.Close() // on a dead mount: an error, nothing to check
	d := eventually(t, sharedLeaseTTL+5*time.Second, "host-b and host-c: dying killed after host-a's SIGKILL", func() bool {
		return fileIs(b.propFile("dying", "status"), "killed\n") && fileIs(c.propFile("dying", "status"), "killed\n")
	})
	t.Logf("lease_ttl %v: killed %v after host-a's daemon died", sharedLeaseTTL, d.Round(time.Millisecond))
	reason := b.checkKilled(t, "dying")
	if !strings.Contains(reason, hostID(0)) {
		t.Errorf("host-b: imagefs_kill_reason %q does not name %s", reason, hostID(0))
	}
	t.Logf("kill reason: %q", reason)
	if rc := c.checkKilled(t, "dying"); rc != reason {
		t.Errorf("host-c: imagefs_kill_reason %q, host-b %q", rc, reason)
	}
	if gone(b.byID(id)) || !gone(b.byID(id, "image.vhd")) {
		t.Errorf("host-b: by-id/%s should exist without image.vhd", id)
	}

	a.start()
	if ents, err := os.ReadDir(staging); err != nil || len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("host-a after its remount: STORE/staging holds %q (%v), want nothing", names, err)
	}
	if ra := a.checkKilled(t, "dying"); ra != reason {
		t.Errorf("host-a after its remount: imagefs_kill_reason %q, host-b %q", ra, reason)
	}

	// Uploaded again on host-a: sealed everywhere.
	run(t, "cp", fx.Path, a.dataFile("dying"))
	a.checkSealed(t, "dying", fx)
	eventually(t, visible, "host-b: the upload done again on host-a is sealed", func() bool {
		return exists(b.byID(id, "image.vhd"))
	})
	b.checkSealed(t, "dying", fx)
}

// countLines returns the number of lines of path (0 when missing).
func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\n"))
}

// outageLine matches a daemon's log line that says etcd is unreachable
// (store/kv/etcdkv: "etcd catalog unreachable: changes fail until it is
// back"), or a line about a refused change that says the catalog is
// unavailable (which there must not be one of per request).
var outageLine = regexp.MustCompile(`(?i)unreachable|unavailable`)

// writeUntil writes value to path (opTimed "write", 20 s limit each)
// until a write succeeds, for at most within; it returns how long that
// took.
func writeUntil(t testing.TB, within time.Duration, path, value string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		op := opTimed(20*time.Second, "write", path, value)
		if op.Res.Err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("write %s: still failing %v after etcd came back: %s", path, within, op)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSharedEtcdFaults drives etcd outages with scripts/etcd.sh.
//
// One member down (the leader, stopped after a few of the changes): 20
// uploads (mkdir, cp) and 200 property writes (10 per image, echo > file)
// on host-a, half while the member stops and half while it is down; none
// is refused and all of them show on host-b (images active with the
// right checksum and bytes, every property value). Meanwhile this process
// writes properties of another image on host-a in a loop (open, write,
// close: each checked, close(2) included, since the commit happens
// there), from before the stop until a second after it: none fails, the
// slowest is logged, and host-b sees the last value of each.
//
// All three members down: on both hosts, sealed images are still read by
// id (md5sum, including images the host never opened before) and ls
// images/ still lists every image; a property write and a mkdir fail with
// EAGAIN within 10 s, and do not hang (each runs in a child process killed
// after 20 s).
//
// An upload held open (half written) across this outage, longer than
// lease_ttl, is finished 3 lease_ttl after etcd is back: its close
// succeeds and both hosts see it sealed (the host moved its upload key
// to a new lease; without that the key vanished with the old lease and
// the other host killed the image).
//
// Members started again: within 10 s a property write succeeds on each
// host, and the other host sees it; each daemon logged one line about the
// outage (not one per refused request); every change that succeeded before
// the outage is present on both hosts, and the changes refused during it
// are not.
func TestSharedEtcdFaults(t *testing.T) {
	usePrivateEtcd(t)
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	requireTools(t, "timeout", "md5sum")
	// Whatever happens, the cluster is whole again after the test, before
	// the daemons stop (cleanups run last first).
	t.Cleanup(func() {
		if r := privateEtcd.script("start"); r.err != nil {
			t.Errorf("etcd.sh start in the cleanup: %s", r)
		}
	})

	vhd := filepath.Join(t.TempDir(), "small.vhd")
	if err := os.WriteFile(vhd, testutil.FixedVHD(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := md5sum(t, vhd)
	before := a.mkimage("before")
	run(t, "cp", vhd, a.dataFile("before"))
	writeProp(t, a, "before", "os_distro", "superos")

	// Phase 1: one member down.
	const uploads, perImage = 20, 10
	upload := `i=$3
while [ "$i" -lt "$4" ]; do
	n=$(printf 'f-%02d' "$i")
	mkdir "$1/$n" || exit 1
	cp "$2" "$1/$n/image.vhd" || exit 1
	k=0
	while [ "$k" -lt ` + strconv.Itoa(perImage) + ` ]; do
		echo "v$i-$k" > "$1/$n/properties/k$k" || exit 1
		k=$((k+1))
	done
	echo "$i" >> "$5"
	i=$((i+1))
done`
	progress := filepath.Join(t.TempDir(), "progress")
	member := strconv.Itoa(etcdLeader(t))
	firstHalf := make(chan result, 1)
	go func() { firstHalf <- shErr(upload, a.images(), vhd, "0", strconv.Itoa(uploads/2), progress) }()
	// This process's property writes, each checked at close: keys w00..w19
	// of "before", values x0, x1, ... in turn.
	type propWrite struct {
		key, value string
		took       time.Duration
		err        error
	}
	var writes []propWrite
	stopWrites, writesDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(writesDone)
		for i := 0; ; i++ {
			select {
			case <-stopWrites:
				return
			default:
			}
			w := propWrite{key: fmt.Sprintf("w%02d", i%20), value: fmt.Sprintf("x%d", i)}
			start := time.Now()
			w.err = os.WriteFile(a.propFile("before", w.key), []byte(w.value+"\n"), 0o644)
			w.took = time.Since(start)
			writes = append(writes, w)
		}
	}()
	eventually(t, 30*time.Second, "host-a: 3 images uploaded", func() bool { return countLines(progress) >= 3 })
	etcdMember(t, "stop-member", member)
	t.Logf("member %s (the leader) stopped after %d of %d images", member, countLines(progress), uploads)
	time.Sleep(time.Second)
	close(stopWrites)
	<-writesDone
	var slowest time.Duration
	lastValue := map[string]string{}
	for _, w := range writes {
		if w.err != nil {
			t.Errorf("host-a: write images/before/properties/%s = %s while the leader stopped: %v after %v", w.key, w.value, w.err, w.took.Round(time.Millisecond))
			continue
		}
		slowest = max(slowest, w.took)
		lastValue[w.key] = w.value
	}
	t.Logf("host-a: %d property writes while the leader stopped, slowest %v", len(writes), slowest.Round(time.Millisecond))
	if r := <-firstHalf; r.err != nil {
		t.Fatalf("host-a: uploads while etcd member %s stopped: %s", member, r)
	}
	if r := shErr(upload, a.images(), vhd, strconv.Itoa(uploads/2), strconv.Itoa(uploads), progress); r.err != nil {
		t.Fatalf("host-a: uploads with etcd member %s down: %s", member, r)
	}
	var names []string
	for i := range uploads {
		names = append(names, fmt.Sprintf("f-%02d", i))
	}
	value := func(i, k int) string { return fmt.Sprintf("v%d-%d", i, k) }
	eventually(t, 5*time.Second, "host-b: the 20 images of host-a sealed, with their properties", func() bool {
		for i, n := range names {
			if !fileIs(b.propFile(n, "status"), "active\n") || !fileIs(b.propFile(n, fmt.Sprintf("k%d", perImage-1)), value(i, perImage-1)+"\n") {
				return false
			}
		}
		return true
	})
	for k, v := range lastValue {
		if got := readOptional(b.propFile("before", k)); got != v+"\n" {
			t.Errorf("host-b: before/properties/%s = %q, want %q (the last value host-a wrote)", k, got, v)
		}
	}
	ids := map[string]string{"before": before}
	checkAll := func(when string, m *fsMount, host string) {
		t.Helper()
		for i, n := range names {
			if got := readOptional(m.propFile(n, "checksum")); got != sum+"\n" {
				t.Errorf("%s: %s: %s checksum %q, want %s", when, host, n, got, sum)
			}
			for k := range perImage {
				if got := readOptional(m.propFile(n, fmt.Sprintf("k%d", k))); got != value(i, k)+"\n" {
					t.Errorf("%s: %s: %s properties/k%d = %q, want %s", when, host, n, k, got, value(i, k))
				}
			}
		}
		if got := readOptional(m.propFile("before", "os_distro")); got != "superos\n" {
			t.Errorf("%s: %s: before/properties/os_distro = %q", when, host, got)
		}
	}
	for _, n := range names {
		ids[n] = a.prop(n, "id")
		if got := b.prop(n, "id"); got != ids[n] {
			t.Errorf("%s: id %s on host-a, %s on host-b", n, ids[n], got)
		}
	}
	checkAll("one member down", b, hostID(1))
	// host-b reads the even ones now; the odd ones it first opens while
	// etcd is down.
	for i := 0; i < uploads; i += 2 {
		if got := md5sum(t, b.byID(ids[names[i]], "image.vhd")); got != sum {
			t.Errorf("host-b: md5sum by-id of %s = %s, want %s", names[i], got, sum)
		}
	}
	etcdMember(t, "start-member", member)
	// What the failover cost host-a's changes (etcdkv logs each change it
	// had to send again).
	for _, l := range strings.Split(string(readFile(a.log)), "\n") {
		if strings.Contains(l, "committed after a retry") {
			t.Logf("host-a: %s", l)
		}
	}

	// An upload in progress across the outage: its writer keeps the file
	// open, half written, until well after etcd is back.
	data, err := os.ReadFile(vhd)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "mkdir", a.images("held"))
	held, err := os.OpenFile(a.dataFile("held"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}

	// Queued images whose first data write comes while etcd is down.
	for i, m := range hosts {
		run(t, "mkdir", m.images("fresh-"+hostID(i)))
	}

	// Phase 2: all members down.
	logAt := map[*fsMount]int{}
	for _, m := range hosts {
		logAt[m] = len(readFile(m.log))
	}
	etcdMember(t, "stop")
	all := append([]string{"before"}, names...)
	listed := append(slices.Clone(all), "held")
	for i := range hosts {
		listed = append(listed, "fresh-"+hostID(i))
	}
	slices.Sort(listed) // as ls sorts them (the same order in C and en_US)
	for i, m := range hosts {
		for _, n := range all {
			r := toolTimed(10*time.Second, "md5sum", m.byID(ids[n], "image.vhd"))
			if f := strings.Fields(r.stdout); r.err != nil || len(f) == 0 || f[0] != sum {
				t.Errorf("%s, etcd down: md5sum by-id of %s: %s", hostID(i), n, r)
			}
		}
		r := toolTimed(10*time.Second, "ls", "-1", m.images())
		if r.err != nil {
			t.Errorf("%s, etcd down: ls images/: %s", hostID(i), r)
		} else if got := strings.Fields(r.stdout); !slices.Equal(got, listed) {
			t.Errorf("%s, etcd down: ls images/ = %q, want %q", hostID(i), got, listed)
		}
	}
	type refused struct {
		host, what string
		op         timedOp
	}
	var mu sync.Mutex
	var ops []refused
	var wg sync.WaitGroup
	for i, m := range hosts {
		for _, o := range []struct{ what, op, path, arg string }{
			// A property file's write(2) fails with EBUSY (EAGAIN would
			// make Go's os.File.Write wait forever: fs/errno.go).
			{"write properties/k0", "write", m.propFile(names[i], "k0"), "during-outage\n"},
			{"mkdir images/outage-" + hostID(i), "mkdir", m.images("outage-" + hostID(i)), ""},
			// So does an upload's first write (the status saving is a
			// change of the record).
			{"write image.vhd", "write", m.dataFile("fresh-" + hostID(i)), "conectix"},
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var args []string
				if o.arg != "" {
					args = append(args, o.arg)
				}
				r := opTimed(20*time.Second, o.op, o.path, args...)
				mu.Lock()
				ops = append(ops, refused{hostID(i), o.what, r})
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	want := map[string]syscall.Errno{"write properties/k0": syscall.EBUSY, "write image.vhd": syscall.EBUSY}
	for i := range hosts {
		want["mkdir images/outage-"+hostID(i)] = syscall.EAGAIN
	}
	for _, r := range ops {
		t.Logf("%s, etcd down: %s: %s", r.host, r.what, r.op)
		switch {
		case r.op.Hung:
			t.Errorf("%s, etcd down: %s hung: %s", r.host, r.what, r.op)
		case r.op.Res.Errno != want[r.what]:
			t.Errorf("%s, etcd down: %s: %s (%s), want %v", r.host, r.what, r.op, r.op.Res.Stderr, want[r.what])
		case r.op.Took > 10*time.Second:
			t.Errorf("%s, etcd down: %s took %v, want %v within 10 s", r.host, r.what, r.op.Took, want[r.what])
		}
	}

	// Phase 3: members back.
	etcdMember(t, "start")
	back := time.Now()
	for i, m := range hosts {
		d := writeUntil(t, 10*time.Second, m.propFile(names[i], "after"), hostID(i)+"\n")
		t.Logf("%s: first property write that succeeded: %v after etcd was back", hostID(i), d.Round(time.Millisecond))
	}
	// One log line per outage, not one per refused request.
	for i, m := range hosts {
		var lines []string
		for _, l := range strings.Split(string(tail(readFile(m.log), logAt[m])), "\n") {
			if outageLine.MatchString(l) {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 {
			t.Errorf("%s: %d log lines about the outage (%s), want one:\n%s", hostID(i), len(lines), outageLine, strings.Join(lines, "\n"))
		}
	}
	eventually(t, 10*time.Second, "both hosts see both writes made after the outage", func() bool {
		for i := range hosts {
			for _, m := range hosts {
				if !fileIs(m.propFile(names[i], "after"), hostID(i)+"\n") {
					return false
				}
			}
		}
		return true
	})
	// The held upload's key was put with a lease whose keep-alive gave up
	// during the outage; host-a moved it to a new lease, so once the old
	// lease expired (about lease_ttl after etcd's new leader) the upload is
	// still host-a's: it seals, and nobody killed it.
	time.Sleep(time.Until(back.Add(3 * sharedLeaseTTL)))
	if _, err := held.Write(data[len(data)/2:]); err != nil {
		t.Errorf("host-a: writing the rest of held/image.vhd after the outage: %v", err)
	}
	if err := held.Close(); err != nil {
		t.Errorf("host-a: close of held/image.vhd, an upload held open across the outage: %v (status %q, %s)",
			err, readOptional(a.propFile("held", "status")), readOptional(a.propFile("held", "imagefs_kill_reason")))
	}
	eventually(t, 5*time.Second, "both hosts: held sealed", func() bool {
		return fileIs(a.propFile("held", "status"), "active\n") && fileIs(b.propFile("held", "status"), "active\n")
	})
	for i, m := range hosts {
		if got := readOptional(m.propFile("held", "checksum")); got != sum+"\n" {
			t.Errorf("%s: held checksum %q, want %s", hostID(i), got, sum)
		}
	}
	for i, m := range hosts {
		checkAll("after the outage", m, hostID(i))
		if got := lsSorted(t, m.images()); !slices.Equal(got, listed) {
			t.Errorf("%s after the outage: ls images/ = %q, want %q (no image of a refused mkdir)", hostID(i), got, listed)
		}
		for _, n := range all {
			if got := md5sum(t, m.byID(ids[n], "image.vhd")); got != sum {
				t.Errorf("%s after the outage: md5sum by-id of %s = %s", hostID(i), n, got)
			}
		}
	}
}

// TestSharedXattrOutage: with all three etcd members stopped, setfattr of
// a user.* attribute, on an image directory and on its image.vhd, fails
// with EBUSY on both hosts, not EOPNOTSUPP (what the kernel makes of a
// setxattr's EAGAIN: "Operation not supported" told the user the mount
// keeps no attributes), and setfattr -x with EAGAIN as every other change;
// getfattr -d, getfattr -n and listxattr (getfattr -d lists) keep
// answering from the last state the host saw. Once etcd is back a
// setfattr succeeds and the other host sees it.
func TestSharedXattrOutage(t *testing.T) {
	usePrivateEtcd(t)
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	requireTools(t, "timeout", "setfattr", "getfattr")
	t.Cleanup(func() {
		if r := privateEtcd.script("start"); r.err != nil {
			t.Errorf("etcd.sh start in the cleanup: %s", r)
		}
	})
	vhd := filepath.Join(t.TempDir(), "small.vhd")
	if err := os.WriteFile(vhd, testutil.FixedVHD(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	a.mkimage("x")
	run(t, "cp", vhd, a.dataFile("x"))
	run(t, "setfattr", "-n", "user.os_distro", "-v", "superos", a.images("x"))
	eventually(t, visible, "host-b: user.os_distro of x", func() bool {
		return fileIs(b.propFile("x", "os_distro"), "superos\n")
	})
	before := map[*fsMount]map[string]string{a: getfattrDump(t, a.images("x")), b: getfattrDump(t, b.images("x"))}

	etcdMember(t, "stop")
	for i, m := range hosts {
		host := hostID(i)
		for _, p := range []string{m.images("x"), m.dataFile("x")} {
			for _, c := range []struct {
				args []string
				want string
			}{
				{[]string{"-n", "user.os_distro", "-v", "outage", p}, "Device or resource busy"},
				{[]string{"-n", "user.new_key", "-v", "outage", p}, "Device or resource busy"},
				{[]string{"-x", "user.os_distro", p}, "Resource temporarily unavailable"},
			} {
				r := toolTimed(20*time.Second, "setfattr", c.args...)
				t.Logf("%s, etcd down: setfattr %s: %s", host, strings.Join(c.args, " "), r)
				if r.err == nil || !strings.Contains(r.stderr, c.want) {
					t.Errorf("%s, etcd down: setfattr %s: %s; want %q", host, strings.Join(c.args, " "), r, c.want)
				}
			}
			// Reads answer from the last known state.
			r := toolTimed(10*time.Second, "getfattr", "--only-values", "-n", "user.os_distro", p)
			if r.err != nil || r.stdout != "superos" {
				t.Errorf("%s, etcd down: getfattr -n user.os_distro %s: %s; want superos", host, p, r)
			}
		}
		if got := getfattrDump(t, m.images("x")); !maps.Equal(got, before[m]) {
			t.Errorf("%s, etcd down: getfattr -d = %v, before the outage %v", host, got, before[m])
		}
	}

	etcdMember(t, "start")
	start := time.Now()
	for {
		r := toolTimed(20*time.Second, "setfattr", "-n", "user.os_distro", "-v", "after", a.images("x"))
		if r.err == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("host-a: setfattr still failing 10 s after etcd came back: %s", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, 5*time.Second, "host-b sees the setfattr made after the outage", func() bool {
		return fileIs(b.propFile("x", "os_distro"), "after\n")
	})
	if r := execCmd("getfattr", "--only-values", "-n", "user.new_key", b.images("x")); r.err == nil {
		t.Errorf("host-b: user.new_key = %q after the outage, want none (its setfattr was refused)", r.stdout)
	}
}

// etcdctl runs etcdctl ARGS on the test's cluster; it must succeed.
func etcdctl(t testing.TB, env sharedEnv, args ...string) string {
	t.Helper()
	requireTools(t, "etcdctl")
	cmd := exec.Command("etcdctl", append([]string{"--endpoints=" + strings.Join(env.Endpoints, ","),
		"--dial-timeout=2s", "--command-timeout=5s"}, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("etcdctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestSharedUploadKilledRemotely: host-a has an upload open (half a VHD
// written, status saving everywhere) when an operator deletes its upload
// key in etcd (etcdctl del; what the expiry of host-a's lease does while
// it is cut off): host-b kills the image with a reason naming host-a, and
// host-a, the writer's host, logs one line saying so, with the image's
// id, name and the reason; the writer's close then fails (EIO).
func TestSharedUploadKilledRemotely(t *testing.T) {
	hosts, env := sharedClusterArgs(t, 2)
	a, b := hosts[0], hosts[1]
	src := testutil.FixedVHD(t, 2<<20)
	id := a.mkimage("cut")
	f, err := os.OpenFile(a.dataFile("cut"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("host-a: open image.vhd for writing: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(src[:len(src)/2]); err != nil {
		t.Fatalf("host-a: write half the VHD: %v", err)
	}
	eventually(t, visible, "host-b: status saving (host-a's upload)", func() bool {
		return fileIs(b.propFile("cut", "status"), "saving\n")
	})
	logAt := len(readFile(a.log))

	etcdctl(t, env, "del", env.Namespace+"upload/"+id)
	eventually(t, 5*time.Second, "host-b: cut killed after its upload key was deleted", func() bool {
		return fileIs(b.propFile("cut", "status"), "killed\n")
	})
	reason := b.checkKilled(t, "cut")
	if !strings.Contains(reason, hostID(0)) {
		t.Errorf("host-b: imagefs_kill_reason %q does not name %s", reason, hostID(0))
	}
	var line string
	eventually(t, 5*time.Second, "host-a logs that its upload was killed by another host", func() bool {
		for _, l := range strings.Split(string(tail(readFile(a.log), logAt)), "\n") {
			if strings.Contains(l, "killed by another host") {
				line = l
				return true
			}
		}
		return false
	})
	t.Logf("host-a: %s", line)
	for _, want := range []string{"id=" + id, "name=cut", reason} {
		if !strings.Contains(line, want) {
			t.Errorf("host-a's log line %q does not say %q", line, want)
		}
	}
	if n := strings.Count(string(tail(readFile(a.log), logAt)), "killed by another host"); n != 1 {
		t.Errorf("host-a logged %d lines about the kill, want 1", n)
	}
	if _, err := f.Write(src[len(src)/2:]); err != nil {
		t.Logf("host-a: write the rest after the kill: %v", err)
	}
	err = f.Close()
	if errnoOf(err) != syscall.EIO {
		t.Errorf("host-a: close of the killed upload: %v, want EIO", err)
	}
	if got := a.prop("cut", "status"); got != "killed" {
		t.Errorf("host-a: status %q after the close, want killed", got)
	}
}

// TestSharedKillReasonAtMount: host-a's daemon is SIGKILLed mid-upload
// while no other host is mounted (nobody watches its lease expire); its
// next mount kills the image with the kill reason of a host that died
// mid-upload, naming host-a ("upload interrupted: host host-a stopped
// (its etcd lease expired) before the writer closed the file"), and
// host-b, mounted afterwards, shows the same reason.
func TestSharedKillReasonAtMount(t *testing.T) {
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	b.stop()
	src := testutil.FixedVHD(t, 2<<20)
	a.mkimage("alone")
	f, err := os.OpenFile(a.dataFile("alone"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("host-a: open image.vhd for writing: %v", err)
	}
	if _, err := f.Write(src[:len(src)/2]); err != nil {
		t.Fatalf("host-a: write half the VHD: %v", err)
	}
	a.crash()
	f.Close() // on a dead mount
	a.start()
	want := "upload interrupted: host " + hostID(0) + " stopped (its etcd lease expired) before the writer closed the file"
	if got := a.checkKilled(t, "alone"); got != want {
		t.Errorf("host-a after its remount: imagefs_kill_reason %q, want %q", got, want)
	}
	b.start()
	if got := b.checkKilled(t, "alone"); got != want {
		t.Errorf("host-b: imagefs_kill_reason %q, want %q", got, want)
	}
}

// mountRefused runs `imagefs mount ARGS STORE MNT` (foreground) and
// expects it to exit without mounting within 30 s; it returns what the
// command printed. A mount that succeeds fails the test and is
// unmounted (SIGTERM).
func mountRefused(t testing.TB, store, mnt string, args ...string) result {
	t.Helper()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, append(append([]string{"mount"}, args...), store, mnt)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("imagefs mount %s: still running after 30 s (mounted: %v), want it refused", mnt, isMounted(mnt))
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			exec.Command("umount", "-l", mnt).Run()
			cmd.Process.Kill()
			err = <-done
		}
	}
	if isMounted(mnt) {
		t.Errorf("%s mounted by a refused mount; umount -l", mnt)
		exec.Command("umount", "-l", mnt).Run()
	}
	r := result{stdout: out.String(), stderr: errb.String(), err: err, code: -1}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	return r
}

// withData returns args with the value of --data replaced by dir.
func withData(args []string, dir string) []string {
	out := slices.Clone(args)
	for i := range out {
		if out[i] == "--data" && i+1 < len(out) {
			out[i+1] = dir
		}
	}
	return out
}

// vhdFiles returns the *.vhd files of dir.
func vhdFiles(dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "*.vhd"))
	return m
}

// TestSharedWrongDataRefused: the catalog knows its data directory. The
// first mount of a fresh catalog writes DATA/.imagefs-data-id; while the
// catalog holds no image a mount may give another --data (the catalog
// takes it: a data directory set up again), but not while the host that
// set up the recorded one is mounted. Once it holds an image, a
// second host mounting with another --data is refused (exit 1, the
// message naming both directories and the identity file), whether that
// directory is empty (the NFS export not mounted) or another catalog's
// (a foreign identity file); so are imagefs fsck (exit 2) and imagefs
// migrate (exit 2, nothing written) with that --data. Nothing is written
// into the wrong directory; the right one still mounts on host-b.
func TestSharedWrongDataRefused(t *testing.T) {
	hosts, env := sharedClusterArgs(t, 2)
	a, b := hosts[0], hosts[1]
	b.stop()
	marker := filepath.Join(env.Data, ".imagefs-data-id")
	id0 := strings.TrimSpace(string(readFile(marker)))
	if len(id0) != 32 {
		t.Fatalf("%s after the first mount: %q, want a 32-digit id", marker, id0)
	}

	// An empty catalog takes another data directory, and back.
	other := filepath.Join(t.TempDir(), "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	args := a.Args
	a.stop()
	a.Args = withData(args, other)
	a.start()
	if got := readFile(filepath.Join(other, ".imagefs-data-id")); len(got) == 0 {
		t.Errorf("%s/.imagefs-data-id: not written by a mount of the empty catalog", other)
	}
	a.stop()
	a.Args = args
	a.start()
	// Not from under a live host, though.
	r := mountRefused(t, b.Store, b.Mnt, withData(b.Args, other)...)
	if r.code != 1 || !strings.Contains(r.stderr, "host "+hostID(0)+", mounted now, uses "+env.Data) {
		t.Errorf("host-b mount of the empty catalog with --data %s while host-a is mounted: want exit 1 naming host-a and %s: %s", other, env.Data, r)
	}

	vhd := filepath.Join(t.TempDir(), "small.vhd")
	if err := os.WriteFile(vhd, testutil.FixedVHD(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	a.mkimage("x")
	run(t, "cp", vhd, a.dataFile("x"))
	if got := a.prop("x", "status"); got != "active" {
		t.Fatalf("x: status %s after cp", got)
	}

	empty := filepath.Join(t.TempDir(), "empty")
	foreign := filepath.Join(t.TempDir(), "foreign")
	for _, d := range []string{empty, foreign} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	const foreignID = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(filepath.Join(foreign, ".imagefs-data-id"), []byte(foreignID+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dir  string
		want []string
	}{
		{empty, []string{empty, env.Data, id0, "no identity file .imagefs-data-id"}},
		{foreign, []string{foreign, env.Data, id0, foreignID}},
	} {
		r := mountRefused(t, b.Store, b.Mnt, withData(b.Args, c.dir)...)
		t.Logf("host-b mount with --data %s: %s", c.dir, r)
		if r.code != 1 {
			t.Errorf("host-b mount with --data %s: exit %d, want 1", c.dir, r.code)
		}
		for _, w := range c.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("host-b mount with --data %s: its message does not name %q:\n%s", c.dir, w, r.stderr)
			}
		}
		fsck := execCmd(binary, append(append([]string{"fsck"}, withData(b.Args, c.dir)...), b.Store)...)
		if fsck.code != 2 || !strings.Contains(fsck.stderr, "not this catalog's data directory") || !strings.Contains(fsck.stderr, env.Data) {
			t.Errorf("imagefs fsck with --data %s: want exit 2 and the reason: %s", c.dir, fsck)
		}
		if files := vhdFiles(c.dir); len(files) != 0 {
			t.Errorf("%s: data files %v written", c.dir, files)
		}
	}
	if got := strings.TrimSpace(string(readFile(filepath.Join(empty, ".imagefs-data-id")))); got != "" {
		t.Errorf("%s: identity file %q written by a refused mount", empty, got)
	}

	// imagefs migrate of a single-host store with the wrong --data.
	src := singleHostStore(t)
	src.mkimage("single")
	run(t, "cp", vhd, src.dataFile("single"))
	src.stop()
	keysBefore := etcdctl(t, env, "get", "--prefix", "--keys-only", env.Namespace)
	mig := execCmd(binary, "migrate", src.Store, "--catalog", "etcd://"+strings.Join(env.Endpoints, ","),
		"--data", empty, "--config", env.Config)
	t.Logf("imagefs migrate with --data %s: %s", empty, mig)
	if mig.code != 2 || !strings.Contains(mig.stderr, "not this catalog's data directory") || !strings.Contains(mig.stderr, env.Data) {
		t.Errorf("imagefs migrate with --data %s: want exit 2 and the reason: %s", empty, mig)
	}
	if after := etcdctl(t, env, "get", "--prefix", "--keys-only", env.Namespace); after != keysBefore {
		t.Errorf("keys changed by a refused migration:\nbefore %s\nafter %s", keysBefore, after)
	}
	if files := vhdFiles(empty); len(files) != 0 {
		t.Errorf("%s: data files %v written by a refused migration", empty, files)
	}

	b.start()
	if got := md5sum(t, b.dataFile("x")); got != md5sum(t, vhd) {
		t.Errorf("host-b with the right --data: md5sum of x %s", got)
	}
}

// singleHostStore mounts a single-host store (its embedded catalog, even
// when IMAGEFS_TEST_CATALOG=etcd), stopped at the end of the test.
func singleHostStore(t testing.TB) *fsMount {
	t.Helper()
	dir := t.TempDir()
	m := &fsMount{t: t, Store: filepath.Join(dir, "store"), Mnt: filepath.Join(dir, "mnt"), log: filepath.Join(dir, "imagefs.log")}
	if err := os.Mkdir(m.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("single-host imagefs daemon log (%s):\n%s", m.log, readFile(m.log))
		}
	})
	m.start()
	return m
}

// TestSharedMigrateTwoStores: two single-host stores (each numbers its
// images' inodes from 1) migrated one after the other into one shared
// catalog, with an image made on a host in between: the second migration
// succeeds (exit 0), renumbers its images whose inode ranges the catalog
// already holds and says so; every image on the host then has inode
// numbers of its own, the data of each reads back, and a second run of
// the same migration finds everything there (exit 0, nothing written).
func TestSharedMigrateTwoStores(t *testing.T) {
	hosts, env := sharedClusterArgs(t, 1)
	a := hosts[0]
	vhd := filepath.Join(t.TempDir(), "small.vhd")
	if err := os.WriteFile(vhd, testutil.FixedVHD(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := md5sum(t, vhd)
	s1, s2 := singleHostStore(t), singleHostStore(t)
	for _, n := range []string{"one-a", "one-b"} {
		s1.mkimage(n)
	}
	run(t, "cp", vhd, s1.dataFile("one-a"))
	for _, n := range []string{"two-a", "two-b", "two-c"} {
		s2.mkimage(n)
	}
	run(t, "cp", vhd, s2.dataFile("two-a"))
	s1.stop()
	s2.stop()
	migrate := func(src string) result {
		return execCmd(binary, "migrate", src, "--catalog", "etcd://"+strings.Join(env.Endpoints, ","),
			"--data", env.Data, "--config", env.Config)
	}
	if r := migrate(s1.Store); r.code != 0 {
		t.Fatalf("migrate of the first store: %s", r)
	}
	eventually(t, 5*time.Second, "host-a lists the first store's images", func() bool {
		return lsHas(a.images(), "one-a", "one-b")
	})
	a.mkimage("made-here")

	r := migrate(s2.Store)
	t.Logf("migrate of the second store: %s", r)
	if r.code != 0 {
		t.Fatalf("migrate of the second store: want exit 0: %s", r)
	}
	if want := "3 images: 3 migrated, 0 already there, 0 not migrated"; !strings.Contains(r.stdout, want) {
		t.Errorf("second migration: want %q in\n%s", want, r.stdout)
	}
	if want := "3 images renumbered"; !strings.Contains(r.stdout, want) {
		t.Errorf("second migration: want %q in\n%s", want, r.stdout)
	}
	all := []string{"made-here", "one-a", "one-b", "two-a", "two-b", "two-c"}
	eventually(t, 5*time.Second, "host-a lists every image", func() bool { return lsHas(a.images(), all...) })
	var rels []string
	for _, n := range all {
		rels = append(rels, "images/"+n, "images/"+n+"/properties", "images/"+n+"/properties/id")
	}
	seen := map[string]string{}
	for rel, ino := range inodesOf(t, a, rels) {
		if other, dup := seen[ino]; dup {
			t.Errorf("%s and %s have one inode number %s", rel, other, ino)
		}
		seen[ino] = rel
	}
	for _, n := range []string{"one-a", "two-a"} {
		if got := md5sum(t, a.dataFile(n)); got != sum {
			t.Errorf("host-a: md5sum of %s = %s, want %s", n, got, sum)
		}
	}
	if r := migrate(s2.Store); r.code != 0 || !strings.Contains(r.stdout, "3 images: 0 migrated, 3 already there, 0 not migrated") {
		t.Errorf("second run of the second migration: want exit 0, everything already there: %s", r)
	}
	a.remount()
	after := inodesOf(t, a, rels)
	for rel, ino := range after {
		if seen[ino] != rel {
			t.Errorf("after host-a's remount: %s has inode %s (before: %s's)", rel, ino, seen[ino])
		}
	}
}

// TestSharedDataTempCleanup: the data directory is on another
// filesystem than the hosts' STOREs (a tmpfs, as an NFS export would
// be), so a seal copies the data in through a temporary file. host-a's
// daemon is SIGKILLed while it copies (its .tmp-<id>@host-a@* seen in
// the data directory): its next mount removes that file. Temporary files
// of other hosts are left alone at mount: fsck reports one unchanged for
// longer than the grace (exit 3, kind data-temp) and not a fresh one (a
// copy in progress); fsck --repair removes the old one only.
func TestSharedDataTempCleanup(t *testing.T) {
	hosts, env := sharedClusterArgs(t, 2)
	a, b := hosts[0], hosts[1]
	a.stop()
	b.stop()
	run(t, "mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", env.Data)
	t.Cleanup(func() {
		a.stop()
		b.stop()
		if r := execCmd("umount", env.Data); r.err != nil {
			t.Errorf("umount the data directory's tmpfs: %s", r)
			execCmd("umount", "-l", env.Data)
		}
	})
	a.start() // the catalog is empty: it takes the new data directory
	b.start()

	big := filepath.Join(t.TempDir(), "big.vhd")
	if err := os.WriteFile(big, testutil.FixedVHD(t, 256<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var tmp string
	for attempt := 0; tmp == "" && attempt < 5; attempt++ {
		name := fmt.Sprintf("big-%d", attempt)
		a.mkimage(name)
		cp := make(chan result, 1)
		go func() { cp <- execCmd("cp", big, a.dataFile(name)) }()
		deadline := time.Now().Add(60 * time.Second)
	poll:
		for time.Now().Before(deadline) {
			select {
			case r := <-cp:
				t.Logf("attempt %d: the seal finished before its temporary file was seen: %s", attempt, r)
				break poll
			default:
			}
			m, _ := filepath.Glob(filepath.Join(env.Data, ".tmp-*"))
			if len(m) > 0 {
				a.crash()
				tmp = m[0]
				<-cp
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	if tmp == "" {
		t.Fatal("no seal's temporary file seen in the data directory in 5 uploads")
	}
	t.Logf("host-a SIGKILLed while it copied into %s", tmp)
	if !strings.Contains(filepath.Base(tmp), "@"+hostID(0)+"@") {
		t.Errorf("%s: the temporary file does not name host-a", tmp)
	}
	if !exists(tmp) {
		t.Fatalf("%s: gone after host-a's SIGKILL; nothing left to clean up", tmp)
	}

	// Other hosts' temporary files: one unchanged for an hour, one fresh.
	old := filepath.Join(env.Data, ".tmp-00000000-0000-0000-0000-000000000001@host-x@123")
	fresh := filepath.Join(env.Data, ".tmp-00000000-0000-0000-0000-000000000002@host-y@456")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial copy"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hour := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, hour, hour); err != nil {
		t.Fatal(err)
	}

	a.start()
	if exists(tmp) {
		t.Errorf("%s: host-a's temporary file still there after its next mount", tmp)
	}
	for _, p := range []string{old, fresh} {
		if !exists(p) {
			t.Errorf("%s: another host's temporary file removed by host-a's mount", p)
		}
	}

	b.stop()
	fsck := func(args ...string) result {
		return execCmd(binary, append(append(append([]string{"fsck"}, args...), b.Args...), b.Store)...)
	}
	r := fsck()
	t.Logf("imagefs fsck: %s", r)
	if r.code != 3 || !strings.Contains(r.stdout, "data-temp") || !strings.Contains(r.stdout, filepath.Base(old)) {
		t.Errorf("imagefs fsck: want exit 3 and the old temporary file (data-temp): %s", r)
	}
	if strings.Contains(r.stdout, filepath.Base(fresh)) {
		t.Errorf("imagefs fsck reports the fresh temporary file (a copy in progress): %s", r)
	}
	r = fsck("--repair")
	t.Logf("imagefs fsck --repair: %s", r)
	if exists(old) || !exists(fresh) {
		t.Errorf("after fsck --repair: the old temporary file exists: %v (want removed), the fresh one: %v (want kept)", exists(old), exists(fresh))
	}
}
