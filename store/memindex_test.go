package store

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memKeys returns every key of m's index in [lo, hi), in iteration order.
func memKeys(t testing.TB, m *memIndex, lo, hi string) []string {
	t.Helper()
	it := m.iter(lo, hi)
	defer it.Close()
	var out []string
	for it.First(); it.Valid(); it.Next() {
		out = append(out, string(it.Key()))
	}
	require.NoError(t, it.Error())
	return out
}

// pebbleIndexKeys returns the encoded keys of s's (Pebble) property index,
// sorted, rebuilt from PropertyIndex with entryKey.
func pebbleIndexKeys(t testing.TB, s *Store) []string {
	t.Helper()
	idx, err := s.PropertyIndex()
	require.NoError(t, err)
	var out []string
	for kv, ids := range idx {
		for _, id := range ids {
			out = append(out, string(entryKey(kv.Key, kv.Value, id)))
		}
	}
	slices.Sort(out)
	return out
}

// mirror applies to m every record of s that changed since the last call
// (seen: id -> the record last applied), as a host applies what it
// watches.
func mirror(s *Store, m *memIndex, seen map[string]*Image) int {
	n := 0
	cur := map[string]*Image{}
	for _, im := range s.List() {
		cur[im.ID] = im
	}
	for id, im := range cur {
		if seen[id] != im {
			m.apply(seen[id], im)
			seen[id] = im
			n++
		}
	}
	for id, old := range seen {
		if cur[id] == nil {
			m.apply(old, nil)
			delete(seen, id)
			n++
		}
	}
	return n
}

// TestMemIndexMatchesPebbleIndex makes random changes through the store
// (create, set, remove, rename, delete, seal, refused upload, status,
// members) and applies every changed record to a memIndex: after every
// change its keys are byte for byte the Pebble index's keys.
func TestMemIndexMatchesPebbleIndex(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 15))
	s := newStore(t)
	m := newMemIndex()
	seen := map[string]*Image{}
	vhd := fixedVHD(t, 64<<10)
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	names := 0
	applied := 0
	for step := range 300 {
		all := s.List()
		if len(all) < 3 || r.IntN(8) == 0 {
			names++
			_, err := s.Create([]Caller{alice, bob, Root}[r.IntN(3)], fmt.Sprintf("img-%d", names))
			require.NoError(t, err)
		} else {
			id := all[r.IntN(len(all))].ID
			switch r.IntN(11) {
			case 0, 1, 2:
				_ = s.SetProperty(Root, id, pick(indexKeys), pick(indexValues), SetAny)
			case 3:
				key := pick(indexKeys)
				for k := range s.Get(id).Extra {
					if slices.Contains(indexKeys, k) {
						key = k
					}
				}
				_ = s.RemoveProperty(Root, id, key)
			case 4:
				_ = s.SetProperty(Root, id, KeyMinRAM, fmt.Sprint(r.IntN(3)*512), SetAny)
			case 5:
				names++
				_ = s.Rename(Root, id, fmt.Sprintf("img-%d", names))
			case 6:
				_ = s.SetProperty(Root, id, KeyProtected, "false", SetAny)
				_ = s.Delete(Root, id)
			case 7:
				_ = tryUpload(s, id, vhd)
			case 8:
				_ = tryUpload(s, id, vhd[:1000]) // refused: killed
			case 9:
				_ = s.SetProperty(Root, id, KeyStatus, pick([]string{"deactivated", "active"}), SetAny)
			case 10:
				_ = s.SetProperty(Root, id, KeyVisibility, pick([]string{"private", "shared", "public"}), SetAny)
			}
		}
		applied += mirror(s, m, seen)
		want := pebbleIndexKeys(t, s)
		got := memKeys(t, m, prefixProp, endProp)
		if !assert.Equal(t, want, got, "step %d", step) {
			t.FailNow()
		}
		require.Equal(t, len(want), m.len())
	}
	t.Logf("%d record changes applied, %d entries at the end", applied, m.len())
}

