package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
