package integration

// Tests of imagefs on a Linux host: mount(8) and /etc/fstab through
// mount.fuse3 (type fuse.imagefs), the mount-helper form going to the
// background once ready, ro, failed mounts, the service form's
// sd_notify and SIGTERM, logs in text and JSON, the Prometheus endpoint,
// and a hypervisor's qemu tools reading by-id/<id>/image.vhd.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperPath is where mount(8) finds imagefs. mount(8) removes PATH from
// the environment of its helpers (util-linux sanitize_env), so
// mount.fuse3's `/bin/sh -c 'imagefs ...'` searches the shell's default
// path, of which /usr/local/sbin comes first: a temporary directory
// prepended to PATH is not seen.
const helperPath = "/usr/local/sbin/imagefs"

// installHelper makes the binary under test the imagefs that mount(8)
// runs, for the rest of the test: a symlink at helperPath, removed at the
// end. A lock serializes the tests (of all test processes) that need it.
func installHelper(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	requireTools(t, "mount", "umount", "mount.fuse3")
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "imagefs-integration-helper.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(helperPath)
		syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	})
	if target, err := os.Readlink(helperPath); err == nil {
		// A symlink a killed test run left behind (its binary is gone)
		// is ours to replace; an installed imagefs is not.
		if _, statErr := os.Stat(target); statErr == nil || !strings.Contains(target, "imagefs-integration-") {
			t.Fatalf("%s -> %s is installed; mount(8) would run it instead of the binary under test", helperPath, target)
		}
		os.Remove(helperPath)
	} else if _, err := os.Lstat(helperPath); err == nil {
		t.Fatalf("%s is installed; mount(8) would run it instead of the binary under test", helperPath)
	}
	if err := os.MkdirAll(filepath.Dir(helperPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binary, helperPath); err != nil {
		t.Fatal(err)
	}
}

