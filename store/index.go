package store

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// The property index: one empty-valued catalog key per property of every
// image, and per tag (key "tags", the tag as the value: tags.go; only in
// an Iterable backend: kv.Iterable),
//
//	prop/<key> \x00 <escaped value> \x00 <id>
//
// written in the same batch as the record change it mirrors (txn.reindex
// from Create, publish, Delete and reconcile), so it can never disagree
// with the records, crash or not. Keys never contain NUL or \x01 (ValidKey:
// printable characters); values may contain anything, so NUL and \x01 are
// escaped (\x00 -> \x01\x01, \x01 -> \x01\x02) and the escaped value
// contains no NUL. Hence all entries of one key lie in
// [prop/<key>\x00, prop/<key>\x01) and all entries of one (key, value) in
// [prop/<key>\x00<v>\x00, prop/<key>\x00<v>\x01): a view is one prefix
// scan, and the keys (or the values of a key) in use are found by skipping
// from one to the next with SeekGE, never by reading the catalog.
//
// meta/propindex holds indexVersion once the index is complete; a catalog
// from before the index (or of another index version) is indexed at Open
// in one batch.
const (
	prefixProp      = "prop/"
	endProp         = "prop0" // '0' follows '/'
	keyIndexVersion = "meta/propindex"
	// indexVersion 2: os_hidden of every image, one entry per tag.
	indexVersion = "2"
)

// KV is one (key, value) pair of the property index.
type KV struct {
	Key, Value string
}

// escIndex escapes a value for the index: no NUL remains.
func escIndex(v string) string {
	if !strings.ContainsAny(v, "\x00\x01") {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case 0:
			b.WriteString("\x01\x01")
		case 1:
			b.WriteString("\x01\x02")
		default:
			b.WriteByte(v[i])
		}
	}
	return b.String()
}

func unescIndex(e string) string {
	if !strings.Contains(e, "\x01") {
		return e
	}
	var b strings.Builder
	for i := 0; i < len(e); i++ {
		if e[i] == 1 && i+1 < len(e) {
			i++
			b.WriteByte(e[i] - 1)
			continue
		}
		b.WriteByte(e[i])
	}
	return b.String()
}

// indexable reports whether key can be an index key (no NUL or \x01; true
// of every key the rules admit).
func indexable(key string) bool { return !strings.ContainsAny(key, "\x00\x01") }

func keyPrefix(key string) string       { return prefixProp + key + "\x00" }
func keyEnd(key string) string          { return prefixProp + key + "\x01" }
func valuePrefix(key, ev string) string { return keyPrefix(key) + ev + "\x00" }
func valueEnd(key, ev string) string    { return keyPrefix(key) + ev + "\x01" }
func entryKey(key, value, id string) []byte {
	return []byte(entry(key, value, id))
}

// entry is the index key of (key, value) for image id.
func entry(key, value, id string) string { return valuePrefix(key, escIndex(value)) + id }

// decodeEntry splits an index key into key, escaped value and id.
func decodeEntry(k []byte) (key, ev, id string, ok bool) {
	rest, ok := bytes.CutPrefix(k, []byte(prefixProp))
	if !ok {
		return "", "", "", false
	}
	i := bytes.IndexByte(rest, 0)
	j := bytes.LastIndexByte(rest, 0)
	if i < 0 || j == i {
		return "", "", "", false
	}
	return string(rest[:i]), string(rest[i+1 : j]), string(rest[j+1:]), true
}

// indexEntries returns the (key, value) pairs of im the index holds
// (forIndexed's).
func indexEntries(im *Image) map[KV]bool {
	if im == nil {
		return nil
	}
	m := make(map[KV]bool, len(coreKeys)+len(im.Extra))
	forIndexed(im, func(k, v string) { m[KV{k, v}] = true })
	return m
}

// indexHas reports whether im has the index entry (key, value): its
// property key equals value, or, for the tags, it has the tag value.
func (im *Image) indexHas(key, value string) bool {
	if key == KeyTags {
		return im.HasTag(value)
	}
	v, has := im.Property(key)
	return has && v == value
}

// reindex writes the index changes from record old to record new: nil old
// for a new image, nil new for a deleted one. Only the properties that
// differ are touched. A catalog that is not Iterable keeps no index (the
// store's memIndex follows the published records: notePublished).
func (t *txn) reindex(old, new *Image) {
	if t.c.it == nil {
		return // a shared catalog keeps no index keys
	}
	var id string
	if new != nil {
		id = new.ID
	} else if old != nil {
		id = old.ID
	}
	before, after := indexEntries(old), indexEntries(new)
	for e := range before {
		if !after[e] {
			t.del(entry(e.Key, e.Value, id))
		}
	}
	for e := range after {
		if !before[e] {
			t.put(entry(e.Key, e.Value, id), nil)
		}
	}
}

