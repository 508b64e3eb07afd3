package store

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/etcdkv"
	"github.com/imagefs/imagefs/store/kv/pebblekv"
)

// These tests migrate stores built through the store's API into the
// real etcd test cluster (scripts/etcd.sh), each in a namespace of its
// own, removed at the test's end.

// migrateDst is a destination of a migration: a namespace in the test
// cluster, the Backend on it, a raw client to look behind its back, and
// a data directory.
type migrateDst struct {
	ns   string
	kv   kv.Backend
	raw  *clientv3.Client
	dir  string
	data DataBackend
}

func newMigrateDst(t *testing.T) *migrateDst {
	t.Helper()
	eps := testutil.EtcdEndpoints(t)
	rb := make([]byte, 6)
	rand.Read(rb)
	d := &migrateDst{ns: "/imagefs-test/" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + hex.EncodeToString(rb) + "/", dir: t.TempDir()}
	b, err := etcdkv.Open(context.Background(), etcdkv.Config{Endpoints: eps, Namespace: d.ns})
	require.NoError(t, err)
	d.kv = b
	d.raw, err = clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() {
		b.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d.raw.Delete(ctx, d.ns, clientv3.WithPrefix())
		cancel()
		d.raw.Close()
	})
	d.data, err = NewLocalData(d.dir)
	require.NoError(t, err)
	return d
}

// keys returns every key under prefix in the namespace (without it) with
// its value and ModRev.
func (d *migrateDst) keys(t *testing.T, prefix string) map[string]kv.Pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := d.raw.Get(ctx, d.ns+prefix, clientv3.WithPrefix())
	require.NoError(t, err)
	out := map[string]kv.Pair{}
	for _, k := range resp.Kvs {
		key := strings.TrimPrefix(string(k.Key), d.ns)
		out[key] = kv.Pair{Key: key, Value: k.Value, ModRev: k.ModRevision}
	}
	return out
}

func (d *migrateDst) seqIno(t *testing.T) uint64 {
	t.Helper()
	p, ok := d.keys(t, keySeqIno)[keySeqIno]
	require.True(t, ok, "seq/ino in the destination")
	require.Len(t, p.Value, 8)
	return binary.BigEndian.Uint64(p.Value)
}

// migrateSrcRecords reads the source store's records as stored (raw JSON), its
// names and its seq/ino, from its catalog directly.
func migrateSrcRecords(t *testing.T, dir string) (recs map[string][]byte, names map[string]string, seq uint64) {
	t.Helper()
	db, err := pebblekv.Open(filepath.Join(dir, "catalog"), pebblekv.Options{})
	require.NoError(t, err)
	defer db.Close()
	recs, names = map[string][]byte{}, map[string]string{}
	_, err = db.Scan(context.Background(), "", "\xff", 0, func(p kv.Pair) error {
		switch {
		case strings.HasPrefix(p.Key, prefixImage):
			recs[p.Key[len(prefixImage):]] = append([]byte(nil), p.Value...)
		case strings.HasPrefix(p.Key, prefixName):
			names[p.Key[len(prefixName):]] = string(p.Value)
		case p.Key == keySeqIno:
			seq = binary.BigEndian.Uint64(p.Value)
		}
		return nil
	})
	require.NoError(t, err)
	return recs, names, seq
}

// migrateSource builds a store of n images at dir through the store's
// API: sealed ones with properties, queued ones with properties, a
// deactivated one, a killed one, a deleted one, and one left saving (an
// upload in flight when the store closed). It returns the ids by kind.
func migrateSource(t *testing.T, dir string, n int) (sealed []string, deactivated, killed, saving string) {
	t.Helper()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	for i := range n {
		im, err := s.Create(alice, fmt.Sprintf("img-%04d", i))
		require.NoError(t, err)
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", fmt.Sprintf("distro-%d", i%3), SetAny))
		require.NoError(t, s.SetProperty(alice, im.ID, "note", fmt.Sprintf("image number %d", i), SetAny))
		if i%2 == 0 {
			require.NoError(t, upload(t, s, alice, im.ID, fixedVHD(t, (i+1)*64<<10), 64<<10))
			require.Equal(t, StatusActive, s.Get(im.ID).Status)
			sealed = append(sealed, im.ID)
		}
	}
	deactivated = sealed[0]
	require.NoError(t, s.SetProperty(Root, deactivated, KeyStatus, string(StatusDeactivated), SetAny))

	im, err := s.Create(alice, "killed")
	require.NoError(t, err)
	require.Error(t, upload(t, s, alice, im.ID, []byte("not a VHD at all"), 512))
	require.Equal(t, StatusKilled, s.Get(im.ID).Status)
	killed = im.ID

	im, err = s.Create(alice, "deleted")
	require.NoError(t, err)
	require.NoError(t, upload(t, s, alice, im.ID, fixedVHD(t, 64<<10), 64<<10))
	require.NoError(t, s.Delete(alice, im.ID))

	im, err = s.Create(alice, "saving")
	require.NoError(t, err)
	u, err := s.OpenWrite(alice, im.ID, true)
	require.NoError(t, err)
	_, err = u.WriteAt(fixedVHD(t, 64<<10)[:4096], 0)
	require.NoError(t, err)
	saving = im.ID
	require.NoError(t, s.Close()) // the upload is abandoned: saving until the next (repairing) Open
	return sealed, deactivated, killed, saving
}

