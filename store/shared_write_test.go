package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/etcdkv"
)

// The write path on a shared catalog: two Stores in this process, each
// with its own local directory and etcd session, on one etcd namespace
// (the real 3-member cluster of scripts/etcd.sh) and one data directory,
// stand in for two hosts.

// sharedNS is a namespace of the test cluster for one test.
func sharedNS(t *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "/imagefs-test/" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + hex.EncodeToString(b) + "/"
}

// openEtcd opens a backend on namespace ns (lease TTL 2 s).
func openEtcd(t *testing.T, ns string) *etcdkv.Backend {
	t.Helper()
	b, err := etcdkv.Open(context.Background(), etcdkv.Config{
		Endpoints: testutil.EtcdEndpoints(t), Namespace: ns, LeaseTTL: 2 * time.Second,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	return b
}

// openHost opens the store of host on namespace ns with the shared data
// directory data; it is closed at the test's end. It returns the store
// and its backend.
func openHost(t *testing.T, ns, host, data string) (*Store, *etcdkv.Backend) {
	t.Helper()
	b := openEtcd(t, ns)
	d, err := NewLocalData(data)
	require.NoError(t, err)
	s, err := Open(t.TempDir(), Options{Catalog: b, Data: d, Host: host, PropertyQuota: 1000})
	if err != nil {
		b.Close()
		require.NoError(t, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, b
}

// twoHosts opens host-a and host-b on a new namespace and data directory.
func twoHosts(t *testing.T) (a, b *Store, bA *etcdkv.Backend, ns, data string) {
	ns, data = sharedNS(t), t.TempDir()
	a, bA = openHost(t, ns, "host-a", data)
	b, _ = openHost(t, ns, "host-b", data)
	return a, b, bA, ns, data
}

// within10s waits up to 10 s for cond.
func within10s(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSharedCreateSameName: 100 rounds of two hosts creating one name at
// once: exactly one ErrExists each round, both hosts then show the
// winner under the name, and every image has an inode range of its own.
func TestSharedCreateSameName(t *testing.T) {
	a, b, _, _, _ := twoHosts(t)
	bases := map[uint64]string{}
	for r := range 100 {
		name := fmt.Sprintf("race-%03d", r)
		var ims [2]*Image
		var errs [2]error
		var wg sync.WaitGroup
		for i, s := range []*Store{a, b} {
			wg.Go(func() { ims[i], errs[i] = s.Create(alice, name) })
		}
		wg.Wait()
		won := 0
		for i := range 2 {
			if errs[i] == nil {
				won = i
			} else {
				require.ErrorIs(t, errs[i], ErrExists, "round %d", r)
			}
		}
		require.True(t, (errs[0] == nil) != (errs[1] == nil), "round %d: exactly one create wins: %v", r, errs)
		id := ims[won].ID
		for _, s := range []*Store{a, b} {
			within10s(t, "both hosts show the winner", func() bool { im := s.Lookup(name); return im != nil && im.ID == id })
		}
		other, dup := bases[ims[won].InoBase]
		require.False(t, dup, "inode range of %s also used by %s", id, other)
		bases[ims[won].InoBase] = id
	}
}

// TestSharedPropertyRace: two hosts each set 200 different properties
// on one image at once: all 400 are there, on both hosts.
func TestSharedPropertyRace(t *testing.T) {
	a, b, _, _, _ := twoHosts(t)
	im, err := a.Create(alice, "img")
	require.NoError(t, err)
	within10s(t, "host-b sees the image", func() bool { return b.Get(im.ID) != nil })
	var wg sync.WaitGroup
	for i, s := range []*Store{a, b} {
		wg.Go(func() {
			for k := range 200 {
				assert.NoError(t, s.SetProperty(alice, im.ID, fmt.Sprintf("h%d-%03d", i, k), fmt.Sprint(k), SetAny))
			}
		})
	}
	wg.Wait()
	for _, s := range []*Store{a, b} {
		within10s(t, "all 400 properties on both hosts", func() bool { return s.Get(im.ID).customCount() == 400 })
		got := s.Get(im.ID)
		for i := range 2 {
			for k := range 200 {
				v, ok := got.Property(fmt.Sprintf("h%d-%03d", i, k))
				require.True(t, ok)
				require.Equal(t, fmt.Sprint(k), v)
			}
		}
	}
}

// TestSharedDeleteRacesSet: a delete on one host racing a property set
// on the other: the delete wins or goes after the set; the set either
// committed first or finds the image gone (ErrNotFound); either way the
// image is gone on both hosts and its name free again.
func TestSharedDeleteRacesSet(t *testing.T) {
	a, b, _, _, _ := twoHosts(t)
	setFirst, gone := 0, 0
	for r := range 30 {
		im, err := a.Create(alice, "doomed")
		require.NoError(t, err)
		within10s(t, "host-b sees the image", func() bool { return b.Get(im.ID) != nil })
		var derr, serr error
		var wg sync.WaitGroup
		wg.Go(func() { derr = a.Delete(alice, im.ID) })
		wg.Go(func() { serr = b.SetProperty(alice, im.ID, "k", fmt.Sprint(r), SetAny) })
		wg.Wait()
		require.NoError(t, derr, "round %d", r)
		if serr == nil {
			setFirst++
		} else {
			require.ErrorIs(t, serr, ErrNotFound, "round %d", r)
			gone++
		}
		for _, s := range []*Store{a, b} {
			within10s(t, "the image gone on both hosts", func() bool { return s.Get(im.ID) == nil && s.Lookup("doomed") == nil })
		}
	}
	t.Logf("set before the delete: %d, set found it gone: %d", setFirst, gone)
}

// startUpload opens image id's data for writing on s and writes a little
// (the image is then saving, with s's upload key).
func startUpload(t *testing.T, s *Store, id string) *Upload {
	t.Helper()
	u, err := s.OpenWrite(alice, id, true)
	require.NoError(t, err)
	_, err = u.WriteAt(make([]byte, 4096), 0)
	require.NoError(t, err)
	require.Equal(t, StatusSaving, s.Get(id).Status)
	return u
}

// TestSharedUploadHostLost: host-a's session ends mid-upload (its
// backend closed: its lease and upload key gone, as when the host dies
// and the lease expires): host-b kills the image, with a reason naming
// host-a.
func TestSharedUploadHostLost(t *testing.T) {
	a, b, bA, _, _ := twoHosts(t)
	im, err := a.Create(alice, "img")
	require.NoError(t, err)
	startUpload(t, a, im.ID)
	within10s(t, "host-b sees the upload", func() bool { im := b.Get(im.ID); return im != nil && im.Status == StatusSaving })
	require.NoError(t, bA.Close())
	within10s(t, "host-b kills the upload", func() bool { return b.Get(im.ID).Status == StatusKilled })
	reason := b.Get(im.ID).Extra[KeyKillReason]
	assert.Contains(t, reason, "host host-a stopped")
	assert.Contains(t, reason, "lease expired")
}

// TestSharedSealAfterLeaseLost: host-a's upload key vanishes while its
// writer still writes (deleted here by a third session, as the database
// does when the lease expires): host-b kills the image naming host-a,
// and host-a's seal at the writer's close is refused, its data removed
// from the shared data directory; the image stays killed.
func TestSharedSealAfterLeaseLost(t *testing.T) {
	a, b, _, ns, data := twoHosts(t)
	im, err := a.Create(alice, "img")
	require.NoError(t, err)
	u, err := a.OpenWrite(alice, im.ID, true)
	require.NoError(t, err)
	vhd := fixedVHD(t, 1<<20)
	_, err = u.WriteAt(vhd, 0)
	require.NoError(t, err)
	within10s(t, "host-b sees the upload", func() bool { im := b.Get(im.ID); return im != nil && im.Status == StatusSaving })

	c := openEtcd(t, ns)
	_, err = c.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{{Kind: kv.Delete, Key: prefixUpload + im.ID}}})
	require.NoError(t, err)
	require.NoError(t, c.Close())
	within10s(t, "host-b kills the upload", func() bool { return b.Get(im.ID).Status == StatusKilled })
	assert.Contains(t, b.Get(im.ID).Extra[KeyKillReason], "host host-a stopped")

	err = a.CloseWriter(u)
	require.NoError(t, a.EndWriter(u))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no longer this host's")
	_, serr := os.Stat(filepath.Join(data, im.ID+".vhd"))
	assert.True(t, errors.Is(serr, os.ErrNotExist), "data of the refused seal removed: %v", serr)
	for _, s := range []*Store{a, b} {
		within10s(t, "killed on both hosts", func() bool { return s.Get(im.ID).Status == StatusKilled })
		assert.Contains(t, s.Get(im.ID).Extra[KeyKillReason], "host-a")
	}
}