// ensureIndex builds the property index in one batch when the catalog
// does not have a complete one of this version (a catalog written before
// the index existed). Called by load before reconcile. A catalog that is
// not Iterable has its index in memory (buildMemIndex at load).
func (s *Store) ensureIndex() error {
	if s.cat.it == nil {
		return nil
	}
	ctx, cancel := s.cat.ctx()
	defer cancel()
	p, err := s.cat.kv.Get(ctx, keyIndexVersion)
	if err != nil {
		return fmt.Errorf("%w: read index version: %v", ErrCatalog, err)
	}
	if p.ModRev != 0 && string(p.Value) == indexVersion {
		return nil
	}
	return s.rebuildIndex()
}

// rebuildIndex replaces the whole property index with one computed from
// the records, in one batch (or, in memory, from scratch).
func (s *Store) rebuildIndex() error {
	if s.cat.it == nil {
		s.pubMu.RLock()
		m := buildMemIndex(slices.Collect(maps.Values(s.images)))
		s.pubMu.RUnlock()
		s.commitMu.Lock()
		s.remote.mem = m
		s.commitMu.Unlock()
		return nil
	}
	start := time.Now()
	t := s.cat.begin()
	it, err := s.propIter(prefixProp, endProp)
	if err != nil {
		return err
	}
	stale := it.First()
	if err := iterErr(it); err != nil {
		return err
	}
	if stale {
		// Only when there is something to drop: a range tombstone stays
		// in the LSM and every later seek in the index steps over it.
		t.b.Ops = append(t.b.Ops, kv.Op{Kind: kv.DeleteRange, Key: prefixProp, End: endProp})
	}
	n := 0
	for _, im := range s.images {
		for e := range indexEntries(im) {
			t.put(entry(e.Key, e.Value, im.ID), nil)
			n++
		}
	}
	t.put(keyIndexVersion, []byte(indexVersion))
	if err := t.commit(); err != nil {
		return err
	}
	s.log.Info("property index built", "images", len(s.images), "entries", n, "ms", time.Since(start).Milliseconds())
	return nil
}

// propIter iterates the index keys in [lower, upper): in the catalog, or
// in memory (a snapshot) when the catalog is not Iterable. Errors:
// ErrCatalog (also once a commit failed: the embedded catalog's memtable
// may hold the failed batch). Must hold commitMu (read) or s.mu.
func (s *Store) propIter(lower, upper string) (kv.Iter, error) {
	if s.cat.it == nil {
		return s.remote.mem.iter(lower, upper), nil
	}
	it, err := s.cat.it.NewIter(lower, upper)
	if err != nil {
		return nil, catalogErr(err)
	}
	return it, nil
}

func iterErr(it kv.Iter) error {
	err := it.Error()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: property index: %v", ErrCatalog, err)
	}
	return nil
}

// PropertyIndex returns the whole property index: (key, value) -> ids,
// each list sorted. It reads every entry: for checks and tests, not for
// serving views.
func (s *Store) PropertyIndex() (map[KV][]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, err := s.propIter(prefixProp, endProp)
	if err != nil {
		return nil, err
	}
	out := map[KV][]string{}
	for it.First(); it.Valid(); it.Next() {
		k, ev, id, ok := decodeEntry(it.Key())
		if !ok {
			it.Close()
			return nil, fmt.Errorf("%w: malformed index key %q", ErrCatalog, it.Key())
		}
		kv := KV{k, unescIndex(ev)}
		out[kv] = append(out[kv], id) // ids of one pair arrive sorted
	}
	return out, iterErr(it)
}

// CheckIndex verifies that the property index holds exactly the
// properties of the records: every entry names an image that has that
// value, and there are as many entries as the images have properties. It
// reads the whole index.
func (s *Store) CheckIndex() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := 0
	for _, im := range s.images {
		want += len(indexEntries(im))
	}
	it, err := s.propIter(prefixProp, endProp)
	if err != nil {
		return err
	}
	got := 0
	for it.First(); it.Valid(); it.Next() {
		k, ev, id, ok := decodeEntry(it.Key())
		if !ok {
			it.Close()
			return fmt.Errorf("%w: malformed index key %q", ErrCatalog, it.Key())
		}
		im := s.images[id]
		if im == nil {
			it.Close()
			return fmt.Errorf("%w: index entry %s=%q names missing image %s", ErrCatalog, k, unescIndex(ev), id)
		}
		if !im.indexHas(k, unescIndex(ev)) {
			v, has := im.Property(k)
			it.Close()
			return fmt.Errorf("%w: index entry %s=%q for image %s, record has %q (set %v)", ErrCatalog, k, unescIndex(ev), id, v, has)
		}
		got++
	}
	if err := iterErr(it); err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: property index has %d entries, records have %d properties", ErrCatalog, got, want)
	}
	return nil
}

// listedFor reports whether c sees image id listed. Must hold commitMu
// (read).
func (s *Store) listedFor(c Caller, id string) bool {
	im := s.published(id) // the scan holds commitMu
	return im != nil && Visible(c, im, ReachList)
}

// firstVisible advances it, from its current entry, through the entries
// of one (key, value) until one c sees listed; it returns whether it found
// one. On return the iterator is at that entry or past the pair.
func (s *Store) firstVisible(it kv.Iter, c Caller, key, ev string) bool {
	prefix := []byte(valuePrefix(key, ev))
	for valid := it.Valid(); valid && bytes.HasPrefix(it.Key(), prefix); valid = it.Next() {
		if s.listedFor(c, string(it.Key()[len(prefix):])) {
			return true
		}
	}
	return false
}

