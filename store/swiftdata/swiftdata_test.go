package swiftdata

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
	"github.com/ncw/swift/v2"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopServices() // the test Swift, if this process started it
	os.Exit(code)
}

// conn returns a connection to the test Swift.
func conn(t *testing.T) *swift.Connection {
	t.Helper()
	a := testutil.SwiftAuth(t)
	return &swift.Connection{AuthUrl: a.AuthURL, UserName: a.User, ApiKey: a.Key}
}

// newBackend returns a Backend on container with a fresh cache directory.
func newBackend(t *testing.T, c *swift.Connection, container string, mod func(*Config)) *Backend {
	t.Helper()
	cfg := Config{Conn: c, Container: container, SegmentSize: 1 << 20,
		CacheDir: filepath.Join(t.TempDir(), "cache"), DeleteDelay: time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// staged writes n random bytes to a staging file and returns its path,
// the bytes and what a catalog would record of them.
func staged(t *testing.T, n int) (string, []byte, store.Expect) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	p := filepath.Join(t.TempDir(), "staging")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	m, s := md5.Sum(data), sha512.Sum512(data)
	return p, data, store.Expect{Size: int64(n), MD5: hex.EncodeToString(m[:]), SHA512: hex.EncodeToString(s[:])}
}

// uniqueContainer returns a fresh container name; the containers (and
// their segments') go after the test.
func uniqueContainer(t *testing.T, c *swift.Connection) string {
	ct := fmt.Sprintf("t%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		for _, name := range []string{ct, ct + "_segments"} {
			objs, _ := c.ObjectNamesAll(ctx, name, nil)
			for _, o := range objs {
				c.ObjectDelete(ctx, name, o)
			}
			c.ContainerDelete(ctx, name)
		}
	})
	return ct
}

func readAll(t *testing.T, f *os.File) []byte {
	t.Helper()
	defer f.Close()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func segmentNames(t *testing.T, c *swift.Connection, container, id string) []string {
	t.Helper()
	names, err := c.ObjectNamesAll(context.Background(), container+"_segments", &swift.ObjectsOpts{Prefix: id + "/"})
	if err != nil && !errors.Is(err, swift.ContainerNotFound) {
		t.Fatal(err)
	}
	return names
}

// A seal uploads segments and a manifest and keeps the staging file as
// the sealing host's copy; another host downloads once, verified, then
// serves its copy.
func TestPutThenOpenElsewhere(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	a := newBackend(t, c, ct, nil)
	p, data, want := staged(t, 3<<20+12345)
	if err := a.Put("img1", p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("staging file still there after Put: %v", err)
	}
	if !a.Cached("img1") {
		t.Errorf("the sealing host has no cached copy")
	}
	if got := segmentNames(t, c, ct, "img1"); len(got) != 4 {
		t.Errorf("segments in Swift: %v, want 4 of 1 MiB", got)
	}
	if ids, err := a.List(); err != nil || len(ids) != 1 || ids[0] != "img1" {
		t.Errorf("List = %v, %v; want [img1]", ids, err)
	}
	if f, err := a.Open("img1", want); err != nil || !bytes.Equal(readAll(t, f), data) {
		t.Errorf("sealing host: open = %v or bytes differ", err)
	}
	if st := a.Stats(); st.Fetches != 0 || st.Uploads != 1 {
		t.Errorf("sealing host stats %+v: want no fetch, one upload", st)
	}

	b := newBackend(t, c, ct, nil)
	for i := range 3 {
		f, err := b.Open("img1", want)
		if err != nil {
			t.Fatalf("open %d on the other host: %v", i, err)
		}
		if !bytes.Equal(readAll(t, f), data) {
			t.Fatalf("open %d: bytes differ", i)
		}
	}
	if st := b.Stats(); st.Fetches != 1 || st.CacheHits != 2 {
		t.Errorf("other host stats %+v: want 1 fetch, 2 cache hits", st)
	}
}

// Ten openers of an image this host lacks: one download, right bytes for
// all.
func TestConcurrentOpenOneDownload(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	a := newBackend(t, c, ct, nil)
	p, data, want := staged(t, 5<<20)
	if err := a.Put("img", p); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, c, ct, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := b.Open("img", want)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			got, err := os.ReadFile(f.Name())
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("bytes differ")
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := b.Stats(); st.Fetches != 1 {
		t.Errorf("fetches = %d, want 1 (stats %+v)", st.Fetches, st)
	}
}

// A download that does not match the record is quarantined and refused;
// nothing is cached.
func TestMismatchQuarantined(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	a := newBackend(t, c, ct, nil)
	p, _, want := staged(t, 1<<20+7)
	if err := a.Put("img", p); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, c, ct, nil)
	for _, tc := range []struct {
		name string
		exp  store.Expect
	}{
		{"sha512", store.Expect{Size: want.Size, MD5: want.MD5, SHA512: otherLastHex(want.SHA512)}},
		{"md5", store.Expect{Size: want.Size, MD5: "00000000000000000000000000000000", SHA512: want.SHA512}},
		{"size", store.Expect{Size: want.Size - 1, MD5: want.MD5, SHA512: want.SHA512}},
	} {
		f, err := b.Open("img", tc.exp)
		if err == nil {
			f.Close()
			t.Fatalf("%s mismatch: open succeeded", tc.name)
		}
		if !errors.Is(err, store.ErrDataStore) {
			t.Errorf("%s mismatch: %v, want ErrDataStore", tc.name, err)
		}
		if b.Cached("img") {
			t.Errorf("%s mismatch: cached", tc.name)
		}
	}
	q, _ := os.ReadDir(b.quarantineDir())
	if st := b.Stats(); st.VerifyFailures != 3 || len(q) != 3 {
		t.Errorf("verify failures %d, quarantined files %d; want 3 and 3", st.VerifyFailures, len(q))
	}
	if f, err := b.Open("img", want); err != nil {
		t.Errorf("open with the right record after the mismatches: %v", err)
	} else {
		f.Close()
	}
	// No hashes to verify against: only a cached copy is served.
	if _, err := newBackend(t, c, ct, nil).Open("img", store.Expect{Size: want.Size}); !errors.Is(err, store.ErrDataStore) {
		t.Errorf("open without hashes: %v, want ErrDataStore", err)
	}
}

