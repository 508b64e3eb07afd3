package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/etcdkv"
)

// The snapshot of a shared catalog (snapshot.go) and Open's list (watch.go:
// loadShared), against the test cluster.

// sameView asserts that host got's view of the catalog is host want's:
// the same records (ids, names, ModRevs, properties), names, property
// index, upload keys and next inode base.
func sameView(t *testing.T, want, got *Store) {
	t.Helper()
	w, g := want.List(), got.List()
	require.Equal(t, names(w), names(g))
	for _, im := range w {
		o := got.Get(im.ID)
		require.NotNil(t, o, im.Name)
		assert.Equal(t, im.rev, o.rev, im.Name)
		assert.Equal(t, im.Extra, o.Extra, im.Name)
		assert.Equal(t, im.Status, o.Status, im.Name)
		assert.Equal(t, im.ID, got.Lookup(im.Name).ID, im.Name)
	}
	wi, err := want.PropertyIndex()
	require.NoError(t, err)
	gi, err := got.PropertyIndex()
	require.NoError(t, err)
	assert.Equal(t, wi, gi)
	require.NoError(t, got.CheckIndex())
	want.mu.Lock()
	wu, wn := want.uploadKeys, want.nextIno
	want.mu.Unlock()
	got.mu.Lock()
	defer got.mu.Unlock()
	for id, k := range wu {
		if k.rev != 0 {
			assert.Equal(t, k, got.uploadKeys[id], "upload key of %s", id)
		}
	}
	assert.Equal(t, wn, got.nextIno)
}

// fillCatalog makes n images on s (spread over the load's 16 ranges) with
// a property each, and returns them.
func fillCatalog(t *testing.T, s *Store, n int) []*Image {
	t.Helper()
	var out []*Image
	for i := range n {
		im, err := s.Create(alice, fmt.Sprintf("img-%03d", i))
		require.NoError(t, err)
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", fmt.Sprintf("d%d", i%3), SetAny))
		out = append(out, s.Get(im.ID))
	}
	return out
}

// changeWhileDown makes changes of every kind on host b: a create, a
// property set, a rename, a delete and an upload started.
func changeWhileDown(t *testing.T, b *Store, ims []*Image) {
	t.Helper()
	_, err := b.Create(alice, "added")
	require.NoError(t, err)
	require.NoError(t, b.SetProperty(alice, ims[0].ID, "os_distro", "changed", SetAny))
	require.NoError(t, b.Rename(alice, ims[1].ID, "renamed"))
	require.NoError(t, b.Delete(alice, ims[2].ID))
	_, err = b.OpenWrite(alice, ims[3].ID, false) // abandoned when b closes
	require.NoError(t, err)
}

// TestSharedSnapshotRestart: a host that closes writes its view to
// STORE/catalog-snapshot; opened again, it starts from it (no list),
// catches up with what another host changed meanwhile (create, set,
// rename, delete, an upload), so its view is the other host's, and
// follows the catalog afterwards.
func TestSharedSnapshotRestart(t *testing.T) {
	cat := newSharedCatalog(t)
	dir := filepath.Join(t.TempDir(), "store")
	a, _ := cat.open("a", dir)
	b, _ := cat.open("b", "")
	ims := fillCatalog(t, a, 40)
	within(t, "B sees them", func() bool { return len(b.List()) == 40 })
	require.NoError(t, a.Close())
	st, err := os.Stat(filepath.Join(dir, snapshotName))
	require.NoError(t, err, "Close writes the snapshot")
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	changeWhileDown(t, b, ims)

	a2, _ := cat.open("a", dir)
	assert.True(t, a2.remote.fromSnapshot, "opened from the snapshot")
	assert.Zero(t, a2.remote.lists, "no list")
	sameView(t, b, a2)
	assert.Nil(t, a2.Lookup(ims[1].Name), "the old name is gone")
	assert.Nil(t, a2.Get(ims[2].ID), "the deleted image is gone")

	// It follows B, and commits on what it caught up with.
	require.NoError(t, b.SetProperty(alice, ims[4].ID, "os_distro", "later", SetAny))
	within(t, "B's later set", func() bool { v, _ := a2.Get(ims[4].ID).Property("os_distro"); return v == "later" })
	require.NoError(t, a2.SetProperty(alice, ims[0].ID, "os_version", "1", SetAny))
	im, err := a2.Create(alice, "after")
	require.NoError(t, err)
	for _, o := range b.List() {
		if o.ID != im.ID {
			assert.Greater(t, im.InoBase, o.InoBase, "a new inode range")
		}
	}
	within(t, "A's create on B", func() bool { return b.Get(im.ID) != nil })
}

