package store

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOpenUploadRead: a scratch upload is read by its image's owner and
// root only; a member who sees the image gets ErrPermission, a user who
// does not see it ErrNotFound.
func TestOpenUploadRead(t *testing.T) {
	s := newStore(t)
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, im.ID, KeyVisibility, "shared", SetAny))
	require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, "1002", SetAny))
	u, err := s.CreateScratch(alice, im.ID, "disk.vhd")
	require.NoError(t, err)
	defer s.EndWriter(u)
	carol := Caller{UID: 1003, GID: 1003}

	assert.NoError(t, s.OpenUploadRead(alice, u))
	assert.NoError(t, s.OpenUploadRead(Root, u))
	assert.ErrorIs(t, s.OpenUploadRead(bob, u), ErrPermission)
	assert.ErrorIs(t, s.OpenUploadRead(carol, u), ErrNotFound)
}

// TestCreateRecordsGID: an image keeps its creator's gid, across a
// reopen of the store.
func TestCreateRecordsGID(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	im, err := s.Create(Caller{UID: 1001, GID: 2001}, "img")
	require.NoError(t, err)
	assert.Equal(t, uint32(2001), im.GID)
	require.NoError(t, s.Close())
	s = openStore(t, dir)
	defer s.Close()
	assert.Equal(t, uint32(2001), s.Get(im.ID).GID)
}
