package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/store"
	"golang.org/x/sys/unix"
)

// mountFS is fs.Mount. As a normal user the mount goes through
// fusermount3, which go-fuse runs with the process's os.Stderr and then
// reports only as "fusermount exited with code 256"; a background daemon's
// stderr goes nowhere. So fusermount3's words are captured here and become
// the error, with what to do about the usual causes.
func mountFS(st *store.Store, c *mountConfig, o fs.Options) (*fs.FS, error) {
	if os.Geteuid() == 0 {
		return fs.Mount(st, c.mountpoint, o)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fs.Mount(st, c.mountpoint, o)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		br := bufio.NewReader(io.LimitReader(r, 64<<10))
		for {
			line, err := br.ReadString('\n')
			mu.Lock()
			out.WriteString(line)
			mu.Unlock()
			if err != nil {
				break
			}
		}
		io.Copy(io.Discard, r)
		r.Close()
	}()
	saved := os.Stderr
	os.Stderr = w // go-fuse hands os.Stderr to fusermount3
	fsys, err := fs.Mount(st, c.mountpoint, o)
	os.Stderr = saved
	w.Close()
	select {
	case <-done:
	case <-time.After(time.Second): // a fusermount3 that stays (auto_unmount) keeps the pipe
	}
	mu.Lock()
	said := strings.TrimSpace(out.String())
	mu.Unlock()
	if err != nil {
		return nil, explainMountFailure(err, said, c)
	}
	if said != "" {
		slog.Warn("fusermount3 said", "output", said)
	}
	return fsys, nil
}

// explainMountFailure returns err with what fusermount3 said (said) and
// why a normal user's mount fails: no access to /dev/fuse, allow_other
// without user_allow_other in /etc/fuse.conf, a mountpoint the user may
// not write to. When fusermount3 said nothing, imagefs checks these.
func explainMountFailure(err error, said string, c *mountConfig) error {
	var why []string
	if said != "" {
		why = append(why, said)
	}
	lower := strings.ToLower(said)
	devFuse := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK) != nil
	noAllowOther := c.allowOther && !fuseConfAllowsOther()
	mntNotWritable := unix.Access(c.mountpoint, unix.W_OK) != nil
	switch {
	case strings.Contains(lower, "/dev/fuse") || (said == "" && devFuse):
		if said == "" {
			why = append(why, "no read and write access to /dev/fuse")
		}
		why = append(why, fmt.Sprintf("a normal user's mount needs read and write access to /dev/fuse (it is %s; the fuse3 package makes it 0666), or mount as root", devMode("/dev/fuse")))
	case strings.Contains(lower, "user_allow_other") || (said == "" && noAllowOther):
		why = append(why, "allow_other by a normal user needs the line user_allow_other in /etc/fuse.conf (added by root), or mount without allow_other")
	case strings.Contains(lower, "mountpoint") || (said == "" && mntNotWritable):
		why = append(why, fmt.Sprintf("a normal user may mount only on a directory they own or may write to (%s is %s)", c.mountpoint, devMode(c.mountpoint)))
	case said == "":
		why = append(why, "fusermount3 gave no reason")
	}
	if said != "" {
		// fusermount3's own words replace go-fuse's "fusermount exited
		// with code 256".
		return fmt.Errorf("%s", strings.Join(why, "; "))
	}
	return fmt.Errorf("%s: %s", strings.TrimSpace(err.Error()), strings.Join(why, "; "))
}

// fuseConfAllowsOther reports whether /etc/fuse.conf has user_allow_other.
func fuseConfAllowsOther() bool {
	data, err := os.ReadFile("/etc/fuse.conf")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

// devMode describes path's mode and owner: "rw------- owned by uid 0".
func devMode(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%s owned by uid %d", os.FileMode(st.Mode & 0o777).String()[1:], st.Uid)
}
