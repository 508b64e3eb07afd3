package store

import (
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckPropertyNoSpace: CheckSetProperty with SetAny and SetCreate (a property
// file's write and create) refuse with ErrNoSpace (ENOSPC) when the commit
// would not leave the catalog its headroom, as the commit itself would.
func TestCheckPropertyNoSpace(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 40)
	fakeFree(t, &free)
	s := openStore(t, t.TempDir())
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	require.NoError(t, s.CheckSetProperty(alice, im.ID, KeyMinRAM, "2048", SetAny))
	require.NoError(t, s.CheckSetProperty(alice, im.ID, "new", "", SetCreate))

	free.Store(catalogHeadroom - 1)
	for _, err := range []error{
		s.CheckSetProperty(alice, im.ID, KeyMinRAM, "2048", SetAny),
		s.CheckSetProperty(alice, im.ID, "new", "", SetCreate),
		s.SetProperty(alice, im.ID, KeyMinRAM, "2048", SetAny),
	} {
		assert.ErrorIs(t, err, ErrNoSpace)
		assert.ErrorIs(t, err, syscall.ENOSPC)
	}
	// The rules come first: a bad value is ErrInvalid on a full disk too.
	assert.ErrorIs(t, s.CheckSetProperty(alice, im.ID, KeyMinRAM, "x", SetAny), ErrInvalid)
}

// TestCheckCreate: CheckSetProperty with SetCreate refuses a key that exists (ErrExists), a
// bad or too long key, and a key over the quota, changing nothing.
func TestCheckCreate(t *testing.T) {
	s := openStore(t, t.TempDir())
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, im.ID, "k", "v", SetAny))
	assert.ErrorIs(t, s.CheckSetProperty(alice, im.ID, "k", "", SetCreate), ErrExists)
	assert.ErrorIs(t, s.CheckSetProperty(alice, im.ID, strings.Repeat("k", MaxKeyBytes+1), "", SetCreate), ErrInvalid)
	assert.NoError(t, s.CheckSetProperty(alice, im.ID, strings.Repeat("k", MaxKeyBytes), "", SetCreate))
	assert.ErrorIs(t, s.CheckSetProperty(bob, im.ID, "other", "", SetCreate), ErrPermission)
	_, ok := s.Get(im.ID).Property(strings.Repeat("k", MaxKeyBytes))
	assert.False(t, ok, "a check changes nothing")
}

// TestNameAndKeyLimits: names refuse control characters (0x01-0x1f,
// 0x7f); keys are at most 250 bytes, so that user.KEY is a valid
// attribute name.
func TestNameAndKeyLimits(t *testing.T) {
	for _, bad := range []string{"a\nb", "\t", "x\x1b", "del\x7f", "\x01", "cr\r"} {
		assert.ErrorIs(t, ValidName(bad), ErrInvalid, "%q", bad)
	}
	for _, good := range []string{"a b", "\xff\xfe", "ключ", "~!@#$%^&*()", strings.Repeat("n", 255)} {
		assert.NoError(t, ValidName(good), "%q", good)
	}
	assert.NoError(t, ValidKey(strings.Repeat("k", 250)))
	assert.ErrorIs(t, ValidKey(strings.Repeat("k", 251)), ErrInvalid)
	assert.Equal(t, 255, len("user.")+MaxKeyBytes)
}
