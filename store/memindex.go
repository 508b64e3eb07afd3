package store

import (
	"slices"
	"strings"
	"sync"

	"github.com/tidwall/btree"

	"github.com/imagefs/imagefs/store/kv"
)

// memIndex is the property index held in memory, for a catalog backend
// that is not kv.Iterable (etcd: index keys there cost 2-3x the load time
// and memory, so every host derives the index from the records it lists
// and watches). It holds exactly the entries the embedded index holds
// (index.go: prop/<key> \x00 <escaped value> \x00 <id>, maintained with
// the same diff as txn.reindex), and its iterator (kv.Iter) serves the
// scans of index.go unchanged.
//
// The entries are grouped as the encoded keys order them: a B-tree of
// property keys (keyNode), each with a B-tree of its escaped values
// (valNode), each with the sorted ids of its images (idSet: one id
// inline, or chunks of up to idChunkMax ids). A value that many images
// share (status, visibility, os_distro...) so costs about 16 bytes per
// image (the id's string header; the text is the record's Image.ID), a
// value of one image about 60 (its node); the entry strings share the
// memory of the records, except the text of the core properties computed
// per record (sizes, times). The flat B-tree of one node per entry this
// replaces took 65-70 bytes per entry and 6 s to build at 100,000 images
// of 14 properties on 2 busy cores; buildMemIndex builds this in a pass
// over the records, sorted once.
//
// Iterators read a snapshot: a lazy copy of the key tree (tidwall/btree's
// copy-on-write) taken when an iterator opens, after which the
// generation (gen) moves on, so that every node made before is shared
// with that snapshot: a change copies the keyNode, valNode and id chunk
// it changes when they are of an older generation (O(log n) nodes, and
// the chunk list of one value), never changing what a snapshot sees.
// Iterators opened between two applies share one snapshot, and need no
// lock while apply runs.
type memIndex struct {
	mu   sync.Mutex
	keys *btree.BTreeG[*keyNode] // written under mu only
	snap *btree.BTreeG[*keyNode] // keys as of the last snapshot; nil when changed since
	gen  uint64                  // nodes of an older generation are shared with a snapshot
	n    int                     // entries
}

// keyNode holds the values of one property key.
type keyNode struct {
	key  string
	vals *btree.BTreeG[*valNode]
	gen  uint64
}

// valNode holds the images of one (key, escaped value).
type valNode struct {
	ev  string
	ids idSet
	gen uint64
}

// idSet is a sorted set of ids: one inline (chunks nil), or sorted chunks
// of at most 2*idChunkMax ids each (bulk-built full at idChunkMax).
type idSet struct {
	one    string
	chunks []*idChunk
	n      int
}

// idChunk is a sorted run of ids; changed in place only when of the
// current generation.
type idChunk struct {
	ids []string
	gen uint64
}

// idChunkMax is the size of the chunks buildMemIndex makes; a chunk that
// grows past twice as many is split.
const idChunkMax = 128

var btreeOpts = btree.Options{NoLocks: true}

func lessKeyNode(a, b *keyNode) bool { return a.key < b.key }
func lessValNode(a, b *valNode) bool { return a.ev < b.ev }

func newMemIndex() *memIndex {
	return &memIndex{keys: btree.NewBTreeGOptions(lessKeyNode, btreeOpts), gen: 1}
}

