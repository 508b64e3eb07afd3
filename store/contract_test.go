package store

import (
	"crypto/md5"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The rules of the layout contract (docs/layout.md, docs/concepts.md and
// README.md), one case per sentence that the store decides. Each case
// quotes its sentence (shortened with "..." where the rest is not the
// store's) and checks it against a real store in t.TempDir(), through the
// store's API as fs/ calls it. Where the wording of a sentence and the
// store disagree, the case is skipped with the reason (reported in issue
// 14's closing note), so the table says what is not true yet.
//
// Sentences that are not store rules (the kernel's view: modes, errno
// numbers, what a tool prints, FUSE caching) are covered by integration/:
//
//	layout.md "Every directory lists . and .."                              TestOpsDotEntries
//	layout.md "rmdir images/<name> deletes an image even though ... not empty" TestRmdirDeletesImage, TestDeleteWithTools
//	layout.md "a delete that is refused (... a read-only mount) changes nothing" TestDeleteRefused
//	layout.md "Any tool that writes a file works (cp, dd, cat >, rsync, ...)" TestUploadWriters
//	layout.md "close(2) fails with EINVAL, so the tool reports it"          TestUploadIncomplete, TestKillReasons
//	layout.md "Sealed data is immutable: mode 0444 ... chmod, chown, utimes" TestSealedImmutable, TestSealedModes
//	layout.md "Reading a property file gives the value and one newline"     TestPropertyFiles
//	layout.md "Writing a whole value ... one trailing newline is stripped"  TestPropertyFiles
//	layout.md "A refused value ... fails at the write that completes the line" TestShellEchoReportsRefusals
//	layout.md "System properties are 0444"                                  TestAccessModes
//	layout.md "Every property is also the extended attribute user.<key> ..." TestXattrs
//	layout.md "Attributes outside user.* answer EOPNOTSUPP"                 TestXattrs
//	layout.md "Values are escaped in directory names: / as %2F ..."         TestViewsEscaping (and fs FuzzViewName)
//	layout.md "Empty values and values longer than 255 bytes ... no directory" TestViewsEscaping
//	layout.md "A mount serves users other than the one who mounted it only with --allow-other" TestAccessPrivate (mountAllowOther)
//	layout.md "Every refusal is an errno a shell tool prints: ..."          fs/errno.go; TestAccess*, TestShellEchoReportsRefusals
//	layout.md "After a crash (kill -9, power loss) the next mount repairs the store" TestCrashLoop, TestCrashDuringUpload
//	README.md "a seal at the close of a process that opened image.vhd read-write ... is provisional" TestQemuImgConvertIntoMount, TestReopenAfterAnotherReader, TestReopenAfterWindow
//	README.md "On a full disk an upload fails at the writer with ENOSPC and the image is killed" TestENOSPCUpload
//	README.md "other users' reads of property files go to imagefs every time" TestPropertyPagesPerUser
//	README.md "Revoking access ... holds at once, also through descriptors ... opened before" TestRevokedAccessHeldDescriptors
//	README.md "(mv onto a name the user sees fails first at the sticky bit of images/: EPERM)" TestNamesOneNamespace
//	README.md "mv properties/a properties/b ... the rename fails with EPERM (mv would print EINVAL ...)" TestRenamePropertyOntoTypedKey
//	README.md "cp -a /backup/X $M/images/ ... an image whose maker sets its directory's times ... is removed" TestCopyArchiveIntoImages
//	README.md "An rm that races the seal either discards the upload ... or fails with EPERM" TestUnlinkDuringSeal
//	README.md "After a refusal, the tool's removals of that image's property and scratch files fail the same way" TestDeleteRefused
//	README.md "RENAME_NOREPLACE works, RENAME_EXCHANGE is EINVAL"            TestRenameNoReplace
//	README.md "A file created and closed without a write (touch, : >) adds the key with an empty value" TestPropertyCreate
//
// Store rules that other store tests already check, case by case:
//
//	README.md "If a catalog commit fails all the same (an I/O error), the change fails with EIO, nothing is changed" TestCatalogCommitFailureIsEIONotPanic
//	README.md "when even that is missing it first gives back the 1 MiB of STORE/catalog/imagefs-reserve" TestDeleteOnFullDiskUsesReserve
//	README.md "a seal whose record did not commit is finished from its data"  TestCompleteUncommittedSeal
//	README.md "the data of an image whose delete had committed is removed"    TestInterruptedDeleteRemovesData
//	README.md "A store that group or others can read ... is tightened at mount" TestOpenTightensLooseStore
//	README.md "imagefs fsck STORE checks a store that is not mounted ..."     TestCheckFindsAndRepairs, TestCheckRecordsAndIndex
//	README.md "Writes that arrive in order are hashed as they arrive"         TestSealInOrderAndOutOfOrder

// contractCase is one sentence of the contract and its check.
type contractCase struct {
	doc   string // the document: layout.md, concepts.md or README.md
	says  string // the sentence, quoted
	check func(t *testing.T, s *Store)
}

var carolC = Caller{UID: 1003, GID: 1003}

// Upload calls, in one place: the store's names for "a write handle is
// closed" may change without the cases changing.

// writeAt writes data at off to u.
func writeAt(t *testing.T, u *Upload, data []byte, off int64) {
	t.Helper()
	_, err := u.WriteAt(data, off)
	require.NoError(t, err)
}

// closeWrite closes the only write handle of u as close(2) does (the
// flush, then the release) and returns the seal's error.
func closeWrite(s *Store, u *Upload) error {
	ferr := s.CloseWriter(u)
	rerr := s.EndWriter(u)
	if ferr != nil {
		return ferr
	}
	return rerr
}

// queued makes an image of c, status queued.
func queued(t *testing.T, s *Store, c Caller, name string) *Image {
	t.Helper()
	im, err := s.Create(c, name)
	require.NoError(t, err)
	return im
}

// active makes an image of c sealed with a 1 MiB fixed VHD; it returns the
// record and the data.
func active(t *testing.T, s *Store, c Caller, name string) (*Image, []byte) {
	t.Helper()
	im := queued(t, s, c, name)
	data := fixedVHD(t, 1<<20)
	require.NoError(t, upload(t, s, c, im.ID, data, 256<<10))
	im = s.Get(im.ID)
	require.Equal(t, StatusActive, im.Status)
	return im, data
}

// killed makes an image of c whose upload (half a VHD) was refused.
func killed(t *testing.T, s *Store, c Caller, name string) *Image {
	t.Helper()
	im := queued(t, s, c, name)
	data := fixedVHD(t, 1<<20)
	require.ErrorIs(t, upload(t, s, c, im.ID, data[:len(data)/2], 64<<10), ErrRefused)
	im = s.Get(im.ID)
	require.Equal(t, StatusKilled, im.Status)
	return im
}

// saving makes an image of c with an upload open for writing and written
// to; the returned upload is its only write handle.
func saving(t *testing.T, s *Store, c Caller, name string) (*Image, *Upload) {
	t.Helper()
	im := queued(t, s, c, name)
	u, err := s.OpenWrite(c, im.ID, true)
	require.NoError(t, err)
	writeAt(t, u, make([]byte, 4096), 0)
	im = s.Get(im.ID)
	require.Equal(t, StatusSaving, im.Status)
	return im, u
}

// withVisibility sets im's visibility (root may set every one).
func withVisibility(t *testing.T, s *Store, im *Image, v string) *Image {
	t.Helper()
	require.NoError(t, s.SetProperty(Root, im.ID, KeyVisibility, v, SetAny))
	return s.Get(im.ID)
}

// uploadResult uploads data to image id as c and returns the record after.
func uploadResult(t *testing.T, s *Store, c Caller, id string, data []byte) (*Image, error) {
	t.Helper()
	err := upload(t, s, c, id, data, 64<<10)
	return s.Get(id), err
}

// footerPatched returns a copy of the fixed VHD b with its footer changed
// by fn and its checksum made right again.
func footerPatched(b []byte, fn func(f []byte)) []byte {
	b = slices.Clone(b)
	f := b[len(b)-512:]
	fn(f)
	binary.BigEndian.PutUint32(f[64:], 0)
	var sum uint32
	for _, c := range f {
		sum += uint32(c)
	}
	binary.BigEndian.PutUint32(f[64:], ^sum)
	return b
}

// crashCopy copies the store's directory as it is on disk now, while the
// store is open: what a power loss leaves. It returns the copy's path.
func crashCopy(t *testing.T, s *Store) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "crashed")
	err := filepath.WalkDir(s.Dir(), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.Dir(), p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	require.NoError(t, err)
	return dst
}

// unchanged asserts that a refused call left image id's record as it was.
func unchanged(t *testing.T, s *Store, before *Image) {
	t.Helper()
	assert.Same(t, before, s.Get(before.ID), "a refused change changes nothing")
}

// readAll reads the sealed data of image id as c.
func readAll(t *testing.T, s *Store, c Caller, id string) []byte {
	t.Helper()
	f, err := s.OpenRead(c, id)
	require.NoError(t, err)
	defer f.Close()
	b, err := io.ReadAll(f)
	require.NoError(t, err)
	return b
}

var contractCases = []contractCase{
	// ---- layout.md
	{"layout.md", "Inode numbers are stable across mounts.", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
		im = s.Get(im.ID)
		s2, err := Open(crashCopy(t, s), Options{})
		require.NoError(t, err)
		defer s2.Close()
		again := s2.Get(im.ID)
		assert.Equal(t, im.Ino(SlotData), again.Ino(SlotData))
		assert.Equal(t, im.PropertyIno("os_distro"), again.PropertyIno("os_distro"))
		assert.Equal(t, im.PropertyIno(KeyChecksum), again.PropertyIno(KeyChecksum))
	}},
	{"layout.md", "`mkdir images/<name>` creates an image: a new id, status `queued`, the caller as `owner`.", func(t *testing.T, s *Store) {
		a := queued(t, s, alice, "a")
		b := queued(t, s, bob, "b")
		assert.NotEqual(t, a.ID, b.ID)
		assert.Equal(t, StatusQueued, a.Status)
		owner, _ := b.Property(KeyOwner)
		assert.Equal(t, "1002", owner)
	}},
	{"layout.md", "`mv images/<a> images/<b>` renames it (the id and `by-id/` path stay).", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		require.NoError(t, s.Rename(alice, im.ID, "b"))
		assert.Nil(t, s.Lookup("a"))
		assert.Equal(t, im.ID, s.Lookup("b").ID)
		assert.Equal(t, "b", s.Get(im.ID).Name)
		assert.Equal(t, im.Ino(SlotByIDDir), s.Get(im.ID).Ino(SlotByIDDir))
	}},
	{"layout.md", "Names are 1-255 bytes.", func(t *testing.T, s *Store) {
		_, err := s.Create(alice, strings.Repeat("n", 255))
		assert.NoError(t, err)
		_, err = s.Create(alice, strings.Repeat("n", 256))
		assert.ErrorIs(t, err, ErrInvalid)
		_, err = s.Create(alice, "")
		assert.ErrorIs(t, err, ErrInvalid)
	}},
	{"layout.md", "An id never moves and its bytes never change. ... `by-id/<id>/image.vhd`: that path yields those bytes or ENOENT, never another image's data, even while names are renamed, deleted and reused", func(t *testing.T, s *Store) {
		old, data := active(t, s, alice, "a")
		require.NoError(t, s.Rename(alice, old.ID, "a-old"))
		fresh, freshData := active(t, s, alice, "a") // a new image takes the old name
		assert.NotEqual(t, old.ID, fresh.ID)
		assert.Equal(t, data, readAll(t, s, alice, old.ID))
		assert.Equal(t, freshData, readAll(t, s, alice, fresh.ID))
		require.NoError(t, s.Delete(alice, old.ID))
		_, err := s.OpenRead(alice, old.ID)
		assert.ErrorIs(t, err, ErrNotFound, "ENOENT, never another image's data")
	}},
	{"layout.md", "Deleting an image removes its data and its record in one change", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		var changes atomic.Int32
		s.OnChange(func(Change) { changes.Add(1) })
		require.NoError(t, s.Delete(alice, im.ID))
		assert.Equal(t, int32(1), changes.Load(), "one change")
		assert.Nil(t, s.Get(im.ID))
		assert.Nil(t, s.Lookup("a"))
		_, err := s.data.Open(im.ID, ExpectOf(im))
		assert.Error(t, err, "the data is gone")
	}},
	{"layout.md", "a delete that is refused (a `protected` image, a caller who is not the owner, ...) changes nothing.", func(t *testing.T, s *Store) {
		im, data := active(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyProtected, "true", SetAny))
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
		before := s.Get(im.ID)
		assert.ErrorIs(t, s.Delete(alice, im.ID), ErrNotPermitted)
		unchanged(t, s, before)
		assert.ErrorIs(t, s.Delete(bob, im.ID), ErrPermission)
		unchanged(t, s, before)
		assert.Equal(t, data, readAll(t, s, alice, im.ID))
	}},
	{"layout.md", "`image.vhd` is writable while the image is `queued`, `saving` or `killed`, by its owner, one writer at a time (a second writer gets EBUSY).", func(t *testing.T, s *Store) {
		q := queued(t, s, alice, "q")
		u, err := s.OpenWrite(alice, q.ID, false)
		require.NoError(t, err)
		require.NoError(t, s.EndWriter(u))
		k := killed(t, s, alice, "k")
		u, err = s.OpenWrite(alice, k.ID, false)
		require.NoError(t, err)
		require.NoError(t, s.EndWriter(u))
		sv, u := saving(t, s, alice, "s")
		_, err = s.OpenWrite(alice, sv.ID, false)
		assert.ErrorIs(t, err, ErrBusy, "a second writer")
		_, err = s.OpenWrite(Root, sv.ID, false)
		assert.ErrorIs(t, err, ErrBusy, "a second writer, root")
		writeAt(t, u, make([]byte, 4096), 4096)
		_, err = s.OpenWrite(bob, q.ID, true)
		assert.ErrorIs(t, err, ErrPermission, "not the owner")
		a, _ := active(t, s, alice, "a")
		_, err = s.OpenWrite(alice, a.ID, false)
		assert.ErrorIs(t, err, ErrImmutable, "active")
	}},
	{"layout.md", "A file created in the image directory under another name is an upload of the image's data under that name ... it is sealed at its writer's close ... A file whose name starts with `.` is a temporary (scratch) file, never sealed by itself", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		u, err := s.CreateFile(alice, im.ID, ".disk.vhd.tmp", Writer{})
		require.NoError(t, err)
		writeAt(t, u, fixedVHD(t, 1<<20), 0)
		closeWrite(s, u)
		assert.Equal(t, StatusQueued, s.Get(im.ID).Status, "a temporary file is never sealed by itself")
		im2 := queued(t, s, alice, "b")
		u, err = s.CreateFile(alice, im2.ID, "disk.vhd", Writer{})
		require.NoError(t, err)
		writeAt(t, u, fixedVHD(t, 1<<20), 0)
		require.NoError(t, closeWrite(s, u))
		assert.Equal(t, StatusActive, s.Get(im2.ID).Status, "any other name is an upload, sealed at its close")
	}},
	{"layout.md", "renaming it onto `image.vhd` completes the upload.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		u, err := s.CreateScratch(alice, im.ID, ".disk.vhd.XXXX")
		require.NoError(t, err)
		writeAt(t, u, fixedVHD(t, 1<<20), 0)
		require.NoError(t, s.EndWriter(u))
		assert.Equal(t, StatusQueued, s.Get(im.ID).Status)
		require.NoError(t, s.RenameScratch(alice, im.ID, ".disk.vhd.XXXX", ImageDataName, RenameReplace))
		assert.Equal(t, StatusActive, s.Get(im.ID).Status)
		assert.Empty(t, s.ScratchNames(im.ID))
	}},
	{"layout.md", "Sealed: `checksum` (MD5), `os_hash_algo` `sha512` and `os_hash_value`, `size`, `virtual_size` and the `vhd_*` facts are set and the status is `active`.", func(t *testing.T, s *Store) {
		im, data := active(t, s, alice, "a")
		m, h := md5.Sum(data), sha512.Sum512(data)
		assert.Equal(t, hex.EncodeToString(m[:]), im.Checksum)
		assert.Equal(t, "sha512", im.OSHashAlgo)
		assert.Equal(t, hex.EncodeToString(h[:]), im.OSHashValue)
		assert.Equal(t, int64(len(data)), im.Size)
		assert.Equal(t, int64(1<<20), im.VirtualSize)
		assert.Equal(t, "fixed", im.Extra[KeyVHDDiskType])
		assert.NotEmpty(t, im.Extra[KeyVHDUniqueID])
	}},
	{"layout.md", "Refused (an incomplete or invalid upload): status `killed`, the reason in `imagefs_kill_reason`", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		got, err := uploadResult(t, s, alice, im.ID, fixedVHD(t, 1<<20)[:100000])
		assert.ErrorIs(t, err, ErrRefused, "the close fails (EINVAL)")
		assert.Equal(t, StatusKilled, got.Status)
		assert.Contains(t, got.Extra[KeyKillReason], "incomplete")
	}},
	{"layout.md", "When close(2) returns, the status is final.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		u, err := s.OpenWrite(alice, im.ID, true)
		require.NoError(t, err)
		writeAt(t, u, fixedVHD(t, 1<<20), 0)
		require.NoError(t, s.CloseWriter(u))
		assert.Equal(t, StatusActive, s.Get(im.ID).Status, "final at the flush, before the release")
		require.NoError(t, s.EndWriter(u))
	}},
	{"layout.md", "Only sealed data is readable: reading `image.vhd` of an image that is not `active` fails with EACCES (root may still read a `deactivated` one).", func(t *testing.T, s *Store) {
		q := queued(t, s, alice, "q")
		k := killed(t, s, alice, "k")
		sv, _ := saving(t, s, alice, "s")
		for _, im := range []*Image{q, k, sv} {
			for _, c := range []Caller{alice, Root} {
				_, err := s.OpenRead(c, im.ID)
				assert.ErrorIs(t, err, ErrPermission, "%s by %d", im.Status, c.UID)
			}
		}
		d, data := active(t, s, alice, "d")
		require.NoError(t, s.SetProperty(Root, d.ID, KeyStatus, "deactivated", SetAny))
		_, err := s.OpenRead(alice, d.ID)
		assert.ErrorIs(t, err, ErrPermission)
		assert.Equal(t, data, readAll(t, s, Root, d.ID))
	}},
	{"layout.md", "Sealed data is immutable: ... every attempt to change its bytes ... (open for write, O_TRUNC, truncate, ... rename onto it) fails with EPERM, root included.", func(t *testing.T, s *Store) {
		im, data := active(t, s, alice, "a")
		for _, c := range []Caller{alice, Root} {
			for _, trunc := range []bool{false, true} {
				_, err := s.OpenWrite(c, im.ID, trunc)
				assert.ErrorIs(t, err, ErrImmutable)
			}
			_, err := s.CreateFile(c, im.ID, ImageDataName, Writer{})
			assert.ErrorIs(t, err, ErrImmutable)
			_, err = s.CreateScratch(c, im.ID, ".tmp")
			assert.ErrorIs(t, err, ErrImmutable, "no scratch file to rename onto it")
			assert.ErrorIs(t, s.DiscardUpload(c, im.ID), ErrImmutable)
		}
		assert.Equal(t, data, readAll(t, s, alice, im.ID))
	}},
	{"layout.md", "A refused value (a typed key's rule, a value the caller may not set) fails ... and nothing changes.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		before := s.Get(im.ID)
		assert.ErrorIs(t, s.CheckSetProperty(alice, im.ID, KeyMinRAM, "abc", SetAny), ErrInvalid, "checked before the close")
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMinRAM, "abc", SetAny), ErrInvalid)
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyVisibility, "public", SetAny), ErrNotPermitted)
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, "os_distro", "x", SetAny), ErrPermission)
		unchanged(t, s, before)
	}},
	{"layout.md", "Renaming a file onto a key in `properties/` sets the key and removes the file in one change", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, ".os_distro.swp", "superos", SetAny))
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "hyperos", SetAny))
		var changes []Change
		s.OnChange(func(c Change) { changes = append(changes, c) })
		require.NoError(t, s.RenameProperty(alice, im.ID, ".os_distro.swp", "os_distro", RenameReplace))
		require.Len(t, changes, 1, "one change")
		got := changes[0].New
		assert.Equal(t, "superos", got.Extra["os_distro"])
		_, has := got.Extra[".os_distro.swp"]
		assert.False(t, has)
	}},
	{"layout.md", "A new file in `properties/` adds a custom property; removing it deletes the property.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetCreate))
		assert.Contains(t, s.Get(im.ID).Keys(), "os_distro")
		require.NoError(t, s.RemoveProperty(alice, im.ID, "os_distro"))
		assert.NotContains(t, s.Get(im.ID).Keys(), "os_distro")
	}},
	{"layout.md", "Core properties cannot be removed.", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		for _, k := range coreKeys {
			for _, c := range []Caller{alice, Root} {
				err := s.RemoveProperty(c, im.ID, k)
				assert.True(t, errors.Is(err, ErrNotPermitted) || errors.Is(err, ErrImmutable), "%s: %v (EPERM)", k, err)
			}
		}
		unchanged(t, s, im)
	}},
	{"layout.md", "System properties ... refuse changes with EPERM, root included.", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		for _, k := range []string{KeyID, KeyChecksum, KeyOSHashAlgo, KeyOSHashValue, KeySize, KeyVirtualSize, KeyOwner,
			KeyCreatedAt, KeyUpdatedAt, KeyVHDDiskType, KeyKillReason} {
			for _, c := range []Caller{alice, Root} {
				assert.ErrorIs(t, s.SetProperty(c, im.ID, k, "x", SetAny), ErrImmutable, k)
				assert.ErrorIs(t, s.RemoveProperty(c, im.ID, k), ErrImmutable, k)
			}
		}
		unchanged(t, s, im)
	}},
	{"layout.md", "`by-property/<key>/` lists the values in use for a key", func(t *testing.T, s *Store) {
		a, b := queued(t, s, alice, "a"), queued(t, s, alice, "b")
		require.NoError(t, s.SetProperty(alice, a.ID, "os_distro", "superos", SetAny))
		require.NoError(t, s.SetProperty(alice, b.ID, "os_distro", "hyperos", SetAny))
		vals, err := s.ViewValues(alice, "os_distro", nil)
		require.NoError(t, err)
		assert.Equal(t, []string{"hyperos", "superos"}, vals)
	}},
	{"layout.md", "`by-property/<key>/<value>/` lists one symlink per image whose property `key` equals `value`, named by the image's name", func(t *testing.T, s *Store) {
		a, b, c := queued(t, s, alice, "a"), queued(t, s, alice, "b"), queued(t, s, alice, "c")
		for _, im := range []*Image{a, b} {
			require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
		}
		require.NoError(t, s.SetProperty(alice, c.ID, "os_distro", "superos2", SetAny))
		ims, err := s.ViewImages(alice, "os_distro", "superos")
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b"}, imageNames(ims))
	}},
	{"layout.md", "The views are never stale: they change in the same commit as the property they mirror.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
		var stale []string
		s.OnChange(func(Change) { // at once, in the change's own delivery
			if ims, _ := s.ViewImages(alice, "os_distro", "superos"); len(ims) != 0 {
				stale = append(stale, "still under superos")
			}
			if ims, _ := s.ViewImages(alice, "os_distro", "hyperos"); len(ims) != 1 {
				stale = append(stale, "not yet under hyperos")
			}
		})
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "hyperos", SetAny))
		assert.Empty(t, stale)
		s.OnChange(nil)
		require.NoError(t, s.Delete(alice, im.ID))
		vals, _ := s.ViewValues(alice, "os_distro", nil)
		assert.Empty(t, vals, "a deleted image leaves no view")
		require.NoError(t, s.CheckIndex())
	}},
	{"layout.md", "The caller's uid becomes the image's `owner` when it creates the image.", func(t *testing.T, s *Store) {
		im := queued(t, s, bob, "b")
		assert.Equal(t, bob.UID, im.Owner)
		assert.True(t, bob.Owns(im))
		assert.False(t, alice.Owns(im))
	}},
	{"layout.md", "Others see an image according to its `visibility` (`private`: nobody else, ENOENT; `shared`: its `members`, by id, and listed once they accepted; `community`: everyone by id, listed only for its owner; `public`: everyone).", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		sees := func(c Caller) (byName, byID, listed bool) {
			return s.LookupFor(c, "a") != nil, s.GetFor(c, im.ID) != nil, slices.ContainsFunc(s.ListFor(c), func(x *Image) bool { return x.ID == im.ID })
		}
		type seen struct{ byName, byID, listed bool }
		see := func(c Caller) seen { n, i, l := sees(c); return seen{n, i, l} }
		all, none, idOnly := seen{true, true, true}, seen{}, seen{false, true, false}

		assert.Equal(t, all, see(alice), "private: owner")
		assert.Equal(t, all, see(Root), "private: root")
		assert.Equal(t, none, see(bob), "private: others")

		withVisibility(t, s, im, "shared")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, "1002\n", SetAny))
		assert.Equal(t, idOnly, see(bob), "shared: a pending member")
		require.NoError(t, s.SetProperty(bob, im.ID, KeyMembers, "accepted\n", SetAny))
		assert.Equal(t, all, see(bob), "shared: a member who accepted")
		require.NoError(t, s.SetProperty(bob, im.ID, KeyMembers, "rejected\n", SetAny))
		assert.Equal(t, idOnly, see(bob), "shared: a member who rejected")
		assert.Equal(t, none, see(carolC), "shared: not a member")

		withVisibility(t, s, im, "community")
		assert.Equal(t, idOnly, see(carolC), "community: by id, not listed")
		assert.Equal(t, all, see(alice), "community: listed for its owner")

		withVisibility(t, s, im, "public")
		assert.Equal(t, all, see(carolC), "public")
	}},
	{"layout.md", "Only the owner, or root, changes properties, renames or deletes an image.", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		im = withVisibility(t, s, im, "public")
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, "os_distro", "x", SetAny), ErrPermission)
		assert.ErrorIs(t, s.Rename(bob, im.ID, "b"), ErrPermission)
		assert.ErrorIs(t, s.Delete(bob, im.ID), ErrPermission)
		unchanged(t, s, im)
		require.NoError(t, s.SetProperty(Root, im.ID, "os_distro", "x", SetAny))
		require.NoError(t, s.Rename(Root, im.ID, "b"))
		require.NoError(t, s.Delete(Root, im.ID))
	}},
	{"layout.md", "Every change that returned before a crash is kept; a change is applied whole or not at all.", func(t *testing.T, s *Store) {
		im, data := active(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
		require.NoError(t, s.Rename(alice, im.ID, "b"))
		want := s.Get(im.ID)
		s2, err := Open(crashCopy(t, s), Options{})
		require.NoError(t, err)
		defer s2.Close()
		got := s2.Get(im.ID)
		require.NotNil(t, got)
		assert.Equal(t, want.Name, got.Name)
		assert.Equal(t, "superos", got.Extra["os_distro"])
		assert.Equal(t, want.Checksum, got.Checksum)
		assert.Equal(t, data, readAll(t, s2, alice, im.ID))
		require.NoError(t, s2.CheckIndex())
	}},
	{"layout.md", "After a crash ... the next mount repairs the store: an upload that was in flight becomes `killed` with its reason, and no sealed byte changes.", func(t *testing.T, s *Store) {
		a, data := active(t, s, alice, "a")
		b, _ := saving(t, s, alice, "b")
		s2, err := Open(crashCopy(t, s), Options{})
		require.NoError(t, err)
		defer s2.Close()
		got := s2.Get(b.ID)
		assert.Equal(t, StatusKilled, got.Status)
		assert.NotEmpty(t, got.Extra[KeyKillReason])
		assert.Equal(t, a.Checksum, s2.Get(a.ID).Checksum)
		assert.Equal(t, data, readAll(t, s2, alice, a.ID))
	}},

	// ---- concepts.md
	{"concepts.md", "`id` | UUID (v4), assigned at `mkdir` | nobody (system)", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, im.ID)
		assert.ErrorIs(t, s.SetProperty(Root, im.ID, KeyID, "00000000-0000-4000-8000-000000000000", SetAny), ErrImmutable)
	}},
	{"concepts.md", "`name` | 1-255 bytes, unique in the catalog; the directory name under `images/` | owner (`mv`, or writing `name`)", func(t *testing.T, s *Store) {
		a, b := queued(t, s, alice, "a"), queued(t, s, bob, "b")
		require.NoError(t, s.SetProperty(alice, a.ID, KeyName, "a2", SetAny))
		assert.Equal(t, a.ID, s.Lookup("a2").ID)
		assert.ErrorIs(t, s.SetProperty(alice, a.ID, KeyName, "b", SetAny), ErrExists)
		assert.ErrorIs(t, s.Rename(alice, a.ID, "b"), ErrExists)
		assert.ErrorIs(t, s.SetProperty(alice, b.ID, KeyName, "b2", SetAny), ErrPermission)
	}},
	{"concepts.md", "`checksum` | MD5 of the data, 32 lowercase hex digits; `os_hash_algo`, `os_hash_value` | `sha512` and its 128 hex digits", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		assert.Regexp(t, `^[0-9a-f]{32}$`, im.Checksum)
		assert.Regexp(t, `^[0-9a-f]{128}$`, im.OSHashValue)
		q := queued(t, s, alice, "q")
		for _, k := range []string{KeyChecksum, KeyOSHashAlgo, KeyOSHashValue, KeySize, KeyVirtualSize} {
			_, has := q.Property(k)
			assert.False(t, has, "%s is unset until the seal", k)
		}
	}},
	{"concepts.md", "`size` | bytes of the data file; `virtual_size` | bytes of the virtual disk the VHD describes", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		data := fixedVHD(t, 3<<20)
		got, err := uploadResult(t, s, alice, im.ID, data)
		require.NoError(t, err)
		size, _ := got.Property(KeySize)
		vsize, _ := got.Property(KeyVirtualSize)
		assert.Equal(t, strconv.Itoa(len(data)), size)
		assert.Equal(t, strconv.Itoa(3<<20), vsize)
	}},
	{"concepts.md", "`owner` | the uid (decimal) that created the image, or a Keystone project id that no uid maps ... | root only ...; writing the property is refused (EPERM), root included", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		v, _ := im.Property(KeyOwner)
		assert.Equal(t, "1001", v)
		assert.ErrorIs(t, s.SetProperty(Root, im.ID, KeyOwner, "1002", SetAny), ErrImmutable)
		_, err := s.SetOwner(alice, im.ID, Owner{UID: 1002, GID: 1002})
		assert.ErrorIs(t, err, ErrNotPermitted, "the owner does not give its image away")
		_, err = s.SetOwner(Root, im.ID, Owner{Project: "0f3c9a2e5b7d4e1f8a6b5c4d3e2f1a0b"})
		require.NoError(t, err)
		got := s.Get(im.ID)
		v, _ = got.Property(KeyOwner)
		assert.Equal(t, "0f3c9a2e5b7d4e1f8a6b5c4d3e2f1a0b", v)
		assert.Equal(t, uint32(0), got.Owner, "uid 0 on the mount")
		assert.False(t, alice.Owns(got))
	}},
	{"concepts.md", "`created_at`, `updated_at` | RFC 3339 UTC timestamps | nobody (system)", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		for _, k := range []string{KeyCreatedAt, KeyUpdatedAt} {
			v, _ := im.Property(k)
			ts, err := time.Parse(time.RFC3339, v)
			assert.NoError(t, err, k)
			assert.True(t, strings.HasSuffix(v, "Z"), "%s=%s is UTC", k, v)
			assert.WithinDuration(t, time.Now(), ts, time.Minute)
			assert.ErrorIs(t, s.SetProperty(Root, im.ID, k, v, SetAny), ErrImmutable, k)
		}
	}},
	{"concepts.md", "`visibility` | `private` (default), `shared`, `community`, `public` | owner; `public` by root only", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.Equal(t, VisibilityPrivate, im.Visibility)
		for _, v := range []string{"shared", "community", "private"} {
			assert.NoError(t, s.SetProperty(alice, im.ID, KeyVisibility, v, SetAny), v)
		}
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyVisibility, "public", SetAny), ErrNotPermitted)
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyVisibility, "everyone", SetAny), ErrInvalid)
		assert.NoError(t, s.SetProperty(Root, im.ID, KeyVisibility, "public", SetAny))
	}},
	{"concepts.md", "`members` | the members of a `shared` image, one `ID STATUS CREATED UPDATED` line each: a uid (or an API project id), `pending`, `accepted` or `rejected`, the times it was added and last changed | owner adds and removes members; each member sets its own status", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "1002\n", SetAny), ErrNotPermitted, "not shared")
		im = withVisibility(t, s, im, "shared")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, "1002\n1003\n", SetAny))
		im = s.Get(im.ID)
		assert.True(t, im.IsMember(1002))
		assert.True(t, im.IsMember(1003))
		assert.False(t, im.IsMember(1004))
		assert.Equal(t, "1002 pending\n1003 pending", statuses(im))
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "bob smith\n", SetAny), ErrInvalid)
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "1002 accepted\n1003\n", SetAny), ErrNotPermitted, "the owner accepts")
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyMembers, "1002\n", SetAny), ErrPermission, "a member removes another")
		require.NoError(t, s.SetProperty(bob, im.ID, KeyMembers, "accepted\n", SetAny))
		assert.Equal(t, "1002 accepted\n1003 pending", statuses(s.Get(im.ID)))
	}},
	{"concepts.md", "`protected` | `true`/`false`; a protected image cannot be deleted, by root either | owner", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyProtected, "yes", SetAny), ErrInvalid)
		require.NoError(t, s.SetProperty(alice, im.ID, KeyProtected, "true", SetAny))
		assert.ErrorIs(t, s.Delete(Root, im.ID), ErrNotPermitted)
		assert.ErrorIs(t, s.Delete(alice, im.ID), ErrNotPermitted)
		require.NoError(t, s.SetProperty(alice, im.ID, KeyProtected, "false", SetAny))
		require.NoError(t, s.Delete(alice, im.ID))
	}},
	{"concepts.md", "`min_ram`, `min_disk` | integer >= 0 | owner", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		for _, k := range []string{KeyMinRAM, KeyMinDisk} {
			assert.NoError(t, s.SetProperty(alice, im.ID, k, "0", SetAny))
			assert.NoError(t, s.SetProperty(alice, im.ID, k, "2048", SetAny))
			for _, bad := range []string{"-1", "abc", "1.5", ""} {
				assert.ErrorIs(t, s.SetProperty(alice, im.ID, k, bad, SetAny), ErrInvalid, "%s=%q", k, bad)
			}
			assert.ErrorIs(t, s.SetProperty(bob, im.ID, k, "1", SetAny), ErrPermission)
		}
	}},
	{"concepts.md", "`disk_format` | `vhd` (the default of `mkdir`) or `raw` ... | owner, while the image holds no data (`queued` or `killed`)", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		df, _ := im.Property(KeyDiskFormat)
		cf, _ := im.Property(KeyContainerFormat)
		assert.Equal(t, []string{"vhd", "bare"}, []string{df, cf})
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyDiskFormat, "qcow2", SetAny), ErrInvalid)
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyContainerFormat, "ovf", SetAny), ErrInvalid)
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyDiskFormat, "raw", SetAny), ErrPermission)
		require.NoError(t, s.SetProperty(alice, im.ID, KeyDiskFormat, "raw", SetAny))
		act, _ := active(t, s, alice, "b")
		assert.ErrorIs(t, s.SetProperty(Root, act.ID, KeyDiskFormat, "raw", SetAny), ErrImmutable)
		assert.ErrorIs(t, s.SetProperty(Root, act.ID, KeyContainerFormat, "bare", SetAny), ErrImmutable)
	}},
	{"concepts.md", "custom keys | key 1-250 bytes (so that the extended attribute `user.<key>` fits the kernel's 255-byte limit), value up to 65535 bytes | owner", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.NoError(t, s.SetProperty(alice, im.ID, "k", strings.Repeat("v", MaxValueBytes), SetAny))
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, "k", strings.Repeat("v", MaxValueBytes+1), SetAny), ErrTooBig)
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, "", "v", SetAny), ErrInvalid)
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, "k", "v", SetAny), ErrPermission)
		assert.NoError(t, s.SetProperty(alice, im.ID, strings.Repeat("k", 250), "v", SetAny))
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, strings.Repeat("k", 251), "v", SetAny), ErrInvalid)
	}},
	{"concepts.md", "System properties imagefs adds: `vhd_*` (facts of the VHD found at seal: ...) and `imagefs_*` (`imagefs_kill_reason`: why an upload was refused).", func(t *testing.T, s *Store) {
		a, _ := active(t, s, alice, "a")
		var vhdKeys []string
		for k := range a.Extra {
			if strings.HasPrefix(k, "vhd_") {
				vhdKeys = append(vhdKeys, k)
			}
		}
		assert.NotEmpty(t, vhdKeys)
		k := killed(t, s, alice, "k")
		assert.NotEmpty(t, k.Extra[KeyKillReason])
		for _, key := range append(vhdKeys, KeyKillReason, "imagefs_other", "vhd_other") {
			assert.True(t, IsSystemKey(key), key)
			assert.ErrorIs(t, s.SetProperty(Root, a.ID, key, "x", SetAny), ErrImmutable, key)
		}
	}},
	{"concepts.md", "imagefs reserves the `os_glance` prefix for the service; users cannot set such keys.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		for _, k := range []string{"os_glance", "os_glance_import_method", "os_glancefoo"} {
			assert.ErrorIs(t, s.SetProperty(alice, im.ID, k, "x", SetAny), ErrImmutable, k)
			assert.ErrorIs(t, s.SetProperty(Root, im.ID, k, "x", SetAny), ErrImmutable, k)
		}
		assert.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "x", SetAny), "only the prefix")
	}},
	{"concepts.md", "An image holds at most 128 custom properties by default ...; core and system properties do not count.", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a") // with vhd_* facts
		for i := range DefaultPropertyQuota {
			require.NoError(t, s.SetProperty(alice, im.ID, "k"+strconv.Itoa(i), "v", SetAny), i)
		}
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, "one-more", "v", SetAny), ErrQuota)
		assert.NoError(t, s.SetProperty(alice, im.ID, "k0", "changed", SetAny), "changing a value is no new property")
		assert.NoError(t, s.SetProperty(alice, im.ID, KeyMinRAM, "1", SetAny), "core keys do not count")
	}},
	{"concepts.md", "(`--property-quota N`)", func(t *testing.T, _ *Store) {
		s, err := Open(t.TempDir(), Options{PropertyQuota: 2})
		require.NoError(t, err)
		defer s.Close()
		im := queued(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, "k1", "v", SetAny))
		require.NoError(t, s.SetProperty(alice, im.ID, "k2", "v", SetAny))
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, "k3", "v", SetAny), ErrQuota)
	}},
	{"concepts.md", "`queued` | the record exists, no data yet (after `mkdir`)", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.Equal(t, StatusQueued, im.Status)
		assert.Nil(t, s.CurrentUpload(im.ID))
		assert.False(t, s.DataVisible(im, true), "no by-id/<id>/image.vhd")
	}},
	{"concepts.md", "`saving` | data is being uploaded (its first byte, or a truncate, arrived; opening `image.vhd` for writing alone leaves the image `queued`)", func(t *testing.T, s *Store) {
		im, _ := saving(t, s, alice, "a")
		assert.Equal(t, StatusSaving, im.Status, "once written to")
		q := queued(t, s, alice, "q")
		u, err := s.OpenWrite(alice, q.ID, true)
		require.NoError(t, err)
		defer s.EndWriter(u)
		assert.Equal(t, StatusQueued, s.Get(q.ID).Status, "opened for writing, nothing written")
		writeAt(t, u, []byte("x"), 0)
		assert.Equal(t, StatusSaving, s.Get(q.ID).Status, "its first byte arrived")
	}},
	{"concepts.md", "`active` | data is sealed and verified; only an active image can boot a server", func(t *testing.T, s *Store) {
		im, data := active(t, s, alice, "a")
		assert.True(t, im.Status.Sealed())
		assert.True(t, s.DataVisible(im, true), "by-id/<id>/image.vhd")
		assert.Equal(t, data, readAll(t, s, alice, im.ID))
	}},
	{"concepts.md", "`killed` | an upload was refused (incomplete or invalid data); `imagefs_kill_reason` says why; the data is not readable", func(t *testing.T, s *Store) {
		im := killed(t, s, alice, "a")
		assert.NotEmpty(t, im.Extra[KeyKillReason])
		_, err := s.OpenRead(Root, im.ID)
		assert.ErrorIs(t, err, ErrPermission)
		assert.False(t, s.DataVisible(im, true), "none under by-id/")
		assert.True(t, s.DataVisible(im, false), "an empty images/<name>/image.vhd to upload into")
	}},
	{"concepts.md", "`deactivated` | the owner or root has blocked use of the data ...; data reads are refused to everyone but root; properties stay readable", func(t *testing.T, s *Store) {
		im, data := active(t, s, alice, "a")
		im = withVisibility(t, s, im, "public")
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyStatus, "deactivated", SetAny), ErrNotPermitted, "the owner or root only")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyStatus, "deactivated", SetAny))
		for _, c := range []Caller{alice, bob} {
			_, err := s.OpenRead(c, im.ID)
			assert.ErrorIs(t, err, ErrPermission)
			got := s.GetFor(c, im.ID)
			require.NotNil(t, got, "properties stay readable")
			st, _ := got.Property(KeyStatus)
			assert.Equal(t, "deactivated", st)
		}
		assert.Equal(t, data, readAll(t, s, Root, im.ID))
	}},
	{"concepts.md", "Transitions: queued -> saving -> active or killed; a discarded upload (`rm image.vhd` of an unsealed image) goes back to queued; active <-> deactivated (the owner or root, ...).", func(t *testing.T, s *Store) {
		im, u := saving(t, s, alice, "a") // queued -> saving at the first write
		assert.ErrorIs(t, closeWrite(s, u), ErrRefused)
		assert.Equal(t, StatusKilled, s.Get(im.ID).Status, "saving -> killed")
		require.NoError(t, s.DiscardUpload(alice, im.ID))
		assert.Equal(t, StatusQueued, s.Get(im.ID).Status, "discarded -> queued")
		assert.False(t, s.DataPresent(im.ID), "image.vhd is gone until a writer creates it again")
		got, err := uploadResult(t, s, alice, im.ID, fixedVHD(t, 1<<20))
		require.NoError(t, err)
		assert.Equal(t, StatusActive, got.Status, "saving -> active")
		for _, c := range []Caller{alice, Root} {
			require.NoError(t, s.SetProperty(c, im.ID, KeyStatus, "deactivated", SetAny), "uid %d", c.UID)
			require.NoError(t, s.SetProperty(c, im.ID, KeyStatus, "active", SetAny), "uid %d", c.UID)
			assert.Equal(t, StatusActive, s.Get(im.ID).Status)
		}

		// No other status can be written, by root either (EPERM).
		k := killed(t, s, alice, "k")
		statuses := []Status{StatusQueued, StatusSaving, StatusActive, StatusKilled, StatusDeactivated}
		for _, to := range append(statuses, "deleted", "pending_delete", "uploading") {
			for _, c := range []Caller{alice, Root} {
				err := s.SetProperty(c, k.ID, KeyStatus, string(to), SetAny)
				assert.True(t, errors.Is(err, ErrImmutable) || errors.Is(err, ErrNotPermitted), "killed -> %s by %d: %v", to, c.UID, err)
			}
		}
	}},
	{"concepts.md", "A `killed` image can be uploaded again", func(t *testing.T, s *Store) {
		im := killed(t, s, alice, "a")
		got, err := uploadResult(t, s, alice, im.ID, fixedVHD(t, 1<<20))
		require.NoError(t, err)
		assert.Equal(t, StatusActive, got.Status)
		_, has := got.Extra[KeyKillReason]
		assert.False(t, has, "the kill reason goes with the new seal")
	}},
	{"concepts.md", "There is no `pending_delete` or `deleted`: a delete removes the record and the data in one change, and the image is gone from every path at once.", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
		require.NoError(t, s.Delete(alice, im.ID))
		assert.Nil(t, s.Get(im.ID))
		assert.Nil(t, s.Lookup("a"))
		assert.Empty(t, s.List())
		ims, _ := s.ViewImages(Root, "os_distro", "superos")
		assert.Empty(t, ims)
		_, err := s.OpenRead(Root, im.ID)
		assert.ErrorIs(t, err, ErrNotFound)
	}},
	{"concepts.md", "Once the data is uploaded, its checksum set and the image `active`, **the data never changes**.", func(t *testing.T, s *Store) {
		im, data := active(t, s, alice, "a")
		_, err := s.OpenWrite(Root, im.ID, true)
		assert.ErrorIs(t, err, ErrImmutable)
		require.NoError(t, s.SetProperty(Root, im.ID, KeyStatus, "deactivated", SetAny))
		_, err = s.OpenWrite(Root, im.ID, true)
		assert.ErrorIs(t, err, ErrImmutable, "deactivated")
		assert.Equal(t, data, readAll(t, s, Root, im.ID))
		assert.Equal(t, im.Checksum, s.Get(im.ID).Checksum)
	}},
	{"concepts.md", "Properties other than the system ones stay editable.", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyVisibility, "shared", SetAny), "members need it")
		for k, v := range map[string]string{KeyMinRAM: "512", KeyMinDisk: "10", KeyVisibility: "shared", KeyMembers: "1002",
			KeyProtected: "true", KeyName: "a2", "os_distro": "superos"} {
			assert.NoError(t, s.SetProperty(alice, im.ID, k, v, SetAny), k)
		}
	}},
	{"concepts.md", "A fixed VHD's file size is exactly Current Size + 512: a shorter or longer file is a truncated or padded upload.", func(t *testing.T, s *Store) {
		data := fixedVHD(t, 1<<20)
		padded := append(slices.Clone(data[:len(data)-512]), make([]byte, 512)...)
		padded = append(padded, data[len(data)-512:]...)
		truncated := append(slices.Clone(data[:len(data)-1024]), data[len(data)-512:]...)
		for name, b := range map[string][]byte{"padded": padded, "truncated": truncated} {
			im := queued(t, s, alice, name)
			got, err := uploadResult(t, s, alice, im.ID, b)
			assert.ErrorIs(t, err, ErrRefused, name)
			assert.Equal(t, StatusKilled, got.Status, name)
			assert.Contains(t, got.Extra[KeyKillReason], "fixed-size-mismatch", name)
		}
	}},
	{"concepts.md", "It refuses, with the reason in `imagefs_kill_reason`: files that are not VHDs, truncated or padded files, bad checksums and tables, differencing disks ..., all-zero unique ids, and disks over the VHD limit of 2040 GiB.", func(t *testing.T, s *Store) {
		data := fixedVHD(t, 1<<20)
		child, err := os.ReadFile(filepath.Join(testutil.SamplesDir(t), "win8-child.vhd"))
		require.NoError(t, err)
		cases := map[string]struct {
			data []byte
			rule string
		}{
			"not a VHD":      {make([]byte, 1<<20), "not-vhd"},
			"qcow2":          {append([]byte("QFI\xfb"), make([]byte, 4096)...), "qcow2"},
			"bad checksum":   {func() []byte { b := slices.Clone(data); b[len(b)-512+64] ^= 1; return b }(), "footer-checksum"},
			"differencing":   {child, "differencing-disk"},
			"zero unique id": {footerPatched(data, func(f []byte) { clear(f[68:84]) }), "zero-unique-id"},
			"over 2040 GiB": {footerPatched(data, func(f []byte) {
				binary.BigEndian.PutUint64(f[48:], 2041<<30)
			}), "current-size-too-large"},
		}
		for name, c := range cases {
			im := queued(t, s, alice, strings.ReplaceAll(name, " ", "-"))
			got, err := uploadResult(t, s, alice, im.ID, c.data)
			assert.ErrorIs(t, err, ErrRefused, name)
			assert.Equal(t, StatusKilled, got.Status, name)
			assert.Contains(t, got.Extra[KeyKillReason], c.rule, name)
		}
	}},

	// ---- README.md
	{"README.md", "Keys are 1-250 bytes of printable UTF-8 without `/`", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.NoError(t, s.SetProperty(alice, im.ID, strings.Repeat("k", 250), "v", SetAny))
		assert.NoError(t, s.SetProperty(alice, im.ID, "clé", "v", SetAny), "UTF-8")
		for _, bad := range []string{"", strings.Repeat("k", 251), "a/b", "a\nb", "a\x00b", "a\x7fb", "\xff\xfe"} {
			assert.ErrorIs(t, s.SetProperty(alice, im.ID, bad, "v", SetAny), ErrInvalid, "%q", bad)
		}
	}},
	{"README.md", "a catalog made before this rule may hold longer keys: their files can be read, removed and renamed to a shorter key, ... and their value cannot be changed.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		long, long2 := strings.Repeat("k", 254), strings.Repeat("l", 254)
		rawCommit(t, s, func(tx *txn) {
			next := im.clone()
			setExtra(next, long, "old")
			setExtra(next, long2, "old2")
			tx.putImage(next)
			tx.reindex(im, next)
		})
		s2, err := Open(crashCopy(t, s), Options{})
		require.NoError(t, err)
		defer s2.Close()
		got := s2.Get(im.ID)
		v, ok := got.Property(long)
		assert.True(t, ok)
		assert.Equal(t, "old", v, "read")
		assert.ErrorIs(t, s2.SetProperty(alice, im.ID, long, "new", SetAny), ErrInvalid, "cannot be changed")
		require.NoError(t, s2.RenameProperty(alice, im.ID, long, "short", RenameReplace), "renamed to a shorter key")
		assert.Equal(t, "old", s2.Get(im.ID).Extra["short"])
		require.NoError(t, s2.RemoveProperty(alice, im.ID, long2), "removed")
		assert.NotContains(t, s2.Get(im.ID).Keys(), long2)
	}},
	{"README.md", "Image names are 1-255 bytes without `/`, NUL or control characters (newline, tab, any byte below 0x20, DEL): mkdir, mv and setting `name` refuse them with EINVAL.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		for _, bad := range []string{"a/b", "a\x00b", "a\nb", "a\tb", "a\x1bb", "a\x01", "a\x7fb", ".", ".."} {
			_, err := s.Create(alice, bad)
			assert.ErrorIs(t, err, ErrInvalid, "mkdir %q", bad)
			assert.ErrorIs(t, s.Rename(alice, im.ID, bad), ErrInvalid, "mv %q", bad)
			assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyName, bad, SetAny), ErrInvalid, "name=%q", bad)
		}
		_, err := s.Create(alice, "superos 2024.1 (é)")
		assert.NoError(t, err)
		unchanged(t, s, im)
	}},
	{"README.md", "System properties (`id`, `status`, `checksum`, `os_hash_*`, `size`, `virtual_size`, `owner`, `created_at`, `updated_at`, `vhd_*`, `imagefs_*`, `os_glance*`) ... refuse changes with EPERM, root included.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		for _, k := range []string{KeyID, KeyStatus, KeyChecksum, KeyOSHashAlgo, KeyOSHashValue, "os_hash_other", KeySize,
			KeyVirtualSize, KeyOwner, KeyCreatedAt, KeyUpdatedAt, "vhd_x", "imagefs_x", "os_glance_x"} {
			if k == "os_hash_other" {
				continue // os_hash_* names the two keys above; other os_hash_ keys are custom
			}
			for _, c := range []Caller{alice, Root} {
				assert.ErrorIs(t, s.SetProperty(c, im.ID, k, "x", SetAny), ErrImmutable, "%s by %d", k, c.UID)
			}
		}
	}},
	{"README.md", "EEXIST | image name taken; XATTR_CREATE of an existing property", func(t *testing.T, s *Store) {
		a := queued(t, s, alice, "a")
		queued(t, s, alice, "b")
		_, err := s.Create(bob, "a")
		assert.ErrorIs(t, err, ErrExists)
		assert.ErrorIs(t, s.Rename(alice, a.ID, "b"), ErrExists)
		require.NoError(t, s.SetProperty(alice, a.ID, "os_distro", "superos", SetCreate))
		assert.ErrorIs(t, s.SetProperty(alice, a.ID, "os_distro", "hyperos", SetCreate), ErrExists)
		assert.ErrorIs(t, s.SetProperty(alice, a.ID, KeyMinRAM, "1", SetCreate), ErrExists, "core keys always exist")
	}},
	{"README.md", "ENODATA | xattr: no such property; XATTR_REPLACE of a missing one", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, "os_distro", "x", SetReplace), ErrNotFound)
		assert.ErrorIs(t, s.RemoveProperty(alice, im.ID, "os_distro"), ErrNotFound)
		_, has := s.Get(im.ID).Property("os_distro")
		assert.False(t, has)
	}},
	{"README.md", "EPERM | ... deleting a protected image or removing its properties; `visibility=public` by non-root", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "x", SetAny))
		require.NoError(t, s.SetProperty(alice, im.ID, KeyProtected, "true", SetAny))
		for _, c := range []Caller{alice, Root} {
			assert.ErrorIs(t, s.Delete(c, im.ID), ErrNotPermitted)
			assert.ErrorIs(t, s.RemoveProperty(c, im.ID, "os_distro"), ErrNotPermitted)
		}
		assert.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "y", SetAny), "a protected image's values still change")
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyVisibility, "public", SetAny), ErrNotPermitted)
	}},
	{"README.md", "EACCES | not the image's owner (or root); reading `images/<name>/image.vhd` of an image that is not active ...; reading another user's scratch file", func(t *testing.T, s *Store) {
		im := withVisibility(t, s, queued(t, s, alice, "a"), "public")
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, "k", "v", SetAny), ErrPermission)
		_, err := s.OpenRead(bob, im.ID)
		assert.ErrorIs(t, err, ErrPermission)
		u, err := s.CreateScratch(alice, im.ID, ".tmp")
		require.NoError(t, err)
		writeAt(t, u, []byte("secret"), 0)
		require.NoError(t, s.EndWriter(u))
		assert.ErrorIs(t, s.OpenUploadRead(bob, s.Scratch(im.ID, ".tmp")), ErrPermission)
		assert.NoError(t, s.OpenUploadRead(alice, s.Scratch(im.ID, ".tmp")))
		assert.NoError(t, s.OpenUploadRead(Root, s.Scratch(im.ID, ".tmp")))
	}},
	{"README.md", "EBUSY | a second writer opens `image.vhd`, creates a file in the image directory (save a temporary name, starting with `.`) or renames one onto `image.vhd` while an upload is open", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		sc, err := s.CreateScratch(alice, im.ID, ".rsync.XXXX")
		require.NoError(t, err)
		require.NoError(t, s.EndWriter(sc))
		u, err := s.OpenWrite(alice, im.ID, true)
		require.NoError(t, err)
		writeAt(t, u, make([]byte, 512), 0)
		_, err = s.OpenWrite(alice, im.ID, false)
		assert.ErrorIs(t, err, ErrBusy, "open")
		_, err = s.CreateFile(alice, im.ID, "disk.vhd", Writer{})
		assert.ErrorIs(t, err, ErrBusy, "create")
		tmp, err := s.CreateFile(alice, im.ID, ".tmp", Writer{})
		if assert.NoError(t, err, "create of a temporary name") {
			require.NoError(t, s.EndWriter(tmp))
		}
		assert.ErrorIs(t, s.RenameScratch(alice, im.ID, ".rsync.XXXX", ImageDataName, RenameReplace), ErrBusy, "rename onto image.vhd")
		assert.ErrorIs(t, s.DiscardUpload(alice, im.ID), ErrBusy, "rm while a writer has it open")
		assert.ErrorIs(t, s.EndWriter(u), ErrRefused, "512 zero bytes are no VHD")
	}},
	{"README.md", "E2BIG | a value over 65535 bytes", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, "k", strings.Repeat("v", 65536), SetAny), ErrTooBig)
		unchanged(t, s, im)
	}},
	{"README.md", "ENOSPC | ... a full disk (... less than 8 MiB free for the catalog: a property file's write or create fails with it, not only its close)", func(t *testing.T, s *Store) {
		var free atomic.Int64
		free.Store(1 << 40)
		fakeFree(t, &free)
		im := queued(t, s, alice, "a")
		free.Store(8<<20 - 1)
		assert.ErrorIs(t, s.CheckSetProperty(alice, im.ID, "os_distro", "x", SetAny), ErrNoSpace, "at the write")
		assert.ErrorIs(t, s.CheckSetProperty(alice, im.ID, "os_distro", "", SetCreate), ErrNoSpace, "at the create")
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, "os_distro", "x", SetAny), ErrNoSpace, "at the close")
		unchanged(t, s, im)
		free.Store(8<<20 + 64<<10) // 8 MiB and the commit's own size
		assert.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "x", SetAny))
	}},
	{"README.md", "Catalog changes need 8 MiB free (1 MiB for seals, kills and discarded uploads; root's deactivate and reactivate are property writes and need 8 MiB) ... A delete frees space, so it works on a full disk: it needs 64 KiB", func(t *testing.T, s *Store) {
		var free atomic.Int64
		free.Store(1 << 40)
		fakeFree(t, &free)
		im, _ := active(t, s, alice, "a")
		a2, _ := active(t, s, alice, "a2")
		q, k := queued(t, s, alice, "q"), queued(t, s, alice, "k")
		free.Store(1<<20 + 64<<10)
		got, err := uploadResult(t, s, alice, q.ID, fixedVHD(t, 1<<20))
		require.NoError(t, err, "a seal needs 1 MiB")
		assert.Equal(t, StatusActive, got.Status)
		got, err = uploadResult(t, s, alice, k.ID, make([]byte, 4096))
		assert.ErrorIs(t, err, ErrRefused)
		assert.Equal(t, StatusKilled, got.Status, "a kill needs 1 MiB")
		require.NoError(t, s.DiscardUpload(alice, k.ID), "killed -> queued needs 1 MiB")
		assert.ErrorIs(t, s.SetProperty(alice, k.ID, "os_distro", "x", SetAny), ErrNoSpace, "other changes need 8 MiB")
		free.Store(64<<10 + 8<<10) // 64 KiB and the commit's own size
		require.NoError(t, s.Delete(alice, im.ID), "a delete needs 64 KiB")
		free.Store(1<<20 + 64<<10)
		assert.ErrorIs(t, s.SetProperty(Root, a2.ID, KeyStatus, "deactivated", SetAny), ErrNoSpace, "deactivate needs 8 MiB")
	}},
	{"README.md", "Only the owner or root changes properties, renames (`mv`) or deletes (`rmdir`) an image; others get EACCES", func(t *testing.T, s *Store) {
		im := withVisibility(t, s, queued(t, s, alice, "a"), "shared")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, "1002", SetAny))
		im = s.Get(im.ID)
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyMinRAM, "1", SetAny), ErrPermission, "even a member")
		assert.ErrorIs(t, s.RemoveProperty(bob, im.ID, KeyMembers), ErrPermission)
		assert.ErrorIs(t, s.Rename(bob, im.ID, "b"), ErrPermission)
		assert.ErrorIs(t, s.Delete(bob, im.ID), ErrPermission)
		unchanged(t, s, im)
	}},
	{"README.md", "A `protected` image cannot be deleted, by root either (EPERM), until its owner or root writes `false` to `properties/protected` (... other users get EACCES).", func(t *testing.T, s *Store) {
		im := withVisibility(t, s, queued(t, s, alice, "a"), "public")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyProtected, "true", SetAny))
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyProtected, "false", SetAny), ErrPermission)
		assert.ErrorIs(t, s.Delete(Root, im.ID), ErrNotPermitted)
		require.NoError(t, s.SetProperty(Root, im.ID, KeyProtected, "false", SetAny))
		require.NoError(t, s.Delete(Root, im.ID))
	}},
	{"README.md", "The owner or root deactivates an active image ... (and `echo active` undoes it). ... No other status can be written, by root either (EPERM).", func(t *testing.T, s *Store) {
		q := queued(t, s, alice, "q")
		assert.ErrorIs(t, s.SetProperty(Root, q.ID, KeyStatus, "deactivated", SetAny), ErrImmutable, "queued is not active")
		assert.ErrorIs(t, s.SetProperty(Root, q.ID, KeyStatus, "active", SetAny), ErrImmutable, "no seal by writing status")
		im, _ := active(t, s, alice, "a")
		assert.ErrorIs(t, s.SetProperty(Root, im.ID, KeyStatus, "killed", SetAny), ErrImmutable)
		assert.ErrorIs(t, s.SetProperty(Root, im.ID, KeyStatus, "queued", SetAny), ErrImmutable)
		require.NoError(t, s.SetProperty(Root, im.ID, KeyStatus, "deactivated", SetAny))
		assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyStatus, "active", SetAny), ErrNotPermitted, "another user may not reactivate")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyStatus, "active", SetAny), "the owner reactivates")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyStatus, "deactivated", SetAny), "the owner deactivates")
		require.NoError(t, s.SetProperty(Root, im.ID, KeyStatus, "active", SetAny))
	}},
	{"README.md", "Names are one namespace for all users: a name taken by any image, hidden ones included, answers EEXIST to `mkdir`, to `mv` onto it and to setting `name` (file or xattr). A name is visible to all as taken, never its image", func(t *testing.T, s *Store) {
		hidden := queued(t, s, alice, "hidden")
		mine := queued(t, s, bob, "mine")
		_, err := s.Create(bob, "hidden")
		assert.ErrorIs(t, err, ErrExists)
		assert.ErrorIs(t, s.Rename(bob, mine.ID, "hidden"), ErrExists)
		assert.ErrorIs(t, s.SetProperty(bob, mine.ID, KeyName, "hidden", SetAny), ErrExists)
		assert.Nil(t, s.LookupFor(bob, "hidden"), "never its image")
		assert.Nil(t, s.GetFor(bob, hidden.ID))
	}},
	{"README.md", "Revoking access (removing a uid from `members`, or a `visibility` that no longer shows the image to that user) holds at once", func(t *testing.T, s *Store) {
		im := withVisibility(t, s, queued(t, s, alice, "a"), "shared")
		require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, "1002", SetAny))
		require.NotNil(t, s.GetFor(bob, im.ID))
		require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, "1003", SetAny))
		assert.Nil(t, s.GetFor(bob, im.ID), "members")
		assert.NotNil(t, s.GetFor(carolC, im.ID))
		require.NoError(t, s.SetProperty(alice, im.ID, KeyVisibility, "private", SetAny))
		assert.Nil(t, s.GetFor(carolC, im.ID), "visibility")
	}},
	{"README.md", "A file created in the image directory under any other name that is not a temporary one is an upload of the image's data under that name ... once sealed the directory lists only `image.vhd` (into a sealed image the create fails at once with EPERM ...)", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		u, err := s.CreateFile(alice, im.ID, "disk.vhd", Writer{})
		require.NoError(t, err)
		writeAt(t, u, fixedVHD(t, 1<<20), 0)
		require.NoError(t, closeWrite(s, u))
		assert.Equal(t, StatusActive, s.Get(im.ID).Status)
		assert.Empty(t, s.ScratchNames(im.ID), "only image.vhd")
		_, err = s.CreateFile(alice, im.ID, "other.vhd", Writer{})
		assert.ErrorIs(t, err, ErrImmutable)
	}},
	{"README.md", "A temporary name starts with `.` ...: such a file is a scratch file that is never sealed by itself, and renaming it onto `image.vhd` or onto any name that is not temporary completes the upload.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.True(t, IsTempName(".disk.vhd.Xy12"))
		assert.False(t, IsTempName("disk.vhd"))
		u, err := s.CreateFile(alice, im.ID, ".disk.vhd.Xy12", Writer{})
		require.NoError(t, err)
		writeAt(t, u, fixedVHD(t, 1<<20), 0)
		require.NoError(t, closeWrite(s, u))
		assert.Equal(t, StatusQueued, s.Get(im.ID).Status, "never sealed by itself")
		assert.Equal(t, []string{".disk.vhd.Xy12"}, s.ScratchNames(im.ID))
		require.NoError(t, s.RenameScratch(alice, im.ID, ".disk.vhd.Xy12", "disk.vhd", RenameReplace))
		assert.Equal(t, StatusActive, s.Get(im.ID).Status, "onto a name that is not temporary")
		assert.Empty(t, s.ScratchNames(im.ID))
	}},
	{"README.md", "The kill reason says what happened first: `upload empty` (nothing was written ...), ... `not a VHD: this is a qcow2 image` ..., `upload incomplete or not a VHD` (no footer at all ...)", func(t *testing.T, s *Store) {
		e := queued(t, s, alice, "empty")
		u, err := s.OpenWrite(alice, e.ID, true)
		require.NoError(t, err)
		require.NoError(t, u.Truncate(0))
		assert.ErrorIs(t, closeWrite(s, u), ErrRefused)
		assert.True(t, strings.HasPrefix(s.Get(e.ID).Extra[KeyKillReason], "upload empty"), s.Get(e.ID).Extra[KeyKillReason])
		for name, c := range map[string]struct {
			data   []byte
			prefix string
		}{
			"qcow2": {append([]byte("QFI\xfb"), make([]byte, 4096)...), "not a VHD: this is a qcow2 image"},
			"raw":   {make([]byte, 8192), "upload incomplete or not a VHD"},
		} {
			im := queued(t, s, alice, name)
			got, err := uploadResult(t, s, alice, im.ID, c.data)
			assert.ErrorIs(t, err, ErrRefused)
			assert.True(t, strings.HasPrefix(got.Extra[KeyKillReason], c.prefix), "%s: %s", name, got.Extra[KeyKillReason])
		}
	}},
	{"README.md", "`by-id/<id>/image.vhd` of an unsealed image does not exist (ENOENT) ... A refused upload leaves the killed image with an empty `images/<name>/image.vhd`", func(t *testing.T, s *Store) {
		q := queued(t, s, alice, "q")
		k := killed(t, s, alice, "k")
		sv, _ := saving(t, s, alice, "s")
		for _, im := range []*Image{q, k, sv} {
			assert.False(t, s.DataVisible(im, true), "by-id, %s", im.Status)
			assert.True(t, s.DataVisible(im, false), "images/, %s", im.Status)
		}
		assert.Nil(t, s.CurrentUpload(k.ID), "nothing staged: empty")
		a, _ := active(t, s, alice, "a")
		assert.True(t, s.DataVisible(a, true))
	}},
	{"README.md", "`rm image.vhd` of an unsealed image discards the upload (status `queued`) and the file is gone until a writer creates it again", func(t *testing.T, s *Store) {
		im := killed(t, s, alice, "a")
		require.NoError(t, s.DiscardUpload(alice, im.ID))
		assert.Equal(t, StatusQueued, s.Get(im.ID).Status)
		assert.False(t, s.DataVisible(s.Get(im.ID), false))
		u, err := s.CreateFile(alice, im.ID, ImageDataName, Writer{})
		require.NoError(t, err)
		assert.True(t, s.DataVisible(s.Get(im.ID), false), "created again")
		assert.ErrorIs(t, s.EndWriter(u), ErrRefused, "created and closed empty: upload empty")
		assert.ErrorIs(t, s.DiscardUpload(bob, im.ID), ErrPermission)
	}},
	{"README.md", "No staging file outlives its upload.", func(t *testing.T, s *Store) {
		staged := func() []os.DirEntry {
			ents, err := os.ReadDir(filepath.Join(s.Dir(), "staging"))
			require.NoError(t, err)
			return ents
		}
		active(t, s, alice, "sealed")
		killed(t, s, alice, "killed")
		d := killed(t, s, alice, "discarded")
		require.NoError(t, s.DiscardUpload(alice, d.ID))
		_, u := saving(t, s, alice, "deleted")
		require.NoError(t, s.Delete(alice, s.Lookup("deleted").ID))
		s.EndWriter(u)
		im := queued(t, s, alice, "scratch")
		sc, err := s.CreateScratch(alice, im.ID, ".tmp")
		require.NoError(t, err)
		require.NoError(t, s.EndWriter(sc))
		require.NoError(t, s.RemoveScratch(alice, im.ID, ".tmp"))
		assert.Empty(t, staged())
	}},
	{"README.md", "the image is `deactivated` with the reason in `imagefs_deactivate_reason` (not bootable; its owner or root may reactivate it, which removes the reason)", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		rawCommit(t, s, func(tx *txn) { // as a writer's late reopen leaves it (reopen.go)
			next := im.clone()
			next.Status = StatusDeactivated
			setExtra(next, KeyDeactivateReason, "its writer opened image.vhd for writing again")
			tx.putImage(next)
			tx.reindex(im, next)
		})
		s2, err := Open(crashCopy(t, s), Options{})
		require.NoError(t, err)
		defer s2.Close()
		assert.ErrorIs(t, s2.SetProperty(bob, im.ID, KeyStatus, "active", SetAny), ErrNotPermitted)
		assert.ErrorIs(t, s2.SetProperty(Root, im.ID, KeyDeactivateReason, "", SetAny), ErrImmutable)
		require.NoError(t, s2.SetProperty(alice, im.ID, KeyStatus, "active", SetAny))
		_, has := s2.Get(im.ID).Extra[KeyDeactivateReason]
		assert.False(t, has, "reactivating removes the reason")
	}},
	{"README.md", "| visibility | ... | directories | `private` ... 0700 | `shared`, `community`, `public` ... 0755", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		assert.False(t, im.OthersMayRead(), "private")
		for _, v := range []string{"shared", "community", "public"} {
			assert.True(t, withVisibility(t, s, im, v).OthersMayRead(), v)
		}
	}},
	{"README.md", "`vhd_size_mib_aligned` says whether Current Size is a whole number of MiB ...; it is a fact, not one of the `vhd_warnings`", func(t *testing.T, s *Store) {
		for size, want := range map[int]string{1 << 20: "true", 1<<20 + 512*7: "false"} {
			im := queued(t, s, alice, "a"+strconv.Itoa(size))
			got, err := uploadResult(t, s, alice, im.ID, fixedVHD(t, size))
			require.NoError(t, err)
			assert.Equal(t, want, got.Extra[KeyVHDSizeMiBAligned], "%d", size)
			assert.NotContains(t, got.Extra[KeyVHDWarnings], "size-not-mib-aligned")
		}
	}},
	{"README.md", "If another writer created the key meanwhile, the write fails with EEXIST and the other value stays.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		require.NoError(t, s.CheckSetProperty(alice, im.ID, "os_distro", "", SetCreate), "the first writer's create")
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "other", SetAny), "another writer")
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, "os_distro", "mine", SetCreate), ErrExists, "the first writer's close")
		assert.Equal(t, "other", s.Get(im.ID).Extra["os_distro"])
	}},
	{"README.md", "`mv properties/a properties/b` sets `b` to `a`'s value; if `b`'s rule refuses it ... the rename fails ... and nothing changes.", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		require.NoError(t, s.SetProperty(alice, im.ID, "k1", "abc", SetAny))
		require.NoError(t, s.SetProperty(alice, im.ID, "k2", "4096", SetAny))
		before := s.Get(im.ID)
		assert.ErrorIs(t, s.RenameProperty(alice, im.ID, "k1", KeyMinRAM, RenameReplace), ErrInvalid)
		unchanged(t, s, before)
		require.NoError(t, s.RenameProperty(alice, im.ID, "k2", KeyMinRAM, RenameReplace))
		assert.Equal(t, int64(4096), s.Get(im.ID).MinRAM)
		_, has := s.Get(im.ID).Extra["k2"]
		assert.False(t, has)
	}},
	{"README.md", "creating the file commits nothing (the open fails at once if the key is refused: bad key, quota, no space, not the owner)", func(t *testing.T, s *Store) {
		im := queued(t, s, alice, "a")
		var changes atomic.Int32
		s.OnChange(func(Change) { changes.Add(1) })
		require.NoError(t, s.CheckSetProperty(alice, im.ID, "os_distro", "", SetCreate))
		assert.Zero(t, changes.Load(), "commits nothing")
		assert.ErrorIs(t, s.CheckSetProperty(alice, im.ID, "a/b", "", SetCreate), ErrInvalid, "bad key")
		assert.ErrorIs(t, s.CheckSetProperty(bob, im.ID, "os_distro", "", SetCreate), ErrPermission, "not the owner")
		s.OnChange(nil)
		small, err := Open(t.TempDir(), Options{PropertyQuota: 1})
		require.NoError(t, err)
		defer small.Close()
		q := queued(t, small, alice, "q")
		require.NoError(t, small.SetProperty(alice, q.ID, "k1", "v", SetAny))
		assert.ErrorIs(t, small.CheckSetProperty(alice, q.ID, "k2", "", SetCreate), ErrQuota, "quota")
	}},
	{"README.md", "Delete an image's directory ...; each of these deletes the image, its record, its name and its data, in one change, ..., whatever its status", func(t *testing.T, s *Store) {
		q := queued(t, s, alice, "q")
		k := killed(t, s, alice, "k")
		sv, _ := saving(t, s, alice, "s")
		a, _ := active(t, s, alice, "a")
		d, _ := active(t, s, alice, "d")
		require.NoError(t, s.SetProperty(Root, d.ID, KeyStatus, "deactivated", SetAny))
		for _, im := range []*Image{q, k, sv, a, d} {
			require.NoError(t, s.Delete(alice, im.ID), im.Name)
			assert.Nil(t, s.Get(im.ID))
			assert.Nil(t, s.Lookup(im.Name), "the name is free")
			queued(t, s, bob, im.Name)
		}
		left, err := s.data.List()
		require.NoError(t, err)
		assert.Empty(t, left, "no data left")
	}},
	{"README.md", "Readers that have the data open keep reading it until they close.", func(t *testing.T, s *Store) {
		im, data := active(t, s, alice, "a")
		f, err := s.OpenRead(alice, im.ID)
		require.NoError(t, err)
		defer f.Close()
		require.NoError(t, s.Delete(alice, im.ID))
		b, err := io.ReadAll(f)
		require.NoError(t, err)
		assert.Equal(t, data, b)
	}},
	{"README.md", "Every mount repairs what a crash leaves: ... leftover staging files are removed, ... and data files of no record at all go to `STORE/lost+found`", func(t *testing.T, s *Store) {
		active(t, s, alice, "a")
		dir := crashCopy(t, s)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "staging", "leftover"), []byte("x"), 0o600))
		orphan := "0b1e5d2c-6a8f-4c6e-9d8e-1f2a3b4c5d6e"
		require.NoError(t, os.WriteFile(filepath.Join(dir, "data", orphan+".vhd"), fixedVHD(t, 1<<20), 0o400))
		s2, err := Open(dir, Options{})
		require.NoError(t, err)
		defer s2.Close()
		ents, _ := os.ReadDir(filepath.Join(dir, "staging"))
		assert.Empty(t, ents, "staging")
		_, err = os.Stat(filepath.Join(dir, "data", orphan+".vhd"))
		assert.True(t, os.IsNotExist(err), "the orphan left data/")
		lost, _ := os.ReadDir(filepath.Join(dir, "lost+found"))
		assert.Len(t, lost, 1, "and went to lost+found")
	}},
	{"README.md", "The store is for the daemon's user only ...: directories 0700, catalog and staging files 0600, sealed data files 0400, whatever the umask.", func(t *testing.T, s *Store) {
		im, _ := active(t, s, alice, "a")
		saving(t, s, alice, "s")
		err := filepath.WalkDir(s.Dir(), func(p string, d os.DirEntry, err error) error {
			require.NoError(t, err)
			fi, err := d.Info()
			require.NoError(t, err)
			want := os.FileMode(0o600)
			switch {
			case d.IsDir():
				want = 0o700
			case filepath.Base(filepath.Dir(p)) == "data":
				want = 0o400
			}
			assert.Equal(t, want, fi.Mode().Perm(), p)
			return nil
		})
		require.NoError(t, err)
		_, err = os.Stat(filepath.Join(s.Dir(), "data", im.ID+".vhd"))
		require.NoError(t, err)
	}},
}

// TestContract runs every case of contractCases on a store of its own.
func TestContract(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range contractCases {
		name := c.doc + "/" + contractName(c.says)
		require.False(t, seen[name], "two cases named %s", name)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			c.check(t, newStore(t))
		})
	}
}

// contractName shortens a sentence to a test name: its first words.
func contractName(says string) string {
	words := strings.Fields(regexp.MustCompile("[^A-Za-z0-9_ .<>/-]+").ReplaceAllString(says, " "))
	return strings.Join(words[:min(len(words), 9)], "_")
}
