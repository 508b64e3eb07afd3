package store

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tmpfsDir mounts a small tmpfs at a new directory (removed with the
// test) and returns it: a filesystem other than the store's.
func tmpfsDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "shared")
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m,mode=0700"))
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestSealIntoDataDirOnOtherFilesystem: with the data directory on another
// filesystem than STORE/staging (a data directory shared by hosts), a
// seal copies the staged data over (rename gives EXDEV): the data file is
// in place, 0400, the same bytes; no temporary file is left in the data
// directory and the staging file is gone; the image reads back after a
// reopen, and its delete removes the file.
func TestSealIntoDataDirOnOtherFilesystem(t *testing.T) {
	shared := tmpfsDir(t)
	dir := t.TempDir()
	open := func() *Store {
		d, err := NewLocalData(shared)
		require.NoError(t, err)
		s, err := Open(dir, Options{Data: d})
		require.NoError(t, err)
		return s
	}
	s := open()
	im, err := s.Create(alice, "far")
	require.NoError(t, err)
	data := fixedVHD(t, 2<<20+512*3)
	require.NoError(t, upload(t, s, alice, im.ID, data, 64<<10))
	require.Equal(t, StatusActive, s.Get(im.ID).Status)

	ents, err := os.ReadDir(shared)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{im.ID + ".vhd"}, names, "the data file only, no temporary file")
	fi, err := os.Stat(filepath.Join(shared, im.ID+".vhd"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o400), fi.Mode().Perm())
	staged, err := os.ReadDir(filepath.Join(dir, "staging"))
	require.NoError(t, err)
	assert.Empty(t, staged, "the staging file is removed")

	require.NoError(t, s.Close())
	s = open()
	defer s.Close()
	f, err := s.OpenRead(alice, im.ID)
	require.NoError(t, err)
	got, err := io.ReadAll(f)
	f.Close()
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "the same bytes")
	require.NoError(t, s.Delete(alice, im.ID))
	_, err = os.Stat(filepath.Join(shared, im.ID+".vhd"))
	assert.True(t, os.IsNotExist(err), "delete removes the data file: %v", err)
}

// TestProvisionalReopenDataDirOnOtherFilesystem: a read-write opener's
// seal (qemu-img convert) undone by its reopen takes the data back from a
// data directory on another filesystem (a copy), and the upload goes on
// to a seal of the whole data.
func TestProvisionalReopenDataDirOnOtherFilesystem(t *testing.T) {
	shared := tmpfsDir(t)
	d, err := NewLocalData(shared)
	require.NoError(t, err)
	s, err := Open(t.TempDir(), Options{Data: d})
	require.NoError(t, err)
	defer s.Close()
	im := queued(t, s, alice, "a")
	w := Writer{PID: uint32(os.Getpid()), ReadWrite: true}
	data := fixedVHD(t, 1<<20)
	u, err := s.OpenWriteBy(alice, im.ID, true, w)
	require.NoError(t, err)
	writeAt(t, u, data[:len(data)-512], 0)
	writeAt(t, u, data[len(data)-512:], int64(len(data)-512))
	require.NoError(t, closeWrite(s, u))
	require.True(t, s.Provisional(im.ID))

	u, err = s.OpenWriteBy(alice, im.ID, false, w)
	require.NoError(t, err, "the writer's reopen")
	assert.Equal(t, StatusSaving, s.Get(im.ID).Status)
	_, err = os.Stat(filepath.Join(shared, im.ID+".vhd"))
	assert.True(t, os.IsNotExist(err), "the data file went back to staging: %v", err)
	writeAt(t, u, data[:4096], 0)
	require.NoError(t, closeWrite(s, u))
	got := s.Get(im.ID)
	require.Equal(t, StatusActive, got.Status, "kill reason: %s", got.Extra[KeyKillReason])
	assert.EqualValues(t, len(data), got.Size)
}
