package store

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imagefs/imagefs/store/kv"
)

// Check on a shared catalog (the real etcd test cluster), with host-a
// live on it: fsck runs as a third "host" with its own STORE.

// checkShared runs Check on a shared catalog ns and data directory data
// from the fsck host's STORE dir.
func checkShared(t *testing.T, dir, ns, data string, opts CheckOptions) (*CheckReport, error) {
	t.Helper()
	d, err := NewLocalData(data)
	require.NoError(t, err)
	opts.Catalog, opts.Data, opts.Host = openEtcd(t, ns), d, "host-fsck"
	return Check(dir, opts)
}

// problemIDs returns "kind id" of each problem, sorted.
func problemIDs(r *CheckReport) []string {
	var out []string
	for _, p := range r.Problems {
		out = append(out, p.Kind+" "+p.ID)
	}
	slices.Sort(out)
	return out
}

// TestCheckShared: a shared catalog with a sealed image whose data file
// was removed, an old orphan data file and a fresh one, a saving record
// whose upload key is gone and one whose key names the fsck host, a name
// key pointing to the wrong id and one naming no image, a staging
// leftover of the fsck host, and an upload in progress on host-a (its
// key live). Check reports each problem with its kind and leaves the
// fresh orphan and the live upload alone; Repair fixes all but the
// missing data (which needs the operator: here the image is deleted); a
// second Check is clean; --verify-data catches a flipped byte in a
// sealed image's shared data. The STORE of host-a (mounted) is refused.
func TestCheckShared(t *testing.T) {
	ns, data := sharedNS(t), t.TempDir()
	a, _ := openHost(t, ns, "host-a", data)
	vhd := fixedVHD(t, 1<<20)
	sealed := func(name string) *Image {
		im, err := a.Create(alice, name)
		require.NoError(t, err)
		im, err = uploadResult(t, a, alice, im.ID, vhd)
		require.NoError(t, err)
		require.Equal(t, StatusActive, im.Status)
		return im
	}
	missing, good := sealed("missing"), sealed("good")
	require.NoError(t, os.Remove(filepath.Join(data, missing.ID+".vhd")))

	oldOrphan, freshOrphan := uuid.NewString(), uuid.NewString()
	for _, id := range []string{oldOrphan, freshOrphan} {
		require.NoError(t, os.WriteFile(filepath.Join(data, id+".vhd"), vhd, 0o400))
	}
	hourAgo := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(data, oldOrphan+".vhd"), hourAgo, hourAgo))

	// interrupted: host-a's upload whose key is gone (deleted as the
	// database does when a lease expires; host-a does not kill its own).
	interrupted, err := a.Create(alice, "interrupted")
	require.NoError(t, err)
	startUpload(t, a, interrupted.ID)
	inflight, err := a.Create(alice, "inflight")
	require.NoError(t, err)
	startUpload(t, a, inflight.ID)
	// own: an upload key naming the fsck host (left by its daemon, whose
	// lease has not expired yet): not live, the upload is interrupted.
	own, err := a.Create(alice, "own")
	require.NoError(t, err)
	startUpload(t, a, own.ID)
	ghost := uuid.NewString()
	c := openEtcd(t, ns)
	defer c.Close()
	_, err = c.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{
		{Kind: kv.Delete, Key: prefixUpload + interrupted.ID},
		{Kind: kv.Put, Key: prefixUpload + own.ID, Value: []byte(`{"host":"host-fsck","since":"2026-01-01T00:00:00Z"}`)},
		{Kind: kv.Put, Key: prefixName + "good", Value: []byte(missing.ID)},
		{Kind: kv.Put, Key: prefixName + "ghost", Value: []byte(ghost)},
	}})
	require.NoError(t, err)

	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o700))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "staging"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "staging", "leftover"), []byte("x"), 0o600))

	// The store of a live host is locked: fsck refuses it (ErrBusy).
	_, err = checkShared(t, a.Dir(), ns, data, CheckOptions{})
	require.ErrorIs(t, err, ErrBusy)

	r, err := checkShared(t, dir, ns, data, CheckOptions{})
	require.NoError(t, err)
	want := []string{
		ProblemInterrupted + " " + interrupted.ID,
		ProblemInterrupted + " " + own.ID,
		ProblemMissingData + " " + missing.ID,
		ProblemNameIndex + " " + good.ID,    // name "good" missing (the key names another id)
		ProblemNameIndex + " " + missing.ID, // name/good points to an image that does not have it
		ProblemNameIndex + " " + ghost,      // name/ghost: no such image
		ProblemOrphanData + " " + oldOrphan,
		ProblemStaging + " ",
	}
	slices.Sort(want)
	assert.Equal(t, want, problemIDs(r), "problems: %v", r.Problems)
	assert.Equal(t, 5, r.Images)
	assert.Equal(t, filepath.Join(data, "lost+found"), r.LostFoundDir)
	for _, p := range r.Problems {
		assert.False(t, p.Repaired, "%v", p)
		assert.Equal(t, p.Kind != ProblemMissingData, p.Repairable, "%v", p)
	}

	r, err = checkShared(t, dir, ns, data, CheckOptions{Repair: true})
	require.NoError(t, err)
	for _, p := range r.Problems {
		assert.Equal(t, p.Kind != ProblemMissingData, p.Repaired, "%v", p)
	}
	assert.Len(t, r.Problems, 8, "problems: %v", r.Problems)
	_, err = os.Stat(filepath.Join(data, "lost+found", oldOrphan+".vhd"))
	assert.NoError(t, err, "old orphan in DATA/lost+found")
	_, err = os.Stat(filepath.Join(data, freshOrphan+".vhd"))
	assert.NoError(t, err, "fresh orphan left alone")
	within(t, "host-a sees the interrupted uploads killed", func() bool {
		return a.Get(interrupted.ID).Status == StatusKilled && a.Get(own.ID).Status == StatusKilled
	})
	p, err := c.Get(context.Background(), prefixUpload+own.ID)
	require.NoError(t, err)
	assert.Zero(t, p.ModRev, "the kill deleted the fsck host's upload key")
	assert.Equal(t, StatusSaving, a.Get(inflight.ID).Status, "the live upload is left alone")
	for name, want := range map[string]string{"good": good.ID, "missing": missing.ID, "ghost": ""} {
		p, err := c.Get(context.Background(), prefixName+name)
		require.NoError(t, err)
		assert.Equal(t, want, string(p.Value), "name/%s", name)
	}

	require.NoError(t, a.Delete(alice, missing.ID))
	r, err = checkShared(t, dir, ns, data, CheckOptions{})
	require.NoError(t, err)
	assert.Empty(t, r.Problems)
	assert.Equal(t, 1, r.LostFound)

	path := filepath.Join(data, good.ID+".vhd")
	require.NoError(t, os.Chmod(path, 0o600))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	b := make([]byte, 1)
	_, err = f.ReadAt(b, 4096)
	require.NoError(t, err)
	b[0] ^= 0xff
	_, err = f.WriteAt(b, 4096)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chmod(path, 0o400))
	r, err = checkShared(t, dir, ns, data, CheckOptions{VerifyData: true})
	require.NoError(t, err)
	assert.Equal(t, []string{ProblemChecksum + " " + good.ID}, problemIDs(r))
	assert.Equal(t, 1, r.Verified)
}
