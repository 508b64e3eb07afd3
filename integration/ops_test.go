package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Operations: signals, imagefs umount, the helper form's log file, make
// run on a dead mount, ls -a, and a normal user's failed mount.

// TestOpsSignalRetriesUnmount: a SIGTERM while the mount is busy (a
// process has its working directory in it) fails to unmount and is
// logged; the daemon keeps serving; once the mount is released, the next
// SIGTERM unmounts it and the daemon exits 0. Before, every signal after
// the first was ignored.
func TestOpsSignalRetriesUnmount(t *testing.T) {
	m := mount(t)
	m.mkimage("busy")
	holder := exec.Command("sleep", "120")
	holder.Dir = m.images("busy")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			holder.Process.Kill()
			holder.Wait()
			released = true
		}
	}
	defer release()

	for i := 1; i <= 2; i++ {
		m.cmd.Process.Signal(syscall.SIGTERM)
		waitLog(t, m.log, "unmount failed", i, 10*time.Second)
		if m.exited(100 * time.Millisecond) {
			t.Fatalf("imagefs exited after busy SIGTERM %d: %v", i, m.err)
		}
		if !isMounted(m.Mnt) {
			t.Fatalf("%s not mounted after a failed unmount", m.Mnt)
		}
	}
	// Still serving.
	if got := m.prop("busy", "status"); got != "queued" {
		t.Errorf("status after two failed unmounts = %q", got)
	}
	release()
	m.cmd.Process.Signal(syscall.SIGTERM)
	if !m.exited(10 * time.Second) {
		t.Fatalf("imagefs did not exit within 10 s of the SIGTERM after the mount was released")
	}
	if m.err != nil {
		t.Errorf("imagefs exited with %v", m.err)
	}
	if isMounted(m.Mnt) {
		t.Errorf("%s still mounted after imagefs exited", m.Mnt)
	}
	if n := strings.Count(string(readFile(m.log)), `msg=unmounting`); n != 3 {
		t.Errorf("log has %d 'unmounting' lines, want 3 (one per signal)", n)
	}
	liveMounts.Delete(m.Mnt)
	m.cmd = nil // stopped here; the harness's cleanup has nothing to stop
}

