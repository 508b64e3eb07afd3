package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The store is for the daemon's user only: the mount's access rules are
// worth nothing if other local users can read STORE/data/<id>.vhd or the
// catalog directly. Modes:
const (
	modeDir      = 0o700 // STORE and every directory in it
	modeFile     = 0o600 // catalog and staging files
	modeDataFile = 0o400 // sealed data files (and those in lost+found)
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

// storeAreas are the directories of STORE that imagefs owns; anything
// else an operator keeps in STORE is left alone.
var storeAreas = []string{"catalog", "staging", "data", "lost+found"}

// looseStore reports whether STORE or one of its areas lets group or
// others in (the cheap test at every Open).
func looseStore(dir string) bool {
	for _, d := range append([]string{""}, storeAreas...) {
		if fi, err := os.Stat(filepath.Join(dir, d)); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return true
		}
	}
	return false
}

// tighten finds the entries of the store that group or others may read,
// write or traverse (directories, then catalog and staging files, then
// data files) and, with repair, takes those rights away: directories
// 0700, files 0600, data files 0400. Symbolic links are not followed.
// It returns one line saying what it found (and fixed), or "" when the
// store is private, and whether every change succeeded.
func tighten(dir string, repair bool, log *slog.Logger) (string, bool) {
	var dirs, files, data int
	var example string
	ok := true
	fix := func(path string, mode, want fs.FileMode) {
		if example == "" {
			example = fmt.Sprintf("%s is %04o", path, mode)
		}
		if repair {
			if err := os.Chmod(path, want); err != nil {
				log.Error("tightening the store's permissions", "path", path, "err", err)
				ok = false
			}
		}
	}
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		dirs++
		fix(dir, fi.Mode().Perm(), modeDir)
	}
	for _, area := range storeAreas {
		dataArea := area == "data" || area == "lost+found"
		filepath.WalkDir(filepath.Join(dir, area), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.Type()&fs.ModeSymlink != 0 {
				return nil
			}
			fi, err := e.Info()
			if err != nil {
				return nil
			}
			perm := fi.Mode().Perm()
			switch {
			case e.IsDir():
				if perm&0o077 != 0 {
					dirs++
					fix(path, perm, modeDir)
				}
			case !fi.Mode().IsRegular():
			case dataArea && strings.HasSuffix(path, ".vhd"):
				if perm&0o077 != 0 {
					data++
					fix(path, perm, modeDataFile)
				}
			case perm&0o077 != 0:
				files++
				fix(path, perm, perm&0o700|modeFile)
			}
			return nil
		})
	}
	if dirs+files+data == 0 {
		return "", true
	}
	verb := "can"
	if repair && ok {
		verb = "could"
	}
	what := fmt.Sprintf("group or others %s read the store: %d directories (want 0700), %d catalog or staging files (want 0600), %d data files (want 0400); for example %s",
		verb, dirs, files, data, example)
	return what, ok
}