// buildMemIndex builds the index of images (in any order; sorted by id
// is quicker) in one pass: the images in id order, each property
// appended to its value's ids in order, each key's values sorted once
// and bulk-loaded.
func buildMemIndex(images []*Image) *memIndex {
	byID := func(a, b *Image) int { return strings.Compare(a.ID, b.ID) }
	if !slices.IsSortedFunc(images, byID) {
		images = slices.Clone(images)
		slices.SortFunc(images, byID)
	}
	m := newMemIndex()
	groups := map[string]map[string]*valNode{}
	prev := ""
	for _, im := range images {
		if im.ID == "" || im.ID == prev {
			continue // not an image; a duplicate
		}
		prev = im.ID
		forIndexed(im, func(k, v string) {
			g := groups[k]
			if g == nil {
				g = map[string]*valNode{}
				groups[k] = g
			}
			ev := escIndex(v)
			vn := g[ev]
			if vn == nil {
				vn = &valNode{ev: ev, gen: m.gen}
				g[ev] = vn
			}
			vn.ids.appendLast(im.ID, m.gen)
			m.n++
		})
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		vals := make([]*valNode, 0, len(groups[k]))
		for _, vn := range groups[k] {
			vals = append(vals, vn)
		}
		slices.SortFunc(vals, func(a, b *valNode) int { return strings.Compare(a.ev, b.ev) })
		kn := &keyNode{key: k, vals: btree.NewBTreeGOptions(lessValNode, btreeOpts), gen: m.gen}
		for _, vn := range vals {
			if c := vn.ids.chunks; c != nil {
				c[len(c)-1].ids = slices.Clip(c[len(c)-1].ids)
			}
			kn.vals.Load(vn)
		}
		m.keys.Load(kn)
	}
	return m
}

// forIndexed calls fn with every property of im the index holds (those
// of indexEntries), without building a map.
func forIndexed(im *Image, fn func(k, v string)) {
	for _, k := range coreKeys {
		if v, ok := im.Property(k); ok {
			fn(k, v)
		}
	}
	for k, v := range im.Extra {
		switch {
		case k == KeyTags:
			for _, t := range ParseTags(v) {
				fn(k, t) // one entry per tag (tags.go)
			}
		case !IsCoreKey(k) && indexable(k):
			fn(k, v)
		}
	}
}

// apply changes the index from record old to record new, as txn.reindex
// changes the embedded index: nil old for a new image, nil new for a
// deleted one; only the properties that differ are touched. The store
// calls it under its write locks (applies are serialized); iterators may
// run meanwhile.
func (m *memIndex) apply(old, new *Image) {
	var id string
	if new != nil {
		id = new.ID
	} else if old != nil {
		id = old.ID
	}
	if id == "" {
		return // not an image
	}
	before, after := indexEntries(old), indexEntries(new)
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for e := range before {
		if !after[e] {
			changed = m.remove(e.Key, escIndex(e.Value), id) || changed
		}
	}
	for e := range after {
		if !before[e] {
			changed = m.add(e.Key, escIndex(e.Value), id) || changed
		}
	}
	if changed {
		m.snap = nil
	}
}

// ownKey returns the keyNode of key, of the current generation (copied
// from a shared one: a lazy copy of its value tree), creating it when
// create; nil when absent and not create. Must hold mu.
func (m *memIndex) ownKey(key string, create bool) *keyNode {
	kn, ok := m.keys.Get(&keyNode{key: key})
	switch {
	case !ok && !create:
		return nil
	case !ok:
		kn = &keyNode{key: key, vals: btree.NewBTreeGOptions(lessValNode, btreeOpts), gen: m.gen}
		m.keys.Set(kn)
	case kn.gen != m.gen:
		kn = &keyNode{key: key, vals: kn.vals.Copy(), gen: m.gen}
		m.keys.Set(kn)
	}
	return kn
}

// ownVal returns kn's valNode of ev, of the current generation (copied
// from a shared one, with its chunk list), or nil when absent. Must hold
// mu; kn of the current generation.
func (m *memIndex) ownVal(kn *keyNode, ev string) *valNode {
	vn, ok := kn.vals.Get(&valNode{ev: ev})
	if !ok {
		return nil
	}
	if vn.gen != m.gen {
		vn = &valNode{ev: ev, ids: idSet{one: vn.ids.one, chunks: slices.Clone(vn.ids.chunks), n: vn.ids.n}, gen: m.gen}
		kn.vals.Set(vn)
	}
	return vn
}

