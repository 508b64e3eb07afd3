package store

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/pebblekv"
)

// deadlineBackend is the embedded catalog recording, for every call
// that takes a context, how long its deadline left (0: none).
type deadlineBackend struct {
	*pebblekv.DB
	mu   sync.Mutex
	left map[string][]time.Duration // by method
}

func (b *deadlineBackend) note(method string, ctx context.Context) {
	var left time.Duration
	if d, ok := ctx.Deadline(); ok {
		left = max(time.Until(d), time.Nanosecond)
	}
	b.mu.Lock()
	b.left[method] = append(b.left[method], left)
	b.mu.Unlock()
}

func (b *deadlineBackend) Scan(ctx context.Context, lo, hi string, rev int64, fn func(kv.Pair) error) (int64, error) {
	b.note("Scan", ctx)
	return b.DB.Scan(ctx, lo, hi, rev, fn)
}

func (b *deadlineBackend) Get(ctx context.Context, key string) (kv.Pair, error) {
	b.note("Get", ctx)
	return b.DB.Get(ctx, key)
}

func (b *deadlineBackend) Commit(ctx context.Context, batch *kv.Batch) (kv.Result, error) {
	b.note("Commit", ctx)
	return b.DB.Commit(ctx, batch)
}

// TestCatalogDeadlines: every call of the store into its catalog has a
// deadline: Options.CatalogTimeout for a commit or a read, the load's
// 60 s for Open's scans.
func TestCatalogDeadlines(t *testing.T) {
	dir := t.TempDir()
	db, err := pebblekv.Open(filepath.Join(dir, "catalog"), pebblekv.Options{})
	require.NoError(t, err)
	b := &deadlineBackend{DB: db, left: map[string][]time.Duration{}}
	s, err := Open(dir, Options{Catalog: b, CatalogTimeout: 3 * time.Second})
	require.NoError(t, err)
	for _, left := range b.left["Scan"] {
		assert.True(t, left > 50*time.Second && left <= loadTimeout, "a load scan's deadline: %v left", left)
	}
	b.left["Scan"] = nil
	im, err := s.Create(alice, "img")
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, im.ID, "k", "v", SetAny))
	require.NoError(t, s.RemoveProperty(alice, im.ID, "k"))
	require.NoError(t, upload(t, s, alice, im.ID, fixedVHD(t, 1<<20), 64<<10))
	require.NoError(t, s.Delete(alice, im.ID))
	require.NoError(t, s.Close())
	assert.NotEmpty(t, b.left["Commit"])
	assert.NotEmpty(t, b.left["Get"])
	for m, lefts := range b.left {
		for _, left := range lefts {
			assert.True(t, left > 0 && left <= 3*time.Second, "%s: deadline %v left, want at most the CatalogTimeout", m, left)
		}
	}
}
