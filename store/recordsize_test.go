package store

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRecordSizeLimit: a property change that would make the record's
// encoding larger than MaxRecordBytes is refused with ErrQuota (ENOSPC)
// and changes nothing, checked by CheckSetProperty too (a property
// file's write) and by a rename onto a longer key; the record in the
// catalog stays under the limit, and after a removal a change fits again.
func TestRecordSizeLimit(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	big := strings.Repeat("v", MaxValueBytes)
	n := 0
	for ; n < 100; n++ {
		key := fmt.Sprintf("k%02d", n)
		if err = s.CheckSetProperty(alice, im.ID, key, big, SetAny); err != nil {
			break
		}
		require.NoError(t, s.SetProperty(alice, im.ID, key, big, SetAny))
	}
	// 15 values of 65535 bytes fit in 1 MiB, the 16th does not.
	require.Equal(t, 15, n)
	assert.ErrorIs(t, err, ErrQuota)
	err = s.SetProperty(alice, im.ID, "k15", big, SetAny)
	assert.ErrorIs(t, err, ErrQuota)
	assert.Contains(t, err.Error(), "limit 1048576")
	_, ok := s.Get(im.ID).Property("k15")
	assert.False(t, ok)
	// Filled up to the limit with a smaller value, a rename of a
	// property onto a longer key is refused (the key is in the record
	// twice), onto a key as long is not.
	size := func() int {
		n, err := jsonSize(s.Get(im.ID))
		require.NoError(t, err)
		return n
	}
	l := MaxRecordBytes - size()
	for ; l > 0 && s.SetProperty(alice, im.ID, "pad", strings.Repeat("p", l), SetAny) != nil; l-- {
	}
	require.Positive(t, l)
	assert.LessOrEqual(t, MaxRecordBytes-size(), 1)
	assert.ErrorIs(t, s.RenameProperty(alice, im.ID, "k00", "k00long", RenameReplace), ErrQuota)
	_, ok = s.Get(im.ID).Property("k00")
	assert.True(t, ok)
	require.NoError(t, s.RenameProperty(alice, im.ID, "k00", "k99", RenameReplace))
	require.NoError(t, s.RemoveProperty(alice, im.ID, "k99"))
	require.NoError(t, s.RemoveProperty(alice, im.ID, "pad"))
	require.NoError(t, s.SetProperty(alice, im.ID, "k15", big, SetAny))
	require.NoError(t, s.Close())

	s = openStore(t, dir)
	defer s.Close()
	assert.LessOrEqual(t, size(), MaxRecordBytes)
	_, ok = s.Get(im.ID).Property("k15")
	assert.True(t, ok)
}
