package swiftdata

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"
)

// gone waits (2 s at most) until path no longer exists.
func gone(t *testing.T, path string) bool {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An image deleted from the catalog leaves a host's cache at the last
// close of its copy: Evict (another host deleted it) and Remove (this
// host did) keep a copy that is open, which reads to its end, and remove
// it once its last file is closed; a copy nobody has open goes at once.
// Evict of an image with no copy does nothing. Swift keeps the objects
// (Evict) until the delete delay (Remove).
func TestEvictAtLastClose(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	a := newBackend(t, c, ct, nil)
	p, data, want := staged(t, 3<<20+123)
	if err := a.Put("img", p); err != nil {
		t.Fatal(err)
	}
	p2, _, want2 := staged(t, 1<<20)
	if err := a.Put("closed", p2); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, c, ct, nil)
	f1, err := b.Open("img", want)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := b.Open("img", want)
	if err != nil {
		t.Fatal(err)
	}
	f, err := b.Open("closed", want2)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := b.CachedIDs(); len(got) != 2 {
		t.Fatalf("CachedIDs = %v, want [closed img]", got)
	}

	b.Evict("no-such-image")
	b.Evict("closed")
	if _, err := os.Stat(b.cachePath("closed")); !os.IsNotExist(err) {
		t.Errorf("a copy nobody has open is still in the cache after Evict: %v", err)
	}
	b.Evict("img")
	if !b.Cached("img") {
		t.Fatalf("a copy held open left the cache at Evict")
	}
	f1.Close()
	time.Sleep(200 * time.Millisecond)
	if !b.Cached("img") {
		t.Errorf("a copy still open (one file of two closed) left the cache")
	}
	got, err := io.ReadAll(f2)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("the copy held open across Evict reads %d bytes (%v), not the image", len(got), err)
	}
	f2.Close()
	if !gone(t, b.cachePath("img")) || b.Cached("img") {
		t.Errorf("the evicted copy is still in the cache 2 s after its last close")
	}
	if st := b.Stats(); st.CacheBytes != 0 || st.CacheEntries != 0 || st.Fetches != 2 {
		t.Errorf("stats %+v: want nothing cached, 2 fetches", st)
	}
	if ids, _ := b.List(); len(ids) != 2 {
		t.Errorf("Evict touched Swift: List = %v", ids)
	}

	// Remove on the sealing host: its staging file, the first copy,
	// held open.
	fa, err := a.Open("img", want)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Remove("img"); err != nil {
		t.Fatal(err)
	}
	if !a.Cached("img") {
		t.Errorf("Remove dropped a copy held open")
	}
	fa.Close()
	if !gone(t, a.cachePath("img")) {
		t.Errorf("the removed copy is still in the cache 2 s after its last close")
	}
}

// Evict while the image's download is in flight: the download finishes
// and its opener gets the image's bytes (it opened before the delete);
// the copy leaves the cache at that file's close.
func TestEvictDuringDownload(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	a := newBackend(t, c, ct, nil)
	p, data, want := staged(t, 24<<20)
	if err := a.Put("img", p); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, c, ct, nil)
	type opened struct {
		f   *os.File
		err error
	}
	done := make(chan opened, 1)
	go func() {
		f, err := b.Open("img", want)
		done <- opened{f, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		inFlight := b.fetching["img"] != nil
		b.mu.Unlock()
		if inFlight {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no download in flight 10 s after the open")
		}
		time.Sleep(time.Millisecond)
	}
	b.Evict("img")
	o := <-done
	if o.err != nil {
		t.Fatalf("the open in flight at Evict: %v", o.err)
	}
	if !b.Cached("img") {
		t.Errorf("the copy downloaded for an open in flight left the cache before that file's close")
	}
	got, err := io.ReadAll(o.f)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("the open in flight at Evict reads %d bytes (%v), not the image", len(got), err)
	}
	o.f.Close()
	if !gone(t, b.cachePath("img")) || b.Cached("img") {
		t.Errorf("the evicted copy is still in the cache 2 s after its last close")
	}
}