func migrateFileHashes(t *testing.T, path string) (string, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	m, s := md5.Sum(b), sha512.Sum512(b)
	return hex.EncodeToString(m[:]), hex.EncodeToString(s[:])
}

// migrateCheck asserts that every record of the source but skip is in
// the destination, JSON-equal, with its name, and the data of each sealed
// one in the data directory with the record's hashes.
func migrateCheck(t *testing.T, src string, d *migrateDst, skip ...string) {
	t.Helper()
	recs, names, seq := migrateSrcRecords(t, src)
	imgs, dnames := d.keys(t, prefixImage), d.keys(t, prefixName)
	assert.Equal(t, len(recs)-len(skip), len(imgs), "records in the destination")
	for id, raw := range recs {
		p, ok := imgs[prefixImage+id]
		if migrateSkips(skip, id) {
			assert.False(t, ok, "%s is not migrated", id)
			continue
		}
		if !assert.True(t, ok, "record %s in the destination", id) {
			continue
		}
		assert.JSONEq(t, string(raw), string(p.Value), "record %s", id)
		var im Image
		require.NoError(t, json.Unmarshal(raw, &im))
		assert.Equal(t, id, string(dnames[prefixName+im.Name].Value), "name/%s", im.Name)
		assert.Equal(t, id, names[im.Name])
		if im.Status.Sealed() {
			path := filepath.Join(d.dir, id+".vhd")
			m, s := migrateFileHashes(t, path)
			assert.Equal(t, im.Checksum, m, "md5 of %s", path)
			assert.Equal(t, im.OSHashValue, s, "sha512 of %s", path)
			fi, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o400), fi.Mode().Perm())
		} else {
			_, err := os.Stat(filepath.Join(d.dir, id+".vhd"))
			assert.True(t, os.IsNotExist(err), "no data file for %s image %s", im.Status, id)
		}
	}
	assert.GreaterOrEqual(t, d.seqIno(t), seq, "seq/ino in the destination")
	left, _ := filepath.Glob(filepath.Join(d.dir, "*.migrating"))
	assert.Empty(t, left, "temporary files left in the data directory")
}

func migrateSkips(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func reportItem(r MigrateReport, id string) MigrateItem {
	for _, it := range r.Items {
		if it.ID == id {
			return it
		}
	}
	return MigrateItem{}
}

func TestMigrateStore(t *testing.T) {
	src := t.TempDir()
	sealed, deactivated, killed, saving := migrateSource(t, src, 12)
	d := newMigrateDst(t)

	var progress int
	r, err := Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{
		Progress: func(done, total int, it MigrateItem) { progress = done },
	})
	require.NoError(t, err)
	t.Logf("report: %+v", r)
	assert.Equal(t, 14, r.Images, "12 + killed + saving (the deleted one has no record)")
	assert.Equal(t, 13, r.Migrated)
	assert.Equal(t, 1, r.Failed)
	assert.Equal(t, 14, progress)
	assert.False(t, r.OK())
	assert.Equal(t, MigrateSaving, reportItem(r, saving).Outcome)
	assert.Equal(t, MigrateDone, reportItem(r, killed).Outcome)
	assert.Equal(t, MigrateDone, reportItem(r, deactivated).Outcome)
	assert.Equal(t, StatusDeactivated, reportItem(r, deactivated).Status)
	for _, id := range sealed {
		assert.Positive(t, reportItem(r, id).Bytes, id)
	}
	migrateCheck(t, src, d, saving)
	before := d.keys(t, "")

	// Again: nothing changes (same ModRevs), every image skipped.
	r, err = Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{})
	require.NoError(t, err)
	assert.Equal(t, 0, r.Migrated)
	assert.Equal(t, 13, r.Skipped)
	assert.Equal(t, 1, r.Failed)
	assert.Zero(t, r.Bytes)
	assert.Equal(t, before, d.keys(t, ""), "a second run changes nothing in the catalog")
	migrateCheck(t, src, d, saving)

	// The source is only read: a mount still finds the saving upload
	// (and kills it), the records are those it had.
	s, err := Open(src, Options{})
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, StatusKilled, s.Get(saving).Status)
}

