package store

import (
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	alice = Caller{UID: 1001, GID: 1001}
	bob   = Caller{UID: 1002, GID: 1002}
)

// fixedVHD is testutil.FixedVHD.
func fixedVHD(t testing.TB, dataSize int) []byte { return testutil.FixedVHD(t, dataSize) }

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{})
	require.NoError(t, err)
	return s
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s := openStore(t, t.TempDir())
	t.Cleanup(func() { s.Close() })
	return s
}

func upload(t *testing.T, s *Store, c Caller, id string, data []byte, chunk int) error {
	t.Helper()
	u, err := s.OpenWrite(c, id, true)
	require.NoError(t, err)
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		_, err := u.WriteAt(data[off:end], int64(off))
		require.NoError(t, err)
	}
	ferr := s.CloseWriter(u)
	require.NoError(t, s.EndWriter(u))
	return ferr
}

func TestCreateDefaults(t *testing.T) {
	s := newStore(t)
	im, err := s.Create(alice, "superos-2024.1")
	require.NoError(t, err)
	want := map[string]string{
		KeyName: "superos-2024.1", KeyStatus: "queued", KeyOwner: "1001",
		KeyVisibility: "private", KeyMinRAM: "0", KeyMinDisk: "0",
		KeyProtected: "false", KeyDiskFormat: "vhd", KeyContainerFormat: "bare",
	}
	for k, v := range want {
		got, ok := im.Property(k)
		assert.True(t, ok, k)
		assert.Equal(t, v, got, k)
	}
	for _, k := range []string{KeyChecksum, KeySize, KeyVirtualSize, KeyOSHashValue} {
		_, ok := im.Property(k)
		assert.False(t, ok, "%s is unset until sealed", k)
	}
	created, _ := im.Property(KeyCreatedAt)
	_, err = time.Parse(time.RFC3339, created)
	assert.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, im.ID)

	_, err = s.Create(bob, "superos-2024.1")
	assert.ErrorIs(t, err, ErrExists)
	for _, bad := range []string{"", ".", "..", "a/b", "a\x00b", string(make([]byte, 256))} {
		_, err = s.Create(alice, bad)
		assert.ErrorIs(t, err, ErrInvalid, "%q", bad)
	}
}

func TestSealInOrderAndOutOfOrder(t *testing.T) {
	data := fixedVHD(t, 3<<20+512*7)
	wantMD5 := md5.Sum(data)
	wantSHA := sha512.Sum512(data)
	for name, write := range map[string]func(*Store, string) error{
		"in order": func(s *Store, id string) error { return upload(t, s, alice, id, data, 128<<10) },
		"footer first": func(s *Store, id string) error {
			u, err := s.OpenWrite(alice, id, false)
			require.NoError(t, err)
			n := len(data) - 512
			_, err = u.WriteAt(data[n:], int64(n))
			require.NoError(t, err)
			_, err = u.WriteAt(data[:n], 0)
			require.NoError(t, err)
			require.NoError(t, s.CloseWriter(u))
			return s.EndWriter(u)
		},
		"hole then truncate": func(s *Store, id string) error {
			// Zero the middle of the disk, write around it, then extend
			// with ftruncate before the footer: the in-order path hashes
			// the holes as zeros.
			d := append([]byte(nil), data...)
			clear(d[1<<20 : 2<<20])
			clear(d[3<<20 : len(d)-512])
			u, err := s.OpenWrite(alice, id, false)
			require.NoError(t, err)
			_, err = u.WriteAt(d[:1<<20], 0)
			require.NoError(t, err)
			_, err = u.WriteAt(d[2<<20:3<<20], 2<<20)
			require.NoError(t, err)
			require.NoError(t, u.Truncate(int64(len(d)-512)))
			_, err = u.WriteAt(d[len(d)-512:], int64(len(d)-512))
			require.NoError(t, err)
			require.NoError(t, s.CloseWriter(u))
			require.NoError(t, s.EndWriter(u))
			sum := md5.Sum(d)
			im := s.Get(id)
			assert.Equal(t, StatusActive, im.Status)
			assert.Equal(t, hex.EncodeToString(sum[:]), im.Checksum)
			return errHandled
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			im, err := s.Create(alice, "img")
			require.NoError(t, err)
			err = write(s, im.ID)
			if errors.Is(err, errHandled) {
				return
			}
			require.NoError(t, err)
			im = s.Get(im.ID)
			assert.Equal(t, StatusActive, im.Status)
			assert.Equal(t, hex.EncodeToString(wantMD5[:]), im.Checksum)
			assert.Equal(t, "sha512", im.OSHashAlgo)
			assert.Equal(t, hex.EncodeToString(wantSHA[:]), im.OSHashValue)
			assert.Equal(t, int64(len(data)), im.Size)
			assert.Equal(t, int64(len(data)-512), im.VirtualSize)
			assert.Equal(t, "fixed", im.Extra[KeyVHDDiskType])

			f, err := s.OpenRead(alice, im.ID)
			require.NoError(t, err)
			defer f.Close()
			fi, err := f.Stat()
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o400), fi.Mode().Perm(), "sealed data is read-only on the backing filesystem, for the daemon's user only")
			got := make([]byte, len(data))
			_, err = f.ReadAt(got, 0)
			require.NoError(t, err)
			assert.Equal(t, data, got)
		})
	}
}