// TestMemIndexApplyDiff: apply touches only the properties that differ,
// nil old adds every property, nil new removes every one; a no-op apply
// keeps the snapshot.
func TestMemIndexApplyDiff(t *testing.T) {
	m := newMemIndex()
	a := &Image{ID: "id-a", Name: "a", Status: StatusQueued, Size: -1, VirtualSize: -1,
		Extra: map[string]string{"os": "x\x00y", "k": "v"}}
	m.apply(nil, a)
	n := len(indexEntries(a))
	require.Equal(t, n, m.len())
	it := m.iter(prefixProp, endProp)
	it.Close()
	snap := m.snap
	m.apply(a, a) // nothing differs
	assert.Same(t, snap, m.snap, "a no-op apply must not drop the snapshot")

	b := a.clone()
	b.Extra["os"] = "z"
	delete(b.Extra, "k")
	b.Extra["new"] = "1"
	m.apply(a, b)
	keys := memKeys(t, m, prefixProp, endProp)
	assert.Contains(t, keys, string(entryKey("os", "z", "id-a")))
	assert.Contains(t, keys, string(entryKey("new", "1", "id-a")))
	assert.NotContains(t, keys, string(entryKey("os", "x\x00y", "id-a")))
	assert.NotContains(t, keys, string(entryKey("k", "v", "id-a")))
	assert.Equal(t, len(indexEntries(b)), m.len())

	m.apply(b, nil)
	assert.Zero(t, m.len())
	assert.Empty(t, memKeys(t, m, prefixProp, endProp))
}

