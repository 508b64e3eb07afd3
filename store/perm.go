package store

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// The store is for the daemon's user only: the mount's access rules are
// worth nothing if other local users can read STORE/data/<id>.vhd or the
// catalog directly. Modes:
const (
	modeDir      = 0o700 // STORE and every directory in it
	modeFile     = 0o600 // catalog and staging files
	modeDataFile = 0o400 // sealed data files (and those in lost+found)
)

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
