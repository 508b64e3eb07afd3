package store

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A delete frees space, so it works on a full disk (issue 13 item 9): it
// needs deleteHeadroom, and with less than that it first gives back the
// store's reserve.
func TestDeleteOnFullDiskUsesReserve(t *testing.T) {
	dir := t.TempDir()
	reserve := filepath.Join(dir, "catalog", reserveName)
	// The disk's free bytes: extra, plus reserveSize once the reserve
	// is gone (as removing it gives its blocks back).
	var extra atomic.Int64
	extra.Store(1 << 40)
	old := freeSpace
	freeSpace = func(string) (int64, error) {
		free := extra.Load()
		if _, err := os.Stat(reserve); err != nil {
			free += reserveSize
		}
		return free, nil
	}
	t.Cleanup(func() { freeSpace = old })

	s := openStore(t, dir)
	fi, err := os.Stat(reserve)
	require.NoError(t, err, "Open makes the reserve")
	assert.EqualValues(t, reserveSize, fi.Size())
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	sealed, err := s.Create(alice, "sealed")
	require.NoError(t, err)
	require.NoError(t, upload(t, s, alice, sealed.ID, fixedVHD(t, 1<<20), 1<<20))
	queued, err := s.Create(alice, "queued")
	require.NoError(t, err)

	extra.Store(0) // the disk is full
	_, err = s.Create(alice, "new")
	assert.ErrorIs(t, err, syscall.ENOSPC, "other changes are refused")
	require.NoError(t, s.Delete(alice, sealed.ID), "a delete on a full disk")
	assert.Nil(t, s.Get(sealed.ID))
	_, err = os.Stat(reserve)
	assert.True(t, os.IsNotExist(err), "the delete gave the reserve back: %v", err)
	require.NoError(t, s.Delete(alice, queued.ID), "the reserve's room serves the next delete too")

	extra.Store(1 << 40) // room again: the next delete makes the reserve again
	im, err := s.Create(alice, "again")
	require.NoError(t, err)
	require.NoError(t, s.Delete(alice, im.ID))
	_, err = os.Stat(reserve)
	assert.NoError(t, err, "the reserve is made again once there is room")
	require.NoError(t, s.Close())
	r, err := Check(dir, CheckOptions{})
	require.NoError(t, err)
	assert.Empty(t, r.Problems)
}