// processGone reports whether process pid has exited (gone or a zombie),
// without waiting.
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// waitLog waits until the log file has at least n lines containing s.
func waitLog(t *testing.T, log, s string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for strings.Count(string(readFile(log)), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log %s: %d lines with %q after %s, want %d\n%s", log, strings.Count(string(readFile(log)), s), s, d, n, readFile(log))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOpsUmountWaitsForStore: `imagefs umount MOUNTPOINT && imagefs fsck
// STORE` always succeeds: imagefs umount returns only once the daemon has
// exited and released the catalog (plain umount returns before, and fsck
// then fails "busy" about one time in ten). Also with fsname= (the source
// is not the store), on a busy mount (exit 1, still mounted), on a path
// that is not mounted, and on a dead mount.
func TestOpsUmountWaitsForStore(t *testing.T) {
	m := hostDirs(t)
	watchHost(t, m)
	fx := makeVHD(t, 4<<20, "dynamic")
	const rounds = 12
	for i := 0; i < rounds; i++ {
		opts := "log_file=" + m.log
		if i%3 == 2 {
			opts += ",fsname=images-" + strconv.Itoa(i)
		}
		if r := execCmd(binary, m.Store, m.Mnt, "-o", opts); r.err != nil {
			t.Fatalf("round %d: mount: %s", i, r)
		}
		pid := daemonPID(m.log)
		// Work that the catalog must commit and close.
		name := fmt.Sprintf("img-%d", i)
		if err := os.Mkdir(m.images(name), 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, "cp", fx.Path, m.dataFile(name))
		sh(t, `echo round-$2 > "$1"`, m.propFile(name, "os_distro"), strconv.Itoa(i))
		if r := execCmd(binary, "umount", m.Mnt); r.err != nil {
			t.Fatalf("round %d: imagefs umount: %s", i, r)
		}
		if !processGone(pid) {
			t.Fatalf("round %d: imagefs umount returned while the daemon (pid %d) still runs", i, pid)
		}
		if isMounted(m.Mnt) {
			t.Fatalf("round %d: still mounted after imagefs umount", i)
		}
		if r := execCmd(binary, fsckCmd(m.Store)...); r.err != nil {
			t.Fatalf("round %d: imagefs umount && imagefs fsck: %s", i, r)
		}
	}

	// A busy mount: nothing unmounted, exit 1, and it says why.
	if r := execCmd(binary, m.Store, m.Mnt, "-o", "log_file="+m.log); r.err != nil {
		t.Fatalf("mount: %s", r)
	}
	holder := exec.Command("sleep", "120")
	holder.Dir = filepath.Join(m.Mnt, "images")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	r := execCmd(binary, "umount", m.Mnt)
	holder.Process.Kill()
	holder.Wait()
	if r.code != 1 || !strings.Contains(r.stderr, "busy") {
		t.Errorf("imagefs umount of a busy mount: %s; want exit 1 and 'busy'", r)
	}
	if !isMounted(m.Mnt) {
		t.Fatalf("a busy mount was unmounted")
	}
	if r := execCmd(binary, "umount", m.Mnt); r.err != nil {
		t.Fatalf("imagefs umount once released: %s", r)
	}
	if r := execCmd(binary, "umount", m.Mnt); r.code != 1 || !strings.Contains(r.stderr, "not mounted") {
		t.Errorf("imagefs umount of a path not mounted: %s; want exit 1 and 'not mounted'", r)
	}
	if r := execCmd(binary, "umount", os.TempDir()); r.code != 1 {
		t.Errorf("imagefs umount %s: %s; want exit 1", os.TempDir(), r)
	}

	// A dead mount (the daemon was killed): unmounted, nothing to wait for.
	if r := execCmd(binary, m.Store, m.Mnt, "-o", "log_file="+m.log); r.err != nil {
		t.Fatalf("mount: %s", r)
	}
	pid := daemonPID(m.log)
	syscall.Kill(pid, syscall.SIGKILL)
	if !waitExit(pid, 10*time.Second) {
		t.Fatalf("daemon %d survived SIGKILL", pid)
	}
	start := time.Now()
	if r := execCmd(binary, "umount", m.Mnt); r.err != nil {
		t.Errorf("imagefs umount of a dead mount: %s", r)
	}
	if isMounted(m.Mnt) {
		t.Errorf("dead mount still mounted after imagefs umount")
		execCmd("umount", "-l", m.Mnt)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("imagefs umount of a dead mount took %s", d)
	}
}

// TestOpsHelperRelativeLogFile: the helper form's relative log_file= is
// relative to the working directory of whoever ran it, as STORE and
// MOUNTPOINT are (the daemon runs in /, where it was written before).
func TestOpsHelperRelativeLogFile(t *testing.T) {
	m := hostDirs(t)
	watchHost(t, m)
	cwd := t.TempDir()
	name := fmt.Sprintf("imagefs-ops-%d.log", os.Getpid())
	t.Cleanup(func() { os.Remove(filepath.Join("/", name)) })
	rel := func(p string) string {
		r, err := filepath.Rel(cwd, p)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	cmd := exec.Command(binary, rel(m.Store), rel(m.Mnt), "-o", "rw,log_file="+name+",log_format=text")
	cmd.Dir = cwd
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("imagefs %s %s -o log_file=%s: %v\n%s", rel(m.Store), rel(m.Mnt), name, err, out)
	}
	logPath := filepath.Join(cwd, name)
	m.log = logPath // for watchHost's cleanup (the daemon's pid)
	if !isMounted(m.Mnt) {
		t.Fatalf("not mounted")
	}
	if _, err := os.Stat(filepath.Join("/", name)); err == nil {
		t.Errorf("the log went to /%s", name)
	}
	if !mountedLine.Match(readFile(logPath)) {
		t.Errorf("%s has no 'mounted' line: %q", logPath, readFile(logPath))
	}
}

// TestOpsMakeRunDeadMount: make run on a dead mount (the daemon was
// killed) ends with imagefs's own hint (fusermount3 -u or umount -l), not
// with the Makefile's mkdir error.
func TestOpsMakeRunDeadMount(t *testing.T) {
	requireTools(t, "make")
	m := mount(t)
	m.kill()
	t.Cleanup(func() { execCmd("umount", "-l", m.Mnt) })
	liveMounts.Delete(m.Mnt)
	m.cmd = nil
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.Mnt, &st); err != syscall.ENOTCONN {
		t.Fatalf("%s is not a dead mount: statfs: %v", m.Mnt, err)
	}
	bin := filepath.Join(t.TempDir(), "imagefs")
	cmd := exec.Command("make", "-s", "run", "BIN="+bin, "STORE="+m.Store, "MNT="+m.Mnt)
	cmd.Dir = ".." // the module root
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("make run on a dead mount succeeded:\n%s", out)
	}
	if strings.Contains(string(out), "mkdir: ") { // mkdir: cannot stat './run/mnt': Transport endpoint is not connected
		t.Errorf("make run shows mkdir's error:\n%s", out)
	}
	if !strings.Contains(string(out), "dead FUSE mount") || !strings.Contains(string(out), "umount -l") {
		t.Errorf("make run does not show imagefs's dead-mount hint:\n%s", out)
	}
}

