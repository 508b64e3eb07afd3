package store

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// looseEntries lists every entry under dir that group or others may
// access, every directory that is not 0700 and every data file that is
// not 0400.
func looseEntries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		require.NoError(t, err)
		fi, err := e.Info()
		require.NoError(t, err)
		perm := fi.Mode().Perm()
		switch {
		case perm&0o077 != 0:
			out = append(out, path+" "+fi.Mode().String())
		case e.IsDir() && perm != 0o700:
			out = append(out, path+" "+fi.Mode().String())
		case strings.HasSuffix(path, ".vhd") && perm != 0o400:
			out = append(out, path+" "+fi.Mode().String())
		}
		return nil
	}))
	return out
}

// TestStoreIsPrivate: a new store is for its user only, and so are the
// catalog files Pebble creates later (a flush writes an SST, a new Open a
// new WAL), whatever the umask.
func TestStoreIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openStore(t, dir)
	im, _ := s.Create(alice, "img")
	require.NoError(t, upload(t, s, alice, im.ID, fixedVHD(t, 1<<20), 1<<20))
	gone, _ := s.Create(alice, "gone")
	require.NoError(t, upload(t, s, alice, gone.ID, fixedVHD(t, 1<<20), 1<<20))
	require.NoError(t, s.moveToLostFound(gone.ID))
	require.NoError(t, s.cat.db.Pebble().Flush())
	require.NoError(t, s.Close())
	s = openStore(t, dir)
	s.Create(alice, "after-reopen")
	require.NoError(t, s.cat.db.Pebble().Flush())
	defer s.Close()

	var ssts int
	ents, err := os.ReadDir(filepath.Join(dir, "catalog"))
	require.NoError(t, err)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".sst") {
			ssts++
		}
	}
	require.GreaterOrEqual(t, ssts, 2, "the test wants SSTs written while open")
	assert.Empty(t, looseEntries(t, dir))
	fi, err := os.Stat(filepath.Join(dir, "data", im.ID+".vhd"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o400), fi.Mode().Perm())
}

// TestOpenTightensLooseStore: a store made by an older imagefs (0755
// directories, 0644 catalog files, 0444 data) is made private at Open,
// with one log line; Check reports it, and Check with Repair fixes it.
func TestOpenTightensLooseStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openStore(t, dir)
	im, _ := s.Create(alice, "img")
	require.NoError(t, upload(t, s, alice, im.ID, fixedVHD(t, 1<<20), 1<<20))
	require.NoError(t, s.Close())
	mine := filepath.Join(dir, "operator-notes.txt") // not imagefs's: left alone
	require.NoError(t, os.WriteFile(mine, []byte("x"), 0o644))
	loosen := func() {
		require.NoError(t, filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
			switch {
			case e.IsDir():
				return os.Chmod(path, 0o755)
			case strings.HasSuffix(path, ".vhd"):
				return os.Chmod(path, 0o444)
			}
			return os.Chmod(path, 0o644)
		}))
	}

	loosen()
	r, err := Check(dir, CheckOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{ProblemStoreMode}, kinds(r))
	assert.True(t, r.Problems[0].Repairable)
	assert.False(t, r.OK())
	assert.True(t, r.Repairable())
	assert.NotEmpty(t, looseEntries(t, dir), "a check without Repair changes nothing")

	r, err = Check(dir, CheckOptions{Repair: true})
	require.NoError(t, err)
	assert.Equal(t, []string{ProblemStoreMode}, kinds(r))
	assert.True(t, r.OK())
	assert.Equal(t, []string{mine + " -rw-r--r--"}, looseEntries(t, dir))

	loosen()
	var logs bytes.Buffer
	s, err = Open(dir, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	assert.Equal(t, []string{mine + " -rw-r--r--"}, looseEntries(t, dir))
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, ProblemStoreMode) {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, 1, "one log line says what was tightened:\n%s", logs.String())
	assert.Contains(t, lines[0], "directories (want 0700)")
	assert.Contains(t, lines[0], "1 data files (want 0400)")

	r, err = Check(dir, CheckOptions{})
	require.NoError(t, err)
	assert.Empty(t, r.Problems)
}

// failingRemove is the local backend whose Remove fails, as a crash
// between the delete's commit and the data's removal leaves it.
type failingRemove struct{ DataBackend }

