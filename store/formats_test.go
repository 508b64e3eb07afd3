package store

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/pebblekv"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// randomBytes returns n random bytes (what Tempest uploads).
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// rawImage makes an image of c whose disk_format is raw.
func rawImage(t *testing.T, s *Store, c Caller, name string) *Image {
	t.Helper()
	im := queued(t, s, c, name)
	require.NoError(t, s.SetProperty(c, im.ID, KeyDiskFormat, DiskFormatRaw, SetAny))
	im = s.Get(im.ID)
	require.Equal(t, RawDataName, im.DataName())
	return im
}

// TestRawSeal: a raw image seals any bytes as they are (a size no VHD
// has, random content): active, virtual_size = size, MD5 and SHA-512 as
// usual, no VHD facts; the sealed data reads back, and the record
// survives a remount.
func TestRawSeal(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	im := rawImage(t, s, alice, "r")
	data := randomBytes(t, 3001)
	require.NoError(t, upload(t, s, alice, im.ID, data, 1000))
	im = s.Get(im.ID)
	sum := md5.Sum(data)
	assert.Equal(t, StatusActive, im.Status)
	assert.Equal(t, int64(3001), im.Size)
	assert.Equal(t, int64(3001), im.VirtualSize)
	assert.Equal(t, hex.EncodeToString(sum[:]), im.Checksum)
	assert.Equal(t, "sha512", im.OSHashAlgo)
	assert.Len(t, im.OSHashValue, 128)
	for k := range im.Extra {
		assert.False(t, strings.HasPrefix(k, "vhd_"), "a raw image has VHD facts: %s", k)
	}
	assert.True(t, im.Fixed(KeyDiskFormat))
	f, err := s.OpenRead(alice, im.ID)
	require.NoError(t, err)
	got, err := io.ReadAll(f)
	f.Close()
	require.NoError(t, err)
	assert.Equal(t, data, got)
	require.NoError(t, s.Close())

	s = openStore(t, dir)
	defer s.Close()
	again := s.Get(im.ID)
	require.NotNil(t, again)
	assert.Equal(t, DiskFormatRaw, again.DiskFormat)
	assert.Equal(t, ContainerFormatBare, again.ContainerFormat)
	assert.Equal(t, "image.raw", again.DataName())
}

// TestRawRefusesOtherFormats: bytes that another format's header starts
// (which a hypervisor that probes would not boot as raw) are refused as
// raw with the reason; a fixed VHD (raw data and a footer) and an ISO are
// raw disks.
func TestRawRefusesOtherFormats(t *testing.T) {
	s := newStore(t)
	pad := func(head string) []byte { return append([]byte(head), make([]byte, 64<<10)...) }
	iso := make([]byte, 0x9000)
	copy(iso[0x8001:], "CD001")
	for _, c := range []struct {
		name string
		data []byte
		want string // "" accepted
	}{
		{"qcow2", pad("QFI\xfb\x00\x00\x00\x03"), "not a raw disk: this is a qcow2 image"},
		{"vmdk", pad("KDMV"), "not a raw disk: this is a VMDK image"},
		{"vhdx", pad("vhdxfile"), "not a raw disk: this is a VHDX image"},
		{"dynamic", pad("conectix"), "not a raw disk: this is a dynamic or differencing VHD"},
		{"fixed", fixedVHD(t, 1<<20), ""},
		{"iso", iso, ""},
	} {
		im := rawImage(t, s, alice, c.name)
		err := upload(t, s, alice, im.ID, c.data, 4096)
		im = s.Get(im.ID)
		if c.want == "" {
			require.NoError(t, err, c.name)
			assert.Equal(t, StatusActive, im.Status, c.name)
			assert.Equal(t, int64(len(c.data)), im.VirtualSize, c.name)
			continue
		}
		require.ErrorIs(t, err, ErrRefused, c.name)
		assert.Equal(t, StatusKilled, im.Status, c.name)
		assert.Contains(t, im.Extra[KeyKillReason], c.want, c.name)
	}
}

// TestVHDRefusalSaysRaw: raw bytes uploaded to a VHD image (the default)
// are inspected as a VHD and refused; the reason says to set disk_format
// raw first. After the refusal (killed: no data) the format may change
// and the same bytes seal as raw.
func TestVHDRefusalSaysRaw(t *testing.T) {
	s := newStore(t)
	im := queued(t, s, alice, "v")
	data := randomBytes(t, 4096)
	require.ErrorIs(t, upload(t, s, alice, im.ID, data, 4096), ErrRefused)
	im = s.Get(im.ID)
	assert.Equal(t, StatusKilled, im.Status)
	assert.Contains(t, im.Extra[KeyKillReason], "echo raw > properties/disk_format")
	require.NoError(t, s.SetProperty(alice, im.ID, KeyDiskFormat, DiskFormatRaw, SetAny))
	require.NoError(t, upload(t, s, alice, im.ID, data, 4096))
	assert.Equal(t, StatusActive, s.Get(im.ID).Status)
}

