package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// DataBackend keeps sealed image data files: complete, verified VHDs that
// are never written again. Uploads are staged locally by the Store and
// handed over whole at seal. The local backend keeps each as a read-only
// file; a later backend (OpenStack Swift) would keep objects and a local
// read cache behind the same methods.
type DataBackend interface {
	// Put takes the complete, fsynced staging file at path and stores it as
	// the sealed data of image id. On success the staging file is gone.
	Put(id, path string) error
	// Open returns the sealed data of id, opened read-only. want is what
	// the catalog records of it (size and hashes; zero when unknown): a
	// backend that fetches the data from elsewhere serves only a copy
	// that matches it (the local backend ignores it). Errors wrap
	// ErrNotFound when id has no sealed data, ErrDataStore when a remote
	// store failed or its data did not match want.
	Open(id string, want Expect) (*os.File, error)
	// Blocks returns the 512-byte blocks the sealed data of id occupies
	// (as st_blocks: a file with holes occupies fewer than its size).
	// Errors wrap ErrNotFound when id has no sealed data.
	Blocks(id string) (int64, error)
	// Remove deletes the sealed data of id; open files keep reading it.
	Remove(id string) error
	// List returns the ids that have sealed data.
	List() ([]string, error)
}

// DataStreamer is a DataBackend that takes an upload's data while it is
// written (Swift: each segment as soon as the writer has written past
// it), so that the seal's Put has only the rest to send. The Store starts
// a stream for every upload and tells it how far the data is final.
type DataStreamer interface {
	// Stream starts taking the upload of image id staged at path.
	Stream(id, path string) DataStream
}

// DataStream is one upload's stream (DataStreamer).
type DataStream interface {
	// Written says that bytes [0, n) of the staging file never change
	// again (in-order data; a hole before a write counts as its zeros).
	Written(n int64)
	// Abort voids the stream: the writer went back over final bytes, the
	// file was truncated, or the upload was dropped. What it sent is
	// removed; a later Put sends everything.
	Abort()
}

// Expect is what the catalog records of an image's sealed data, for a
// DataBackend to check a copy against: its size in bytes, its MD5 (the
// record's checksum) and SHA-512 (os_hash_value), lowercase hex. Zero
// fields are unknown.
type Expect struct {
	Size   int64
	MD5    string
	SHA512 string
}

// ExpectOf returns what im records of its sealed data.
func ExpectOf(im *Image) Expect {
	e := Expect{Size: im.Size, MD5: im.Checksum}
	if im.OSHashAlgo == "sha512" {
		e.SHA512 = im.OSHashValue
	}
	return e
}

// localData keeps sealed data as DIR/<id>.vhd, mode 0400 (the daemon's
// user reads it; no one writes it).
type localData struct {
	dir string
	// host names the host in the temporary files of copyIn (tempPattern
	// in datatmp.go), so that its next mount removes those a crash left
	// and no other host's; set by Open (Options.Host).
	host string
}

// NewLocalData returns a DataBackend storing files under dir, which it
// creates (0700) if missing.
func NewLocalData(dir string) (DataBackend, error) {
	if err := os.MkdirAll(dir, modeDir); err != nil {
		return nil, err
	}
	return &localData{dir: dir}, nil
}

func (d *localData) path(id string) string { return filepath.Join(d.dir, id+".vhd") }

// Put moves the staging file into place (rename). When dir is on another
// filesystem than the staging file (EXDEV: a data directory shared by
// hosts, on NFS, with staging under the local STORE), it copies it to
// DIR/.tmp-<id>@<host>@<random>, fsyncs it, makes it 0400, renames it into
// place, fsyncs DIR and removes the staging file; a failure leaves no
// temporary file and the staging file in place.
func (d *localData) Put(id, path string) error {
	if err := os.Chmod(path, modeDataFile); err != nil {
		return err
	}
	err := os.Rename(path, d.path(id))
	if errors.Is(err, syscall.EXDEV) {
		return d.copyIn(id, path)
	}
	if err != nil {
		return err
	}
	return syncDir(d.dir)
}

// copyIn is Put across filesystems.
func (d *localData) copyIn(id, path string) (err error) {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(d.dir, tempPattern(id, d.host))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = io.Copy(tmp, src); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Chmod(modeDataFile); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), d.path(id)); err != nil {
		return err
	}
	if err := syncDir(d.dir); err != nil {
		return err
	}
	os.Remove(path)
	return syncDir(filepath.Dir(path))
}

func (d *localData) Open(id string, _ Expect) (*os.File, error) {
	f, err := os.Open(d.path(id))
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("%w: sealed data of %s: %v", ErrNotFound, id, err)
	}
	return f, err
}

func (d *localData) Remove(id string) error {
	err := os.Remove(d.path(id))
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return syncDir(d.dir)
}

func (d *localData) List() ([]string, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".vhd"); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (d *localData) Blocks(id string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(d.path(id), &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return 0, fmt.Errorf("%w: sealed data of %s: %v", ErrNotFound, id, err)
		}
		return 0, err
	}
	return st.Blocks, nil
}

// copyOut is Reclaim across filesystems (data directory and staging on
// two): the data is copied to path (0600, fsynced), then the data file is
// removed. A failure leaves the data file and no file at path.
func (d *localData) copyOut(id, path string) (err error) {
	src, err := os.Open(d.path(id))
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if _, err = io.Copy(dst, src); err != nil {
		return err
	}
	if err = dst.Sync(); err != nil {
		return err
	}
	if err = syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	return d.Remove(id)
}
