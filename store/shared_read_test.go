package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/etcdkv"
)

// Two hosts on one etcd catalog, in one process: each a Store with its own
// local directory (staging) and its own etcd client, on one namespace of
// the test cluster (scripts/etcd.sh, started by testutil.EtcdEndpoints)
// and one shared data directory.

// sharedCatalog is one etcd namespace and data directory that hosts open.
type sharedCatalog struct {
	t    *testing.T
	eps  []string
	ns   string
	data string
}

func newSharedCatalog(t *testing.T) *sharedCatalog {
	eps := testutil.EtcdEndpoints(t)
	b := make([]byte, 6)
	rand.Read(b)
	c := &sharedCatalog{t: t, eps: eps, ns: "/imagefs-test/store-" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + hex.EncodeToString(b) + "/", data: t.TempDir()}
	t.Cleanup(func() {
		cli := c.client()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cli.Delete(ctx, c.ns, clientv3.WithPrefix())
	})
	return c
}

// client is a plain etcd client (compaction, cleanup), closed with the
// test.
func (c *sharedCatalog) client() *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.eps, DialTimeout: 5 * time.Second})
	require.NoError(c.t, err)
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// open opens host's store (a local directory of its own, dir: "" for a
// new one) on the catalog; it is closed with the test (closing it
// earlier is fine).
func (c *sharedCatalog) open(host, dir string) (*Store, *etcdkv.Backend) {
	t := c.t
	t.Helper()
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "store")
	}
	log := slog.New(slog.NewTextHandler(testLog{t, host}, nil))
	b, err := etcdkv.Open(context.Background(), etcdkv.Config{Endpoints: c.eps, Namespace: c.ns, LeaseTTL: 2 * time.Second, Logger: log})
	require.NoError(t, err)
	d, err := NewLocalData(c.data)
	require.NoError(t, err)
	s, err := Open(dir, Options{Catalog: b, Data: d, Host: host, Logger: log})
	require.NoError(t, err)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { s.Close() }) })
	return s, b
}

type testLog struct {
	t    *testing.T
	host string
}

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(w.host + ": " + strings.TrimSpace(string(p)))
	return len(p), nil
}

// hook collects the changes a store's OnChange receives, with when.
type hook struct {
	mu  sync.Mutex
	chs []Change
	at  []time.Time
}

func watchChanges(s *Store) *hook {
	h := &hook{}
	s.OnChange(func(c Change) {
		h.mu.Lock()
		h.chs = append(h.chs, c)
		h.at = append(h.at, time.Now())
		h.mu.Unlock()
	})
	return h
}

