package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

const umountHelp = `Usage: imagefs umount [OPTIONS] MOUNTPOINT

Unmount the imagefs mount at MOUNTPOINT and return once its daemon has
exited, so the store is released: a script may run 'imagefs fsck STORE',
back the store up or mount it again at once. umount(8) and fusermount3 -u
return when the kernel has let go of the mount, while the daemon may still
be closing the catalog (fsck then fails with "busy").

imagefs finds the daemon before unmounting: the process holding
STORE/imagefs.lock, which every daemon holds whatever its catalog
(STORE is the mount's source, as df shows it), else the imagefs process
serving MOUNTPOINT. A dead mount (the daemon was killed)
is unmounted and there is nothing to wait for. As root imagefs unmounts
with umount(2), as another user with fusermount3 -u.

Exit status:
  0  unmounted, and the daemon has exited
  1  not unmounted (not an imagefs mount, busy: a process has a file or
     its working directory under it), or the daemon did not exit within
     --timeout
  2  usage error

Options:
`

const umountExamples = `
Examples:
  imagefs umount /mnt/images && imagefs fsck /var/lib/imagefs
  imagefs umount --timeout 2m /mnt/images
`

func init() {
	register("umount", "unmount and wait until the daemon has released the store", runUmount)
}

func runUmount(args []string) int {
	fl := pflag.NewFlagSet("umount", pflag.ContinueOnError)
	timeout := fl.Duration("timeout", 60*time.Second, "wait at most `DURATION` for the daemon to exit after the unmount")
	help := fl.BoolP("help", "h", false, "show this help and exit")
	fl.Usage = func() {}
	if err := fl.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs umount: %v\nTry 'imagefs umount --help'.\n", err)
		return 2
	}
	if *help {
		fmt.Print(umountHelp)
		printFlags(os.Stdout, fl)
		fmt.Print(umountExamples)
		return 0
	}
	if fl.NArg() != 1 {
		fmt.Fprintf(os.Stderr, "imagefs umount: want one MOUNTPOINT, got %d arguments\nTry 'imagefs umount --help'.\n", fl.NArg())
		return 2
	}
	if err := umount(fl.Arg(0), *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs umount: %v\n", err)
		return 1
	}
	return 0
}

// umount unmounts the imagefs mount at mnt and waits up to timeout for
// its daemon to exit.
func umount(mnt string, timeout time.Duration) error {
	mnt, err := cleanMountpoint(mnt)
	if err != nil {
		return err
	}
	mi, err := findMount(mnt)
	if err != nil {
		return err
	}
	if mi.fstype != "fuse.imagefs" {
		return fmt.Errorf("%s is a %s mount, not imagefs (use umount)", mnt, mi.fstype)
	}
	pid, store := daemonOf(mi)
	var pidfd = -1
	if pid > 0 {
		// Held across the unmount: the wait below is for this process,
		// even if its pid were reused.
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			pidfd = fd
			defer unix.Close(fd)
		}
	}
	if err := unmountPath(mnt); err != nil {
		return err
	}
	if pid <= 0 {
		return nil // a dead mount, or a daemon we cannot see: nothing to wait for
	}
	if !waitProcess(pid, pidfd, timeout) {
		what := "the store"
		if store != "" {
			what = store
		}
		return fmt.Errorf("%s is unmounted, but its daemon (pid %d) still holds %s after %s", mnt, pid, what, timeout)
	}
	return nil
}

// cleanMountpoint returns mnt absolute, with symlinks above its last
// element resolved. The last element is not resolved: on a dead mount
// it cannot be (ENOTCONN).
func cleanMountpoint(mnt string) (string, error) {
	abs, err := filepath.Abs(mnt)
	if err != nil {
		return "", err
	}
	dir, base := filepath.Split(abs)
	if base == "" {
		return abs, nil
	}
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	p := filepath.Join(dir, base)
	// A symlink as the last element names the mount it points to.
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
	}
	return p, nil
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	mountpoint, fstype, source string
}

// findMount returns the topmost mount at mnt.
func findMount(mnt string) (mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountInfo{}, err
	}
	defer f.Close()
	var found *mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+2 >= len(fields) {
			continue
		}
		if unescapeMountinfo(fields[4]) != mnt {
			continue
		}
		found = &mountInfo{mountpoint: mnt, fstype: fields[sep+1], source: unescapeMountinfo(fields[sep+2])}
	}
	if err := sc.Err(); err != nil {
		return mountInfo{}, err
	}
	if found == nil {
		return mountInfo{}, fmt.Errorf("%s is not mounted", mnt)
	}
	return *found, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// storeLocks are the lock files a daemon holds in its STORE: imagefs.lock