var errHandled = errors.New("handled")

func TestSealedIsImmutable(t *testing.T) {
	s := newStore(t)
	im, _ := s.Create(alice, "img")
	require.NoError(t, upload(t, s, alice, im.ID, fixedVHD(t, 1<<20), 1<<20))
	for _, c := range []Caller{Root, alice} {
		_, err := s.OpenWrite(c, im.ID, false)
		assert.ErrorIs(t, err, ErrImmutable)
		_, err = s.CreateScratch(c, im.ID, "tmp")
		assert.ErrorIs(t, err, ErrImmutable)
		assert.ErrorIs(t, s.DiscardUpload(c, im.ID), ErrImmutable)
		for _, k := range []string{KeyID, KeyStatus, KeyChecksum, KeySize, KeyOwner, KeyCreatedAt, KeyVHDDiskType, "os_glance_x"} {
			assert.ErrorIs(t, s.SetProperty(c, im.ID, k, "x", SetAny), ErrImmutable, k)
		}
	}
}

func TestRefusedUploadIsKilledAndRetried(t *testing.T) {
	s := newStore(t)
	im, _ := s.Create(alice, "img")
	data := fixedVHD(t, 2<<20)
	err := upload(t, s, alice, im.ID, data[:len(data)/2], 64<<10)
	assert.ErrorIs(t, err, ErrRefused)
	got := s.Get(im.ID)
	assert.Equal(t, StatusKilled, got.Status)
	assert.NotEmpty(t, got.Extra[KeyKillReason])
	_, err = s.OpenRead(alice, im.ID)
	assert.ErrorIs(t, err, ErrPermission, "killed data is not readable")
	ents, _ := os.ReadDir(filepath.Join(s.Dir(), "staging"))
	assert.Empty(t, ents, "a refused upload gives its space back")

	require.NoError(t, upload(t, s, alice, im.ID, data, 1<<20))
	got = s.Get(im.ID)
	assert.Equal(t, StatusActive, got.Status)
	_, has := got.Extra[KeyKillReason]
	assert.False(t, has, "kill reason cleared by a good upload")
}

func TestScratchRenameCompletesUpload(t *testing.T) {
	s := newStore(t)
	im, _ := s.Create(alice, "img")
	data := fixedVHD(t, 1<<20)
	u, err := s.CreateScratch(alice, im.ID, ".image.vhd.XyZ")
	require.NoError(t, err)
	_, err = u.WriteAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, s.EndWriter(u))
	assert.Equal(t, StatusQueued, s.Get(im.ID).Status, "a scratch file is never sealed by itself")
	assert.Equal(t, []string{".image.vhd.XyZ"}, s.ScratchNames(im.ID))

	require.NoError(t, s.RenameScratch(alice, im.ID, ".image.vhd.XyZ", ImageDataName, RenameReplace))
	assert.Equal(t, StatusActive, s.Get(im.ID).Status)
	assert.Empty(t, s.ScratchNames(im.ID))
	ents, _ := os.ReadDir(filepath.Join(s.Dir(), "staging"))
	assert.Empty(t, ents, "staging area is empty after the seal")
}

