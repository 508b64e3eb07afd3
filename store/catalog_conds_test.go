package store

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/pebblekv"
)

// condsBackend is the embedded catalog recording the conditions of every
// batch it commits.
type condsBackend struct {
	*pebblekv.DB
	conds [][]kv.Cond
}

func (b *condsBackend) Commit(ctx context.Context, batch *kv.Batch) (kv.Result, error) {
	b.conds = append(b.conds, batch.Conds)
	return b.DB.Commit(ctx, batch)
}

// TestCommitConds: each change's batch carries the conditions a shared
// catalog checks (the embedded one ignores them): img/<id> at the ModRev
// the published record has (0 for a new image), name/<n> absent when a
// name is claimed, seq/ino at its ModRev when the inode sequence
// advances; and a caller's backend (Options.Catalog) serves the store.
func TestCommitConds(t *testing.T) {
	dir := t.TempDir()
	db, err := pebblekv.Open(filepath.Join(dir, "catalog"), pebblekv.Options{})
	require.NoError(t, err)
	b := &condsBackend{DB: db}
	s, err := Open(dir, Options{Catalog: b})
	require.NoError(t, err)
	b.conds = nil // the index's build at Open

	a, err := s.Create(alice, "a")
	require.NoError(t, err)
	img := prefixImage + a.ID
	assert.Equal(t, []kv.Cond{cond(img, 0), cond("name/a", 0), cond(keySeqIno, 0)}, b.conds[0], "a new image, a new catalog")
	assert.EqualValues(t, 1, a.rev)
	b2, err := s.Create(alice, "b")
	require.NoError(t, err)
	assert.Equal(t, []kv.Cond{cond(prefixImage+b2.ID, 0), cond("name/b", 0), cond(keySeqIno, 1)}, b.conds[1])

	require.NoError(t, s.SetProperty(alice, a.ID, "os_distro", "x", SetAny))
	assert.Equal(t, []kv.Cond{cond(img, 1)}, b.conds[2])
	require.NoError(t, s.Rename(alice, a.ID, "c"))
	assert.Equal(t, []kv.Cond{cond(img, 1), cond("name/c", 0)}, b.conds[3])
	require.NoError(t, s.Delete(alice, a.ID))
	assert.Equal(t, []kv.Cond{cond(img, 1)}, b.conds[4])
	require.NoError(t, s.Close())

	s = openStore(t, dir)
	defer s.Close()
	assert.Nil(t, s.Get(a.ID))
	got := s.Get(b2.ID)
	require.NotNil(t, got)
	assert.EqualValues(t, 1, got.rev, "loaded records have their key's ModRev")
	assert.EqualValues(t, 1, s.seqRev)
}

func cond(key string, modRev int64) kv.Cond { return kv.Cond{Key: key, ModRev: modRev} }

// notIterable is a backend the store cannot keep its property index in.
type notIterable struct{ kv.Backend }
