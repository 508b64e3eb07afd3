package store

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imagefs/imagefs/store/kv/etcdkv"
)

// openData opens host's store in a new directory on c's catalog with the
// data directory data; the store is closed with the test.
func (c *sharedCatalog) openData(host, data string) (*Store, error) {
	t := c.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(testLog{t, host}, nil))
	b, err := etcdkv.Open(context.Background(), etcdkv.Config{Endpoints: c.eps, Namespace: c.ns, LeaseTTL: 2 * time.Second, Logger: log})
	require.NoError(t, err)
	d, err := NewLocalData(data)
	require.NoError(t, err)
	s, err := Open(filepath.Join(t.TempDir(), "store"), Options{Catalog: b, Data: d, Host: host, Logger: log})
	if err != nil {
		b.Close()
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	return s, nil
}

// TestDataDirWithoutRecord: a catalog that records no data directory
// (made before data directories had an identity, or whose first record
// was cut off) takes a data directory that holds data of its sealed
// images, writing its identity file, and refuses one that holds none
// (an empty directory: the shared one not mounted). A fresh catalog
// refuses a directory that is another catalog's (its identity file, and
// data files of no image of this catalog).
func TestDataDirWithoutRecord(t *testing.T) {
	c := newSharedCatalog(t)
	s, err := c.openData("host-a", c.data)
	require.NoError(t, err)
	im, err := s.Create(alice, "sealed")
	require.NoError(t, err)
	require.NoError(t, upload(t, s, alice, im.ID, fixedVHD(t, 1<<20), 64<<10))
	require.NoError(t, s.Close())
	// As before identities: no key, no identity file.
	cli := c.client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = cli.Delete(ctx, c.ns+keyDataDir)
	cancel()
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(c.data, dataIDFile)))

	empty := t.TempDir()
	_, err = c.openData("host-b", empty)
	require.ErrorIs(t, err, ErrWrongData)
	assert.Contains(t, err.Error(), "holds none of the data files of the catalog's 1 sealed images")
	_, err = os.Stat(filepath.Join(empty, dataIDFile))
	assert.ErrorIs(t, err, os.ErrNotExist, "no identity file written into a refused directory")

	s2, err := c.openData("host-b", c.data)
	require.NoError(t, err)
	require.NotNil(t, s2.Get(im.ID))
	id, err := os.ReadFile(filepath.Join(c.data, dataIDFile))
	require.NoError(t, err, "the identity file written by the mount that took the directory")
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	r, err := cli.Get(ctx, c.ns+keyDataDir)
	cancel()
	require.NoError(t, err)
	require.Len(t, r.Kvs, 1)
	assert.Contains(t, string(r.Kvs[0].Value), string(id[:32]))

	// A fresh catalog given this (another catalog's) data directory.
	c2 := newSharedCatalog(t)
	_, err = c2.openData("host-c", c.data)
	require.ErrorIs(t, err, ErrWrongData)
	assert.Contains(t, err.Error(), "is another catalog's data directory")
}