func TestPropertiesRules(t *testing.T) {
	s := newStore(t)
	im, _ := s.Create(alice, "img")
	id := im.ID
	ok := func(k, v string) { assert.NoError(t, s.SetProperty(alice, id, k, v, SetAny), "%s=%s", k, v) }
	bad := func(k, v string, want error) {
		before := s.Get(id)
		assert.ErrorIs(t, s.SetProperty(alice, id, k, v, SetAny), want, "%s=%q", k, v)
		assert.Same(t, before, s.Get(id), "a refused write changes nothing")
	}
	ok(KeyMinRAM, "1024")
	ok(KeyMinDisk, "20")
	ok(KeyProtected, "true")
	ok(KeyProtected, "false")
	ok(KeyVisibility, "shared")
	ok("com.rackspace__1__release_id", "42")
	ok("os_distro", "superos")
	bad(KeyMinRAM, "-1", ErrInvalid)
	bad(KeyMinRAM, "abc", ErrInvalid)
	bad(KeyProtected, "yes", ErrInvalid)
	bad(KeyVisibility, "everyone", ErrInvalid)
	bad(KeyVisibility, "public", ErrNotPermitted) // root only
	bad("a/b", "x", ErrInvalid)
	bad("bad\tkey", "x", ErrInvalid)
	bad("os_glance_foo", "x", ErrImmutable)
	bad("big", string(make([]byte, MaxValueBytes+1)), ErrTooBig)
	ok("big", string(make([]byte, MaxValueBytes)))
	assert.NoError(t, s.SetProperty(Root, id, KeyVisibility, "public", SetAny))

	assert.ErrorIs(t, s.SetProperty(bob, id, "os_distro", "evil", SetAny), ErrPermission)
	assert.ErrorIs(t, s.SetProperty(alice, id, "os_distro", "x", SetCreate), ErrExists)
	assert.ErrorIs(t, s.SetProperty(alice, id, "nope", "x", SetReplace), ErrNotFound)
	assert.ErrorIs(t, s.RemoveProperty(alice, id, KeyMinRAM), ErrNotPermitted)
	assert.ErrorIs(t, s.RemoveProperty(alice, id, KeyChecksum), ErrImmutable)
	assert.ErrorIs(t, s.RemoveProperty(bob, id, "os_distro"), ErrPermission)
	assert.NoError(t, s.RemoveProperty(alice, id, "os_distro"))
	assert.ErrorIs(t, s.RemoveProperty(alice, id, "os_distro"), ErrNotFound)
}

func TestPropertyQuota(t *testing.T) {
	s, err := Open(t.TempDir(), Options{PropertyQuota: 2})
	require.NoError(t, err)
	defer s.Close()
	im, _ := s.Create(alice, "img")
	require.NoError(t, s.SetProperty(alice, im.ID, "a", "1", SetAny))
	require.NoError(t, s.SetProperty(alice, im.ID, "b", "1", SetAny))
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, "c", "1", SetAny), ErrQuota)
	assert.NoError(t, s.SetProperty(alice, im.ID, "b", "2", SetAny), "replacing does not count")
}

