package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Catalog writes that fail: a full disk is refused before Pebble sees it
// (ENOSPC, nothing changed); a commit that fails inside Pebble (an I/O
// error) is ErrCatalog, never a panic, and changes nothing, in memory or
// on disk, then or after a restart.

// fakeFree makes the catalog see free bytes on its filesystem until the
// test ends.
func fakeFree(t *testing.T, free *atomic.Int64) {
	old := freeSpace
	freeSpace = func(string) (int64, error) { return free.Load(), nil }
	t.Cleanup(func() { freeSpace = old })
}

func TestCatalogFullDiskRefusesWithENOSPC(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 40)
	fakeFree(t, &free)
	dir := t.TempDir()
	s := openStore(t, dir)
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
	data := fixedVHD(t, 1<<20)
	sealed, _ := s.Create(alice, "sealed")
	require.NoError(t, upload(t, s, alice, sealed.ID, data, 1<<20))
	before := s.Get(im.ID)

	free.Store(catalogHeadroom - 1) // the disk is (nearly) full
	err = s.SetProperty(alice, im.ID, "os_distro", "hyperos", SetAny)
	assert.ErrorIs(t, err, syscall.ENOSPC)
	assert.NotErrorIs(t, err, ErrCatalog, "a full disk is ENOSPC, not EIO")
	_, err = s.Create(alice, "new")
	assert.ErrorIs(t, err, syscall.ENOSPC)
	assert.Same(t, before, s.Get(im.ID), "a refused write changes nothing")
	assert.Nil(t, s.Lookup("new"))
	ims, err := s.ViewImages(Root, "os_distro", "superos")
	require.NoError(t, err, "reads go on")
	assert.Equal(t, []string{"img"}, imageNames(ims))

	// Small commits that free space or end an upload still go through
	// with less room: a refused upload's kill, a delete.
	free.Store(smallHeadroom + 64<<10)
	bad, err := s.Create(Root, "bad")
	assert.ErrorIs(t, err, syscall.ENOSPC)
	assert.Nil(t, bad)
	require.NoError(t, s.Delete(alice, sealed.ID))

	free.Store(1 << 40)
	require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "hyperos", SetAny), "space back, writes work")
	require.NoError(t, s.CheckIndex())
	require.NoError(t, s.Close())
	r, err := Check(dir, CheckOptions{})
	require.NoError(t, err)
	assert.Empty(t, r.Problems)
}

// failingCatalog opens a store whose catalog's WAL writes fail while the
// returned toggle is on.
func failingCatalog(t *testing.T, dir string) (*Store, *errorfs.Toggle) {
	t.Helper()
	toggle := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".log") {
			return errors.New("injected: input/output error")
		}
		return nil
	})}
	s, err := Open(dir, Options{catalogFS: errorfs.Wrap(vfs.Default, toggle)})
	require.NoError(t, err)
	return s, toggle
}

func TestCatalogCommitFailureIsEIONotPanic(t *testing.T) {
	dir := t.TempDir()
	s, toggle := failingCatalog(t, dir)
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
	before := s.Get(im.ID)

	toggle.On()
	err = s.SetProperty(alice, im.ID, "os_distro", "hyperos", SetAny)
	require.ErrorIs(t, err, ErrCatalog)
	assert.Same(t, before, s.Get(im.ID), "the record in memory is unchanged")
	toggle.Off()
	// The failed batch may sit in Pebble's memtable: the catalog is
	// neither written nor read any more, until the store is opened again.
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, "os_distro", "other", SetAny), ErrCatalog)
	_, err = s.Create(alice, "new")
	assert.ErrorIs(t, err, ErrCatalog)
	_, err = s.ViewImages(Root, "os_distro", "hyperos")
	assert.ErrorIs(t, err, ErrCatalog, "views do not show the failed change")
	assert.Equal(t, "superos", s.Get(im.ID).Extra["os_distro"], "records are still served")
	s.Close()

	s = openStore(t, dir)
	defer s.Close()
	got := s.Get(im.ID)
	require.NotNil(t, got)
	assert.Equal(t, "superos", got.Extra["os_distro"], "after a restart the failed write is not there")
	assert.Nil(t, s.Lookup("new"))
	require.NoError(t, s.CheckIndex())
	ims, err := s.ViewImages(Root, "os_distro", "superos")
	require.NoError(t, err)
	assert.Equal(t, []string{"img"}, imageNames(ims))
}

// A refused upload gives its space back even when the catalog cannot
// record the kill; the image is killed at the next Open at the latest.
func TestRefusedUploadFreesSpaceWhenCatalogFails(t *testing.T) {
	dir := t.TempDir()
	s, toggle := failingCatalog(t, dir)
	im, _ := s.Create(alice, "img")
	u, err := s.OpenWrite(alice, im.ID, false)
	require.NoError(t, err)
	_, err = u.WriteAt([]byte(strings.Repeat("not a vhd ", 1000)), 0)
	require.NoError(t, err)
	toggle.On()
	err = s.CloseWriter(u)
	require.Error(t, err)
	s.EndWriter(u)
	toggle.Off()
	ents, err := os.ReadDir(filepath.Join(dir, "staging"))
	require.NoError(t, err)
	assert.Empty(t, ents, "the staging file of a refused upload is removed")
	assert.NotEqual(t, StatusActive, s.Get(im.ID).Status)
	s.Close()

	s = openStore(t, dir)
	defer s.Close()
	assert.Equal(t, StatusKilled, s.Get(im.ID).Status)
}

// A seal whose record cannot be committed leaves no sealed data behind
// (no orphan, nothing half-sealed), and the image is not active, then or
// after a restart.
func TestSealCommitFailureLeavesNoData(t *testing.T) {
	dir := t.TempDir()
	s, toggle := failingCatalog(t, dir)
	im, _ := s.Create(alice, "img")
	u, err := s.OpenWrite(alice, im.ID, false)
	require.NoError(t, err)
	_, err = u.WriteAt(fixedVHD(t, 1<<20), 0)
	require.NoError(t, err)
	toggle.On()
	err = s.CloseWriter(u)
	require.ErrorIs(t, err, ErrCatalog)
	s.EndWriter(u)
	toggle.Off()
	assert.NotEqual(t, StatusActive, s.Get(im.ID).Status)
	_, err = os.Stat(filepath.Join(dir, "data", im.ID+".vhd"))
	assert.ErrorIs(t, err, os.ErrNotExist, "no sealed data without a sealed record")
	// Deleting it now leaves nothing behind either.
	require.Error(t, s.Delete(alice, im.ID), "the catalog is broken until reopened")
	s.Close()

	s = openStore(t, dir)
	assert.Equal(t, StatusKilled, s.Get(im.ID).Status)
	require.NoError(t, s.Delete(alice, im.ID))
	require.NoError(t, s.Close())
	r, err := Check(dir, CheckOptions{})
	require.NoError(t, err)
	assert.Empty(t, r.Problems)
}