// hostDirs returns an fsMount for a store and mountpoint in a temporary
// directory, not mounted: the mount is made by mount(8) or the helper
// form, and unmounted by unmountHost.
func hostDirs(t *testing.T) *fsMount {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	dir := t.TempDir()
	m := &fsMount{t: t, Store: filepath.Join(dir, "store"), Mnt: filepath.Join(dir, "mnt"), log: filepath.Join(dir, "imagefs.log")}
	if err := os.Mkdir(m.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

// watchHost makes sure the background daemon of m is gone after the test,
// whatever happens: umount (umount -l if that fails) and wait for the
// daemon to exit. Call it before mounting.
func watchHost(t *testing.T, m *fsMount) {
	t.Helper()
	liveMounts.Store(m.Mnt, true)
	t.Cleanup(func() {
		pid := daemonPID(m.log)
		if isMounted(m.Mnt) {
			if r := execCmd("umount", m.Mnt); r.err != nil {
				t.Errorf("cleanup: umount %s: %s", m.Mnt, r)
				execCmd("umount", "-l", m.Mnt)
			}
		}
		if pid > 0 && !waitExit(pid, 10*time.Second) {
			t.Errorf("cleanup: imagefs daemon %d still running 10 s after umount; SIGKILL", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		liveMounts.Delete(m.Mnt)
		if t.Failed() {
			data, _ := os.ReadFile(m.log)
			t.Logf("imagefs log (%s):\n%s", m.log, data)
		}
	})
}

var pidRE = regexp.MustCompile(`msg=mounted .*pid=(\d+)|"msg":"mounted".*"pid":(\d+)`)

// daemonPID returns the pid in the log's last "mounted" line, or 0.
func daemonPID(log string) int {
	data, _ := os.ReadFile(log)
	all := pidRE.FindAllStringSubmatch(string(data), -1)
	if len(all) == 0 {
		return 0
	}
	last := all[len(all)-1]
	n, _ := strconv.Atoi(last[1] + last[2])
	return n
}

// waitExit waits until process pid is gone (or a zombie).
func waitExit(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		// pid (comm) S ...: the state follows the last ')'.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// dfTypeSource returns the type and source df -T reports for mnt.
func dfTypeSource(t *testing.T, mnt string) (string, string) {
	t.Helper()
	out := run(t, "df", "-T", mnt)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[len(lines)-1]) // Filesystem Type 1K-blocks ... Mounted on
	if len(lines) != 2 || len(f) != 7 {
		t.Fatalf("df -T output %q", out)
	}
	return f[1], f[0]
}

// mountOptions returns the options of mnt in /proc/self/mounts.
func mountOptions(mnt string) []string {
	if f := mountFields(mnt); f != nil {
		return strings.Split(f[3], ",")
	}
	return nil
}

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// TestHostFstab mounts a store from an fstab line of type fuse.imagefs
// with mount -a, as boot does: mount.fuse3 runs `imagefs STORE MOUNTPOINT
// -o OPTIONS`, which returns once the mount is ready, ignoring the
// generic options; df -T shows fuse.imagefs and the store; the mount
// serves uploads; mount -a again does nothing; umount ends the daemon.
func TestHostFstab(t *testing.T) {
	installHelper(t)
	m := hostDirs(t)
	watchHost(t, m)
	fstab := filepath.Join(t.TempDir(), "fstab")
	line := fmt.Sprintf("# imagefs test\n%s %s fuse.imagefs defaults,nofail,_netdev,noatime,nosuid,nodev,comment=imagefs,x-systemd.requires=local-fs.target,allow_other,log_file=%s 0 0\n",
		m.Store, m.Mnt, m.log)
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := execCmd("mount", "-T", fstab, "-a"); r.err != nil {
		t.Fatalf("mount -T fstab -a: %s", r)
	}
	if !isMounted(m.Mnt) {
		t.Fatalf("%s not mounted when mount -a returned", m.Mnt)
	}
	if typ, src := dfTypeSource(t, m.Mnt); typ != "fuse.imagefs" || src != m.Store {
		t.Errorf("df -T: type %q source %q, want fuse.imagefs %s", typ, src, m.Store)
	}
	opts := mountOptions(m.Mnt)
	for _, o := range []string{"rw", "nosuid", "nodev", "allow_other"} {
		if !hasOption(opts, o) {
			t.Errorf("/proc/self/mounts options %v lack %s", opts, o)
		}
	}
	pid := daemonPID(m.log)
	if pid == 0 {
		t.Fatalf("no \"mounted\" line with the daemon's pid in the log")
	}

	fx := makeVHD(t, 3*mib, "dynamic")
	m.mkimage("fstab-image")
	run(t, "cp", fx.Path, m.dataFile("fstab-image"))
	m.checkSealed(t, "fstab-image", fx)

	// Already mounted: mount -a skips it.
	if r := execCmd("mount", "-T", fstab, "-a"); r.err != nil {
		t.Errorf("mount -T fstab -a again: %s", r)
	}
	if n := strings.Count(string(must(os.ReadFile("/proc/self/mounts"))), " "+m.Mnt+" "); n != 1 {
		t.Errorf("%s is mounted %d times after a second mount -a", m.Mnt, n)
	}

	run(t, "umount", m.Mnt)
	if !waitExit(pid, 10*time.Second) {
		t.Errorf("daemon %d still running 10 s after umount", pid)
	}
	if log := string(must(os.ReadFile(m.log))); !strings.Contains(log, "msg=unmounted") {
		t.Errorf("log has no unmounted line:\n%s", log)
	}

	// By mount point alone, as `mount /mnt/images` with the line in
	// /etc/fstab; the same store, now read-only.
	ro := strings.Replace(line, "defaults,", "ro,", 1)
	if err := os.WriteFile(fstab, []byte(ro), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := execCmd("mount", "-T", fstab, m.Mnt); r.err != nil {
		t.Fatalf("mount -T fstab MOUNTPOINT: %s", r)
	}
	if !hasOption(mountOptions(m.Mnt), "ro") {
		t.Errorf("options %v lack ro", mountOptions(m.Mnt))
	}
	cmp(t, fx.Path, m.dataFile("fstab-image"))
	wantErrno(t, "mkdir in a ro mount", os.Mkdir(m.images("new"), 0o755), syscall.EROFS)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestHostMountType mounts with mount -t fuse.imagefs and -o options:
// ro gives EROFS on every change while reads work; rw (the default)
// writes again.
func TestHostMountType(t *testing.T) {
	installHelper(t)
	m := hostDirs(t)
	watchHost(t, m)
	mountT := func(opts string) {
		t.Helper()
		if r := execCmd("mount", "-t", "fuse.imagefs", "-o", opts+",log_file="+m.log, m.Store, m.Mnt); r.err != nil {
			t.Fatalf("mount -t fuse.imagefs -o %s: %s", opts, r)
		}
		if !isMounted(m.Mnt) {
			t.Fatalf("%s not mounted when mount returned", m.Mnt)
		}
	}
	umount := func() {
		t.Helper()
		pid := daemonPID(m.log)
		run(t, "umount", m.Mnt)
		if !waitExit(pid, 10*time.Second) {
			t.Fatalf("daemon %d still running 10 s after umount", pid)
		}
	}

	mountT("allow_other")
	id := sealedImage(t, m, "ro-test")
	run(t, "mkdir", m.images("queued"))
	umount()

	mountT("ro,allow_other")
	if !hasOption(mountOptions(m.Mnt), "ro") {
		t.Errorf("options %v lack ro", mountOptions(m.Mnt))
	}
	if got := m.prop("ro-test", "status"); got != "active" {
		t.Errorf("status = %q in a ro mount", got)
	}
	run(t, "md5sum", m.byID(id, "image.vhd"))
	prop := m.propFile("ro-test", "min_ram")
	for what, err := range map[string]error{
		"mkdir":                    os.Mkdir(m.images("new"), 0o755),
		"rmdir":                    syscall.Rmdir(m.images("queued")),
		"rename":                   os.Rename(m.images("queued"), m.images("renamed")),
		"write a property":         os.WriteFile(prop, []byte("1024\n"), 0o644),
		"create a property":        os.WriteFile(m.propFile("ro-test", "os_distro"), []byte("x\n"), 0o644),
		"setxattr":                 syscall.Setxattr(m.dataFile("ro-test"), "user.os_distro", []byte("x"), 0),
		"upload to a queued image": os.WriteFile(m.dataFile("queued"), []byte("x"), 0o644),
	} {
		wantErrno(t, what+" in a ro mount", err, syscall.EROFS)
	}
	umount()

	mountT("rw")
	run(t, "sh", "-c", `echo 2048 > "$1"`, "sh", prop)
	if got := m.prop("ro-test", "min_ram"); got != "2048" {
		t.Errorf("min_ram = %q after a write in a rw mount", got)
	}
	umount()
}

// TestHostMountFuse3Path runs mount.fuse3 itself, as mount(8) does, with
// imagefs found through PATH (mount.fuse3 keeps the environment; it is
// mount(8) that drops PATH).
func TestHostMountFuse3Path(t *testing.T) {
	requireTools(t, "mount.fuse3")
	m := hostDirs(t)
	watchHost(t, m)
	bin := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(bin, "imagefs")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mount.fuse3", m.Store, m.Mnt, "-t", "fuse.imagefs", "-o", "allow_other,log_file="+m.log)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount.fuse3: %v\n%s", err, out)
	}
	if !isMounted(m.Mnt) {
		t.Fatalf("%s not mounted when mount.fuse3 returned", m.Mnt)
	}
	if typ, src := dfTypeSource(t, m.Mnt); typ != "fuse.imagefs" || src != m.Store {
		t.Errorf("df -T: type %q source %q, want fuse.imagefs %s", typ, src, m.Store)
	}
	sealedImage(t, m, "via-mount-fuse3")
}

// TestHostMountFailures: a mount that cannot be made exits non-zero with
// the reason, through mount(8) and the helper form alike, and leaves
// nothing mounted or running; a missing mountpoint creates no store.
func TestHostMountFailures(t *testing.T) {
	installHelper(t)
	m := hostDirs(t)
	watchHost(t, m)
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name        string
		store, mnt  string
		opts        string
		wantInError string
	}{
		{"missing mountpoint", filepath.Join(dir, "new-store"), filepath.Join(dir, "no-such-dir"), "", "no such file or directory"},
		{"mountpoint is a file", m.Store, notDir, "", "not a directory"},
		{"store under a file", filepath.Join(notDir, "store"), m.Mnt, "", "not a directory"},
		{"unknown option", m.Store, m.Mnt, "allow_other,bogus", "unknown mount option \"bogus\""},
		{"bad quota", m.Store, m.Mnt, "property_quota=lots", "property_quota"},
		{"remote metrics address", m.Store, m.Mnt, "metrics_addr=0.0.0.0:9477", "not a loopback address"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"-t", "fuse.imagefs"}
			if c.opts != "" {
				args = append(args, "-o", c.opts)
			}
			r := execCmd("mount", append(args, c.store, c.mnt)...)
			if r.code == 0 {
				t.Errorf("mount -t fuse.imagefs %s %s exited 0", c.store, c.mnt)
			}
			if !strings.Contains(r.stderr, c.wantInError) {
				t.Errorf("mount stderr %q does not say %q", r.stderr, c.wantInError)
			}
			// The helper form directly, as mount.fuse3 runs it.
			hargs := []string{c.store, c.mnt}
			if c.opts != "" {
				hargs = append(hargs, "-o", c.opts)
			}
			r = execCmd(binary, hargs...)
			if r.code == 0 || !strings.Contains(r.stderr, c.wantInError) {
				t.Errorf("imagefs %s: exit %d, stderr %q; want non-zero and %q", strings.Join(hargs, " "), r.code, r.stderr, c.wantInError)
			}
			if isMounted(c.mnt) {
				t.Errorf("%s mounted after a failed mount", c.mnt)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "new-store")); err == nil {
		t.Errorf("a failed mount (missing mountpoint) created its store")
	}

	// A failure in the background daemon, after it started: the store is
	// in use by another mount (the catalog is locked). The helper reports
	// the daemon's error and exits non-zero.
	other := mount(t)
	r := execCmd(binary, other.Store, m.Mnt, "-o", "log_file="+m.log)
	if r.code == 0 || !strings.Contains(r.stderr, "open store") {
		t.Errorf("imagefs on a store in use: exit %d, stderr %q; want non-zero and the store error", r.code, r.stderr)
	}
	if isMounted(m.Mnt) {
		t.Errorf("%s mounted after a failed mount", m.Mnt)
	}
}

// TestHostServiceNotify runs the ExecStart line of the systemd service
// unit in the README (imagefs mount in the foreground, Type=notify): it
// sends READY=1 once the mount is ready, and systemctl stop's SIGTERM
// unmounts cleanly (STOPPING=1, exit 0).
func TestHostServiceNotify(t *testing.T) {
	m := hostDirs(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := exec.Command(binary, "mount", "--allow-other", "--log-format", "json", "--log-file", m.log, m.Store, m.Mnt)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed when imagefs has exited
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	liveMounts.Store(m.Mnt, true)
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				exec.Command("umount", "-l", m.Mnt).Run()
				cmd.Process.Kill()
				<-done
			}
		}
		if isMounted(m.Mnt) {
			exec.Command("umount", "-l", m.Mnt).Run()
		}
		liveMounts.Delete(m.Mnt)
	})

	recv := func(want string) {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s on NOTIFY_SOCKET: %v (stderr %q)", want, err, stderr.String())
		}
		if got := string(buf[:n]); got != want {
			t.Fatalf("NOTIFY_SOCKET got %q, want %q", got, want)
		}
	}
	recv("READY=1")
	if !isMounted(m.Mnt) {
		t.Fatalf("READY=1 sent before %s was mounted", m.Mnt)
	}
	sealedImage(t, m, "service-image")

	cmd.Process.Signal(syscall.SIGTERM)
	recv("STOPPING=1")
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("imagefs mount exited with %v after SIGTERM; stderr %q", waitErr, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("imagefs mount still running 10 s after SIGTERM")
	}
	if isMounted(m.Mnt) {
		t.Errorf("%s still mounted after SIGTERM", m.Mnt)
	}
	if log := string(must(os.ReadFile(m.log))); !strings.Contains(log, `"msg":"unmounted"`) {
		t.Errorf("log has no unmounted line:\n%s", log)
	}
}