// ViewKeys returns, sorted, the property keys for which c sees at least
// one image listed (Visible, ReachList) whose value passes ok (nil: any).
// It skips from key to key with SeekGE: for root the cost is one seek per
// key in use; for others it also reads the entries of images they do not
// see, until one they do.
func (s *Store) ViewKeys(c Caller, ok func(value string) bool) ([]string, error) {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	it, err := s.propIter(prefixProp, endProp)
	if err != nil {
		return nil, err
	}
	var out []string
	for valid := it.First(); valid; {
		key, _, _, good := decodeEntry(it.Key())
		if !good {
			it.Close()
			return nil, fmt.Errorf("%w: malformed index key %q", ErrCatalog, it.Key())
		}
		if key != KeyTags && s.keyInUse(it, c, key, ok) { // tags: by-tag/, not by-property/
			out = append(out, key)
		}
		valid = it.SeekGE([]byte(keyEnd(key)))
	}
	return out, iterErr(it)
}

// keyInUse walks the values of key from the iterator's position, skipping
// values ok refuses, until a value with an image c sees.
func (s *Store) keyInUse(it kv.Iter, c Caller, key string, ok func(string) bool) bool {
	kp := []byte(keyPrefix(key))
	for valid := it.Valid(); valid && bytes.HasPrefix(it.Key(), kp); {
		_, ev, _, _ := decodeEntry(it.Key())
		if ok == nil || ok(unescIndex(ev)) {
			if s.firstVisible(it, c, key, ev) {
				return true
			}
		}
		valid = it.SeekGE([]byte(valueEnd(key, ev)))
	}
	return false
}

// ViewValues returns, in index order, the values of key for which c sees
// at least one image listed and which pass ok (nil: any). It skips from
// value to value with SeekGE.
func (s *Store) ViewValues(c Caller, key string, ok func(value string) bool) ([]string, error) {
	if !indexable(key) {
		return nil, nil
	}
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	it, err := s.propIter(keyPrefix(key), keyEnd(key))
	if err != nil {
		return nil, err
	}
	var out []string
	for valid := it.First(); valid; {
		_, ev, _, good := decodeEntry(it.Key())
		if !good {
			it.Close()
			return nil, fmt.Errorf("%w: malformed index key %q", ErrCatalog, it.Key())
		}
		v := unescIndex(ev)
		if (ok == nil || ok(v)) && s.firstVisible(it, c, key, ev) {
			out = append(out, v)
		}
		valid = it.SeekGE([]byte(valueEnd(key, ev)))
	}
	return out, iterErr(it)
}

// ViewHasKey reports whether ViewKeys(c, ok) would list key, reading only
// that key's entries.
func (s *Store) ViewHasKey(c Caller, key string, ok func(value string) bool) (bool, error) {
	if !indexable(key) || key == KeyTags {
		return false, nil
	}
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	it, err := s.propIter(keyPrefix(key), keyEnd(key))
	if err != nil {
		return false, err
	}
	it.First()
	found := s.keyInUse(it, c, key, ok)
	return found, iterErr(it)
}

// ViewHasValue reports whether c sees at least one image listed whose
// property key equals value.
func (s *Store) ViewHasValue(c Caller, key, value string) (bool, error) {
	if !indexable(key) {
		return false, nil
	}
	ev := escIndex(value)
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	it, err := s.propIter(valuePrefix(key, ev), valueEnd(key, ev))
	if err != nil {
		return false, err
	}
	it.First()
	found := s.firstVisible(it, c, key, ev)
	return found, iterErr(it)
}

// ViewImages returns the images c sees listed (Visible, ReachList) whose
// property key equals value, sorted by name. It reads only that pair's
// index entries: the cost is the size of the view, not of the catalog.
func (s *Store) ViewImages(c Caller, key, value string) ([]*Image, error) {
	if !indexable(key) {
		return nil, nil
	}
	ev := escIndex(value)
	prefix := valuePrefix(key, ev)
	s.commitMu.RLock()
	it, err := s.propIter(prefix, valueEnd(key, ev))
	if err != nil {
		s.commitMu.RUnlock()
		return nil, err
	}
	var out []*Image
	for it.First(); it.Valid(); it.Next() {
		if im := s.published(string(it.Key()[len(prefix):])); im != nil && Visible(c, im, ReachList) {
			out = append(out, im)
		}
	}
	err = iterErr(it)
	s.commitMu.RUnlock()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *Image) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// CompactCatalog flushes the catalog's memtable and compacts all of it,
// so that reads (view listings) meet one sorted run per level rather than
// the overlapping files and tombstones a bulk load leaves. For benchmarks
// and after bulk loads; the catalog is consistent either way.
// A backend without compaction (not embedded) does nothing.
func (s *Store) CompactCatalog() error {
	if s.cat.db == nil {
		return nil
	}
	if err := s.cat.db.Compact(); err != nil {
		return fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	return nil
}