// TestFormatChangeRules: disk_format and container_format take the
// formats imagefs stores (else ErrInvalid), from the owner (root too),
// while the image holds no data: queued or killed, with no upload of it
// in progress (an open writer, even before its first byte); saving,
// active and deactivated images refuse any change with ErrImmutable, at
// the open of the property file already.
func TestFormatChangeRules(t *testing.T) {
	s := newStore(t)
	q := queued(t, s, alice, "q")
	for _, c := range []struct{ key, value string }{{KeyDiskFormat, "qcow2"}, {KeyDiskFormat, "VHD"}, {KeyContainerFormat, "ovf"}, {KeyContainerFormat, "ami"}} {
		assert.ErrorIs(t, s.SetProperty(alice, q.ID, c.key, c.value, SetAny), ErrInvalid, c.value)
	}
	assert.ErrorIs(t, s.SetProperty(bob, q.ID, KeyDiskFormat, "raw", SetAny), ErrPermission)
	require.NoError(t, s.SetProperty(Root, q.ID, KeyDiskFormat, "raw", SetAny))
	require.NoError(t, s.SetProperty(alice, q.ID, KeyDiskFormat, "vhd", SetAny))
	assert.False(t, s.Get(q.ID).Fixed(KeyDiskFormat))

	// An open writer (nothing written yet: still queued) fixes them.
	u, err := s.OpenWrite(alice, q.ID, true)
	require.NoError(t, err)
	assert.Equal(t, StatusQueued, s.Get(q.ID).Status)
	assert.ErrorIs(t, s.SetProperty(alice, q.ID, KeyDiskFormat, "raw", SetAny), ErrImmutable)
	_, err = u.WriteAt([]byte("x"), 0)
	require.NoError(t, err)
	assert.Equal(t, StatusSaving, s.Get(q.ID).Status)
	assert.True(t, s.Get(q.ID).Fixed(KeyDiskFormat))
	assert.ErrorIs(t, s.SetProperty(alice, q.ID, KeyDiskFormat, "raw", SetAny), ErrImmutable)
	assert.ErrorIs(t, s.SetProperty(alice, q.ID, KeyDiskFormat, "vhd", SetAny), ErrImmutable)
	assert.ErrorIs(t, s.CloseWriter(u), ErrRefused) // one byte is no VHD
	require.NoError(t, s.EndWriter(u))

	// Killed: the refused upload left no data.
	assert.Equal(t, StatusKilled, s.Get(q.ID).Status)
	require.NoError(t, s.SetProperty(alice, q.ID, KeyDiskFormat, "raw", SetAny))

	a, _ := active(t, s, alice, "a")
	for _, c := range []Caller{alice, Root} {
		assert.ErrorIs(t, s.SetProperty(c, a.ID, KeyDiskFormat, "raw", SetAny), ErrImmutable)
		assert.ErrorIs(t, s.SetProperty(c, a.ID, KeyDiskFormat, "qcow2", SetAny), ErrImmutable, "EPERM before the value's rule")
		assert.ErrorIs(t, s.SetProperty(c, a.ID, KeyContainerFormat, "bare", SetAny), ErrImmutable)
		assert.ErrorIs(t, s.MayWriteProperty(c, a.ID, KeyDiskFormat), ErrImmutable)
		assert.ErrorIs(t, s.RemoveProperty(c, a.ID, KeyDiskFormat), ErrNotPermitted)
	}
	_, err = s.ChangeProperties(alice, a.ID, []PropertyOp{{Key: "k", Value: "v"}, {Key: KeyDiskFormat, Value: "raw"}})
	assert.ErrorIs(t, err, ErrImmutable)
	_, has := s.Get(a.ID).Extra["k"]
	assert.False(t, has, "a refused patch changes nothing")
}