func TestRenameDeleteProtected(t *testing.T) {
	s := newStore(t)
	a, _ := s.Create(alice, "a")
	b, _ := s.Create(alice, "b")
	assert.ErrorIs(t, s.Rename(alice, a.ID, "b"), ErrExists)
	assert.ErrorIs(t, s.Rename(bob, a.ID, "c"), ErrPermission)
	require.NoError(t, s.Rename(alice, a.ID, "c"))
	assert.Nil(t, s.Lookup("a"))
	assert.Equal(t, a.ID, s.Lookup("c").ID)
	// The old name is free for a new image.
	_, err := s.Create(alice, "a")
	require.NoError(t, err)

	require.NoError(t, s.SetProperty(alice, b.ID, "os_distro", "superos", SetAny))
	require.NoError(t, s.SetProperty(alice, b.ID, KeyProtected, "true", SetAny))
	assert.ErrorIs(t, s.Delete(Root, b.ID), ErrNotPermitted)
	assert.ErrorIs(t, s.RemoveProperty(alice, b.ID, "os_distro"), ErrNotPermitted, "a protected image keeps its properties")
	assert.NoError(t, s.SetProperty(alice, b.ID, "os_distro", "superos2", SetAny), "values still change")
	require.NoError(t, s.SetProperty(alice, b.ID, KeyProtected, "false", SetAny))
	assert.ErrorIs(t, s.Delete(bob, b.ID), ErrPermission)
	require.NoError(t, s.Delete(alice, b.ID))
	assert.Nil(t, s.Get(b.ID))
	assert.Nil(t, s.Lookup("b"))
}

func TestDeleteKeepsOpenReaders(t *testing.T) {
	s := newStore(t)
	im, _ := s.Create(alice, "img")
	data := fixedVHD(t, 1<<20)
	require.NoError(t, upload(t, s, alice, im.ID, data, 1<<20))
	f, err := s.OpenRead(alice, im.ID)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, s.Delete(alice, im.ID))
	got := make([]byte, len(data))
	_, err = f.ReadAt(got, 0)
	require.NoError(t, err)
	assert.Equal(t, data, got)
	ids, err := s.data.List()
	require.NoError(t, err)
	assert.Empty(t, ids)
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	im, _ := s.Create(alice, "img")
	data := fixedVHD(t, 1<<20)
	require.NoError(t, upload(t, s, alice, im.ID, data, 1<<20))
	require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
	q, _ := s.Create(bob, "queued")
	before := s.Get(im.ID)
	inoDistro := before.PropertyIno("os_distro")
	require.NoError(t, s.Close())

	s = openStore(t, dir)
	defer s.Close()
	after := s.Get(im.ID)
	require.NotNil(t, after)
	assert.Equal(t, before, after)
	assert.Equal(t, inoDistro, after.PropertyIno("os_distro"))
	assert.Equal(t, q.InoBase, s.Lookup("queued").InoBase)
	n, _ := s.Create(alice, "new")
	assert.Greater(t, n.InoBase, q.InoBase, "inode numbers are never reused")
}

func TestRestartKillsInterruptedUpload(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	im, _ := s.Create(alice, "img")
	u, err := s.OpenWrite(alice, im.ID, false)
	require.NoError(t, err)
	_, err = u.WriteAt([]byte("partial"), 0)
	require.NoError(t, err)
	assert.Equal(t, StatusSaving, s.Get(im.ID).Status)
	require.NoError(t, s.Close()) // the writer never closed

	s = openStore(t, dir)
	defer s.Close()
	got := s.Get(im.ID)
	assert.Equal(t, StatusKilled, got.Status)
	assert.Contains(t, got.Extra[KeyKillReason], "interrupted")
	ents, _ := os.ReadDir(filepath.Join(dir, "staging"))
	assert.Empty(t, ents, "leftover staging data is reclaimed")
}

func TestPropertyInodesStable(t *testing.T) {
	s := newStore(t)
	im, _ := s.Create(alice, "img")
	require.NoError(t, s.SetProperty(alice, im.ID, "a", "1", SetAny))
	inoA := s.Get(im.ID).PropertyIno("a")
	require.NoError(t, s.SetProperty(alice, im.ID, "b", "1", SetAny))
	require.NoError(t, s.RemoveProperty(alice, im.ID, "a"))
	require.NoError(t, s.SetProperty(alice, im.ID, "a", "2", SetAny))
	cur := s.Get(im.ID)
	assert.NotEqual(t, inoA, cur.PropertyIno("a"), "a re-created key gets a new inode")
	assert.NotEqual(t, cur.PropertyIno("b"), cur.PropertyIno("a"))
	assert.NotEqual(t, cur.Ino(SlotData), cur.PropertyIno(KeyID))
}
