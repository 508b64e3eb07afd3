package store

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/pebblekv"
)

// TestNotIterableBackendIndexInMemory: a catalog backend that is not
// kv.Iterable (as etcd) opens, keeps no index keys in the catalog, and
// serves the property views from the index in memory: built from the
// records at Open, and kept in step with creates, sets, renames, removals
// and deletes.
func TestNotIterableBackendIndexInMemory(t *testing.T) {
	dir := t.TempDir()
	open := func() (*Store, *pebblekv.DB) {
		db, err := pebblekv.Open(filepath.Join(dir, "catalog"), pebblekv.Options{})
		require.NoError(t, err)
		s, err := Open(dir, Options{Catalog: notIterable{db}})
		require.NoError(t, err)
		return s, db
	}
	s, db := open()
	a, err := s.Create(alice, "a")
	require.NoError(t, err)
	b, err := s.Create(alice, "b")
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, a.ID, "os_distro", "debian", SetAny))
	require.NoError(t, s.SetProperty(alice, b.ID, "os_distro", "debian", SetAny))
	require.NoError(t, s.SetProperty(alice, b.ID, "hw", "x", SetAny))
	require.NoError(t, s.Rename(alice, b.ID, "c"))
	require.NoError(t, s.RemoveProperty(alice, b.ID, "hw"))

	check := func(s *Store) {
		t.Helper()
		got, err := s.ViewImages(alice, "os_distro", "debian")
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "c"}, names(got))
		got, err = s.ViewImages(alice, "name", "b")
		require.NoError(t, err)
		assert.Empty(t, got, "the old name")
		keys, err := s.ViewKeys(alice, nil)
		require.NoError(t, err)
		assert.Contains(t, keys, "os_distro")
		assert.NotContains(t, keys, "hw")
		has, err := s.ViewHasValue(alice, "name", "c")
		require.NoError(t, err)
		assert.True(t, has)
		require.NoError(t, s.CheckIndex())
	}
	check(s)
	n := 0
	_, err = db.Scan(t.Context(), prefixProp, endProp, 0, func(kv.Pair) error { n++; return nil })
	require.NoError(t, err)
	assert.Zero(t, n, "no index keys in the catalog")
	require.NoError(t, s.Close())

	s, _ = open()
	defer s.Close()
	check(s)
	require.NoError(t, s.Delete(alice, a.ID))
	got, err := s.ViewImages(alice, "os_distro", "debian")
	require.NoError(t, err)
	assert.Equal(t, []string{"c"}, names(got))
	require.NoError(t, s.CheckIndex())
}
