package swiftdata

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/store"
)

// fsck's view (store.DataObjects): the listing groups segments by upload
// and names the host that sent them; a manifest says its size and
// segments; ReadData streams the bytes segment by segment; Remove marks
// the manifest deleted (time and host) and it stays a manifest;
// RemoveManifest and RemoveSegments remove at once.
func TestObjectsForFsck(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	b := newBackend(t, c, ct, func(cfg *Config) { cfg.Host = "host-x" })
	p, data, _ := staged(t, 2<<20+100)
	if err := b.Put("img", p); err != nil {
		t.Fatal(err)
	}
	ls, err := b.ListObjects()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ls.Manifests["img"]; !ok || len(ls.Manifests) != 1 {
		t.Errorf("manifests %v, want img", ls.Manifests)
	}
	if len(ls.Uploads) != 1 || ls.Uploads[0].ID != "img" || ls.Uploads[0].Host != "host-x" ||
		!strings.HasPrefix(ls.Uploads[0].Prefix, "img/") || !strings.HasSuffix(ls.Uploads[0].Prefix, "@host-x") || len(ls.Uploads[0].Segments) != 3 {
		t.Fatalf("uploads %+v, want one of img by host-x with 3 segments", ls.Uploads)
	}
	mi, err := b.Manifest("img")
	if err != nil {
		t.Fatal(err)
	}
	if mi.Size != int64(len(data)) || len(mi.Segments) != 3 || !mi.DeletedAt.IsZero() {
		t.Errorf("manifest %+v, want %d bytes in 3 segments, not deleted", mi, len(data))
	}
	for i, s := range mi.Segments {
		if l := ls.Uploads[0].Segments[i]; s.Name != l.Name || s.Size != l.Size || s.MD5 != l.MD5 {
			t.Errorf("segment %d: manifest %+v, listing %+v", i, s, l)
		}
	}
	r, err := b.ReadData("img")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("ReadData: %d bytes, %v; want the %d bytes put", len(got), err, len(data))
	}
	if _, err := b.Manifest("nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Manifest of no object: %v, want ErrNotFound", err)
	}

	before := time.Now().Add(-time.Second)
	if err := b.Remove("img"); err != nil {
		t.Fatal(err)
	}
	mi, err = b.Manifest("img")
	if err != nil {
		t.Fatal(err)
	}
	if mi.DeletedAt.Before(before) || mi.DeletedBy != "host-x" || len(mi.Segments) != 3 {
		t.Errorf("after Remove: manifest %+v, want marked deleted by host-x now, still naming 3 segments", mi)
	}

	// A segment gone: ReadData fails with ErrNotFound at it.
	p2, _, _ := staged(t, 2<<20)
	if err := b.Put("img2", p2); err != nil {
		t.Fatal(err)
	}
	mi2, _ := b.Manifest("img2")
	if err := b.conn.ObjectDelete(t.Context(), b.segments, mi2.Segments[1].Name); err != nil {
		t.Fatal(err)
	}
	if r, err := b.ReadData("img2"); err != nil {
		t.Fatal(err)
	} else if _, err := io.ReadAll(r); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ReadData with segment 1 deleted: %v, want ErrNotFound", err)
	}
	if err := b.RemoveManifest("img2"); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveSegments(uploadOf(mi2.Segments[0].Name)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Manifest("img2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after RemoveManifest: %v", err)
	}
	if n := segmentNames(t, c, ct, "img2"); len(n) != 0 {
		t.Errorf("after RemoveSegments: %v", n)
	}

	// A stray object of the segments' container (no "/"): its own
	// upload, removed by RemoveSegments.
	if err := b.conn.ObjectPutBytes(t.Context(), b.segments, "stray", []byte("x"), ""); err != nil {
		t.Fatal(err)
	}
	ls, err = b.ListObjects()
	if err != nil {
		t.Fatal(err)
	}
	var stray *store.UploadObjects
	for i := range ls.Uploads {
		if ls.Uploads[i].ID == "stray" {
			stray = &ls.Uploads[i]
		}
	}
	if stray == nil || stray.Prefix != "stray" || len(stray.Segments) != 1 {
		t.Fatalf("uploads %+v: want the stray object as upload stray", ls.Uploads)
	}
	if err := b.RemoveSegments(stray.Prefix); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.conn.Object(t.Context(), b.segments, "stray"); err == nil {
		t.Errorf("the stray object is still there after RemoveSegments")
	}
}

func uploadOf(name string) string { return name[:strings.LastIndexByte(name, '/')] }
