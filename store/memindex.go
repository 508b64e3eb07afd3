package store

import (
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
// The entries live in a copy-on-write B-tree (github.com/tidwall/btree).
// An iterator reads a snapshot: a lazy copy of the tree made when the
// iterator opens (O(1); the next apply then copies the nodes it changes,
// O(log n) of them), so applies never show in an open iterator and
// iterators need no lock while apply runs. Iterators opened between two
// applies share one snapshot.
//
// An entry does not hold its encoded key: it holds the property key, the
// escaped value and the id as strings that share the memory of the
// records (Image.ID, the keys and values of Image.Extra), so the index
// adds one 48-byte entry and one B-tree slot (a pointer, in nodes about
// half full) per entry, plus the text of the core properties computed
// per record (sizes, times): about 65 bytes per entry, measured.
type memIndex struct {
	mu   sync.Mutex
	tr   *btree.BTreeG[*memEntry] // written under mu only
	snap *btree.BTreeG[*memEntry] // tr as of the last snapshot; nil when tr changed since
}

// memEntry is one index entry: prop/<key> \x00 <ev> \x00 <id>. A probe
// (a bound or a SeekGE key, not an entry) has id "" (every entry has an
// id) and its whole encoded key in key.
type memEntry struct {
	key, ev, id string
}

// segments returns the pieces of e's encoded key, in order.
func (e memEntry) segments() [6]string {
	return [6]string{prefixProp, e.key, "\x00", e.ev, "\x00", e.id}
}

// cmpEncoded compares the encoded key of entry e with the raw key r, byte
// by byte as Pebble orders keys, without building e's key.
func cmpEncoded(e memEntry, r string) int {
	for _, s := range e.segments() {
		n := min(len(s), len(r))
		if c := strings.Compare(s[:n], r[:n]); c != 0 {
			return c
		}
		if n < len(s) {
			return 1 // r is a proper prefix of e's key
		}
		r = r[n:]
	}
	if len(r) > 0 {
		return -1
	}
	return 0
}

// cmpMemEntry orders entries as their encoded keys. Two entries compare
// field by field: keys hold no NUL or \x01 and escaped values no NUL, so
// the NUL separator sorts below every byte of the field it ends, and
// field order is byte order of the encoded keys.
func cmpMemEntry(a, b memEntry) int {
	switch {
	case a.id == "" && b.id == "":
		return strings.Compare(a.key, b.key)
	case a.id == "":
		return -cmpEncoded(b, a.key)
	case b.id == "":
		return cmpEncoded(a, b.key)
	}
	if c := strings.Compare(a.key, b.key); c != 0 {
		return c
	}
	if c := strings.Compare(a.ev, b.ev); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

func newMemIndex() *memIndex {
	return &memIndex{tr: btree.NewBTreeGOptions(func(a, b *memEntry) bool {
		return cmpMemEntry(*a, *b) < 0
	}, btree.Options{NoLocks: true})}
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
		return // not an image (and an entry's id tells it from a probe)
	}
	before, after := indexEntries(old), indexEntries(new)
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for k, v := range before {
		if nv, ok := after[k]; !ok || nv != v {
			if _, found := m.tr.Delete(&memEntry{k, escIndex(v), id}); found {
				changed = true
			}
		}
	}
	for k, v := range after {
		if ov, ok := before[k]; !ok || ov != v {
			if _, replaced := m.tr.Set(&memEntry{k, escIndex(v), id}); !replaced {
				changed = true
			}
		}
	}
	if changed {
		m.snap = nil
	}
}

// len returns the number of entries.
func (m *memIndex) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tr.Len()
}

// iter returns an iterator over the entries with keys in [lo, hi), as of
// now (a snapshot). Several iterators may run at once, also while apply
// runs. The caller must Close it.
func (m *memIndex) iter(lo, hi string) kv.Iter {
	m.mu.Lock()
	if m.snap == nil {
		m.snap = m.tr.Copy()
	}
	snap := m.snap
	m.mu.Unlock()
	return &memIter{it: snap.Iter(), lo: lo, hi: hi}
}

// memIter is a kv.Iter over a memIndex snapshot, with Pebble's bound
// semantics: First and SeekGE never go below lo, and no key at or above
// hi is Valid. Key's slice is valid until the next positioning call (as
// Pebble's); Value is empty (index entries have no value).
type memIter struct {
	it     btree.IterG[*memEntry]
	lo, hi string
	valid  bool
	closed bool
	key    []byte
	probe  memEntry // the key First and SeekGE seek to
}

var _ kv.Iter = (*memIter)(nil)

// settle records whether the tree iterator, which reported found, is at
// a key below hi, and builds that key.
func (i *memIter) settle(found bool) bool {
	i.valid = found && !i.closed && cmpEncoded(*i.it.Item(), i.hi) < 0
	if i.valid {
		i.key = i.key[:0]
		for _, s := range i.it.Item().segments() {
			i.key = append(i.key, s...)
		}
	}
	return i.valid
}

func (i *memIter) First() bool {
	if i.closed {
		return false
	}
	i.probe.key = i.lo
	return i.settle(i.it.Seek(&i.probe))
}

func (i *memIter) SeekGE(key []byte) bool {
	if i.closed {
		return false
	}
	k := string(key)
	if k < i.lo {
		k = i.lo
	}
	i.probe.key = k
	return i.settle(i.it.Seek(&i.probe))
}

func (i *memIter) Next() bool {
	if !i.valid {
		return false
	}
	return i.settle(i.it.Next())
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
		i.it.Release()
	}
	return nil
}