func (failingRemove) Remove(string) error { return errors.New("crash before the data was removed") }

// TestInterruptedDeleteRemovesData: when the delete of an image committed
// and its data was not removed, the next Open removes the data instead of
// moving it to lost+found; lost+found keeps only data no record explains,
// and Check counts it.
func TestInterruptedDeleteRemovesData(t *testing.T) {
	dir := t.TempDir()
	local, err := NewLocalData(filepath.Join(dir, "data"))
	require.NoError(t, err)
	s, err := Open(dir, Options{Data: failingRemove{local}})
	require.NoError(t, err)
	im, _ := s.Create(alice, "deleted")
	require.NoError(t, upload(t, s, alice, im.ID, fixedVHD(t, 1<<20), 1<<20))
	kept, _ := s.Create(alice, "kept")
	require.NoError(t, upload(t, s, alice, kept.ID, fixedVHD(t, 1<<20), 1<<20))
	require.NoError(t, s.Delete(alice, im.ID))
	require.NoError(t, s.Close())
	data := filepath.Join(dir, "data", im.ID+".vhd")
	_, err = os.Stat(data)
	require.NoError(t, err, "the data of the deleted image is still there")
	orphan := filepath.Join(dir, "data", "0a0a0a0a-0000-4000-8000-000000000000.vhd")
	require.NoError(t, os.WriteFile(orphan, []byte("orphan"), 0o400))

	r, err := Check(dir, CheckOptions{})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{ProblemDeletedData, ProblemOrphanData}, kinds(r))
	assert.True(t, r.Repairable())
	assert.Zero(t, r.LostFound)

	s = openStore(t, dir)
	_, err = os.Stat(data)
	assert.ErrorIs(t, err, os.ErrNotExist, "data of a deleted image removed at Open")
	_, err = os.Stat(filepath.Join(dir, "lost+found", im.ID+".vhd"))
	assert.ErrorIs(t, err, os.ErrNotExist, "not moved to lost+found")
	_, err = os.Stat(filepath.Join(dir, "lost+found", filepath.Base(orphan)))
	assert.NoError(t, err, "data no record explains goes to lost+found")
	tombs, err := s.cat.loadTombstones()
	require.NoError(t, err)
	assert.Empty(t, tombs, "the tombstone is dropped once the data is gone")
	assert.NotNil(t, s.Get(kept.ID))

	// An ordinary delete leaves no tombstone behind.
	require.NoError(t, s.Delete(alice, kept.ID))
	tombs, err = s.cat.loadTombstones()
	require.NoError(t, err)
	assert.Empty(t, tombs)
	require.NoError(t, s.Close())

	r, err = Check(dir, CheckOptions{})
	require.NoError(t, err)
	assert.Empty(t, r.Problems)
	assert.Equal(t, 1, r.LostFound)
	assert.Equal(t, int64(len("orphan")), r.LostFoundBytes)
}

// TestDeleteDuringUploadRemovesLateData: an image deleted while its
// upload is in flight may still get its data stored by a seal that was
// past its checks (upload.go removes it again, but a crash may come
// first); that data is removed at the next Open, not kept in lost+found.
// A delete with no upload and no data leaves no tombstone.
func TestDeleteDuringUploadRemovesLateData(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	im, _ := s.Create(alice, "uploading")
	u, err := s.OpenWrite(alice, im.ID, false)
	require.NoError(t, err)
	_, err = u.WriteAt([]byte("partial"), 0)
	require.NoError(t, err)
	queued, _ := s.Create(alice, "queued")
	require.NoError(t, s.Delete(alice, im.ID))
	require.NoError(t, s.Delete(alice, queued.ID))
	tombs, err := s.cat.loadTombstones()
	require.NoError(t, err)
	assert.Equal(t, map[string]bool{im.ID: true}, tombs)
	require.NoError(t, s.Close())
	// What a seal past its checks stores before it sees the delete.
	late := filepath.Join(dir, "data", im.ID+".vhd")
	require.NoError(t, os.WriteFile(late, fixedVHD(t, 1<<20), 0o400))

	s = openStore(t, dir)
	defer s.Close()
	_, err = os.Stat(late)
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(filepath.Join(dir, "lost+found", im.ID+".vhd"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	tombs, err = s.cat.loadTombstones()
	require.NoError(t, err)
	assert.Empty(t, tombs)
}