// (flock), held in every mode (single-host or a host of a shared
// catalog), and catalog/LOCK (Pebble's fcntl lock), held by the embedded
// catalog only, which an older daemon may hold alone.
var storeLocks = []string{"imagefs.lock", filepath.Join("catalog", "LOCK")}

// daemonOf returns the pid of the daemon serving mi and its store, or 0
// when none is found (a dead mount). The daemon holds STORE/imagefs.lock
// (storeLocks); STORE is the mount's source unless fsname= changed it,
// and then the daemon is the process that holds a store lock and names
// the mountpoint in its arguments.
func daemonOf(mi mountInfo) (int, string) {
	if filepath.IsAbs(mi.source) {
		for _, l := range storeLocks {
			if pid := lockHolder(filepath.Join(mi.source, l)); pid > 0 {
				return pid, mi.source
			}
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, ""
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		for _, lock := range storeLocksOf(pid) {
			if lockHolder(lock.path) != pid || !namesMountpoint(pid, mi.mountpoint) {
				continue
			}
			return pid, lock.store
		}
	}
	return 0, ""
}

// lockHolder returns the pid holding a write lock on the file at path,
// an fcntl lock (F_GETLK) or a flock (listed in /proc/locks), or 0.
func lockHolder(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err == nil && lk.Type != unix.F_UNLCK && lk.Pid > 0 {
		return int(lk.Pid)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	return flockHolder(uint64(st.Dev), st.Ino)
}

// flockHolder returns the pid that took the exclusive flock held on the
// file dev:ino, from /proc/locks, or 0. Its lines read
//
//	1: FLOCK  ADVISORY  WRITE 29948 fe:00:9994531 0 EOF
//
// (MAJOR:MINOR in hex, the inode in decimal); a waiter's has "->" after
// the number and is skipped.
func flockHolder(dev, ino uint64) int {
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[3] != "WRITE" || f[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}

// heldLock is a store lock file a process has open, and its STORE.
type heldLock struct{ path, store string }

// storeLocksOf returns the store lock files (storeLocks) process pid has
// open.
func storeLocksOf(pid int) []heldLock {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []heldLock
	for _, fd := range fds {
		t, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if err != nil || !filepath.IsAbs(t) {
			continue
		}
		for _, l := range storeLocks {
			if strings.HasSuffix(t, string(filepath.Separator)+l) {
				out = append(out, heldLock{t, strings.TrimSuffix(t, string(filepath.Separator)+l)})
			}
		}
	}
	return out
}

// namesMountpoint reports whether one of process pid's arguments, taken
// relative to its working directory, is mnt.
func namesMountpoint(pid int, mnt string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	for _, a := range bytes.Split(cmdline, []byte{0}) {
		p := string(a)
		if p == "" {
			continue
		}
		if !filepath.IsAbs(p) {
			if cwd == "" {
				continue
			}
			p = filepath.Join(cwd, p)
		}
		if filepath.Clean(p) == mnt {
			return true
		}
	}
	return false
}

// unmountPath unmounts mnt: umount(2) as root, fusermount3 -u otherwise.
func unmountPath(mnt string) error {
	if os.Geteuid() == 0 {
		err := syscall.Unmount(mnt, 0)
		if errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("%s is busy: a process has a file open or its working directory under it (fuser -vm %s); nothing was unmounted", mnt, mnt)
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", mnt, err)
		}
		return nil
	}
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return fmt.Errorf("unmount %s: fusermount3 not found (package fuse3)", mnt)
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-u", mnt)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "busy") {
			return fmt.Errorf("%s is busy: a process has a file open or its working directory under it (fuser -vm %s); nothing was unmounted", mnt, mnt)
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("unmount %s: %s", mnt, msg)
	}
	return nil
}

// waitProcess waits up to timeout for process pid to exit (through its
// pidfd when there is one, else by polling /proc).
func waitProcess(pid, pidfd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	if pidfd >= 0 {
		for {
			left := time.Until(deadline)
			if left < 0 {
				left = 0
			}
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, int(left/time.Millisecond))
			if err == unix.EINTR {
				continue
			}
			if err == nil && n > 0 {
				return true
			}
			if err != nil || time.Now().After(deadline) {
				break
			}
		}
		return false
	}
	for {
		if !processRunning(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processRunning reports whether pid exists and is not a zombie.
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return !(i > 0 && i+2 < len(b) && b[i+2] == 'Z')
}