// TestFormatsUnset: an image created through the API without formats has
// none (Glance's null: the properties are absent), takes no data until
// both are set (ErrInvalid with Glance's sentence, for an open, a file
// created under any name, a scratch file), and shows no data file.
func TestFormatsUnset(t *testing.T) {
	s := newStore(t)
	im, err := s.CreateWithID(alice, "0b7b6f3e-6a0b-4f55-9d0e-2d9b1c7a5e11", "n", nil)
	require.NoError(t, err)
	for _, k := range []string{KeyDiskFormat, KeyContainerFormat} {
		_, ok := im.Property(k)
		assert.False(t, ok, k)
	}
	assert.Equal(t, "", im.DataName())
	assert.Equal(t, "Properties disk_format, container_format must be set prior to saving data.", FormatsMissing(im))
	_, err = s.OpenWrite(alice, im.ID, true)
	assert.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "must be set prior to saving data")
	for _, name := range []string{"x.raw", "image.vhd", "image.raw", ".rsync.tmp"} {
		_, err = s.CreateFile(alice, im.ID, name, Writer{})
		assert.ErrorIs(t, err, ErrInvalid, name)
	}
	assert.Equal(t, StatusQueued, s.Get(im.ID).Status)

	require.NoError(t, s.SetProperty(alice, im.ID, KeyDiskFormat, "raw", SetAny))
	assert.Equal(t, "Property container_format must be set prior to saving data.", FormatsMissing(s.Get(im.ID)))
	_, err = s.OpenWrite(alice, im.ID, true)
	assert.ErrorIs(t, err, ErrInvalid)
	require.NoError(t, s.SetProperty(alice, im.ID, KeyContainerFormat, "bare", SetAny))
	require.NoError(t, upload(t, s, alice, im.ID, randomBytes(t, 700), 700))
	assert.Equal(t, StatusActive, s.Get(im.ID).Status)

	// Formats given at create; "" is unset again.
	im2, err := s.CreateWithID(alice, "1b7b6f3e-6a0b-4f55-9d0e-2d9b1c7a5e11", "m", []KeyValue{{KeyDiskFormat, "raw"}, {KeyContainerFormat, "bare"}})
	require.NoError(t, err)
	assert.Equal(t, "", FormatsMissing(im2))
	require.NoError(t, s.SetProperty(alice, im2.ID, KeyDiskFormat, "", SetAny))
	assert.Equal(t, "Property disk_format must be set prior to saving data.", FormatsMissing(s.Get(im2.ID)))
	_, err = s.CreateWithID(alice, "2b7b6f3e-6a0b-4f55-9d0e-2d9b1c7a5e11", "o", []KeyValue{{KeyDiskFormat, "qcow2"}})
	assert.ErrorIs(t, err, ErrInvalid)
	assert.Nil(t, s.Lookup("o"))
}

// TestDataNames: the data file is named by the disk_format; a file
// created (or renamed onto) under the other format's name is refused
// (ErrInvalid), any other name that is not temporary is an upload of the
// image's data, checked as its format says, and a scratch file renamed
// onto the data file seals it.
func TestDataNames(t *testing.T) {
	s := newStore(t)
	v := queued(t, s, alice, "v")
	r := rawImage(t, s, alice, "r")
	assert.Equal(t, ImageDataName, v.DataName())
	_, err := s.CreateFile(alice, v.ID, RawDataName, Writer{})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = s.CreateFile(alice, r.ID, ImageDataName, Writer{})
	assert.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "its data file is image.raw")
	_, err = s.CreateFile(bob, v.ID, RawDataName, Writer{})
	assert.ErrorIs(t, err, ErrPermission, "another's image: EACCES first")

	// cp disk.img images/r/: the image's data, sealed as raw.
	data := randomBytes(t, 5000)
	u, err := s.CreateFile(alice, r.ID, "disk.img", Writer{})
	require.NoError(t, err)
	assert.True(t, u.IsImageData())
	_, err = u.WriteAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, s.CloseWriter(u))
	require.NoError(t, s.EndWriter(u))
	assert.Equal(t, StatusActive, s.Get(r.ID).Status)

	// rsync: a scratch file renamed onto image.raw; onto image.vhd of a
	// raw image is refused and the scratch file stays.
	r2 := rawImage(t, s, alice, "r2")
	sc, err := s.CreateFile(alice, r2.ID, ".disk.XXXX", Writer{})
	require.NoError(t, err)
	assert.False(t, sc.IsImageData())
	_, err = sc.WriteAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, s.EndWriter(sc))
	assert.ErrorIs(t, s.RenameScratch(alice, r2.ID, ".disk.XXXX", ImageDataName, RenameReplace), ErrInvalid)
	assert.NotNil(t, s.Scratch(r2.ID, ".disk.XXXX"))
	assert.ErrorIs(t, s.RenameScratch(alice, r2.ID, ".disk.XXXX", RawDataName, RenameNoReplace), ErrExists)
	require.NoError(t, s.RenameScratch(alice, r2.ID, ".disk.XXXX", RawDataName, RenameReplace))
	assert.Equal(t, StatusActive, s.Get(r2.ID).Status)
	assert.Equal(t, int64(len(data)), s.Get(r2.ID).VirtualSize)
	_, err = s.CreateFile(alice, r2.ID, ImageDataName, Writer{})
	assert.ErrorIs(t, err, ErrImmutable, "a sealed image: EPERM first")
	// The data file names keep their names.
	assert.ErrorIs(t, s.RenameScratch(alice, r2.ID, RawDataName, ".x", RenameReplace), ErrNotPermitted)
}

