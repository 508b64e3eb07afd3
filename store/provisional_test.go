package store

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A seal at the close of a read-write opener is provisional: only its
// writer reads the data (others ErrPermission, no by-id/ entry), a read
// attempt by another process does not make it final, and the writer's
// reopen continues the upload.
func TestProvisionalSealWriterOnly(t *testing.T) {
	s := newStore(t)
	im := queued(t, s, alice, "a")
	me := uint32(os.Getpid()) // a live process: the seal stays provisional
	w := Writer{PID: me, ReadWrite: true}
	data := fixedVHD(t, 1<<20)
	u, err := s.OpenWriteBy(alice, im.ID, true, w)
	require.NoError(t, err)
	writeAt(t, u, data, 0)
	require.NoError(t, closeWrite(s, u))
	im = s.Get(im.ID)
	require.Equal(t, StatusActive, im.Status)
	require.True(t, s.Provisional(im.ID))

	assert.False(t, s.DataVisible(im, true), "by-id/<id>/image.vhd while provisional")
	assert.True(t, s.DataVisible(im, false), "images/<name>/image.vhd while provisional")
	other := func() uint32 { return me + 1 }
	_, err = s.OpenReadBy(alice, im.ID, other)
	assert.ErrorIs(t, err, ErrPermission, "another process")
	_, err = s.OpenReadBy(Root, im.ID, other)
	assert.ErrorIs(t, err, ErrPermission, "another process, root")
	_, err = s.OpenRead(alice, im.ID)
	assert.ErrorIs(t, err, ErrPermission, "unknown process")
	f, err := s.OpenReadBy(alice, im.ID, func() uint32 { return me })
	require.NoError(t, err, "the writer reads its data")
	f.Close()
	assert.True(t, s.Provisional(im.ID), "still provisional after the refused reads")

	// The writer comes back: the upload goes on.
	u, err = s.OpenWriteBy(alice, im.ID, false, w)
	require.NoError(t, err)
	assert.Equal(t, StatusSaving, s.Get(im.ID).Status)
	require.NoError(t, closeWrite(s, u))
	im = s.Get(im.ID)
	assert.Equal(t, StatusActive, im.Status)
	assert.Empty(t, im.Extra[KeyDeactivateReason])
}