// add adds entry (key, ev, id); it reports whether it was new. Must
// hold mu.
func (m *memIndex) add(key, ev, id string) bool {
	kn := m.ownKey(key, true)
	vn := m.ownVal(kn, ev)
	if vn == nil {
		kn.vals.Set(&valNode{ev: ev, ids: idSet{one: id, n: 1}, gen: m.gen})
		m.n++
		return true
	}
	if !vn.ids.insert(id, m.gen) {
		return false
	}
	m.n++
	return true
}

// remove removes entry (key, ev, id); it reports whether it was there.
// Must hold mu.
func (m *memIndex) remove(key, ev, id string) bool {
	kn := m.ownKey(key, false)
	if kn == nil {
		return false
	}
	vn := m.ownVal(kn, ev)
	if vn == nil || !vn.ids.remove(id, m.gen) {
		return false
	}
	m.n--
	if vn.ids.n == 0 {
		kn.vals.Delete(vn)
		if kn.vals.Len() == 0 {
			m.keys.Delete(kn)
		}
	}
	return true
}

// appendLast adds id, greater than every id of s (a bulk build).
func (s *idSet) appendLast(id string, gen uint64) {
	switch {
	case s.n == 0:
		s.one = id
	case s.chunks == nil:
		s.chunks = []*idChunk{{ids: []string{s.one, id}, gen: gen}}
		s.one = ""
	default:
		c := s.chunks[len(s.chunks)-1]
		if len(c.ids) >= idChunkMax {
			c.ids = slices.Clip(c.ids)
			c = &idChunk{ids: make([]string, 0, idChunkMax), gen: gen}
			s.chunks = append(s.chunks, c)
		}
		c.ids = append(c.ids, id)
	}
	s.n++
}

// find returns the chunk that holds id or would (the first whose last
// id is not below it; the last chunk if none), and id's position in it
// with whether it is there. s has chunks.
func (s *idSet) find(id string) (ci, pi int, found bool) {
	ci, _ = slices.BinarySearchFunc(s.chunks, id, func(c *idChunk, id string) int {
		return strings.Compare(c.ids[len(c.ids)-1], id)
	})
	if ci == len(s.chunks) {
		ci--
	}
	pi, found = slices.BinarySearch(s.chunks[ci].ids, id)
	return ci, pi, found
}

// own returns chunk ci of the current generation (copied when shared).
func (s *idSet) own(ci int, gen uint64) *idChunk {
	c := s.chunks[ci]
	if c.gen != gen {
		c = &idChunk{ids: slices.Clone(c.ids), gen: gen}
		s.chunks[ci] = c
	}
	return c
}

// insert adds id; it reports whether it was new. s's chunk list is of
// generation gen (ownVal).
func (s *idSet) insert(id string, gen uint64) bool {
	switch {
	case s.n == 0:
		s.one, s.n = id, 1
		return true
	case s.chunks == nil:
		if id == s.one {
			return false
		}
		ids := []string{s.one, id}
		if id < s.one {
			ids[0], ids[1] = id, s.one
		}
		s.chunks, s.one, s.n = []*idChunk{{ids: ids, gen: gen}}, "", 2
		return true
	}
	ci, pi, found := s.find(id)
	if found {
		return false
	}
	c := s.own(ci, gen)
	c.ids = slices.Insert(c.ids, pi, id)
	if len(c.ids) > 2*idChunkMax {
		half := len(c.ids) / 2
		right := &idChunk{ids: slices.Clone(c.ids[half:]), gen: gen}
		c.ids = slices.Clone(c.ids[:half])
		s.chunks = slices.Insert(s.chunks, ci+1, right)
	}
	s.n++
	return true
}