// TestRecordFormatsDecode: a record written before imagefs kept the
// formats (no such fields) is a VHD image in a bare container; a record
// with them empty has them unset.
func TestRecordFormatsDecode(t *testing.T) {
	old := newRecord()
	require.NoError(t, json.Unmarshal([]byte(`{"id":"x","name":"n","status":"active","size":5,"virtual_size":5}`), old))
	assert.Equal(t, DiskFormatVHD, old.DiskFormat)
	assert.Equal(t, ContainerFormatBare, old.ContainerFormat)
	assert.Equal(t, int64(5), old.Size)
	unset := newRecord()
	require.NoError(t, json.Unmarshal([]byte(`{"id":"x","disk_format":"","container_format":""}`), unset))
	assert.Equal(t, "", unset.DiskFormat)
	assert.Equal(t, "", unset.ContainerFormat)
	b, err := json.Marshal(&Image{ID: "y", DiskFormat: "raw", ContainerFormat: "bare"})
	require.NoError(t, err)
	back := newRecord()
	require.NoError(t, json.Unmarshal(b, back))
	assert.Equal(t, "raw", back.DiskFormat)
}

// TestLegacyRecordLoadsAsVHD: a catalog written before imagefs kept the
// formats (records without the fields) opens with every image vhd and
// bare: image.vhd, the VHD check at seal, its index entries.
func TestLegacyRecordLoadsAsVHD(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a, _ := active(t, s, alice, "a")
	q := queued(t, s, alice, "q")
	require.NoError(t, s.Close())

	db, err := pebblekv.Open(filepath.Join(dir, "catalog"), pebblekv.Options{})
	require.NoError(t, err)
	var ops []kv.Op
	for _, id := range []string{a.ID, q.ID} {
		p, err := db.Get(context.Background(), prefixImage+id)
		require.NoError(t, err)
		var fields map[string]any
		require.NoError(t, json.Unmarshal(p.Value, &fields))
		delete(fields, "disk_format")
		delete(fields, "container_format")
		v, err := json.Marshal(fields)
		require.NoError(t, err)
		ops = append(ops, kv.Op{Kind: kv.Put, Key: prefixImage + id, Value: v})
	}
	_, err = db.Commit(context.Background(), &kv.Batch{Ops: ops})
	require.NoError(t, err)
	require.NoError(t, db.Close())

	s = openStore(t, dir)
	defer s.Close()
	for _, id := range []string{a.ID, q.ID} {
		im := s.Get(id)
		assert.Equal(t, DiskFormatVHD, im.DiskFormat)
		assert.Equal(t, ContainerFormatBare, im.ContainerFormat)
		assert.Equal(t, ImageDataName, im.DataName())
	}
	require.NoError(t, s.CheckIndex())
	assert.ErrorIs(t, upload(t, s, alice, q.ID, randomBytes(t, 4096), 4096), ErrRefused, "checked as a VHD")
}

// TestFormatFlipsDuringUploads: disk_format flipped between vhd and raw
// while uploads start and seal: every sealed record was checked as the
// format it says (VHD facts and the VHD's virtual size for vhd; none and
// virtual_size = size for raw); no change lands during an upload.
func TestFormatFlipsDuringUploads(t *testing.T) {
	s := newStore(t)
	data := fixedVHD(t, 1<<20) // a fixed VHD is also a valid raw disk
	for round := range 20 {
		im := queued(t, s, alice, "f"+strconv.Itoa(round))
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s.SetProperty(alice, im.ID, KeyDiskFormat, []string{"raw", "vhd"}[i%2], SetAny)
			}
		}()
		require.NoError(t, upload(t, s, alice, im.ID, data, 64<<10))
		close(stop)
		<-done
		got := s.Get(im.ID)
		require.Equal(t, StatusActive, got.Status)
		switch got.DiskFormat {
		case DiskFormatVHD:
			assert.Equal(t, "fixed", got.Extra[KeyVHDDiskType], "round %d", round)
			assert.Equal(t, int64(1<<20), got.VirtualSize, "round %d", round)
		case DiskFormatRaw:
			_, has := got.Extra[KeyVHDDiskType]
			assert.False(t, has, "round %d: a raw image with VHD facts", round)
			assert.Equal(t, int64(len(data)), got.VirtualSize, "round %d", round)
		default:
			t.Fatalf("round %d: disk_format %q", round, got.DiskFormat)
		}
	}
}
