package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"golang.org/x/sys/unix"
)

// binary is the imagefs binary TestMain builds; skipReason is set when the
// tests cannot run here (and CI is not set).
var (
	binary     string
	skipReason string
)

// inCI reports whether the tests run in CI, where nothing may be skipped.
var inCI = testutil.InCI

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if reason := prerequisites(); reason != "" {
		if inCI() {
			fmt.Fprintf(os.Stderr, "integration: CI=true and the FUSE tests cannot run: %s\n", reason)
			return 1
		}
		skipReason = reason
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "imagefs-integration-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "imagefs")
	args := []string{"build", "-o", binary}
	if raceEnabled || os.Getenv("IMAGEFS_RACE") == "1" {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/imagefs")...)
	build.Dir = ".." // the module root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: go build ./cmd/imagefs: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	testutil.StopServices() // the etcd cluster of the shared-catalog tests, if this process was its last user
	if left := leftoverMounts(); len(left) > 0 {
		// Every test unmounts in its cleanup; a leftover is a harness bug.
		fmt.Fprintf(os.Stderr, "integration: mounts left behind (lazily unmounted now): %v\n", left)
		for _, mnt := range left {
			exec.Command("umount", "-l", mnt).Run()
		}
		if code == 0 {
			code = 1
		}
	}
	return code
}

// prerequisites returns why the FUSE tests cannot run here, or "".
func prerequisites() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if fi, err := os.Stat("/dev/fuse"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Sprintf("/dev/fuse is missing or not a device (%v)", err)
	}
	if _, err := exec.LookPath("go"); err != nil {
		return "go is not in PATH"
	}
	return ""
}

// requireTools skips (fails in CI) when a tool the test drives is missing.
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if inCI() {
				t.Fatalf("CI=true: %s not installed", n)
			}
			t.Skipf("%s not installed", n)
		}
	}
}

// ---------------------------------------------------------------------------
// The daemon.

// liveMounts records the mountpoints of running daemons, so TestMain can
// report (and clean up) any a test failed to unmount.
var liveMounts sync.Map

func leftoverMounts() []string {
	var out []string
	liveMounts.Range(func(k, _ any) bool {
		if isMounted(k.(string)) {
			out = append(out, k.(string))
		}
		return true
	})
	return out
}

// fsMount is one imagefs daemon serving Store at Mnt.
type fsMount struct {
	t     testing.TB
	Store string
	Mnt   string
	log   string
	// Args are more arguments of imagefs mount, before STORE (such as
	// --allow-other); set them, then remount.
	Args []string
	// catalogArgs are the arguments that put a mount of the single-host
	// tests on a shared catalog (IMAGEFS_TEST_CATALOG=etcd); nil otherwise.
	catalogArgs []string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit error, valid after done
	conn string        // FUSE connection id (fusectl), for a last-resort abort
}

