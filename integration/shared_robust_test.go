package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
)

// Robustness of the shared catalog (a fresh tester's findings): a second
// writer on another host, a property write during an etcd outage, an
// etcd cluster wiped under mounted hosts.

// TestSharedSecondWriterRefused: host-a's writer has image.vhd open, half
// written (status saving, its upload key in etcd). On host-b every way of
// writing the image's data is refused at once with EBUSY, the errno a
// second writer gets on one host: open O_WRONLY|O_TRUNC, open O_RDWR (as
// qemu-img), cp, rsync (a temporary file renamed onto image.vhd), rm of
// image.vhd. A writer of host-b that opened before host-a's first write
// (nothing in the catalog yet) is refused at its first write (EBUSY), and
// its close does not kill host-a's upload. host-a's upload then seals as
// if host-b had done nothing, and both hosts see it. Once sealed, an open
// for writing on host-b fails with EPERM (sealed data), as on host-a. An
// upload killed because its host died (host-a SIGKILLed mid-upload) is
// uploaded again on host-b with cp, and sealed.
func TestSharedSecondWriterRefused(t *testing.T) {
	hosts := sharedCluster(t, 2)
	a, b := hosts[0], hosts[1]
	requireTools(t, "cp", "rsync", "rm", "cmp", "getfattr")
	fx := makeVHD(t, 8*mib, "fixed")
	src := mustRead(t, fx.Path)
	id := a.mkimage("x")
	a.mkimage("y")
	eventually(t, visible, "host-b lists x and y", func() bool { return lsHas(b.images(), "x", "y") })

	// host-b's early writer: opened while nothing is uploading.
	early, err := os.OpenFile(b.dataFile("x"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("host-b: open x/image.vhd for writing before host-a's upload: %v", err)
	}
	defer early.Close()

	f, err := os.OpenFile(a.dataFile("x"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("host-a: open image.vhd for writing: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(src[:len(src)/2]); err != nil {
		t.Fatalf("host-a: write half the VHD: %v", err)
	}
	eventually(t, visible, "host-b: status saving (host-a's upload)", func() bool {
		return fileIs(b.propFile("x", "status"), "saving\n")
	})

	// Every write of host-b is refused now, at open (or at the early
	// writer's first write).
	start := time.Now()
	_, err = early.Write(src[:4096])
	wantErrno(t, "host-b: first write of a writer that opened before host-a's upload started", err, syscall.EBUSY)
	t.Logf("host-b: early writer's first write: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if err := early.Close(); err != nil {
		t.Logf("host-b: close of the refused early writer: %v", err)
	}
	for _, c := range []struct {
		what string
		flag int
	}{
		{"open O_WRONLY|O_TRUNC", os.O_WRONLY | os.O_TRUNC},
		{"open O_RDWR", os.O_RDWR},
		{"open O_WRONLY", os.O_WRONLY},
	} {
		start := time.Now()
		g, err := os.OpenFile(b.dataFile("x"), c.flag, 0)
		if err == nil {
			g.Close()
		}
		wantErrno(t, "host-b: "+c.what+" of x/image.vhd while host-a uploads", err, syscall.EBUSY)
		if d := time.Since(start); d > time.Second {
			t.Errorf("host-b: %s took %v, want a refusal at once", c.what, d)
		}
	}
	for _, c := range []struct {
		what string
		cmd  []string
	}{
		{"cp", []string{"cp", fx.Path, b.dataFile("x")}},
		{"rsync", []string{"rsync", fx.Path, b.dataFile("x")}},
		{"rm", []string{"rm", "-f", b.dataFile("x")}},
	} {
		r := toolTimed(20*time.Second, c.cmd[0], c.cmd[1:]...)
		t.Logf("host-b: %s while host-a uploads: %s", c.what, r)
		if r.err == nil || !strings.Contains(r.stderr, "Device or resource busy") {
			t.Errorf("host-b: %s while host-a uploads: %s; want a failure with EBUSY (Device or resource busy)", c.what, r)
		}
	}
	for i, m := range hosts {
		if got := readOptional(m.propFile("x", "status")); got != "saving\n" {
			t.Errorf("%s: x status %q after host-b's refused writes, want saving (kill reason %q)",
				hostID(i), got, readOptional(m.propFile("x", "imagefs_kill_reason")))
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(b.Store, "staging")); len(ents) != 0 {
		t.Errorf("host-b: STORE/staging holds %d files after its refused writes, want none", len(ents))
	}

	// host-a's upload goes on and seals.
	if _, err := f.Write(src[len(src)/2:]); err != nil {
		t.Fatalf("host-a: write the rest: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("host-a: close of its upload after host-b's refused writes: %v (status %q, %s)", err,
			readOptional(a.propFile("x", "status")), readOptional(a.propFile("x", "imagefs_kill_reason")))
	}
	a.checkSealed(t, "x", fx)
	eventually(t, visible, "host-b: x sealed", func() bool { return exists(b.byID(id, "image.vhd")) })
	b.checkSealed(t, "x", fx)

	// Sealed: host-b's open for writing is refused as host-a's is.
	for i, m := range hosts {
		g, err := os.OpenFile(m.dataFile("x"), os.O_WRONLY, 0)
		if err == nil {
			g.Close()
		}
		wantErrno(t, hostID(i)+": open of sealed x/image.vhd for writing", err, syscall.EPERM)
	}

	// y: host-a dies mid-upload; host-b kills it, then uploads it anew.
	g, err := os.OpenFile(a.dataFile("y"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("host-a: open y/image.vhd: %v", err)
	}
	defer g.Close()
	if _, err := g.Write(src[:len(src)/2]); err != nil {
		t.Fatalf("host-a: write half of y: %v", err)
	}
	eventually(t, visible, "host-b: y saving", func() bool { return fileIs(b.propFile("y", "status"), "saving\n") })
	if r := execCmd("cp", fx.Path, b.dataFile("y")); r.err == nil || !strings.Contains(r.stderr, "Device or resource busy") {
		t.Errorf("host-b: cp to y while host-a uploads: %s; want EBUSY", r)
	}
	a.crash()
	g.Close()
	eventually(t, sharedLeaseTTL+5*time.Second, "host-b: y killed after host-a died", func() bool {
		return fileIs(b.propFile("y", "status"), "killed\n")
	})
	run(t, "cp", fx.Path, b.dataFile("y"))
	b.checkSealed(t, "y", fx)
}

// TestSharedPropertyWriteOutage: while etcd does not answer, `echo v >
// images/X/properties/k` in bash fails (a non-zero exit and bash's
// "write error: Device or resource busy"): the write(2) itself is
// refused, with EBUSY (EAGAIN makes Go's os.File.Write wait forever), not
// only the close (EAGAIN), whose error bash ignores.
// So for a new key, and so with one member of three left (no quorum:
// the client's connection stays up). Once etcd is back, the values are
// the ones before the outage (nothing emptied, no new key) and a write
// succeeds.
func TestSharedPropertyWriteOutage(t *testing.T) {
	usePrivateEtcd(t)
	a := sharedCluster(t, 1)[0]
	requireTools(t, "bash", "timeout")
	t.Cleanup(func() {
		if r := privateEtcd.script("start"); r.err != nil {
			t.Errorf("etcd.sh start in the cleanup: %s", r)
		}
	})
	a.mkimage("x")
	writeProp(t, a, "x", "k", "before")
	echo := func(when, key, value string) {
		t.Helper()
		start := time.Now()
		r := toolTimed(30*time.Second, "bash", "-c", `echo "$1" > "$2"`, "bash", value, a.propFile("x", key))
		took := time.Since(start)
		t.Logf("%s: echo %s > properties/%s: %s, stderr %q, after %v", when, value, key, r, r.stderr, took.Round(time.Millisecond))
		if r.err == nil || !strings.Contains(r.stderr, "write error: Device or resource busy") {
			t.Errorf("%s: echo %s > properties/%s: %s (stderr %q); want a failure of its write with EBUSY (Device or resource busy)",
				when, value, key, r, r.stderr)
		}
		if took > 10*time.Second {
			t.Errorf("%s: echo took %v, want the refusal within request_timeout (5 s)", when, took)
		}
	}

	etcdMember(t, "stop")
	echo("etcd stopped", "k", "outage-1")
	echo("etcd stopped", "new_key", "outage-2")
	time.Sleep(1500 * time.Millisecond)
	echo("etcd stopped for a while", "k", "outage-3")
	etcdMember(t, "start")
	writeUntil(t, 10*time.Second, a.propFile("x", "after"), "1\n")
	if got := readOptional(a.propFile("x", "k")); got != "before\n" {
		t.Errorf("after the outage: properties/k = %q, want %q (the refused writes set nothing)", got, "before\n")
	}
	if exists(a.propFile("x", "new_key")) {
		t.Errorf("after the outage: properties/new_key exists (%q); its write was refused", readOptional(a.propFile("x", "new_key")))
	}

	// No quorum: two members stopped, the third still accepts connections.
	etcdMember(t, "stop-member", "1")
	etcdMember(t, "stop-member", "2")
	time.Sleep(1500 * time.Millisecond)
	echo("one member of three", "k", "no-quorum")
	etcdMember(t, "start")
	writeUntil(t, 10*time.Second, a.propFile("x", "k"), "after\n")
	if got := readOptional(a.propFile("x", "k")); got != "after\n" {
		t.Errorf("after the outages: properties/k = %q, want after", got)
	}
}

// cpuTime returns the CPU time (user and system) process pid has used.
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/stat: %v", pid, err)
	}
	// Fields after the command's closing parenthesis: state is field 3,
	// utime 14 and stime 15, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// TestSharedCatalogWiped: the etcd cluster is wiped and started again
// under a mounted host (scripts/etcd.sh stop --wipe, start: a new cluster
// id), or recreated with the same cluster id (its members' data removed,
// its token kept: the revision starts again). The host logs one error
// saying that the catalog at etcd://... is not the one it mounted, and
// why, within a few lease_ttl and without anyone asking; changes are
// refused with EIO at once (mkdir, a property write in bash at its
// write, setfattr), several of them meanwhile costing the daemon little
// CPU (no retry loop: under 1 s of CPU in 5 s, where it spun on each
// change for request_timeout); sealed images stay readable (md5sum by
// id, ls, properties); the unmount is clean and writes no snapshot of
// the gone catalog.
func TestSharedCatalogWiped(t *testing.T) {
	for _, c := range []struct {
		name   string
		sameID bool
	}{{"new-cluster-id", false}, {"same-cluster-id", true}} {
		t.Run(c.name, func(t *testing.T) { testCatalogWiped(t, c.sameID) })
	}
}

func testCatalogWiped(t *testing.T, sameID bool) {
	usePrivateEtcd(t)
	a := sharedCluster(t, 1)[0]
	requireTools(t, "bash", "timeout", "md5sum", "setfattr")
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
	id := a.mkimage("x")
	run(t, "cp", vhd, a.dataFile("x"))
	writeProp(t, a, "x", "k", "before")
	logAt := len(readFile(a.log))

	if sameID {
		etcdMember(t, "stop")
		dir := ""
		for _, e := range privateEtcd.env {
			if v, ok := strings.CutPrefix(e, "IMAGEFS_ETCD_DIR="); ok {
				dir = v
			}
		}
		for i := 1; i <= 3; i++ {
			if err := os.RemoveAll(filepath.Join(dir, fmt.Sprintf("m%d", i), "data")); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		etcdMember(t, "stop", "--wipe")
	}
	etcdMember(t, "start")
	const said = "is not the one this host mounted"
	// Checked without stopping the test, so that a host that misses it
	// still shows what its changes do.
	for start := time.Now(); !bytes.Contains(tail(readFile(a.log), logAt), []byte(said)); time.Sleep(10 * time.Millisecond) {
		if d := time.Since(start); d > 4*sharedLeaseTTL+10*time.Second {
			t.Errorf("host-a did not log that the catalog %s within %v", said, d.Round(time.Millisecond))
			break
		}
	}

	pid := a.cmd.Process.Pid
	cpu0, wall0 := cpuTime(t, pid), time.Now()
	for i := range 3 {
		start := time.Now()
		err := os.Mkdir(a.images(fmt.Sprintf("new-%d", i)), 0o755)
		wantErrno(t, "mkdir on a wiped catalog", err, syscall.EIO)
		if d := time.Since(start); d > time.Second {
			t.Errorf("mkdir on a wiped catalog took %v, want a refusal at once", d)
		}
		r := toolTimed(20*time.Second, "bash", "-c", `echo wiped > "$1"`, "bash", a.propFile("x", "k"))
		if r.err == nil || !strings.Contains(r.stderr, "Input/output error") {
			t.Errorf("echo > properties/k on a wiped catalog: %s (stderr %q); want a failure with EIO", r, r.stderr)
		}
		r = toolTimed(20*time.Second, "setfattr", "-n", "user.k", "-v", "wiped", a.images("x"))
		if r.err == nil || !strings.Contains(r.stderr, "Input/output error") {
			t.Errorf("setfattr on a wiped catalog: %s (stderr %q); want a failure with EIO", r, r.stderr)
		}
		time.Sleep(time.Second)
	}
	time.Sleep(time.Until(wall0.Add(5 * time.Second)))
	cpu := cpuTime(t, pid) - cpu0
	t.Logf("host-a: %v of CPU in %v after the wipe, with 9 refused changes", cpu, time.Since(wall0).Round(time.Millisecond))
	if cpu > time.Second {
		t.Errorf("host-a used %v of CPU in %v on a wiped catalog: a retry loop?", cpu, time.Since(wall0).Round(time.Millisecond))
	}
	if got := md5sum(t, a.byID(id, "image.vhd")); got != sum {
		t.Errorf("md5sum by-id/%s/image.vhd on a wiped catalog = %s, want %s", id, got, sum)
	}
	if got := lsSorted(t, a.images()); !slices.Equal(got, []string{"x"}) {
		t.Errorf("ls images/ on a wiped catalog = %q, want [x]", got)
	}
	if got := readOptional(a.propFile("x", "k")); got != "before\n" {
		t.Errorf("properties/k on a wiped catalog = %q, want before", got)
	}
	lines := 0
	for _, l := range strings.Split(string(tail(readFile(a.log), logAt)), "\n") {
		if strings.Contains(l, said) {
			lines++
			t.Logf("host-a: %s", l)
			for _, want := range []string{"etcd://" + strings.Join(etcdEndpoints(t), ","), "level=ERROR"} {
				if !strings.Contains(l, want) {
					t.Errorf("the log line does not say %q", want)
				}
			}
		}
	}
	if lines != 1 {
		t.Errorf("host-a logged %d lines saying the catalog %s, want 1", lines, said)
	}

	a.stop()
	if t.Failed() {
		return
	}
	if _, err := os.Stat(filepath.Join(a.Store, "catalog-snapshot")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("STORE/catalog-snapshot after the unmount: %v; want none (the view is of a gone catalog)", err)
	}
	if isMounted(a.Mnt) {
		t.Errorf("%s still mounted after the unmount", a.Mnt)
	}
}
