package store

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPropertyWriteRefusedKeepsBuffer: a refused write that does not grow
// the buffer (an overwrite in place) leaves the writer's buffer as it was:
// its own reads do not show the refused bytes.
func TestPropertyWriteRefusedKeepsBuffer(t *testing.T) {
	s := newStore(t)
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, im.ID, KeyMinRAM, "1234", SetAny))
	w, err := s.OpenPropertyWrite(alice, im.ID, KeyMinRAM, false)
	require.NoError(t, err)
	assert.ErrorIs(t, w.WriteAt([]byte("ab\n"), 0), ErrInvalid)
	p := make([]byte, 16)
	n := w.ReadAt(p, 0)
	assert.Equal(t, "1234\n", string(p[:n]), "the writer's read after a refused write")
	require.NoError(t, w.End())
	v, _ := s.Get(im.ID).Property(KeyMinRAM)
	assert.Equal(t, "1234", v)
}
