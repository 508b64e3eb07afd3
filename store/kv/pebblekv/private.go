package pebblekv

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Modes of the catalog's directories and files (the store's modeDir and
// modeFile).
const (
	modeDir  = 0o700
	modeFile = 0o600
)

// privateFS is the OS filesystem for Pebble with every directory created
// 0700 and every file 0600, whatever the process umask: Pebble creates
// its files 0666 and directories 0755, and keeps creating WAL, SST,
// MANIFEST and OPTIONS files while the store is mounted. A file is created
// 0600 before Pebble opens it (so a crash leaves no file others could
// read), and made 0600 again once open (a file reused or left by an older
// imagefs).
type privateFS struct{ vfs.FS }

func (p privateFS) Unwrap() vfs.FS { return p.FS }

// precreate creates name empty and 0600 unless it exists.
func precreate(name string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, modeFile)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// private makes the file f just created or opened for writing 0600.
func private(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	if err := syscall.Fchmod(int(f.Fd()), modeFile); err != nil {
		f.Close()
		return nil, fmt.Errorf("chmod catalog file: %w", err)
	}
	return f, nil
}

// Create is vfs's Create (which replaces an existing file) with the new
// file 0600 from the start.
func (p privateFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := precreate(name); err != nil {
		return nil, err
	}
	return private(p.FS.OpenReadWrite(name, c))
}

func (p privateFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	if err := precreate(name); err != nil {
		return nil, err
	}
	return private(p.FS.OpenReadWrite(name, c, opts...))
}

func (p privateFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return private(p.FS.ReuseForWrite(oldname, newname, c))
}

func (p privateFS) MkdirAll(dir string, _ os.FileMode) error { return p.FS.MkdirAll(dir, modeDir) }

func (p privateFS) Lock(name string) (io.Closer, error) {
	if err := precreate(name); err != nil {
		return nil, err
	}
	l, err := p.FS.Lock(name)
	if err == nil {
		if err := os.Chmod(name, modeFile); err != nil {
			l.Close()
			return nil, fmt.Errorf("chmod catalog lock: %w", err)
		}
	}
	return l, err
}