// waitChange waits up to 1 s for a change that ok accepts and returns how
// long after since it came.
func (h *hook) waitChange(t *testing.T, what string, since time.Time, ok func(Change) bool) time.Duration {
	t.Helper()
	deadline := since.Add(time.Second)
	for {
		h.mu.Lock()
		for i, c := range h.chs {
			if ok(c) && !h.at[i].Before(since) {
				d := h.at[i].Sub(since)
				h.mu.Unlock()
				return d
			}
		}
		h.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%s: no change hook within 1 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// within waits up to 1 s for cond and returns how long it took.
func within(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > time.Second {
			t.Fatalf("%s: not within 1 s", what)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

func names(ims []*Image) []string {
	var out []string
	for _, im := range ims {
		out = append(out, im.Name)
	}
	return out
}

// TestSharedChangesReachOtherHost: a create, a property set, a rename and
// a delete on host A reach host B's Get, Lookup, List, property views and
// OnChange hook within 1 s (the delays are logged); B's own change of A's
// image commits on the revision B learnt, and A sees it.
func TestSharedChangesReachOtherHost(t *testing.T) {
	cat := newSharedCatalog(t)
	a, _ := cat.open("a", "")
	b, _ := cat.open("b", "")
	hb := watchChanges(b)

	start := time.Now()
	im, err := a.Create(alice, "one")
	require.NoError(t, err)
	d := within(t, "create: B's Get", func() bool { return b.Get(im.ID) != nil })
	dh := hb.waitChange(t, "create", start, func(c Change) bool { return c.Old == nil && c.New != nil && c.New.ID == im.ID })
	t.Logf("create on A -> B's Get %v, B's hook %v", d, dh)
	assert.Equal(t, im.ID, b.Lookup("one").ID)
	assert.Equal(t, []string{"one"}, names(b.List()))
	assert.Equal(t, im.InoBase, b.Get(im.ID).InoBase, "the same inodes on every host")

	start = time.Now()
	require.NoError(t, a.SetProperty(alice, im.ID, "os_distro", "debian", SetAny))
	d = within(t, "set: B's Get", func() bool { v, _ := b.Get(im.ID).Property("os_distro"); return v == "debian" })
	dh = hb.waitChange(t, "set", start, func(c Change) bool { v, _ := c.New.Property("os_distro"); return c.New != nil && v == "debian" })
	t.Logf("property set on A -> B's Get %v, B's hook %v", d, dh)
	got, err := b.ViewImages(alice, "os_distro", "debian")
	require.NoError(t, err)
	assert.Equal(t, []string{"one"}, names(got))
	keys, err := b.ViewKeys(alice, nil)
	require.NoError(t, err)
	assert.Contains(t, keys, "os_distro")
	vals, err := b.ViewValues(alice, "os_distro", nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"debian"}, vals)

	start = time.Now()
	require.NoError(t, a.Rename(alice, im.ID, "two"))
	d = within(t, "rename: B's Lookup", func() bool { return b.Lookup("two") != nil })
	dh = hb.waitChange(t, "rename", start, func(c Change) bool { return c.New != nil && c.New.Name == "two" })
	t.Logf("rename on A -> B's Lookup %v, B's hook %v", d, dh)
	assert.Nil(t, b.Lookup("one"), "the old name is gone on B")
	assert.Equal(t, []string{"two"}, names(b.List()))
	got, err = b.ViewImages(alice, "name", "two")
	require.NoError(t, err)
	assert.Equal(t, []string{"two"}, names(got))
	got, err = b.ViewImages(alice, "name", "one")
	require.NoError(t, err)
	assert.Empty(t, got)

	// B changes A's image on the revision it learnt; A sees it.
	require.NoError(t, b.SetProperty(alice, im.ID, "os_version", "12", SetAny))
	within(t, "B's set on A", func() bool { v, _ := a.Get(im.ID).Property("os_version"); return v == "12" })
	require.NoError(t, a.SetProperty(alice, im.ID, "os_distro", "trixie", SetAny), "A changes it again on B's revision")
	within(t, "A's second set on B", func() bool { v, _ := b.Get(im.ID).Property("os_distro"); return v == "trixie" })
	got, err = b.ViewImages(alice, "os_distro", "debian")
	require.NoError(t, err)
	assert.Empty(t, got, "B's view of the old value")

	start = time.Now()
	require.NoError(t, a.Delete(alice, im.ID))
	d = within(t, "delete: B's Get", func() bool { return b.Get(im.ID) == nil })
	dh = hb.waitChange(t, "delete", start, func(c Change) bool { return c.New == nil && c.Old.ID == im.ID })
	t.Logf("delete on A -> B's Get %v, B's hook %v", d, dh)
	assert.Nil(t, b.Lookup("two"))
	assert.Empty(t, b.List())
	keys, err = b.ViewKeys(alice, nil)
	require.NoError(t, err)
	assert.Empty(t, keys, "B's index has nothing of the deleted image")
	require.NoError(t, b.CheckIndex())

	// Inode ranges: B's create takes the next one after A's.
	im2, err := b.Create(alice, "three")
	require.NoError(t, err)
	assert.Greater(t, im2.InoBase, im.InoBase)
	within(t, "B's create on A", func() bool { return a.Get(im2.ID) != nil })
	im3, err := a.Create(alice, "four")
	require.NoError(t, err)
	assert.Greater(t, im3.InoBase, im2.InoBase)
}

// TestSharedRelistAfterCompaction: B's watch stops (as on a long
// disconnection) while A creates, changes, renames and deletes; the
// revisions are compacted; B's watch resumes from where it was, gets
// ErrCompacted, lists the catalog again and loses nothing: its records,
// names, property index and hook match A's changes, and it follows A
// afterwards.
func TestSharedRelistAfterCompaction(t *testing.T) {
	cat := newSharedCatalog(t)
	a, _ := cat.open("a", "")
	b, _ := cat.open("b", "")
	keep, err := a.Create(alice, "keep")
	require.NoError(t, err)
	gone, err := a.Create(alice, "gone")
	require.NoError(t, err)
	within(t, "B sees both", func() bool { return len(b.List()) == 2 })
	hb := watchChanges(b)

	b.stopRemote()
	b.mu.Lock()
	from := b.remote.rev + 1
	b.mu.Unlock()
	added, err := a.Create(alice, "added")
	require.NoError(t, err)
	require.NoError(t, a.SetProperty(alice, keep.ID, "os_distro", "debian", SetAny))
	require.NoError(t, a.Rename(alice, keep.ID, "kept"))
	require.NoError(t, a.Delete(alice, gone.ID))
	cli := cat.client()
	resp, err := cli.Get(context.Background(), "compaction-probe")
	require.NoError(t, err)
	_, err = cli.Compact(context.Background(), resp.Header.Revision)
	require.NoError(t, err)

	start := time.Now()
	b.startRemote(from)
	d := within(t, "relist", func() bool { return b.Get(gone.ID) == nil && b.Get(added.ID) != nil && b.Lookup("kept") != nil })
	t.Logf("relist after compaction: %v", d)
	assert.Equal(t, names(a.List()), names(b.List()))
	for _, im := range a.List() {
		got := b.Get(im.ID)
		require.NotNil(t, got, im.Name)
		assert.Equal(t, im.rev, got.rev, im.Name)
		assert.Equal(t, im.Extra, got.Extra, im.Name)
	}
	assert.Nil(t, b.Lookup("keep"))
	assert.Nil(t, b.Lookup("gone"))
	got, err := b.ViewImages(alice, "os_distro", "debian")
	require.NoError(t, err)
	assert.Equal(t, []string{"kept"}, names(got))
	require.NoError(t, b.CheckIndex())
	hb.waitChange(t, "relist: the deleted image", start, func(c Change) bool { return c.New == nil && c.Old.ID == gone.ID })
	hb.waitChange(t, "relist: the new image", start, func(c Change) bool { return c.Old == nil && c.New != nil && c.New.ID == added.ID })
	hb.waitChange(t, "relist: the renamed image", start, func(c Change) bool { return c.New != nil && c.New.Name == "kept" })

	// The watch goes on from the relist's revision.
	require.NoError(t, a.SetProperty(alice, added.ID, "os_distro", "alpine", SetAny))
	within(t, "after the relist", func() bool { v, _ := b.Get(added.ID).Property("os_distro"); return v == "alpine" })
	require.NoError(t, b.SetProperty(alice, added.ID, "os_version", "3", SetAny), "B commits on the relisted revision")
}

// TestSharedLateOpen: a host opened after the others sees every image,
// name, property (and index view) and inode range they made, and takes a
// new inode range.
func TestSharedLateOpen(t *testing.T) {
	cat := newSharedCatalog(t)
	a, _ := cat.open("a", "")
	var ids []string
	for i := range 40 { // spread over the 16 ranges of the load
		im, err := a.Create(alice, "img-"+string(rune('a'+i%26))+string(rune('a'+i/26)))
		require.NoError(t, err)
		require.NoError(t, a.SetProperty(alice, im.ID, "n", im.Name, SetAny))
		ids = append(ids, im.ID)
	}
	require.NoError(t, a.Delete(alice, ids[0]))
	sealed, err := a.Create(alice, "sealed")
	require.NoError(t, err)
	require.NoError(t, upload(t, a, alice, sealed.ID, fixedVHD(t, 1<<20), 64<<10))

	b, _ := cat.open("b", "")
	assert.Equal(t, names(a.List()), names(b.List()))
	for _, im := range a.List() {
		got := b.Get(im.ID)
		require.NotNil(t, got, im.Name)
		assert.Equal(t, im.rev, got.rev)
		assert.Equal(t, im.InoBase, got.InoBase)
		assert.Equal(t, im.Status, got.Status)
		assert.Equal(t, im.Checksum, got.Checksum)
	}
	got, err := b.ViewImages(alice, "n", "img-ab")
	require.NoError(t, err)
	assert.Equal(t, []string{"img-ab"}, names(got))
	require.NoError(t, b.CheckIndex())
	f, err := b.OpenRead(alice, sealed.ID)
	require.NoError(t, err, "B reads the data A sealed in the shared directory")
	f.Close()
	im, err := b.Create(alice, "late")
	require.NoError(t, err)
	for _, o := range a.List() {
		if o.ID != im.ID {
			assert.NotEqual(t, o.InoBase, im.InoBase, o.Name)
		}
	}
}

// putUploadKey writes upload/<id> for host through backend b (leased to
// b's session), unless the key exists (the write path may have written
// it).
func putUploadKey(t *testing.T, b kv.Backend, id, host string) {
	p, err := b.Get(context.Background(), prefixUpload+id)
	require.NoError(t, err)
	if p.ModRev != 0 {
		return
	}
	v, _ := json.Marshal(map[string]string{"host": host, "since": time.Now().UTC().Format(time.RFC3339)})
	_, err = b.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: prefixUpload + id, Value: v, Leased: true}}})
	require.NoError(t, err)
}