// remove removes id; it reports whether it was there. s's chunk list is
// of generation gen (ownVal).
func (s *idSet) remove(id string, gen uint64) bool {
	switch {
	case s.n == 0:
		return false
	case s.chunks == nil:
		if id != s.one {
			return false
		}
		s.one, s.n = "", 0
		return true
	}
	ci, pi, found := s.find(id)
	if !found {
		return false
	}
	c := s.own(ci, gen)
	c.ids = slices.Delete(c.ids, pi, pi+1)
	if len(c.ids) == 0 {
		s.chunks = slices.Delete(s.chunks, ci, ci+1)
	}
	s.n--
	if s.n == 1 {
		for _, c := range s.chunks {
			if len(c.ids) > 0 {
				s.one = c.ids[0]
			}
		}
		s.chunks = nil
	}
	return true
}

// at returns the id at position (ci, pi); (0, 0) is the first.
func (s *idSet) at(ci, pi int) string {
	if s.chunks == nil {
		return s.one
	}
	return s.chunks[ci].ids[pi]
}

// next returns the position after (ci, pi), and whether there is one.
func (s *idSet) next(ci, pi int) (int, int, bool) {
	if s.chunks == nil {
		return 0, 0, false
	}
	if pi+1 < len(s.chunks[ci].ids) {
		return ci, pi + 1, true
	}
	if ci+1 < len(s.chunks) {
		return ci + 1, 0, true
	}
	return 0, 0, false
}

// seek returns the position of the first id not below id, and whether
// there is one.
func (s *idSet) seek(id string) (int, int, bool) {
	if s.chunks == nil {
		return 0, 0, s.n == 1 && s.one >= id
	}
	ci, pi, _ := s.find(id)
	if pi < len(s.chunks[ci].ids) {
		return ci, pi, true
	}
	return 0, 0, false // past the last chunk's last id
}

// len returns the number of entries.
func (m *memIndex) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

// iter returns an iterator over the entries with keys in [lo, hi), as of
// now (a snapshot). Several iterators may run at once, also while apply
// runs. The caller must Close it.
func (m *memIndex) iter(lo, hi string) kv.Iter {
	m.mu.Lock()
	if m.snap == nil {
		m.snap = m.keys.Copy()
		m.gen++ // every node so far is the snapshot's too
	}
	snap := m.snap
	m.mu.Unlock()
	return &memIter{keys: snap.Iter(), lo: lo, hi: hi}
}

// memIter is a kv.Iter over a memIndex snapshot, with Pebble's bound
// semantics: First and SeekGE never go below lo, and no key at or above
// hi is Valid. Key's slice is valid until the next positioning call (as
// Pebble's); Value is empty (index entries have no value).
type memIter struct {
	keys   btree.IterG[*keyNode]
	vals   btree.IterG[*valNode] // over kn's values, when hasVals
	kn     *keyNode
	vn     *valNode
	ci, pi int // the id's position in vn.ids
	lo, hi string

	hasVals bool
	valid   bool
	closed  bool
	key     []byte
	kprobe  keyNode
	vprobe  valNode
}

var _ kv.Iter = (*memIter)(nil)

// settle records whether the iterator, positioned (found) or exhausted,
// is at an entry below hi, and builds that entry's key.
func (i *memIter) settle(found bool) bool {
	i.valid = false
	if !found || i.closed {
		return false
	}
	i.key = append(i.key[:0], prefixProp...)
	i.key = append(i.key, i.kn.key...)
	i.key = append(i.key, 0)
	i.key = append(i.key, i.vn.ev...)
	i.key = append(i.key, 0)
	i.key = append(i.key, i.vn.ids.at(i.ci, i.pi)...)
	i.valid = string(i.key) < i.hi
	return i.valid
}

// enterKey makes the key tree iterator's current node the key, at its
// value vprobe.ev (or the one after it), or its first value when first.
func (i *memIter) enterKey(first bool) bool {
	if i.hasVals {
		i.vals.Release()
	}
	i.kn = i.keys.Item()
	i.vals, i.hasVals = i.kn.vals.Iter(), true
	if first {
		return i.vals.First()
	}
	return i.vals.Seek(&i.vprobe)
}