// mount starts imagefs on a fresh store in a temporary directory and
// returns once the mountpoint is mounted. The mount and the daemon are
// gone after the test, whatever happens.
func mount(t testing.TB) *fsMount {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	requireTools(t, "umount")
	dir := t.TempDir()
	m := &fsMount{
		t:     t,
		Store: filepath.Join(dir, "store"),
		Mnt:   filepath.Join(dir, "mnt"),
		log:   filepath.Join(dir, "imagefs.log"),
	}
	if err := os.Mkdir(m.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m.catalogArgs = singleHostOnShared(t, dir, m.Store)
	if m.catalogArgs != nil {
		storeCatalogArgs.Store(m.Store, m.catalogArgs)
	}
	t.Cleanup(func() {
		m.stop()
		if data, _ := os.ReadFile(m.log); bytes.Contains(data, []byte("WARNING: DATA RACE")) {
			t.Errorf("the daemon reported a data race")
		}
		if t.Failed() {
			data, _ := os.ReadFile(m.log)
			t.Logf("imagefs daemon log (%s):\n%s", m.log, data)
		}
	})
	m.start()
	return m
}

// start runs the daemon on m.Store and waits (up to 10 s) for the mount.
func (m *fsMount) start() {
	m.t.Helper()
	logf, err := os.OpenFile(m.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== imagefs mount %s %s\n", m.Store, m.Mnt)
	// This daemon's lines start here: the log is shared by every start of
	// m, and an earlier daemon's "mounted" line must not count for it.
	logStart := 0
	if fi, err := logf.Stat(); err == nil {
		logStart = int(fi.Size())
	}
	if m.catalogArgs != nil {
		// --data (STORE/data here) must exist: a test may have put a
		// fresh filesystem on STORE since the last start.
		if err := os.MkdirAll(filepath.Join(m.Store, "data"), 0o700); err != nil {
			m.t.Fatal(err)
		}
	}
	cmd := exec.Command(binary, append(append(append([]string{"mount"}, m.catalogArgs...), m.Args...), m.Store, m.Mnt)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group; if the test binary dies the daemon gets SIGTERM
	// and unmounts itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start imagefs: %v", err)
	}
	m.cmd = cmd
	m.done = make(chan struct{})
	go func() {
		m.err = cmd.Wait()
		close(m.done)
	}()
	liveMounts.Store(m.Mnt, true)
	deadline := time.Now().Add(10 * time.Second)
	// waitFor polls until ok, failing when the daemon exits first or
	// after 10 s.
	waitFor := func(ok func() bool, when, notYet string, poll time.Duration) {
		for !ok() {
			select {
			case <-m.done:
				m.t.Fatalf("imagefs exited %s: %v", when, m.err)
			default:
			}
			if time.Now().After(deadline) {
				m.t.Fatalf("%s within 10 s", notYet)
			}
			time.Sleep(poll)
		}
	}
	waitFor(func() bool { return isMounted(m.Mnt) }, "before mounting",
		m.Mnt+" not mounted", 10*time.Millisecond)
	var st syscall.Stat_t
	if err := syscall.Stat(m.Mnt, &st); err == nil {
		m.conn = strconv.FormatUint(uint64(unix.Minor(st.Dev)), 10)
	}
	// The mount appears in /proc/self/mounts before the daemon has
	// finished mounting (go-fuse's INIT and its first request) and
	// installed its SIGTERM handler; a SIGTERM in that window kills it
	// while its main thread waits for its own FUSE reply, which leaves
	// an unkillable process. So does a SIGKILL while go-fuse's poll hack
	// (WaitMount) holds a file of the mount open: the dying daemon's close
	// of it sends a FLUSH that none of its threads will answer. Wait
	// until this daemon says it is mounted.
	waitFor(func() bool { return mountedLine.Match(tail(readFile(m.log), logStart)) }, "while mounting",
		"imagefs did not log that "+m.Mnt+" is mounted", 5*time.Millisecond)
}

// tail returns b from offset off on (nothing when b is shorter).
func tail(b []byte, off int) []byte {
	if off > len(b) {
		return nil
	}
	return b[off:]
}

// mountedLine matches the daemon's "mounted" log line, text or JSON.
var mountedLine = regexp.MustCompile(`(^|[^a-z])mounted([^a-z]|$)`)

func readFile(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// exited waits up to d for the daemon to exit.
func (m *fsMount) exited(d time.Duration) bool {
	select {
	case <-m.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill SIGKILLs the daemon and waits for it; if it still does not exit
// (stuck waiting for a reply of its own mount), it aborts the FUSE
// connection through fusectl and waits again. It never blocks for more
// than about 20 s.
func (m *fsMount) kill() {
	m.cmd.Process.Kill()
	if m.exited(10 * time.Second) {
		return
	}
	m.t.Errorf("imagefs pid %d did not exit within 10 s of SIGKILL; aborting FUSE connection %s; its threads' kernel stacks:\n%s", m.cmd.Process.Pid, m.conn, kernelStacks(m.cmd.Process.Pid))
	const ctl = "/sys/fs/fuse/connections"
	if m.conn != "" {
		if _, err := os.Stat(filepath.Join(ctl, m.conn)); err != nil {
			exec.Command("mount", "-t", "fusectl", "fusectl", ctl).Run()
		}
		os.WriteFile(filepath.Join(ctl, m.conn, "abort"), []byte("1"), 0o200)
	}
	if !m.exited(10 * time.Second) {
		m.t.Errorf("imagefs pid %d is still running; giving up on it", m.cmd.Process.Pid)
	}
}

// kernelStacks returns the kernel stack of each thread of process pid
// that is still there (/proc/PID/task/TID/stack): where a daemon that does
// not exit after SIGKILL is stuck.
func kernelStacks(pid int) string {
	var b strings.Builder
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		stack, _ := os.ReadFile(filepath.Join(task, "stack"))
		comm, _ := os.ReadFile(filepath.Join(task, "comm"))
		fmt.Fprintf(&b, "%s (%s):\n%s", filepath.Base(task), strings.TrimSpace(string(comm)), stack)
	}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil {
			fmt.Fprintf(&b, "fd %s -> %s\n", filepath.Base(fd), target)
		}
	}
	return b.String()
}

// stop unmounts: SIGTERM, then (after 10 s) umount -l and SIGKILL. It
// reports a daemon that died on its own or did not exit cleanly.
func (m *fsMount) stop() {
	if m.cmd == nil {
		return
	}
	t := m.t
	select {
	case <-m.done:
		t.Errorf("imagefs died while the test ran: %v", m.err)
	default:
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
			if m.err != nil {
				t.Errorf("imagefs exited with %v after SIGTERM", m.err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("imagefs did not exit within 10 s of SIGTERM; umount -l and SIGKILL")
			exec.Command("umount", "-l", m.Mnt).Run()
			m.kill()
		}
	}
	if isMounted(m.Mnt) {
		t.Errorf("%s still mounted after imagefs exited; umount -l", m.Mnt)
		exec.Command("umount", "-l", m.Mnt).Run()
	}
	liveMounts.Delete(m.Mnt)
	m.cmd = nil
}

// crash kills the daemon with SIGKILL (no clean unmount, no catalog
// close) and lazily unmounts the dead mount, as an operator would.
func (m *fsMount) crash() {
	m.t.Helper()
	m.kill()
	if r := execCmd("umount", "-l", m.Mnt); r.err != nil {
		m.t.Errorf("umount -l after SIGKILL: %s", r)
	}
	liveMounts.Delete(m.Mnt)
	m.cmd = nil
}

// remount stops the daemon and starts a new one on the same store.
func (m *fsMount) remount() {
	m.t.Helper()
	m.stop()
	if m.t.Failed() {
		m.t.FailNow()
	}
	m.start()
}

// isMounted reports whether mnt is a mountpoint in /proc/self/mounts.
func isMounted(mnt string) bool { return mountFields(mnt) != nil }

// mountFields returns the fields of mnt's line in /proc/self/mounts, or
// nil when it is not mounted.
func mountFields(mnt string) []string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && unescapeMount(fields[1]) == mnt {
			return fields
		}
	}
	return nil
}

// unescapeMount undoes the octal escapes (\040 for a space) of
// /proc/self/mounts.
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Paths in the mount.

func (m *fsMount) images(name ...string) string {
	return filepath.Join(append([]string{m.Mnt, "images"}, name...)...)
}

func (m *fsMount) byID(id string, rest ...string) string {
	return filepath.Join(append([]string{m.Mnt, "by-id", id}, rest...)...)
}

// dataFile is images/<name>/image.vhd.
func (m *fsMount) dataFile(name string) string { return m.images(name, "image.vhd") }

// propFile is images/<name>/properties/<key>.
func (m *fsMount) propFile(name, key string) string { return m.images(name, "properties", key) }

// backing is STORE/data/<id>.vhd, the sealed data file.
func (m *fsMount) backing(id string) string { return filepath.Join(m.Store, "data", id+".vhd") }

// mkimage creates images/<name> with mkdir(1) and returns its id.
func (m *fsMount) mkimage(name string) string {
	m.t.Helper()
	run(m.t, "mkdir", m.images(name))
	return m.prop(name, "id")
}

// prop reads images/<name>/properties/<key>, checks the trailing newline
// and returns the value.
func (m *fsMount) prop(name, key string) string {
	m.t.Helper()
	return readProp(m.t, m.propFile(name, key))
}

func readProp(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read property: %v", err)
	}
	v, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		t.Fatalf("%s = %q: no trailing newline", path, b)
	}
	return v
}

