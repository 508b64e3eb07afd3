package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSharedHostIDClaimed: a second store with the host id of a live one
// is refused (ErrBusy naming the id) instead of taking its uploads for
// its own; once the first is closed, the id is free again at once.
func TestSharedHostIDClaimed(t *testing.T) {
	defer func(d time.Duration) { hostClaimWait = d }(hostClaimWait)
	hostClaimWait = 500 * time.Millisecond
	ns, data := sharedNS(t), t.TempDir()
	a, _ := openHost(t, ns, "host-a", data)
	b := openEtcd(t, ns)
	d, err := NewLocalData(data)
	require.NoError(t, err)
	_, err = Open(t.TempDir(), Options{Catalog: b, Data: d, Host: "host-a"})
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrBusy), "%v", err)
	assert.Contains(t, err.Error(), `host id "host-a"`)
	require.NoError(t, a.Close())
	c := openEtcd(t, ns)
	s, err := Open(t.TempDir(), Options{Catalog: c, Data: d, Host: "host-a"})
	require.NoError(t, err, "the id is free once its daemon closed")
	s.Close()
	b.Close()
}

// TestStoreKindMarked: a single-host store is not opened on a shared
// catalog (its images would be hidden), and a host's store of a shared
// catalog is not opened as a single-host one (it would start an empty
// catalog of its own); both errors say what to do.
func TestStoreKindMarked(t *testing.T) {
	single := filepath.Join(t.TempDir(), "single")
	s, err := Open(single, Options{})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	ns, data := sharedNS(t), t.TempDir()
	b := openEtcd(t, ns)
	defer b.Close()
	d, err := NewLocalData(data)
	require.NoError(t, err)
	_, err = Open(single, Options{Catalog: b, Data: d, Host: "h"})
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrInvalid))
	assert.Contains(t, err.Error(), "imagefs migrate")

	host := filepath.Join(t.TempDir(), "host")
	h, err := Open(host, Options{Catalog: b, Data: d, Host: "h"})
	require.NoError(t, err)
	require.NoError(t, h.Close())
	_, err = Open(host, Options{})
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrInvalid))
	assert.Contains(t, err.Error(), "mount it with --catalog")
}