// TestSharedSnapshotFallback: a snapshot Open cannot use makes it list
// the catalog, with the same view as a host that never stopped: a
// corrupt or truncated file, one of another catalog, one ahead of the
// catalog's revision, one whose newest record the catalog's history does
// not hold at its revision, and one whose revision the cluster compacted.
func TestSharedSnapshotFallback(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, cat *sharedCatalog, path string)
	}{
		{"corrupt", func(t *testing.T, _ *sharedCatalog, path string) {
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			b[len(b)/2] ^= 0x20
			require.NoError(t, os.WriteFile(path, b, 0o600))
		}},
		{"truncated", func(t *testing.T, _ *sharedCatalog, path string) {
			st, err := os.Stat(path)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(path, st.Size()/2))
		}},
		{"other catalog", func(t *testing.T, _ *sharedCatalog, path string) {
			// The snapshot of a host of another namespace, with its
			// images, in this host's STORE.
			other := newSharedCatalog(t)
			odir := filepath.Join(t.TempDir(), "store")
			o, _ := other.open("a", odir)
			fillCatalog(t, o, 3)
			require.NoError(t, o.Close())
			b, err := os.ReadFile(filepath.Join(odir, snapshotName))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, b, 0o600))
		}},
		{"ahead", func(t *testing.T, _ *sharedCatalog, path string) {
			sn, err := readSnapshot(path)
			require.NoError(t, err)
			sn.rev += 1 << 40
			require.NoError(t, writeSnapshot(path, sn))
		}},
		{"history differs", func(t *testing.T, _ *sharedCatalog, path string) {
			// What a cluster restored from a backup older than the
			// snapshot and written to since gives: a record of the
			// snapshot the catalog never had at its revision, whose
			// delete no watch shows.
			sn, err := readSnapshot(path)
			require.NoError(t, err)
			ph := *sn.images[0]
			ph.ID, ph.Name, ph.InoBase = uuid.NewString(), "phantom", 999<<20
			for _, im := range sn.images { // the newest (a revision B wrote at since)
				ph.rev = max(ph.rev, im.rev+1)
			}
			sn.images = append(sn.images, &ph)
			require.NoError(t, writeSnapshot(path, sn))
		}},
		{"compacted", func(t *testing.T, cat *sharedCatalog, _ string) {
			cli := cat.client()
			resp, err := cli.Put(context.Background(), cat.ns+"compaction-probe", "x")
			require.NoError(t, err)
			_, err = cli.Compact(context.Background(), resp.Header.Revision)
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cat := newSharedCatalog(t)
			dir := filepath.Join(t.TempDir(), "store")
			a, _ := cat.open("a", dir)
			b, _ := cat.open("b", "")
			ims := fillCatalog(t, a, 20)
			within(t, "B sees them", func() bool { return len(b.List()) == 20 })
			require.NoError(t, a.Close())
			changeWhileDown(t, b, ims)
			tc.spoil(t, cat, filepath.Join(dir, snapshotName))

			a2, _ := cat.open("a", dir)
			assert.False(t, a2.remote.fromSnapshot, "the snapshot is not used")
			assert.Equal(t, 1, a2.remote.lists, "the catalog is listed")
			sameView(t, b, a2)
			require.NoError(t, b.SetProperty(alice, ims[4].ID, "os_distro", "later", SetAny))
			within(t, "B's later set", func() bool { v, _ := a2.Get(ims[4].ID).Property("os_distro"); return v == "later" })
		})
	}
}