// TestMemIndexSnapshot: an open iterator reads the index as of its
// opening, whatever applies run meanwhile (also from other goroutines).
func TestMemIndexSnapshot(t *testing.T) {
	m := newMemIndex()
	mk := func(i int, v string) *Image {
		return &Image{ID: fmt.Sprintf("id-%03d", i), Name: fmt.Sprint(i), Size: -1, VirtualSize: -1,
			Extra: map[string]string{"os": v}}
	}
	var ims []*Image
	for i := range 200 {
		ims = append(ims, mk(i, "old"))
		m.apply(nil, ims[i])
	}
	before := memKeys(t, m, prefixProp, endProp)
	it := m.iter(prefixProp, endProp)
	require.True(t, it.First())
	// Change every image and delete half while the iterator is open.
	for i := range ims {
		if i%2 == 0 {
			m.apply(ims[i], nil)
		} else {
			n := mk(i, "new")
			m.apply(ims[i], n)
			ims[i] = n
		}
	}
	var got []string
	for ; it.Valid(); it.Next() {
		got = append(got, string(it.Key()))
	}
	require.NoError(t, it.Close())
	assert.Equal(t, before, got, "an open iterator saw later applies")
	after := memKeys(t, m, prefixProp, endProp)
	assert.NotEqual(t, before, after)
	assert.Contains(t, after, string(entryKey("os", "new", "id-001")))
	assert.NotContains(t, after, string(entryKey("os", "old", "id-001")))

	// Readers in parallel with a writer: every scan sees one state
	// (all "a" or all "b" for os, one entry per image), never a mix.
	const n = 100
	m = newMemIndex()
	cur := make([]*Image, n)
	for i := range cur {
		cur[i] = mk(i, "a")
		m.apply(nil, cur[i])
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		v := "a"
		for range 200 {
			if v == "a" {
				v = "b"
			} else {
				v = "a"
			}
			// One image at a time: a scan may see some "a" and some
			// "b", but always exactly n entries, each id once.
			for i := range cur {
				nx := mk(i, v)
				m.apply(cur[i], nx)
				cur[i] = nx
			}
		}
		close(stop)
	}()
	for reader := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				keys := memKeys(t, m, keyPrefix("os"), keyEnd("os"))
				ids := map[string]bool{}
				for _, k := range keys {
					_, _, id, ok := decodeEntry([]byte(k))
					if !ok || ids[id] {
						t.Errorf("reader %d: bad or repeated entry %q", reader, k)
						return
					}
					ids[id] = true
				}
				if len(keys) != n {
					t.Errorf("reader %d: %d entries, want %d", reader, len(keys), n)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestMemIndexSeekLikePebble: First, SeekGE and Next with bounds return
// what Pebble's iterator returns over the same keys, for random bounds
// and seek keys (entry keys, their prefixes and successors, the ends
// index.go seeks to).
func TestMemIndexSeekLikePebble(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 16))
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	require.NoError(t, err)
	defer db.Close()
	m := newMemIndex()
	var all []string
	for i := range 60 {
		extra := map[string]string{}
		for range 1 + r.IntN(4) {
			extra[indexKeys[r.IntN(len(indexKeys))]] = indexValues[r.IntN(len(indexValues))]
		}
		im := &Image{ID: fmt.Sprintf("%08x-%d", r.Uint32(), i), Name: fmt.Sprint(i), Size: -1, VirtualSize: -1, Extra: extra}
		m.apply(nil, im)
		for e := range indexEntries(im) {
			key := entryKey(e.Key, e.Value, im.ID)
			require.NoError(t, db.Set(key, nil, nil))
			all = append(all, string(key))
		}
	}
	// Seek keys: entries, cut short, bumped, and index.go's bounds.
	probe := func() string {
		k := all[r.IntN(len(all))]
		switch r.IntN(6) {
		case 0:
			return k
		case 1:
			return k[:1+r.IntN(len(k))] // not empty: Pebble (race build) indexes key[0]
		case 2:
			return k + "\x00"
		case 3:
			key, ev, _, _ := decodeEntry([]byte(k))
			return valueEnd(key, ev)
		case 4:
			key, _, _, _ := decodeEntry([]byte(k))
			return []string{keyEnd(key), keyPrefix(key), prefixProp, endProp, "\x00", "\xff"}[r.IntN(6)]
		default:
			b := []byte(k)
			i := r.IntN(len(b))
			b[i] += byte(r.IntN(3)) - 1
			return string(b)
		}
	}
	for range 500 {
		lo, hi := probe(), probe()
		if r.IntN(4) == 0 {
			lo, hi = prefixProp, endProp
		}
		if hi < lo {
			lo, hi = hi, lo
		}
		pit, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte(lo), UpperBound: []byte(hi)})
		require.NoError(t, err)
		mit := m.iter(lo, hi)
		same := func(what string, pv, mv bool) {
			t.Helper()
			require.Equal(t, pv, mv, "%s valid [%q,%q)", what, lo, hi)
			require.Equal(t, pit.Valid(), mit.Valid())
			if pv {
				require.Equal(t, string(pit.Key()), string(mit.Key()), "%s [%q,%q)", what, lo, hi)
				require.Empty(t, mit.Value())
			} else {
				require.Nil(t, mit.Key())
			}
		}
		same("First", pit.First(), mit.First())
		for range 20 {
			if r.IntN(2) == 0 {
				k := probe()
				same(fmt.Sprintf("SeekGE(%q)", k), pit.SeekGE([]byte(k)), mit.SeekGE([]byte(k)))
			} else if pit.Valid() {
				same("Next", pit.Next(), mit.Next())
			}
		}
		require.NoError(t, pit.Close())
		require.NoError(t, mit.Close())
		assert.False(t, mit.First(), "a closed iterator is never valid")
	}
}

