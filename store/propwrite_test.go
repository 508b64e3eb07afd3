package store

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPropertyWrite: the property-file protocol, one state per writer:
// a line is checked at the write, the value set at Close/Sync after a
// write and at End after a truncation or creation alone, a refused write
// sets nothing, a created key exists only from its commit on.
func TestPropertyWrite(t *testing.T) {
	s := newStore(t)
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	val := func(key string) (string, bool) { return s.Get(im.ID).Property(key) }

	// echo v > new key: created, written, set at Close with SetCreate.
	w, err := s.CreatePropertyWrite(alice, im.ID, "k", false)
	require.NoError(t, err)
	assert.True(t, w.Uncommitted())
	require.NoError(t, w.WriteAt([]byte("v\n"), 0))
	_, ok := val("k")
	assert.False(t, ok, "set before the close")
	require.NoError(t, w.Close())
	v, _ := val("k")
	assert.Equal(t, "v", v)
	assert.False(t, w.Uncommitted())
	require.NoError(t, w.End())

	// A refused line: the value stays, nothing is set at Close or End.
	w, err = s.OpenPropertyWrite(alice, im.ID, KeyMinRAM, true)
	require.NoError(t, err)
	assert.ErrorIs(t, w.WriteAt([]byte("lots\n"), 0), ErrInvalid)
	require.NoError(t, w.Close())
	require.NoError(t, w.End())
	v, _ = val(KeyMinRAM)
	assert.Equal(t, "0", v, "min_ram after a refused write")

	// A created key whose write is refused never appears.
	w, err = s.CreatePropertyWrite(alice, im.ID, KeyMinDisk+"x", false)
	require.NoError(t, err)
	w2, err := s.CreatePropertyWrite(alice, im.ID, "taken", true)
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, im.ID, "taken", "first", SetAny))
	assert.ErrorIs(t, w2.WriteAt([]byte("second\n"), 0), ErrExists, "a key created meanwhile")
	require.NoError(t, w2.End())
	v, _ = val("taken")
	assert.Equal(t, "first", v)
	// Without O_EXCL a key created meanwhile is overwritten: last writer wins.
	w3, err := s.CreatePropertyWrite(alice, im.ID, "raced", false)
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, im.ID, "raced", "first", SetAny))
	require.NoError(t, w3.WriteAt([]byte("second\n"), 0))
	require.NoError(t, w3.Close())
	require.NoError(t, w3.End())
	v, _ = val("raced")
	assert.Equal(t, "second", v)
	require.NoError(t, w.End()) // touch: the empty value
	v, ok = val(KeyMinDisk + "x")
	assert.True(t, ok)
	assert.Equal(t, "", v)

	// Too big: Close says so and sets nothing.
	w, err = s.OpenPropertyWrite(alice, im.ID, "k", false)
	require.NoError(t, err)
	assert.ErrorIs(t, w.WriteAt([]byte("x"), MaxValueBytes+1), ErrTooBig)
	assert.ErrorIs(t, w.Close(), ErrTooBig)
	require.NoError(t, w.End())
	v, _ = val("k")
	assert.Equal(t, "v", v)

	// O_TRUNC and no write (": > k"): nothing at Close, "" at End; Sync
	// sets what was written.
	w, err = s.OpenPropertyWrite(alice, im.ID, "k", true)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	v, _ = val("k")
	assert.Equal(t, "v", v, "set at a close without a write")
	require.NoError(t, w.End())
	v, _ = val("k")
	assert.Equal(t, "", v)
	w, err = s.OpenPropertyWrite(alice, im.ID, "k", false)
	require.NoError(t, err)
	require.NoError(t, w.WriteAt([]byte("synced\n"), 0))
	require.NoError(t, w.Sync())
	v, _ = val("k")
	assert.Equal(t, "synced", v)
	require.NoError(t, w.End())

	// Not the owner: refused at open.
	_, err = s.OpenPropertyWrite(Caller{UID: 4242, GID: 4242}, im.ID, "k", false)
	assert.ErrorIs(t, err, ErrPermission)

	// A name change through a property file tells the old name (from the
	// commit) to OnCommit.
	var got []Change
	w, err = s.OpenPropertyWrite(alice, im.ID, KeyName, true)
	require.NoError(t, err)
	w.OnCommit = func(c Change) { got = append(got, c) }
	require.NoError(t, w.WriteAt([]byte("img2\n"), 0))
	require.NoError(t, w.Close())
	require.NoError(t, w.End())
	require.Len(t, got, 1)
	assert.Equal(t, "img", got[0].Old.Name)
	assert.Equal(t, "img2", got[0].New.Name)

	// Truncate by path of a property file.
	ch, err := s.SetPropertyFileAttr(alice, im.ID, "k", nil, AttrChange{HasSize: true, Size: 3})
	require.NoError(t, err)
	v, _ = ch.New.Property("k")
	assert.Equal(t, "syn", v)
	_, err = s.SetPropertyFileAttr(alice, im.ID, KeyChecksum, nil, AttrChange{})
	assert.ErrorIs(t, err, ErrImmutable)
}