func TestMigrateInterrupted(t *testing.T) {
	src := t.TempDir()
	_, _, _, saving := migrateSource(t, src, 10)
	d := newMigrateDst(t)

	ctx, cancel := context.WithCancel(context.Background())
	r, err := Migrate(ctx, src, d.kv, d.data, MigrateOptions{
		Progress: func(done, total int, it MigrateItem) {
			if done == 4 {
				cancel()
			}
		},
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 4, r.Migrated+r.Failed)
	assert.Equal(t, r.Migrated, len(d.keys(t, prefixImage)), "the records migrated before the cancel")
	first := r.Migrated

	r, err = Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{})
	require.NoError(t, err)
	assert.Equal(t, first, r.Skipped, "the second run skips what the first did")
	assert.Equal(t, 1, r.Failed, "the saving one")
	assert.Equal(t, r.Images-first-1, r.Migrated)
	migrateCheck(t, src, d, saving)
}

// An interruption between the data and the record (a crash): the data
// file is in the destination without its record; the next run completes
// it.
func TestMigrateDataWithoutRecord(t *testing.T) {
	src := t.TempDir()
	sealed, _, _, saving := migrateSource(t, src, 4)
	d := newMigrateDst(t)
	recs, _, _ := migrateSrcRecords(t, src)
	var im Image
	require.NoError(t, json.Unmarshal(recs[sealed[1]], &im))
	// What a crash after Put leaves: the data, not the record; and a
	// half-written temporary file of the next image.
	require.NoError(t, os.WriteFile(filepath.Join(d.dir, sealed[1]+".vhd"), fixedVHD(t, 64<<10), 0o400))
	require.NoError(t, os.WriteFile(filepath.Join(d.dir, sealed[0]+".vhd.migrating"), []byte("half"), 0o600))

	r, err := Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{})
	require.NoError(t, err)
	assert.Equal(t, MigrateDone, reportItem(r, sealed[1]).Outcome)
	migrateCheck(t, src, d, saving)
}

func TestMigrateCorruptData(t *testing.T) {
	src := t.TempDir()
	sealed, _, _, saving := migrateSource(t, src, 6)
	bad := sealed[2]
	path := filepath.Join(src, "data", bad+".vhd")
	require.NoError(t, os.Chmod(path, 0o600))
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff, 0xfe}, 1000)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	d := newMigrateDst(t)

	r, err := Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{})
	require.NoError(t, err)
	it := reportItem(r, bad)
	assert.Equal(t, MigrateDataError, it.Outcome)
	assert.Contains(t, it.Detail, "hashes to md5")
	assert.Equal(t, 2, r.Failed, "the corrupt one and the saving one")
	migrateCheck(t, src, d, saving, bad)
	recs, _, _ := migrateSrcRecords(t, src)
	var im Image
	require.NoError(t, json.Unmarshal(recs[bad], &im))
	assert.NotContains(t, d.keys(t, prefixName), prefixName+im.Name, "no name for the image not migrated")
	_, err = os.Stat(filepath.Join(d.dir, bad+".vhd"))
	assert.True(t, os.IsNotExist(err), "no data file for the image not migrated")
}