// TestOpsDotEntries: every directory of the mount lists "." and ".."
// (ls -a), with the inode numbers stat gives the directory and its parent.
func TestOpsDotEntries(t *testing.T) {
	m := mount(t)
	m.mkimage("dots")
	sh(t, `echo superos > "$1"`, m.propFile("dots", "os_distro"))
	id := m.prop("dots", "id")
	dirs := []string{
		m.Mnt, filepath.Join(m.Mnt, "images"), filepath.Join(m.Mnt, "by-id"),
		m.images("dots"), m.images("dots", "properties"),
		m.byID(id), m.byID(id, "properties"),
		filepath.Join(m.Mnt, "by-property"), filepath.Join(m.Mnt, "by-property", "os_distro"),
		filepath.Join(m.Mnt, "by-property", "os_distro", "superos"),
	}
	for _, d := range dirs {
		inos := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(run(t, "ls", "-a1i", d)), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 {
				inos[f[1]] = f[0]
			}
		}
		dot, okDot := inos["."]
		dotdot, okDotDot := inos[".."]
		if !okDot || !okDotDot {
			t.Errorf("ls -a %s lists no . or ..: %v", d, inos)
			continue
		}
		if want := inode(t, d); dot != want {
			t.Errorf("ls -ai %s: . is inode %s, stat says %s", d, dot, want)
		}
		if d != m.Mnt {
			if want := inode(t, filepath.Dir(d)); dotdot != want {
				t.Errorf("ls -ai %s: .. is inode %s, stat of the parent says %s", d, dotdot, want)
			}
		}
	}
}

// TestOpsNonRootMountFailureSaysWhy: a normal user's mount that
// fusermount3 refuses says fusermount3's reason and what to do, in both
// forms, instead of "fusermount exited with code 256".
func TestOpsNonRootMountFailureSaysWhy(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	requireTools(t, "setpriv", "fusermount3")
	dir, err := os.MkdirTemp("", "imagefs-ops-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "imagefs")
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	store, mnt := filepath.Join(dir, "store"), filepath.Join(dir, "mnt")
	for _, p := range []string{store, mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	os.Chown(store, 1001, 1001)
	// mnt stays root's (0755): a second reason fusermount3 may give.
	as := func(args ...string) result {
		return execCmd("setpriv", append([]string{"--reuid", "1001", "--regid", "1001", "--clear-groups", bin}, args...)...)
	}
	for _, args := range [][]string{{store, mnt}, {"mount", store, mnt}} {
		r := as(args...)
		if isMounted(mnt) {
			execCmd("umount", mnt)
			t.Fatalf("imagefs %v as uid 1001 mounted (this test needs a mount fusermount3 refuses)", args)
		}
		if r.code != 1 {
			t.Errorf("imagefs %v as uid 1001: %s; want exit 1", args, r)
		}
		if strings.Contains(r.stderr, "exited with code") {
			t.Errorf("imagefs %v as uid 1001 says only fusermount's exit code: %q", args, r.stderr)
		}
		if !strings.Contains(r.stderr, "fusermount3:") {
			t.Errorf("imagefs %v as uid 1001 does not give fusermount3's reason: %q", args, r.stderr)
		}
		// The reason is one of the usual causes, with what to do.
		if !strings.Contains(r.stderr, "/dev/fuse") && !strings.Contains(r.stderr, "mountpoint") && !strings.Contains(r.stderr, "user_allow_other") {
			t.Errorf("imagefs %v as uid 1001: no usual cause named: %q", args, r.stderr)
		}
	}
}