// firstOf positions at the first entry of the key at or after the key
// tree iterator (ok: there is one), moving to the next keys as needed.
func (i *memIter) firstOf(ok bool) bool {
	for ; ok; ok = i.keys.Next() {
		if i.enterKey(true) {
			i.vn, i.ci, i.pi = i.vals.Item(), 0, 0
			return true
		}
	}
	return false
}

// firstVal positions at the first id of the value at the value
// iterator (ok: there is one), or the first entry of the next key.
func (i *memIter) firstVal(ok bool) bool {
	if ok {
		i.vn, i.ci, i.pi = i.vals.Item(), 0, 0
		return true
	}
	return i.firstOf(i.keys.Next())
}

// seekKey positions at the first entry of the first key at or above key
// (strictly above when after).
func (i *memIter) seekKey(key string, after bool) bool {
	i.kprobe.key = key
	ok := i.keys.Seek(&i.kprobe)
	if ok && after && i.keys.Item().key == key {
		ok = i.keys.Next()
	}
	return i.firstOf(ok)
}

// seek positions at the first entry whose key is not below r.
func (i *memIter) seek(r string) bool {
	if r <= prefixProp {
		return i.seekKey("", false)
	}
	rest, ok := strings.CutPrefix(r, prefixProp)
	if !ok {
		return false // r is above every entry
	}
	k := strings.IndexAny(rest, "\x00\x01")
	if k < 0 {
		return i.seekKey(rest, false) // prop/<rest>\x00... >= r
	}
	key := rest[:k]
	if rest[k] == 1 {
		return i.seekKey(key, true) // every entry of key is below r
	}
	// r is within key's entries: [prop/<key>\x00, prop/<key>\x01).
	i.kprobe.key = key
	if !i.keys.Seek(&i.kprobe) {
		return false
	}
	if i.keys.Item().key != key {
		return i.firstOf(true)
	}
	rest = rest[k+1:]
	e := strings.IndexByte(rest, 0)
	if e < 0 {
		i.vprobe.ev = rest // <ev>\x00<id> >= rest exactly when ev >= rest
		return i.firstVal(i.enterKey(false))
	}
	ev, id := rest[:e], rest[e+1:]
	i.vprobe.ev = ev
	if !i.enterKey(false) {
		return i.firstOf(i.keys.Next())
	}
	if i.vals.Item().ev != ev {
		return i.firstVal(true)
	}
	i.vn = i.vals.Item()
	if ci, pi, ok := i.vn.ids.seek(id); ok {
		i.ci, i.pi = ci, pi
		return true
	}
	return i.firstVal(i.vals.Next())
}

func (i *memIter) First() bool {
	if i.closed {
		return false
	}
	return i.settle(i.seek(i.lo))
}

func (i *memIter) SeekGE(key []byte) bool {
	if i.closed {
		return false
	}
	k := string(key)
	if k < i.lo {
		k = i.lo
	}
	return i.settle(i.seek(k))
}

func (i *memIter) Next() bool {
	if !i.valid {
		return false
	}
	if ci, pi, ok := i.vn.ids.next(i.ci, i.pi); ok {
		i.ci, i.pi = ci, pi
		return i.settle(true)
	}
	return i.settle(i.firstVal(i.vals.Next()))
}

func (i *memIter) Valid() bool { return i.valid }

func (i *memIter) Key() []byte {
	if !i.valid {
		return nil
	}
	return i.key
}

func (i *memIter) Value() []byte { return nil }

func (i *memIter) Error() error { return nil }

func (i *memIter) Close() error {
	if !i.closed {
		i.closed, i.valid = true, false
		if i.hasVals {
			i.vals.Release()
			i.hasVals = false
		}
		i.keys.Release()
	}
	return nil
}