// TestMemIndexScanAPIs runs index.go's view logic (the key and value
// skipping of ViewKeys/ViewValues) over a memIndex iterator: the same
// keys and values as the Pebble index of the same store.
func TestMemIndexScanAPIs(t *testing.T) {
	s := newStore(t)
	m := newMemIndex()
	seen := map[string]*Image{}
	for i := range 30 {
		im, err := s.Create(Root, fmt.Sprintf("v-%d", i))
		require.NoError(t, err)
		require.NoError(t, s.SetProperty(Root, im.ID, indexKeys[i%len(indexKeys)], indexValues[i%len(indexValues)], SetAny))
	}
	mirror(s, m, seen)
	keys, err := s.ViewKeys(Root, nil)
	require.NoError(t, err)
	// ViewKeys' walk (SeekGE to keyEnd) over the memIndex.
	var got []string
	it := m.iter(prefixProp, endProp)
	for valid := it.First(); valid; {
		key, _, _, ok := decodeEntry(it.Key())
		require.True(t, ok)
		got = append(got, key)
		valid = it.SeekGE([]byte(keyEnd(key)))
	}
	require.NoError(t, it.Close())
	assert.Equal(t, keys, got)
	for _, key := range indexKeys {
		vals, err := s.ViewValues(Root, key, nil)
		require.NoError(t, err)
		var gotv []string
		it := m.iter(keyPrefix(key), keyEnd(key))
		for valid := it.First(); valid; {
			_, ev, _, ok := decodeEntry(it.Key())
			require.True(t, ok)
			gotv = append(gotv, unescIndex(ev))
			valid = it.SeekGE([]byte(valueEnd(key, ev)))
		}
		require.NoError(t, it.Close())
		assert.Equal(t, vals, gotv, "values of %q", key)
	}
}

