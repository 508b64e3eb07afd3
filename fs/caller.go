package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
)

// caller returns who made the request.
func caller(ctx context.Context) store.Caller {
	if c, ok := fuse.FromContext(ctx); ok {
		return store.Caller{UID: c.Uid, GID: c.Gid}
	}
	return store.Root
}

// callerProcess returns the thread group id (process id) of the calling
// thread; FUSE requests carry the thread id.
func callerProcess(ctx context.Context) uint32 {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return 0
	}
	if tgid := tgidOf(c.Pid); tgid != 0 {
		return tgid
	}
	return c.Pid
}

// tgidOf returns the process (thread group) of thread pid, or 0.
func tgidOf(pid uint32) uint32 {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return 0
	}
	_, rest, ok := strings.Cut(string(b), "\nTgid:\t")
	if !ok {
		return 0
	}
	line, _, _ := strings.Cut(rest, "\n")
	n, err := strconv.ParseUint(line, 10, 32)
	if err != nil {
		return 0
	}
	return uint32(n)
}

// exitStatus returns the wait status with which the calling thread is
// exiting (a signal number in the low 7 bits, or an exit status << 8), or
// 0 when it is not exiting: a FLUSH sent while a process closes its files
// in do_exit comes from a thread whose flags have PF_EXITING and whose
// exit_code holds that status.
func exitStatus(ctx context.Context) int {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces and ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): flags is field 9, exit_code field 52.
	if len(f) < 50 {
		return 0
	}
	flags, err1 := strconv.ParseUint(f[6], 10, 64)
	code, err2 := strconv.ParseUint(f[49], 10, 64)
	const pfExiting = 0x4
	if err1 != nil || err2 != nil || flags&pfExiting == 0 {
		return 0
	}
	return int(code & 0xffff)
}

// holdsFile reports whether the thread that sent ctx's request still has
// a descriptor open on inode n of this mount, read from
// /proc/<tid>/fdinfo/* (fields ino: and mnt_id:). At a FLUSH the closed
// descriptor has already left the table (close(2), dup2(2)), and a
// process that is exiting has no table left. False when the mount's id is
// unknown or /proc cannot be read: the caller then seals as if it held
// no other descriptor.
func holdsFile(ctx context.Context, n *gofs.Inode) bool {
	c, ok := fuse.FromContext(ctx)
	root, _ := n.Root().Operations().(*rootNode)
	if !ok || root == nil || root.fsys.mntID.Load() == 0 {
		return false
	}
	dir := fmt.Sprintf("/proc/%d/fdinfo/", c.Pid)
	d, err := os.Open(dir)
	if err != nil {
		return false
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	ino := strconv.FormatUint(n.StableAttr().Ino, 10)
	mnt := strconv.FormatUint(root.fsys.mntID.Load(), 10)
	for _, name := range names {
		b, err := os.ReadFile(dir + name)
		if err != nil {
			continue // closed meanwhile
		}
		if fdinfoField(b, "ino") == ino && fdinfoField(b, "mnt_id") == mnt {
			return true
		}
	}
	return false
}

// fdinfoField returns the value of field key in the text of a
// /proc/PID/fdinfo/FD file ("key:\tvalue" lines), or "".
func fdinfoField(b []byte, key string) string {
	for line := range bytes.Lines(b) {
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(k) == key {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}