// logEvent is one parsed log line.
type logEvent map[string]string

// parseLogfmt parses a slog text line: key=value and key="quoted value".
func parseLogfmt(line string) logEvent {
	ev := logEvent{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			break
		}
		key := line[:eq]
		rest := line[eq+1:]
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			v, err := strconv.Unquote(rest[:min(end+1, len(rest))])
			if err != nil {
				v = rest[1:min(end, len(rest))]
			}
			ev[key] = v
			line = rest[min(end+1, len(rest)):]
		} else {
			sp := strings.IndexByte(rest, ' ')
			if sp < 0 {
				sp = len(rest)
			}
			ev[key] = rest[:sp]
			line = rest[sp:]
		}
	}
	return ev
}

// parseLog parses every line of a text or JSON log.
func parseLog(t *testing.T, path, format string) []logEvent {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []logEvent
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if format == "text" {
			ev := parseLogfmt(line)
			if ev["msg"] == "" || ev["level"] == "" || ev["time"] == "" {
				t.Errorf("text log line without time, level and msg: %q", line)
			}
			out = append(out, ev)
			continue
		}
		var raw map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber() // sizes as written, not 2.101248e+06
		if err := dec.Decode(&raw); err != nil {
			t.Errorf("JSON log line %q: %v", line, err)
			continue
		}
		ev := logEvent{}
		for k, v := range raw {
			ev[k] = fmt.Sprint(v)
		}
		out = append(out, ev)
	}
	return out
}

