package pebblekv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imagefs/imagefs/store/kv"
)

var ctx = context.Background()

func scanAll(t *testing.T, d *DB, lo, hi string) map[string]string {
	t.Helper()
	out := map[string]string{}
	rev, err := d.Scan(ctx, lo, hi, 42, func(p kv.Pair) error {
		assert.EqualValues(t, 1, p.ModRev)
		out[p.Key] = string(p.Value)
		return nil
	})
	require.NoError(t, err)
	assert.EqualValues(t, 1, rev, "one revision, whatever was asked")
	return out
}

// TestBackend: the kv.Backend contract as the embedded catalog keeps it:
// atomic batches with conditions ignored (the store's lock makes it the
// only writer), ModRev 1 for every existing key and 0 for an absent one,
// Scan and NewIter over [lo, hi), no watch, files 0600, one process at a
// time.
func TestBackend(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "catalog")
	d, err := Open(dir, Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, d.Close()) }()
	assert.False(t, d.Shared())
	assert.Nil(t, d.Watch(ctx, "", 0))

	res, err := d.Commit(ctx, &kv.Batch{
		Conds: []kv.Cond{{Key: "a/1", ModRev: 7}, {Key: "b", ModRev: 0}}, // not checked
		Ops: []kv.Op{
			{Kind: kv.Put, Key: "a/1", Value: []byte("one")},
			{Kind: kv.Put, Key: "a/2", Value: []byte("two")},
			{Kind: kv.Put, Key: "a/3", Value: nil},
			{Kind: kv.Put, Key: "b", Value: []byte("bee"), Leased: true},
		},
	})
	require.NoError(t, err)
	assert.EqualValues(t, 1, res.Rev)
	assert.Equal(t, map[string]string{"a/1": "one", "a/2": "two", "a/3": ""}, scanAll(t, d, "a/", "a0"))

	p, err := d.Get(ctx, "b")
	require.NoError(t, err)
	assert.Equal(t, kv.Pair{Key: "b", Value: []byte("bee"), ModRev: 1, CreateRev: 1}, p)
	p, err = d.Get(ctx, "nope")
	require.NoError(t, err)
	assert.Zero(t, p.ModRev, "absent")

	_, err = d.Commit(ctx, &kv.Batch{Room: kv.Small, NoSync: true, Ops: []kv.Op{
		{Kind: kv.DeleteRange, Key: "a/1", End: "a/3"},
		{Kind: kv.Delete, Key: "b"},
		{Kind: kv.Delete, Key: "never"},
	}})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"a/3": ""}, scanAll(t, d, "", "\xff"))

	it, err := d.NewIter("a/", "a0")
	require.NoError(t, err)
	require.True(t, it.SeekGE([]byte("a/")))
	assert.Equal(t, "a/3", string(it.Key()))
	assert.False(t, it.Next())
	require.NoError(t, it.Close())

	stop := errors.New("stop")
	_, err = d.Scan(ctx, "", "\xff", 0, func(kv.Pair) error { return stop })
	assert.ErrorIs(t, err, stop, "fn's error ends the scan")

	_, err = Open(dir, Options{})
	assert.ErrorIs(t, err, ErrBusy, "one process at a time")

	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		fi, err := e.Info()
		require.NoError(t, err)
		assert.Zero(t, fi.Mode().Perm()&0o077, "%s is %v", e.Name(), fi.Mode())
	}
}

// TestRoom: a batch needs its size plus its Room's headroom free, else
// ENOSPC and nothing written; a Frees batch gives back the reserve to
// make room, and the reserve is made again once there is room.
func TestRoom(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "catalog")
	var free int64 = 1 << 40
	d, err := Open(dir, Options{FreeSpace: func(string) (int64, error) {
		if _, err := os.Stat(filepath.Join(dir, ReserveName)); err != nil {
			return free + ReserveSize, nil
		}
		return free, nil
	}})
	require.NoError(t, err)
	defer d.Close()
	d.RefillReserve()
	fi, err := os.Stat(d.ReservePath())
	require.NoError(t, err)
	assert.EqualValues(t, ReserveSize, fi.Size())
	assert.EqualValues(t, 0o600, fi.Mode().Perm())

	put := func(r kv.Room, key string) error {
		_, err := d.Commit(ctx, &kv.Batch{Room: r, Ops: []kv.Op{{Kind: kv.Put, Key: key, Value: []byte("v")}}})
		return err
	}
	free = GrowsHeadroom - 1
	err = put(kv.Grows, "grows")
	assert.ErrorIs(t, err, syscall.ENOSPC)
	assert.ErrorIs(t, d.Check(&kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: "x"}}}), syscall.ENOSPC)
	require.NoError(t, put(kv.Small, "small"))
	free = FreesHeadroom / 2
	assert.ErrorIs(t, put(kv.Small, "small2"), syscall.ENOSPC)
	require.NoError(t, put(kv.Frees, "frees"), "a delete uses the reserve")
	_, err = os.Stat(d.ReservePath())
	assert.True(t, os.IsNotExist(err), "the reserve was given back: %v", err)
	assert.Equal(t, map[string]string{"small": "v", "frees": "v"}, scanAll(t, d, "", "\xff"))

	free = 1 << 40
	require.NoError(t, put(kv.Grows, "grows"))
	_, err = os.Stat(d.ReservePath())
	assert.NoError(t, err, "the next commit with room makes the reserve again")
}