// ---------------------------------------------------------------------------
// Running tools.

// result is what a command did.
type result struct {
	stdout, stderr string
	code           int // exit status; -1 when killed by a signal or not started
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("exit %d (%v)\nstdout: %s\nstderr: %s", r.code, r.err, r.stdout, r.stderr)
}

// exec runs name with args in a directory outside any mount.
func execCmd(name string, args ...string) result {
	var r result
	r.stdout, r.stderr, r.code, r.err = testutil.Run(name, args...)
	return r
}

// run runs a command that must succeed and returns its standard output.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	r := execCmd(name, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %s", name, strings.Join(args, " "), r)
	}
	return r.stdout
}

// sh runs a shell script with positional arguments $1...; it must succeed.
func sh(t testing.TB, script string, args ...string) string {
	t.Helper()
	return run(t, "sh", append([]string{"-c", script, "sh"}, args...)...)
}

// shErr runs a shell script with positional arguments and returns what
// happened.
func shErr(script string, args ...string) result {
	return execCmd("sh", append([]string{"-c", script, "sh"}, args...)...)
}

// firstField returns the first whitespace-separated field of s.
func firstField(t testing.TB, s string) string {
	t.Helper()
	f := strings.Fields(s)
	if len(f) == 0 {
		t.Fatalf("no output")
	}
	return f[0]
}

func md5sum(t testing.TB, path string) string {
	t.Helper()
	return firstField(t, run(t, "md5sum", path))
}

func sha512sum(t testing.TB, path string) string {
	t.Helper()
	return firstField(t, run(t, "sha512sum", path))
}

// cmp fails the test unless the files have the same bytes (cmp(1)).
func cmp(t testing.TB, a, b string) {
	t.Helper()
	if r := execCmd("cmp", a, b); r.err != nil {
		t.Errorf("cmp %s %s: %s", a, b, r)
	}
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// inode returns stat -c %i of path.
func inode(t testing.TB, path string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "stat", "-c", "%i", path))
}

// errnoOf returns the errno in err, or 0.
func errnoOf(err error) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return 0
}

// wantErrno fails the test unless err carries want.
func wantErrno(t testing.TB, what string, err error, want syscall.Errno) {
	t.Helper()
	if got := errnoOf(err); got != want || err == nil {
		t.Errorf("%s: got %v (errno %d), want %v (errno %d)", what, err, got, want, want)
	}
}