// A first segment swapped for other bytes of its size: Swift refuses the
// download (409 Conflict), which counts as a verification failure.
func TestSwappedFirstSegmentRefused(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	a := newBackend(t, c, ct, nil)
	p, _, want := staged(t, 2<<20+7)
	if err := a.Put("img", p); err != nil {
		t.Fatal(err)
	}
	segs := segmentNames(t, c, ct, "img")
	if len(segs) != 3 {
		t.Fatalf("segments %v, want 3", segs)
	}
	other := make([]byte, 1<<20)
	rand.Read(other)
	if err := c.ObjectPutBytes(context.Background(), ct+"_segments", segs[0], other, "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, c, ct, nil)
	if f, err := b.Open("img", want); err == nil {
		f.Close()
		t.Fatal("open of an image whose first segment was swapped succeeded")
	} else if !errors.Is(err, store.ErrDataStore) {
		t.Errorf("open: %v, want ErrDataStore", err)
	}
	if st := b.Stats(); st.VerifyFailures != 1 || st.FetchFailures != 1 || b.Cached("img") {
		t.Errorf("stats %+v, cached %v: want 1 verify failure, 1 fetch failure, not cached", st, b.Cached("img"))
	}
}

// otherLastHex returns h with its last hex digit changed.
func otherLastHex(h string) string {
	last := "0"
	if h[len(h)-1] == '0' {
		last = "1"
	}
	return h[:len(h)-1] + last
}

// Remove drops the copy at once and the objects after the delay; a
// pending deletion survives a restart.
func TestRemoveDelayed(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	a := newBackend(t, c, ct, func(cfg *Config) { cfg.DeleteDelay = 4 * time.Second })
	p, _, _ := staged(t, 2<<20+1)
	if err := a.Put("img", p); err != nil {
		t.Fatal(err)
	}
	if err := a.Remove("img"); err != nil {
		t.Fatal(err)
	}
	if a.Cached("img") {
		t.Errorf("cached after Remove")
	}
	time.Sleep(time.Second) // a quarter of the delay
	if ids, _ := a.List(); len(ids) != 1 || len(segmentNames(t, c, ct, "img")) != 3 {
		t.Errorf("objects gone before the delay: List = %v, segments %v (want them kept for 4 s)", ids, segmentNames(t, c, ct, "img"))
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ids, err := a.List()
		if err == nil && len(ids) == 0 && len(segmentNames(t, c, ct, "img")) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("objects still in Swift 15 s after a 4 s delete delay: %v %v", ids, segmentNames(t, c, ct, "img"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st := a.Stats(); st.Deletes != 1 || st.DeletesPending != 0 {
		t.Errorf("stats %+v: want 1 delete, none pending", st)
	}

	// Restart: a pending deletion recorded by one Backend is done by the
	// next on the same cache directory.
	dir := filepath.Join(t.TempDir(), "cache")
	b := newBackend(t, c, ct, func(cfg *Config) { cfg.CacheDir = dir; cfg.DeleteDelay = time.Second })
	p, _, _ = staged(t, 1000)
	if err := b.Put("img2", p); err != nil {
		t.Fatal(err)
	}
	b.Remove("img2")
	b.Close()
	b2 := newBackend(t, c, ct, func(cfg *Config) { cfg.CacheDir = dir; cfg.DeleteDelay = time.Second })
	deadline = time.Now().Add(15 * time.Second)
	for b2.Stats().Deletes != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the deletion pending at Close was not done after a restart: %+v", b2.Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ids, _ := b2.List(); len(ids) != 0 {
		t.Errorf("List after the resumed deletion = %v", ids)
	}

	// The delay is the current one: a deletion pending under a delay of
	// an hour is done by a Backend given 1 s, one second after its
	// Remove.
	dir = filepath.Join(t.TempDir(), "cache")
	b3 := newBackend(t, c, ct, func(cfg *Config) { cfg.CacheDir = dir; cfg.DeleteDelay = time.Hour })
	p, _, _ = staged(t, 1000)
	if err := b3.Put("img3", p); err != nil {
		t.Fatal(err)
	}
	b3.Remove("img3")
	b3.Close()
	b4 := newBackend(t, c, ct, func(cfg *Config) { cfg.CacheDir = dir; cfg.DeleteDelay = time.Second })
	deadline = time.Now().Add(15 * time.Second)
	for b4.Stats().Deletes != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("a deletion pending under a 1 h delay was not done 15 s after a restart with a 1 s delay: %+v", b4.Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ids, _ := b4.List(); len(ids) != 0 {
		t.Errorf("List after the resumed deletion = %v", ids)
	}
}

// Past the cache size, the least recently opened closed copies go; open
// ones stay.
func TestEvictionSparesOpen(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	a := newBackend(t, c, ct, nil)
	wants := map[string]store.Expect{}
	for _, id := range []string{"a", "b", "c"} {
		p, _, w := staged(t, 1<<20)
		if err := a.Put(id, p); err != nil {
			t.Fatal(err)
		}
		wants[id] = w
	}
	b := newBackend(t, c, ct, func(cfg *Config) { cfg.CacheSize = 2<<20 + 100 })
	fa, err := b.Open("a", wants["a"]) // kept open
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	for _, id := range []string{"b", "c"} {
		f, err := b.Open(id, wants[id])
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if !b.Cached("a") || b.Cached("b") || !b.Cached("c") {
		t.Errorf("cached a=%v b=%v c=%v; want a (open) and c (newest), b evicted", b.Cached("a"), b.Cached("b"), b.Cached("c"))
	}
	if st := b.Stats(); st.Evictions != 1 || st.CacheBytes != 2<<20 {
		t.Errorf("stats %+v: want 1 eviction, 2 MiB cached", st)
	}
}

// Swift unreachable (nothing listening, or a server that never answers):
// an uncached open and a seal fail within the bounded wait.
func TestUnreachableBounded(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() { // accepts and never answers
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	for _, addr := range []string{closedAddr, silent.Addr().String()} {
		c := &swift.Connection{AuthUrl: "http://" + addr + "/auth/v1.0", UserName: "test:tester", ApiKey: "testing"}
		b := newBackend(t, c, "x", func(cfg *Config) { cfg.Timeout = time.Second })
		start := time.Now()
		_, err := b.Open("img", store.Expect{Size: 10, MD5: "00"})
		if !errors.Is(err, store.ErrDataStore) {
			t.Errorf("%s: open: %v, want ErrDataStore", addr, err)
		}
		p, _, _ := staged(t, 100)
		if err := b.Put("img", p); !errors.Is(err, store.ErrDataStore) {
			t.Errorf("%s: put: %v, want ErrDataStore", addr, err)
		}
		if _, serr := os.Stat(p); serr != nil {
			t.Errorf("%s: a failed Put lost the staging file: %v", addr, serr)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: open and put took %v with a 1 s timeout", addr, d)
		}
		if err != nil && bytes.Contains([]byte(err.Error()), []byte("testing")) {
			t.Errorf("error names the key: %v", err)
		}
	}
}

// An in-order upload's complete segments are sent while it is written;
// the seal sends the rest and the manifest. Going back over final bytes
// voids the stream: its segments are deleted and the seal sends all.
func TestStreamDuringWrite(t *testing.T) {
	c := conn(t)
	ct := uniqueContainer(t, c)
	a := newBackend(t, c, ct, nil)
	data := make([]byte, 3<<20+500<<10)
	rand.Read(data)
	m, sh := md5.Sum(data), sha512.Sum512(data)
	want := store.Expect{Size: int64(len(data)), MD5: hex.EncodeToString(m[:]), SHA512: hex.EncodeToString(sh[:])}

	for _, back := range []bool{false, true} {
		t.Run(fmt.Sprintf("back=%v", back), func(t *testing.T) {
			id := fmt.Sprintf("img-%v", back)
			p := filepath.Join(t.TempDir(), id+".123.1")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			before := a.Stats().Streamed
			st := a.Stream(id, p)
			for off := 0; off < len(data); off += 256 << 10 {
				end := min(off+256<<10, len(data))
				if _, err := f.WriteAt(data[off:end], int64(off)); err != nil {
					t.Fatal(err)
				}
				st.Written(int64(end))
			}
			deadline := time.Now().Add(20 * time.Second)
			for a.Stats().Streamed-before < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("segments streamed: %d, want 3 (of 1 MiB) before the seal", a.Stats().Streamed-before)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if back {
				st.Abort() // the store's answer to a write before the final bytes
				deadline := time.Now().Add(20 * time.Second)
				for len(segmentNames(t, c, ct, id)) != 0 {
					if time.Now().After(deadline) {
						t.Fatalf("aborted stream's segments still there: %v", segmentNames(t, c, ct, id))
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			if err := a.Put(id, p); err != nil {
				t.Fatal(err)
			}
			if got := segmentNames(t, c, ct, id); len(got) != 4 {
				t.Errorf("segments after the seal: %v, want 4", got)
			}
			if got := a.Stats().Streamed - before; got != 3 {
				t.Errorf("streamed %d segments, want 3", got)
			}
			b := newBackend(t, c, ct, nil)
			f2, err := b.Open(id, want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readAll(t, f2), data) {
				t.Errorf("downloaded bytes differ")
			}
		})
	}
}

// A writer faster than Swift is held back: Written returns once the
// final bytes reach at most one complete segment past the one being
// sent, so the seal has about two segments left to send, not all the
// writer got ahead by. With a Swift that never answers, the holding back
// ends after the timeout.
func TestStreamHoldsWriter(t *testing.T) {
	data := make([]byte, 6<<20+100)
	rand.Read(data)
	write := func(t *testing.T, b *Backend) (*stream, time.Duration) {
		p := filepath.Join(t.TempDir(), "img.123.1")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st := b.Stream("img", p).(*stream)
		t.Cleanup(st.Abort)
		start := time.Now()
		st.Written(int64(len(data))) // 6 complete segments of 1 MiB and 100 bytes
		return st, time.Since(start)
	}

	t.Run("swift", func(t *testing.T) {
		c := conn(t)
		b := newBackend(t, c, uniqueContainer(t, c), nil)
		st, d := write(t, b)
		st.mu.Lock()
		sent := len(st.sent)
		st.mu.Unlock()
		// 6 MiB + 100 bytes final: at most segment sent+1 complete
		// beside the one in flight means sent+2 >= 7.
		if sent < 5 {
			t.Errorf("Written returned after %v with %d segments sent, want >= 5 (the writer at most one segment ahead of the one in flight)", d, sent)
		}
	})

	t.Run("silent", func(t *testing.T) {
		silent, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		go func() { // accepts and never answers
			for {
				c, err := silent.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		c := &swift.Connection{AuthUrl: "http://" + silent.Addr().String() + "/auth/v1.0", UserName: "test:tester", ApiKey: "testing"}
		b := newBackend(t, c, "x", func(cfg *Config) { cfg.Timeout = time.Second })
		if _, d := write(t, b); d > 5*time.Second {
			t.Errorf("Written held the writer %v with Swift silent and a 1 s timeout", d)
		}
	})
}