// delUploadKey removes upload/<id> through backend b (as its host's
// lease expiring would).
func delUploadKey(t *testing.T, b kv.Backend, id string) {
	_, err := b.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{{Kind: kv.Delete, Key: prefixUpload + id}}})
	require.NoError(t, err)
}

// TestSharedReconcileLeavesOtherHostsUploads: B's Open kills an image
// left saving whose upload key is absent or names B, and leaves alone one
// whose key names A (a live host): its record stays saving and its data
// file in the shared directory (a seal in flight) stays where it is.
func TestSharedReconcileLeavesOtherHostsUploads(t *testing.T) {
	cat := newSharedCatalog(t)
	a, ab := cat.open("a", "")
	saving := func(name string) *Image {
		im, err := a.Create(alice, name)
		require.NoError(t, err)
		u, err := a.OpenWrite(alice, im.ID, true)
		require.NoError(t, err)
		_, err = u.WriteAt(make([]byte, 4096), 0)
		require.NoError(t, err)
		require.Equal(t, StatusSaving, a.Get(im.ID).Status)
		return im
	}
	inflight := saving("inflight")
	putUploadKey(t, ab, inflight.ID, "a")
	// Its seal handed the data over and is about to commit.
	data := fixedVHD(t, 1<<20)
	require.NoError(t, os.WriteFile(filepath.Join(cat.data, inflight.ID+".vhd"), data, 0o400))
	orphan := saving("orphan")
	delUploadKey(t, ab, orphan.ID) // no upload key: its host is gone
	mine := saving("mine")
	delUploadKey(t, ab, mine.ID)
	putUploadKey(t, ab, mine.ID, "b") // B's, from before B restarted

	bdir := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.MkdirAll(filepath.Join(bdir, "staging"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(bdir, "staging", "leftover"), []byte("x"), 0o600))
	b, _ := cat.open("b", bdir)

	assert.Equal(t, StatusSaving, b.Get(inflight.ID).Status, "A's upload in flight")
	_, err := os.Stat(filepath.Join(cat.data, inflight.ID+".vhd"))
	assert.NoError(t, err, "A's seal in flight keeps its data file")
	lf, _ := os.ReadDir(filepath.Join(bdir, "lost+found"))
	assert.Empty(t, lf)
	for _, im := range []*Image{orphan, mine} {
		got := b.Get(im.ID)
		assert.Equal(t, StatusKilled, got.Status, im.Name)
		assert.Contains(t, got.Extra[KeyKillReason], "upload interrupted", im.Name)
		within(t, "A sees the kill of "+im.Name, func() bool { return a.Get(im.ID).Status == StatusKilled })
	}
	staged, err := os.ReadDir(filepath.Join(bdir, "staging"))
	require.NoError(t, err)
	assert.Empty(t, staged, "B's staging leftovers are removed")
	assert.Equal(t, StatusSaving, a.Get(inflight.ID).Status)
}