// TestSharedOpenListsAgainWhenCompacted: the revision Open lists at is
// compacted during the list (etcd's auto-compaction on a busy catalog):
// Open lists again at a new revision, without claiming the host id again
// (that would wait for its own claim, hostClaimWait), and serves the
// whole catalog; when every list is compacted, Open fails after
// listTries with ErrCatalog wrapping kv.ErrCompacted.
func TestSharedOpenListsAgainWhenCompacted(t *testing.T) {
	cat := newSharedCatalog(t)
	a, _ := cat.open("a", "")
	fillCatalog(t, a, 40)
	cli := cat.client()
	compactNow := func() {
		resp, err := cli.Put(context.Background(), cat.ns+"compaction-probe", "x")
		require.NoError(t, err)
		_, err = cli.Compact(context.Background(), resp.Header.Revision)
		require.NoError(t, err)
	}
	var listed []int64
	testHookListing = func(rev int64) {
		listed = append(listed, rev)
		if len(listed) == 1 {
			compactNow()
		}
	}
	t.Cleanup(func() { testHookListing = nil })
	start := time.Now()
	b, _ := cat.open("b", "")
	took := time.Since(start)
	assert.Len(t, listed, 2, "listed twice")
	assert.Equal(t, 2, b.remote.lists)
	assert.Less(t, took, hostClaimWait/2, "the host id is claimed once")
	sameView(t, a, b)
	require.NoError(t, a.SetProperty(alice, a.List()[0].ID, "os_distro", "later", SetAny))
	within(t, "A's later set", func() bool { v, _ := b.Get(a.List()[0].ID).Property("os_distro"); return v == "later" })

	// Compacted at every try: Open gives up.
	listed = nil
	testHookListing = func(rev int64) {
		listed = append(listed, rev)
		compactNow()
	}
	be := openEtcd(t, cat.ns)
	d, err := NewLocalData(cat.data)
	require.NoError(t, err)
	_, err = Open(filepath.Join(t.TempDir(), "store"), Options{Catalog: be, Data: d, Host: "c",
		Logger: slog.New(slog.NewTextHandler(testLog{t, "c"}, nil))})
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrCatalog) && errors.Is(err, kv.ErrCompacted), "err: %v", err)
	assert.Len(t, listed, listTries)
}

// logBuf is a log's text, safe for the store's goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// openLogged opens host's store in dir on the catalog as open does, and
// returns its log too.
func (c *sharedCatalog) openLogged(host, dir string) (*Store, *logBuf) {
	t := c.t
	t.Helper()
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testLog{t, host}, lb), nil))
	b, err := etcdkv.Open(context.Background(), etcdkv.Config{Endpoints: c.eps, Namespace: c.ns, LeaseTTL: 2 * time.Second, Logger: log})
	require.NoError(t, err)
	d, err := NewLocalData(c.data)
	require.NoError(t, err)
	s, err := Open(dir, Options{Catalog: b, Data: d, Host: host, Logger: log})
	require.NoError(t, err)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { s.Close() }) })
	return s, lb
}