// findEvent returns the first event with msg and every want key=value.
func findEvent(evs []logEvent, msg string, want map[string]string) logEvent {
	for _, ev := range evs {
		if ev["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range want {
			if ev[k] != v {
				ok = false
			}
		}
		if ok {
			return ev
		}
	}
	return nil
}

// TestHostLogs follows images through the log, in text and in JSON: one
// line each for created, upload started, sealed with its checksum,
// property changed by uid, an upload refused and killed with its reason,
// deleted; mounted and unmounted. -o debug adds go-fuse's request trace
// through the same handler.
func TestHostLogs(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			m := hostDirs(t)
			watchHost(t, m)
			if r := execCmd(binary, m.Store, m.Mnt, "-o", "log_format="+format+",log_file="+m.log); r.err != nil {
				t.Fatalf("imagefs STORE MOUNTPOINT: %s", r)
			}
			pid := daemonPID(m.log)
			fx := makeVHD(t, 2*mib, "fixed")
			id := m.mkimage("logged")
			run(t, "cp", fx.Path, m.dataFile("logged"))
			m.checkSealed(t, "logged", fx)
			sh(t, `echo 1024 > "$1"`, m.propFile("logged", "min_ram"))
			badID := m.mkimage("refused")
			execCmd("cp", rawDisk(t, mib, 99), m.dataFile("refused"))
			reason := m.prop("refused", "imagefs_kill_reason")
			run(t, "rmdir", m.images("refused"))
			run(t, "umount", m.Mnt)
			if !waitExit(pid, 10*time.Second) {
				t.Fatalf("daemon still running after umount")
			}

			evs := parseLog(t, m.log, format)
			for _, w := range []struct {
				msg  string
				kv   map[string]string
				desc string
			}{
				{"mounted", map[string]string{"store": m.Store, "mountpoint": m.Mnt}, "the mount"},
				{"image created", map[string]string{"id": id, "name": "logged", "owner": "0"}, "mkdir"},
				{"upload started", map[string]string{"id": id}, "the first write"},
				{"image sealed", map[string]string{"id": id, "checksum": fx.MD5, "size": strconv.FormatInt(fx.Size, 10)}, "the seal"},
				{"property changed", map[string]string{"id": id, "key": "min_ram", "uid": "0"}, "echo > min_ram"},
				{"upload refused; image killed", map[string]string{"id": badID, "reason": reason}, "a refused upload"},
				{"image deleted", map[string]string{"id": badID, "uid": "0"}, "rmdir"},
				{"unmounted", map[string]string{"mountpoint": m.Mnt}, "umount"},
			} {
				if findEvent(evs, w.msg, w.kv) == nil {
					t.Errorf("no %q line with %v (%s) in the %s log", w.msg, w.kv, w.desc, format)
				}
			}
			// One line per event.
			n := 0
			for _, ev := range evs {
				if ev["msg"] == "image sealed" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d \"image sealed\" lines for one seal", n)
			}
		})
	}
	t.Run("debug", func(t *testing.T) {
		m := hostDirs(t)
		watchHost(t, m)
		if r := execCmd(binary, m.Store, m.Mnt, "-o", "debug,log_format=json,log_file="+m.log); r.err != nil {
			t.Fatalf("imagefs STORE MOUNTPOINT -o debug: %s", r)
		}
		m.mkimage("traced")
		run(t, "umount", m.Mnt)
		waitExit(daemonPID(m.log), 10*time.Second)
		evs := parseLog(t, m.log, "json")
		var mkdir, created bool
		for _, ev := range evs {
			mkdir = mkdir || ev["level"] == "DEBUG" && ev["component"] == "fuse" && strings.Contains(ev["msg"], "MKDIR")
			created = created || ev["msg"] == "image created"
		}
		if !mkdir || !created {
			t.Errorf("debug log: MKDIR trace line %v, image created line %v; want both as JSON lines", mkdir, created)
		}
	})
}