// TestSharedLaggingWatchKeepsOwnName: B claims a name (a rename) that A's
// image held at a revision B's watch has not reached yet; when the watch
// catches up (A's image with that name, then renamed away), B's image
// keeps the name: Lookup finds it throughout.
func TestSharedLaggingWatchKeepsOwnName(t *testing.T) {
	cat := newSharedCatalog(t)
	a, _ := cat.open("a", "")
	b, _ := cat.open("b", "")
	p, err := b.Create(alice, "p")
	require.NoError(t, err)
	within(t, "A sees p", func() bool { return a.Get(p.ID) != nil })

	b.stopRemote() // B's watch lags behind A's changes
	b.mu.Lock()
	from := b.remote.rev + 1
	b.mu.Unlock()
	r, err := a.Create(alice, "x")
	require.NoError(t, err)
	require.NoError(t, a.Rename(alice, r.ID, "z"))
	require.NoError(t, b.Rename(alice, p.ID, "x"), "name/x is free in the catalog")
	b.startRemote(from)
	within(t, "B catches up", func() bool { return b.Lookup("z") != nil })
	got := b.Lookup("x")
	require.NotNil(t, got, "B's image keeps its name")
	assert.Equal(t, p.ID, got.ID)
	assert.Equal(t, []string{"x", "z"}, names(b.List()))
}