// catalogIDOf reads meta/catalog-id in cat's namespace ("" when absent).
func catalogIDOf(t *testing.T, cat *sharedCatalog) string {
	t.Helper()
	resp, err := cat.client().Get(context.Background(), cat.ns+keyCatalogID)
	require.NoError(t, err)
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// TestSharedSnapshotRecreatedCluster: a snapshot taken of a catalog that
// is gone, under the cluster id and namespace a recreated etcd cluster
// repeats (scripts/etcd.sh's members, names and peer URLs are the same
// every time; its revision passes the snapshot's after some writes), is
// not trusted: the catalog there has another meta/catalog-id, so Open
// lists it (one log line says why) and serves what etcd holds, not the
// snapshot's images. (The earlier catalog is another namespace of this
// cluster, its snapshot's identity made the later one's: what two
// incarnations of a cluster with one cluster id give; the integration
// test TestSharedSnapshotRecreatedCluster recreates a real cluster.)
func TestSharedSnapshotRecreatedCluster(t *testing.T) {
	old := newSharedCatalog(t)
	dir := filepath.Join(t.TempDir(), "store")
	a, _ := old.open("a", dir)
	ghosts := fillCatalog(t, a, 5)
	require.NoError(t, a.Close())
	path := filepath.Join(dir, snapshotName)
	sn, err := readSnapshot(path)
	require.NoError(t, err)
	require.Equal(t, catalogIDOf(t, old), sn.catalogID, "the snapshot holds the catalog's id")
	require.NotEmpty(t, sn.catalogID)

	cat := newSharedCatalog(t)
	b, _ := cat.open("b", "")
	fillCatalog(t, b, 3)
	id := catalogIDOf(t, cat)
	require.NotEmpty(t, id, "the first mount creates the catalog id")
	require.NotEqual(t, sn.catalogID, id)
	sn.identity = b.catalogIdentity() // the same cluster id and namespace
	require.NoError(t, writeSnapshot(path, sn))

	a2, lb := cat.openLogged("a", dir)
	assert.False(t, a2.remote.fromSnapshot, "the snapshot of the earlier catalog is not used")
	assert.Equal(t, 1, a2.remote.lists, "the catalog is listed")
	assert.Contains(t, lb.String(), "catalog snapshot ignored: it is of an earlier catalog")
	for _, g := range ghosts {
		assert.Nil(t, a2.Get(g.ID), "an image of the earlier catalog")
	}
	sameView(t, b, a2)
	require.NoError(t, a2.Close())
	sn2, err := readSnapshot(path)
	require.NoError(t, err)
	assert.Equal(t, id, sn2.catalogID, "the next snapshot is the catalog's")
	a3, _ := cat.open("a", dir)
	assert.True(t, a3.remote.fromSnapshot, "and is used")
	sameView(t, b, a3)
}

// TestSharedSnapshotNamespaceRecreated: the namespace deleted (etcdctl
// del --prefix: the cluster and its revisions go on) and made again by
// another host's mount: the snapshot of the earlier catalog is not
// trusted, whether the catalog has a new id already (made by the other
// host) or this Open makes it. A host mounted while its namespace is
// deleted writes no snapshot at Close unless a new catalog id came
// meanwhile, and then the snapshot carries the new id.
func TestSharedSnapshotNamespaceRecreated(t *testing.T) {
	wipe := func(t *testing.T, cat *sharedCatalog) {
		_, err := cat.client().Delete(context.Background(), cat.ns, clientv3.WithPrefix())
		require.NoError(t, err)
	}
	for _, other := range []bool{true, false} {
		t.Run(fmt.Sprintf("new-id-by-another-host=%v", other), func(t *testing.T) {
			cat := newSharedCatalog(t)
			dir := filepath.Join(t.TempDir(), "store")
			a, _ := cat.open("a", dir)
			fillCatalog(t, a, 5)
			first := catalogIDOf(t, cat)
			require.NoError(t, a.Close())
			wipe(t, cat)
			var b *Store
			if other {
				b, _ = cat.open("b", "")
				fillCatalog(t, b, 2)
			}
			a2, lb := cat.openLogged("a", dir)
			assert.False(t, a2.remote.fromSnapshot, "the snapshot of the deleted catalog is not used")
			assert.Equal(t, 1, a2.remote.lists)
			assert.Contains(t, lb.String(), "catalog snapshot ignored: it is of an earlier catalog")
			assert.NotEqual(t, first, catalogIDOf(t, cat))
			assert.NotEmpty(t, catalogIDOf(t, cat))
			if other {
				sameView(t, b, a2)
			} else {
				assert.Empty(t, a2.List())
			}
		})
	}

	t.Run("deleted-while-mounted", func(t *testing.T) {
		cat := newSharedCatalog(t)
		dir := filepath.Join(t.TempDir(), "store")
		a, _ := cat.open("a", dir)
		fillCatalog(t, a, 3)
		wipe(t, cat)
		within(t, "A sees the images go", func() bool { return len(a.List()) == 0 })
		a.mu.Lock()
		assert.Empty(t, a.remote.catalogID, "the watch reports the id's delete")
		a.mu.Unlock()
		require.NoError(t, a.Close())
		_, err := os.Stat(filepath.Join(dir, snapshotName))
		assert.ErrorIs(t, err, os.ErrNotExist, "no snapshot without a catalog id")

		// Made again by another host while A is mounted: A's
		// snapshot carries the new id, and is used.
		a2, _ := cat.open("a", dir)
		wipe(t, cat)
		within(t, "A's view empty", func() bool { a2.mu.Lock(); defer a2.mu.Unlock(); return a2.remote.catalogID == "" })
		b, _ := cat.open("b", "")
		fillCatalog(t, b, 2)
		id := catalogIDOf(t, cat)
		within(t, "A follows", func() bool {
			a2.mu.Lock()
			defer a2.mu.Unlock()
			return a2.remote.catalogID == id && len(a2.images) == 2
		})
		require.NoError(t, a2.Close())
		sn, err := readSnapshot(filepath.Join(dir, snapshotName))
		require.NoError(t, err)
		assert.Equal(t, id, sn.catalogID)
		a3, _ := cat.open("a", dir)
		assert.True(t, a3.remote.fromSnapshot)
		sameView(t, b, a3)
	})
}

// TestSharedCatalogIDOnce: hosts mounting an empty namespace at once
// agree on one catalog id: it is created once (committed only while
// absent), the others read it.
func TestSharedCatalogIDOnce(t *testing.T) {
	cat := newSharedCatalog(t)
	stores := make([]*Store, 4)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { stores[i], _ = cat.open(fmt.Sprintf("h%d", i), "") })
	}
	wg.Wait()
	id := catalogIDOf(t, cat)
	require.NotEmpty(t, id)
	for _, s := range stores {
		s.mu.Lock()
		assert.Equal(t, id, s.remote.catalogID)
		s.mu.Unlock()
	}
	resp, err := cat.client().Get(context.Background(), cat.ns+keyCatalogID)
	require.NoError(t, err)
	assert.Equal(t, int64(1), resp.Kvs[0].Version, "written once")
}