// scrape fetches http://addr/metrics and returns each sample by its
// series (name{labels}).
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

var metricsAddrRE = regexp.MustCompile(`metrics endpoint listening" addr=(\S+)`)

// metricsAddrOf returns the address of the metrics endpoint that the daemon
// writing log said it listens on (mounted with --metrics-addr 127.0.0.1:0).
func metricsAddrOf(t testing.TB, log string) string {
	t.Helper()
	match := metricsAddrRE.FindStringSubmatch(string(readFile(log)))
	if match == nil {
		t.Fatalf("no metrics address in the log")
	}
	return match[1]
}

// TestHostMetrics scrapes the Prometheus endpoint after an upload, a
// refused upload and a delete: request counts and latencies per
// operation, bytes written, seals, killed uploads and images by status.
func TestHostMetrics(t *testing.T) {
	m := hostDirs(t)
	watchHost(t, m)
	if r := execCmd(binary, m.Store, m.Mnt, "-o", "metrics_addr=127.0.0.1:0,log_file="+m.log); r.err != nil {
		t.Fatalf("imagefs -o metrics_addr: %s", r)
	}
	addr := metricsAddrOf(t, m.log)
	host, _, _ := net.SplitHostPort(addr)
	if !net.ParseIP(host).IsLoopback() {
		t.Errorf("metrics listen on %s, not a loopback address", addr)
	}

	fx := makeVHD(t, 3*mib, "fixed")
	m.mkimage("metered")
	run(t, "cp", fx.Path, m.dataFile("metered"))
	m.checkSealed(t, "metered", fx)
	m.mkimage("refused")
	execCmd("cp", rawDisk(t, mib, 98), m.dataFile("refused"))
	m.mkimage("queued")
	m.mkimage("deleted")
	run(t, "rmdir", m.images("deleted"))

	got := scrape(t, addr)
	for series, want := range map[string]float64{
		"imagefs_seals_total":                 1,
		"imagefs_uploads_killed_total":        1,
		"imagefs_images_created_total":        4,
		"imagefs_images_deleted_total":        1,
		`imagefs_images{status="active"}`:     1,
		`imagefs_images{status="killed"}`:     1,
		`imagefs_images{status="queued"}`:     1,
		`imagefs_images{status="saving"}`:     0,
		"imagefs_seal_duration_seconds_count": 1,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (listed %v), want %v", series, v, ok, want)
		}
	}
	for _, series := range []string{
		`imagefs_fuse_requests_total{op="mkdir"}`,
		`imagefs_fuse_requests_total{op="write"}`,
		`imagefs_fuse_requests_total{op="lookup"}`,
		`imagefs_fuse_requests_total{op="release"}`,
		`imagefs_fuse_request_duration_seconds_count{op="write"}`,
		`imagefs_fuse_request_duration_seconds_sum{op="flush"}`,
		`imagefs_fuse_request_errors_total{op="flush"}`, // the refused upload's close
		"imagefs_fuse_written_bytes_total",
		"imagefs_sealed_bytes_total",
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if got[series] <= 0 {
			t.Errorf("%s = %v, want > 0", series, got[series])
		}
	}
	if got["imagefs_sealed_bytes_total"] != float64(fx.Size) {
		t.Errorf("imagefs_sealed_bytes_total = %v, want %d", got["imagefs_sealed_bytes_total"], fx.Size)
	}
	if w := got[`imagefs_fuse_request_duration_seconds_count{op="write"}`]; w != got[`imagefs_fuse_requests_total{op="write"}`] {
		t.Errorf("write: %v requests but %v latency observations", got[`imagefs_fuse_requests_total{op="write"}`], w)
	}
}