// TestSharedLaggingWatchDoesNotResurrect: an image B created and deleted
// before its watch reported the create is not brought back when the
// watch reports it late (no change delivered, never listed).
func TestSharedLaggingWatchDoesNotResurrect(t *testing.T) {
	cat := newSharedCatalog(t)
	b, _ := cat.open("b", "")
	b.stopRemote()
	b.mu.Lock()
	from := b.remote.rev + 1
	b.mu.Unlock()
	x, err := b.Create(alice, "x")
	require.NoError(t, err)
	require.NoError(t, b.Delete(alice, x.ID))
	y, err := b.Create(alice, "y") // the revision to wait for
	require.NoError(t, err)
	var mu sync.Mutex
	var back []Change
	b.OnChange(func(c Change) {
		if c.New != nil && c.New.ID == x.ID {
			mu.Lock()
			back = append(back, c)
			mu.Unlock()
		}
	})
	b.startRemote(from)
	within(t, "the watch catches up", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.remote.rev >= y.rev
	})
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, back, "the deleted image came back")
	assert.Nil(t, b.Get(x.ID))
	assert.Equal(t, []string{"y"}, names(b.List()))
}

// TestSharedUploadKeysFollowed: B tracks the upload key A holds for an
// image it uploads (its revision and host), and its delete: kept as
// absent with its host while the record is saving (for the kill of an
// upload whose host died), forgotten once the image is deleted.
func TestSharedUploadKeysFollowed(t *testing.T) {
	cat := newSharedCatalog(t)
	a, ab := cat.open("a", "")
	b, _ := cat.open("b", "")
	im, err := a.Create(alice, "up")
	require.NoError(t, err)
	u, err := a.OpenWrite(alice, im.ID, true)
	require.NoError(t, err)
	defer a.EndWriter(u)
	_, err = u.WriteAt(make([]byte, 4096), 0) // the first write makes it saving
	require.NoError(t, err)
	putUploadKey(t, ab, im.ID, "a")
	key := func() (uploadKey, bool) {
		b.mu.Lock()
		defer b.mu.Unlock()
		k, ok := b.uploadKeys[im.ID]
		return k, ok
	}
	within(t, "B sees A's upload key", func() bool { k, _ := key(); return k.rev != 0 })
	k, _ := key()
	assert.Equal(t, "a", k.host)
	within(t, "B sees the record saving", func() bool { return b.Get(im.ID).Status == StatusSaving })
	_, err = ab.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{{Kind: kv.Delete, Key: prefixUpload + im.ID}}})
	require.NoError(t, err)
	// B kills the upload whose key vanished, naming the host the key named.
	within(t, "B kills the upload", func() bool { return b.Get(im.ID).Status == StatusKilled })
	assert.Contains(t, b.Get(im.ID).Extra[KeyKillReason], "host a")
	within(t, "B forgets the key of an image no longer saving", func() bool { _, ok := key(); return !ok })
	require.NoError(t, a.Delete(alice, im.ID))
	within(t, "B forgets the key with the image", func() bool { _, ok := key(); return !ok })
}