// A destination that already has other images: a name held by another
// id is a conflict (not overwritten), seq/ino is never lowered, and the
// inode bases below it (handed out) are not reused.
func TestMigrateConflicts(t *testing.T) {
	src := t.TempDir()
	sealed, _, _, saving := migrateSource(t, src, 4)
	d := newMigrateDst(t)
	recs, _, _ := migrateSrcRecords(t, src)
	var im Image
	require.NoError(t, json.Unmarshal(recs[sealed[1]], &im))
	other := "00000000-0000-4000-8000-000000000000"
	var high [8]byte
	binary.BigEndian.PutUint64(high[:], 1000)
	_, err := d.kv.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{
		{Kind: kv.Put, Key: prefixName + im.Name, Value: []byte(other)},
		{Kind: kv.Put, Key: keySeqIno, Value: high[:]},
	}})
	require.NoError(t, err)

	r, err := Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{})
	require.NoError(t, err)
	it := reportItem(r, sealed[1])
	assert.Equal(t, MigrateConflict, it.Outcome)
	assert.Contains(t, it.Detail, other)
	assert.Equal(t, other, string(d.keys(t, prefixName)[prefixName+im.Name].Value), "the destination's name is not overwritten")
	assert.NotContains(t, d.keys(t, prefixImage), prefixImage+sealed[1])
	_, err = os.Stat(filepath.Join(d.dir, sealed[1]+".vhd"))
	assert.True(t, os.IsNotExist(err), "no data copied for a conflict")
	assert.GreaterOrEqual(t, d.seqIno(t), uint64(1000), "seq/ino is never lowered")
	// Every base below seq/ino was handed out: the images migrated are
	// renumbered past it.
	it0 := reportItem(r, sealed[0])
	assert.Equal(t, MigrateDone, it0.Outcome)
	assert.GreaterOrEqual(t, it0.InoTo, uint64(1000)<<inoShift, "renumbered past the catalog's seq/ino")
	assert.Positive(t, r.Renumbered)
	_ = saving
}

// A record too large for one etcd request (a store written before the
// record limits, say) is reported, and the other images migrate.
func TestMigrateTooLarge(t *testing.T) {
	src := t.TempDir()
	sealed, _, _, saving := migrateSource(t, src, 4)
	recs, _, _ := migrateSrcRecords(t, src)
	var im Image
	require.NoError(t, json.Unmarshal(recs[sealed[1]], &im))
	for i := range 30 {
		im.Extra[fmt.Sprintf("big%02d", i)] = strings.Repeat("x", 60<<10)
	}
	big, err := json.Marshal(&im)
	require.NoError(t, err)
	db, err := pebblekv.Open(filepath.Join(src, "catalog"), pebblekv.Options{})
	require.NoError(t, err)
	_, err = db.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: prefixImage + im.ID, Value: big}}})
	require.NoError(t, err)
	require.NoError(t, db.Close())
	d := newMigrateDst(t)

	r, err := Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{})
	require.NoError(t, err)
	it := reportItem(r, im.ID)
	assert.Equal(t, MigrateTooLarge, it.Outcome, it.Detail)
	assert.Equal(t, 2, r.Failed, "the large one and the saving one")
	migrateCheck(t, src, d, saving, im.ID)
	_, err = os.Stat(filepath.Join(d.dir, im.ID+".vhd"))
	assert.True(t, os.IsNotExist(err), "no data file left for the image not migrated")
}

// A dry run verifies the data and reports what a run would do, writing
// nothing.
func TestMigrateDryRun(t *testing.T) {
	src := t.TempDir()
	sealed, _, _, saving := migrateSource(t, src, 6)
	bad := sealed[1]
	path := filepath.Join(src, "data", bad+".vhd")
	require.NoError(t, os.Chmod(path, 0o600))
	require.NoError(t, os.Truncate(path, 4096))
	d := newMigrateDst(t)

	r, err := Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{DryRun: true})
	require.NoError(t, err)
	assert.True(t, r.DryRun)
	assert.Equal(t, 8, r.Images)
	assert.Equal(t, 6, r.Migrated, "would be migrated")
	assert.Equal(t, MigrateDataError, reportItem(r, bad).Outcome)
	assert.Contains(t, reportItem(r, bad).Detail, "4096 bytes")
	assert.Equal(t, MigrateSaving, reportItem(r, saving).Outcome)
	assert.Positive(t, r.Bytes, "bytes verified")
	assert.Empty(t, d.keys(t, ""), "a dry run writes nothing to the catalog")
	ents, err := os.ReadDir(d.dir)
	require.NoError(t, err)
	assert.Empty(t, ents, "a dry run writes nothing to the data directory")

	r2, err := Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{})
	require.NoError(t, err)
	assert.Equal(t, r.Migrated, r2.Migrated, "the run does what the dry run said")
	migrateCheck(t, src, d, saving, bad)
}