// TestHostHypervisorReadsByID reads a sealed image the way a hypervisor
// host does, by id: qemu-img convert to raw and qemu-img compare give the
// uploaded disk's contents; a read-only open works, a read-write one is
// refused (EPERM: sealed data); a qcow2 overlay elsewhere takes the
// guest's writes and leaves the image's bits and checksum as they were.
func TestHostHypervisorReadsByID(t *testing.T) {
	m := mount(t)
	requireTools(t, "qemu-img", "qemu-io")
	for _, sub := range []string{"dynamic", "fixed"} {
		t.Run(sub, func(t *testing.T) {
			fx := makeVHD(t, 6*mib, sub)
			id := m.mkimage("guest-" + sub)
			run(t, "cp", fx.Path, m.dataFile("guest-"+sub))
			m.checkSealed(t, "guest-"+sub, fx)
			img := m.byID(id, "image.vhd")

			out := filepath.Join(t.TempDir(), "out.raw")
			run(t, "qemu-img", "convert", "-f", "vpc", "-O", "raw", img, out)
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", out, fx.Raw)
			run(t, "qemu-img", "compare", "-f", "vpc", "-F", "raw", img, fx.Raw)
			run(t, "qemu-img", "compare", "-f", "vpc", "-F", "vpc", img, fx.Path)

			// -drive file=...,format=vpc,readonly=on
			run(t, "qemu-io", "-r", "-f", "vpc", "-c", "read 0 64k", img)
			if r := execCmd("qemu-io", "-f", "vpc", "-c", "write 0 512", img); r.code == 0 {
				t.Errorf("qemu-io opened the sealed image read-write and wrote: %s", r)
			}

			// A qcow2 overlay outside the mount (-drive file=overlay.qcow2,
			// or snapshot=on, which makes one in /var/tmp).
			ov := filepath.Join(t.TempDir(), "overlay.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", img, "-F", "vpc", ov)
			run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64k", ov)
			run(t, "qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 64k", ov)
			if r := execCmd("qemu-img", "compare", "-f", "qcow2", "-F", "vpc", ov, img); r.code != 1 {
				t.Errorf("qemu-img compare overlay base: %s; want exit 1 (the overlay differs)", r)
			}
			if got := md5sum(t, img); got != fx.MD5 {
				t.Errorf("md5sum by-id/%s/image.vhd = %s after the guest wrote its overlay, want %s", id, got, fx.MD5)
			}
			if got := m.prop("guest-"+sub, "checksum"); got != fx.MD5 {
				t.Errorf("checksum = %s, want %s", got, fx.MD5)
			}
		})
	}
}
