package store

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fullImage returns an image with every exported field of Image set to a
// value other than its zero (by reflection: a field added to Image later
// is set too), as a record of the catalog would hold it.
func fullImage(t *testing.T, i int) *Image {
	t.Helper()
	im := &Image{}
	v := reflect.ValueOf(im).Elem()
	for f := range v.NumField() {
		fv, sf := v.Field(f), v.Type().Field(f)
		if !sf.IsExported() {
			continue
		}
		switch fv.Kind() {
		case reflect.String:
			fv.SetString(sf.Name + "-" + string(rune('a'+i)) + "\x00\xff")
		case reflect.Uint32, reflect.Uint64:
			fv.SetUint(uint64(1000*(f+1) + i))
		case reflect.Int64:
			fv.SetInt(-int64(1000*(f+1) + i))
		case reflect.Bool:
			fv.SetBool(true)
		case reflect.Map:
			m := reflect.MakeMap(fv.Type())
			for j := range 3 {
				k := reflect.ValueOf(sf.Name + string(rune('a'+j)))
				e := reflect.New(fv.Type().Elem()).Elem()
				switch e.Kind() {
				case reflect.String:
					e.SetString("v" + string(rune('a'+j+i)))
				default:
					e.SetUint(uint64(70 + j))
				}
				m.SetMapIndex(k, e)
			}
			fv.Set(m)
		case reflect.Struct:
			if fv.Type() != reflect.TypeOf(time.Time{}) {
				t.Fatalf("Image.%s: a field type the snapshot test does not know (%s): teach appendImage and this test", sf.Name, fv.Type())
			}
			fv.Set(reflect.ValueOf(time.Date(2026, 12, 7, 14, 0, i, 123456789, time.UTC).Add(time.Duration(f) * time.Hour)))
		default:
			t.Fatalf("Image.%s: a field kind the snapshot test does not know (%s): teach appendImage and this test", sf.Name, fv.Kind())
		}
	}
	im.rev = int64(500 + i)
	return im
}

// TestSnapshotRecordRoundTrip: every field of Image survives
// appendImage and decodeImage (a field added to Image and not to the
// snapshot's encoding fails here); a record cut short or with bytes
// after it is refused.
func TestSnapshotRecordRoundTrip(t *testing.T) {
	for i := range 3 {
		im := fullImage(t, i)
		rec := appendImage(nil, im)
		got, err := decodeImage(rec)
		require.NoError(t, err)
		got.rev = im.rev
		assert.True(t, reflect.DeepEqual(im, got), "round trip:\n%#v\n%#v", im, got)
		for cut := range len(rec) {
			_, err := decodeImage(rec[:cut])
			require.Error(t, err, "cut at %d of %d", cut, len(rec))
		}
		_, err = decodeImage(append(rec, 0))
		require.Error(t, err)
	}
	// A queued image of the catalog: the zero fields stay zero (nil maps).
	q := &Image{ID: "id", Name: "n", Status: StatusQueued, Size: -1, VirtualSize: -1}
	got, err := decodeImage(appendImage(nil, q))
	require.NoError(t, err)
	assert.True(t, reflect.DeepEqual(q, got), "%#v", got)
}

// TestSnapshotFile: a snapshot written and read back holds the same
// state (records with their ModRevs, upload keys, seq/ino, identity, catalog id),
// whatever the number of records (chunks) and the length of one (a
// length of several bytes); any byte changed, or the file cut short, is
// refused as errSnapshot.
func TestSnapshotFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), snapshotName)
	var ims []*Image
	for i := range 2*snapshotChunk + 7 {
		im := fullImage(t, i%20)
		im.ID = im.ID + string(rune('A'+i%26)) + string(rune('A'+i/26))
		ims = append(ims, im)
	}
	ims[3].Extra["big"] = string(make([]byte, 300_000)) // a length of 3 bytes
	sn := &snapshot{identity: "etcd cluster x namespace \"/n/\"", catalogID: "5b0c6a52-4f0e-4d39-9a57-3f1d2c8e7a10", rev: 4242, nextIno: 77 << 20, seqRev: 4000,
		images: ims, uploads: map[string]uploadKey{"u1": {rev: 4100, host: "h1"}, "u2": {host: "h2"}}}
	require.NoError(t, writeSnapshot(path, sn))
	got, err := readSnapshot(path)
	require.NoError(t, err)
	assert.Equal(t, sn.identity, got.identity)
	assert.Equal(t, sn.catalogID, got.catalogID)
	assert.Equal(t, sn.rev, got.rev)
	assert.Equal(t, sn.nextIno, got.nextIno)
	assert.Equal(t, sn.seqRev, got.seqRev)
	assert.Equal(t, sn.uploads, got.uploads)
	require.Len(t, got.images, len(ims))
	for i := range ims {
		require.True(t, reflect.DeepEqual(ims[i], got.images[i]), "record %d", i)
	}
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, at := range []int{0, 5, len(snapshotMagic) + 3, len(b) / 3, len(b) / 2, len(b) - 40, len(b) - 1} {
		spoilt := append([]byte(nil), b...)
		spoilt[at] ^= 1
		require.NoError(t, os.WriteFile(path, spoilt, 0o600))
		_, err := readSnapshot(path)
		require.ErrorIs(t, err, errSnapshot, "byte %d changed", at)
	}
	for _, n := range []int{0, 10, len(b) / 2, len(b) - 1} {
		require.NoError(t, os.WriteFile(path, b[:n], 0o600))
		_, err := readSnapshot(path)
		require.ErrorIs(t, err, errSnapshot, "cut at %d", n)
	}
	require.NoError(t, os.WriteFile(path, append(b, 0), 0o600))
	_, err = readSnapshot(path)
	require.ErrorIs(t, err, errSnapshot, "a byte after the checksum")
	_, err = readSnapshot(filepath.Join(t.TempDir(), "none"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