// TestMemIndexMemory measures what the index adds to the records it is
// built from: 100,000 images with 12 custom properties each (plus the
// core properties every image has). Run with IMAGEFS_MEMINDEX_MEM=1.
func TestMemIndexMemory(t *testing.T) {
	if os.Getenv("IMAGEFS_MEMINDEX_MEM") == "" {
		t.Skip("set IMAGEFS_MEMINDEX_MEM=1 to measure")
	}
	const images, props = 100_000, 12
	ims := make([]*Image, images)
	now := time.Now()
	for i := range ims {
		extra := make(map[string]string, props)
		for p := range props {
			v := fmt.Sprintf("value-%d", i%50) // shared values, as os_distro
			if p%3 == 0 {
				v = fmt.Sprintf("unique-%08d-%d", i, p)
			}
			extra[fmt.Sprintf("prop_%02d", p)] = v
		}
		ims[i] = &Image{ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Name: fmt.Sprintf("image-%06d", i),
			Status: StatusActive, Visibility: "private", Checksum: fmt.Sprintf("%032x", i),
			OSHashAlgo: "sha512", OSHashValue: strings.Repeat(fmt.Sprintf("%08x", i), 16),
			Size: int64(i) << 20, VirtualSize: int64(i) << 21, CreatedAt: now, UpdatedAt: now, Extra: extra}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	h0 := heap()
	start := time.Now()
	m := newMemIndex()
	for _, im := range ims {
		m.apply(nil, im)
	}
	took := time.Since(start)
	h1 := heap()
	n := m.len()
	custom := images * props
	t.Logf("%d images, %d entries (%d custom + %d core): built in %v, heap +%.1f MiB = %.1f bytes/entry, %.0f bytes/image",
		images, n, custom, n-custom, took.Round(time.Millisecond), float64(h1-h0)/(1<<20),
		float64(h1-h0)/float64(n), float64(h1-h0)/images)
	runtime.KeepAlive(ims)
	runtime.KeepAlive(m)
}

// TestMemIndexGroupsAndSnapshots: values shared by thousands of images
// (chunked id sets, split and emptied) and values of one image, built in
// bulk (buildMemIndex) and by apply alike; then random changes with
// iterators opened along the way: every iterator reads exactly the
// entries of its moment, in order, and SeekGE lands on the first entry
// at or above its key, as in a sorted list of the encoded keys.
func TestMemIndexGroupsAndSnapshots(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 17))
	mk := func(i int) *Image {
		return &Image{ID: fmt.Sprintf("%08x-%04d", r.Uint32(), i), Name: fmt.Sprintf("n-%d", i), Size: -1, VirtualSize: -1,
			Status: StatusQueued, Visibility: "public",
			Extra: map[string]string{"os": fmt.Sprint("d", r.IntN(3)), "big": "same", "u": fmt.Sprint("u", i, "\x00\x01x")}}
	}
	cur := map[string]*Image{}
	var ims []*Image
	for i := range 3000 {
		im := mk(i)
		ims = append(ims, im)
		cur[im.ID] = im
	}
	want := func() []string {
		var out []string
		for _, im := range cur {
			for e := range indexEntries(im) {
				out = append(out, entry(e.Key, e.Value, im.ID))
			}
		}
		slices.Sort(out)
		return out
	}
	bulk := buildMemIndex(ims)
	byApply := newMemIndex()
	for _, im := range ims {
		byApply.apply(nil, im)
	}
	w := want()
	require.Equal(t, w, memKeys(t, bulk, prefixProp, endProp))
	require.Equal(t, w, memKeys(t, byApply, prefixProp, endProp))
	require.Equal(t, len(w), bulk.len())

	m := bulk
	type open struct {
		it   *memIter
		want []string
	}
	var opened []open
	next := len(ims)
	for step := range 3000 {
		switch ids := slices.Collect(maps.Keys(cur)); r.IntN(4) {
		case 0: // a new image
			im := mk(next)
			next++
			m.apply(nil, im)
			cur[im.ID] = im
		case 1: // a delete
			old := cur[ids[r.IntN(len(ids))]]
			m.apply(old, nil)
			delete(cur, old.ID)
		default: // a change of the shared values
			old := cur[ids[r.IntN(len(ids))]]
			nx := old.clone()
			nx.Extra["os"] = fmt.Sprint("d", r.IntN(3))
			if r.IntN(2) == 0 {
				nx.Extra["big"] = "other"
			}
			nx.Status = []Status{StatusQueued, StatusActive}[r.IntN(2)]
			m.apply(old, nx)
			cur[nx.ID] = nx
		}
		if step%300 == 0 {
			w := want()
			lo, hi := prefixProp, endProp
			if r.IntN(2) == 0 {
				lo, hi = keyPrefix("os"), keyEnd("os")
			}
			i, j := sort.SearchStrings(w, lo), sort.SearchStrings(w, hi)
			opened = append(opened, open{m.iter(lo, hi).(*memIter), w[i:j]})
			// SeekGE over the current state.
			it := m.iter(prefixProp, endProp)
			for range 50 {
				k := w[r.IntN(len(w))]
				switch r.IntN(4) {
				case 1:
					k = k[:1+r.IntN(len(k))]
				case 2:
					k += "\x00"
				case 3:
					key, ev, _, _ := decodeEntry([]byte(k))
					k = valueEnd(key, ev)
				}
				n := sort.SearchStrings(w, k)
				if n == len(w) {
					require.False(t, it.SeekGE([]byte(k)), "SeekGE(%q)", k)
					continue
				}
				require.True(t, it.SeekGE([]byte(k)), "SeekGE(%q)", k)
				require.Equal(t, w[n], string(it.Key()), "SeekGE(%q)", k)
				if n+1 < len(w) {
					require.True(t, it.Next())
					require.Equal(t, w[n+1], string(it.Key()), "Next after SeekGE(%q)", k)
				}
			}
			require.NoError(t, it.Close())
		}
	}
	require.Equal(t, want(), memKeys(t, m, prefixProp, endProp))
	require.Equal(t, len(want()), m.len())
	for n, o := range opened {
		var got []string
		for o.it.First(); o.it.Valid(); o.it.Next() {
			got = append(got, string(o.it.Key()))
		}
		require.NoError(t, o.it.Close())
		require.Equal(t, o.want, got, "iterator %d", n)
	}
}
