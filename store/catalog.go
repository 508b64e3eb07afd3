package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/pebblekv"
)

// The catalog's key space, over a kv.Backend (Pebble in STORE/catalog by
// default, store/kv/pebblekv). Every change that belongs together (a
// seal, a rename, a delete) is one batch, committed durably.
//
//	img/<id>    -> JSON Image record
//	name/<name> -> id (names are unique)
//	seq/ino     -> next inode base, uint64 big-endian
//	migrate/<h> -> seq/ino before the first migration of a single-host
//	               store (h: a hash of its image ids; see
//	               migration.raiseSeqIno), uint64 big-endian
//	prop/<key>\x00<value>\x00<id> -> "" (property index, see index.go;
//	               only in an Iterable backend)
//	meta/propindex -> property index version
//	meta/catalog-id -> the catalog's id (shared catalogs; watch.go)
//	del/<id>    -> "" (tombstone: the image's delete committed, its
//	               data file may still exist; see Store.Delete)
//	metadefs/...   metadata definitions (not images; see metadefs.go)
//
// Each batch carries the conditions a shared catalog checks (kv.Cond):
// the ModRev of img/<id> as the store last saw it for every record
// change (0 for a new image), name/<n> absent when a name is claimed,
// and seq/ino's ModRev when the inode sequence advances. The embedded
// backend does not check them (the store's lock makes it the only
// writer).
const (
	prefixImage     = "img/"
	prefixName      = "name/"
	keySeqIno       = "seq/ino"
	prefixTombstone = "del/"
	prefixMigrate   = "migrate/"
	// prefixUpload: upload/<id> -> JSON {"host": H, "since": RFC 3339
	// time}, Leased: the upload of image id in progress on host H
	// (shared catalogs only; see txn.uploadOps).
	prefixUpload = "upload/"
)

// Deadlines of the store's calls into its catalog (Options.CatalogTimeout
// overrides the first): a call that has not returned by then fails with
// ErrUnavailable (a shared catalog) instead of hanging a request.
const (
	defaultCatalogTimeout = 5 * time.Second
	// loadTimeout bounds each Scan of Open's load (every record, the
	// names, the tombstones): 100,000 records take seconds on etcd.
	loadTimeout = 60 * time.Second
)

// The embedded catalog's free-space rules (pebblekv): a commit that may
// grow the catalog leaves catalogHeadroom free, a small one (a seal, a
// status change) smallHeadroom, a delete deleteHeadroom, using the
// reserve (reserveSize bytes in STORE/catalog/imagefs-reserve) on a full
// disk.
const (
	catalogHeadroom = pebblekv.GrowsHeadroom
	smallHeadroom   = pebblekv.SmallHeadroom
	deleteHeadroom  = pebblekv.FreesHeadroom
	reserveSize     = pebblekv.ReserveSize
	reserveName     = pebblekv.ReserveName
)

// errConflict: a condition of a commit's batch no longer held (another
// host changed the catalog); nothing was written. Only a shared catalog
// reports it.
var errConflict = errors.New("catalog changed meanwhile")

// catalogErr maps a backend's error to the store's: ENOSPC -> ErrNoSpace,
// kv.ErrUnavailable -> ErrUnavailable, kv.ErrConflict -> errConflict,
// anything else (kv.ErrBroken, I/O) -> ErrCatalog.
func catalogErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC):
		return noSpace{err}
	case errors.Is(err, kv.ErrUnavailable):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	case errors.Is(err, kv.ErrConflict):
		return fmt.Errorf("%w: %v", errConflict, err)
	case errors.Is(err, kv.ErrCompacted):
		return fmt.Errorf("%w: %w", ErrCatalog, err) // Open lists again (listShared)
	}
	return fmt.Errorf("%w: %v", ErrCatalog, err)
}

// noSpace is a backend's ENOSPC as ErrNoSpace, with the backend's
// message.
type noSpace struct{ err error }

func (e noSpace) Error() string   { return e.err.Error() }
func (e noSpace) Unwrap() []error { return []error{ErrNoSpace, e.err} }

// freeSpace returns the bytes available on the filesystem holding the
// embedded catalog (a variable for tests).
var freeSpace = pebblekv.FreeSpace

// catalog is the store's key layout over its backend.
type catalog struct {
	kv kv.Backend
	// it is kv as an Iterable (the property index lives there), or nil.
	it kv.Iterable
	// db is the embedded backend (reserve, compaction), or nil.
	db  *pebblekv.DB
	log *slog.Logger
	// timeout bounds each call but the load's (defaultCatalogTimeout
	// when 0).
	timeout time.Duration
}

// ctx returns the context of one catalog call: its deadline is the
// catalog's timeout.
func (c *catalog) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeoutOrDefault())
}

// timeoutOrDefault is the deadline of one catalog call.
func (c *catalog) timeoutOrDefault() time.Duration {
	if c.timeout <= 0 {
		return defaultCatalogTimeout
	}
	return c.timeout
}

// loadCtx returns the context of one of Open's scans (loadTimeout).
func loadCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), loadTimeout)
}

// openCatalog opens the embedded catalog in dir, or uses backend when
// set.
func openCatalog(dir string, backend kv.Backend, fs pebblekv.FS, log *slog.Logger) (*catalog, error) {
	c := &catalog{kv: backend, log: log}
	if backend == nil {
		db, err := pebblekv.Open(dir, pebblekv.Options{FS: fs, Logger: log,
			FreeSpace: func(d string) (int64, error) { return freeSpace(d) }})
		if errors.Is(err, pebblekv.ErrBusy) {
			return nil, fmt.Errorf("%w: catalog %s is locked by another process (is the store mounted?)", ErrBusy, dir)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCatalog, err)
		}
		c.kv, c.db = db, db
	} else if db, ok := backend.(*pebblekv.DB); ok {
		c.db = db // an embedded catalog opened by the caller
	}
	if it, ok := c.kv.(kv.Iterable); ok {
		c.it = it
	}
	return c, nil
}

// refillReserve makes the embedded catalog's reserve for deletes if it is
// missing and there is room (best effort; see pebblekv.DB.RefillReserve).
func (c *catalog) refillReserve() {
	if c.db != nil {
		c.db.RefillReserve()
	}
}

// close closes the backend.
func (c *catalog) close() error { return catalogErr(c.kv.Close()) }

// loadAll reads every image record at revision rev and calls fn for each,
// in key order. The records are read and decoded by up to GOMAXPROCS
// workers, each Scanning its own range of ids: decoding the JSON took
// 460 ms of a 750 ms mount start at 100,000 images on 2 cores. A catalog
// that is not Iterable (etcd) is read as 16 ranges, one per first hex
// digit of the id, all at rev: one range read of 100,000 records in pages
// took 32-40 s on etcd 3.4, 16 ranges 3.5-8.5 s.
func (c *catalog) loadAll(rev int64, fn func(*Image) error) error {
	k := min(runtime.GOMAXPROCS(0), 8)
	if c.it == nil {
		k = 16
	}
	bounds := make([]string, k+1)
	bounds[0], bounds[k] = prefixImage, "img0"
	const hexDigits = "0123456789abcdef" // ids are UUIDs; any id falls in one range
	for i := 1; i < k; i++ {
		bounds[i] = prefixImage + hexDigits[16*i/k:16*i/k+1]
	}
	shards := make([][]*Image, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { shards[i], errs[i] = c.loadRange(bounds[i], bounds[i+1], rev) })
	}
	wg.Wait()
	for i := range k {
		if errs[i] != nil {
			return errs[i]
		}
		for _, im := range shards[i] {
			if err := fn(im); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadRange decodes the image records with keys in [lower, upper), each
// with the ModRev of its key.
func (c *catalog) loadRange(lower, upper string, rev int64) ([]*Image, error) {
	var out []*Image
	ctx, cancel := loadCtx()
	defer cancel()
	_, err := c.kv.Scan(ctx, lower, upper, rev, func(p kv.Pair) error {
		im := newRecord()
		if err := json.Unmarshal(p.Value, im); err != nil {
			return fmt.Errorf("%w: record %s: %v", ErrCatalog, p.Key, err)
		}
		im.rev = p.ModRev
		out = append(out, im)
		return nil
	})
	if err != nil && !errors.Is(err, ErrCatalog) {
		err = catalogErr(err)
	}
	return out, err
}

// loadUploads reads the upload/<id> keys at revision rev (a shared
// catalog): id -> ModRev and the host that holds the upload.
func (c *catalog) loadUploads(rev int64) (map[string]uploadKey, error) {
	out := map[string]uploadKey{}
	ctx, cancel := loadCtx()
	defer cancel()
	_, err := c.kv.Scan(ctx, prefixUpload, "upload0", rev, func(p kv.Pair) error {
		out[p.Key[len(prefixUpload):]] = uploadKey{rev: p.ModRev, host: uploadHost(p.Value)}
		return nil
	})
	return out, catalogErr(err)
}

// loadNames reads the name index: fn gets each name/<name> key's Pair
// (its value is the id).
func (c *catalog) loadNames(fn func(p kv.Pair)) error {
	ctx, cancel := loadCtx()
	defer cancel()
	_, err := c.kv.Scan(ctx, prefixName, "name0", 0, func(p kv.Pair) error {
		p.Value = slices.Clone(p.Value) // the backend may reuse it
		fn(p)
		return nil
	})
	return catalogErr(err)
}

// loadTombstones returns the ids whose delete committed while their data
// may remain (see Store.Delete).
func (c *catalog) loadTombstones() (map[string]bool, error) {
	out := map[string]bool{}
	ctx, cancel := loadCtx()
	defer cancel()
	_, err := c.kv.Scan(ctx, prefixTombstone, "del0", 0, func(p kv.Pair) error {
		out[p.Key[len(prefixTombstone):]] = true
		return nil
	})
	return out, catalogErr(err)
}

// nextInoBase returns the next inode base (1 in a new catalog), the
// ModRev of seq/ino (0 when absent) and the revision it was read at.
func (c *catalog) nextInoBase() (next uint64, modRev, rev int64, err error) {
	next = 1
	ctx, cancel := loadCtx()
	defer cancel()
	rev, err = c.kv.Scan(ctx, keySeqIno, keySeqIno+"\x00", 0, func(p kv.Pair) error {
		if len(p.Value) != 8 {
			return fmt.Errorf("%w: %s is %d bytes, want 8", ErrCatalog, keySeqIno, len(p.Value))
		}
		next, modRev = binary.BigEndian.Uint64(p.Value), p.ModRev
		return nil
	})
	if err != nil && !errors.Is(err, ErrCatalog) {
		err = catalogErr(err)
	}
	return next, modRev, rev, err
}

// txn collects the writes of one change and the conditions it commits
// under; commit applies them atomically and durably.
type txn struct {
	c *catalog
	b kv.Batch
	// rev is the revision of the commit, once it succeeded; after
	// errConflict, the catalog's current revision.
	rev int64
	// cur, after errConflict: the current Pair of every Cond key, in
	// Conds' order (ModRev 0: absent).
	cur []kv.Pair
}

func (c *catalog) begin() *txn {
	return &txn{c: c, b: kv.Batch{Room: kv.Grows}}
}

// small marks a commit that needs only smallHeadroom: it changes a
// record's status or removes one.
func (t *txn) small() *txn {
	t.b.Room = kv.Small
	return t
}

// lazy marks a commit that need not be durable when it returns: one
// whose loss in a crash the next Open repairs (dropping a tombstone).
func (t *txn) lazy() *txn {
	t.b.NoSync = true
	return t
}

// frees marks a commit that frees space (a delete): it needs only
// deleteHeadroom, and on a full disk it may use the store's reserve.
func (t *txn) frees() *txn {
	t.b.Room = kv.Frees
	return t
}

// cond adds the condition that key's ModRev is modRev (0: absent).
func (t *txn) cond(key string, modRev int64) {
	t.b.Conds = append(t.b.Conds, kv.Cond{Key: key, ModRev: modRev})
}

func (t *txn) put(key string, v []byte) {
	t.b.Ops = append(t.b.Ops, kv.Op{Kind: kv.Put, Key: key, Value: v})
}

func (t *txn) del(key string) {
	t.b.Ops = append(t.b.Ops, kv.Op{Kind: kv.Delete, Key: key})
}

// putImage writes im's record (without a condition: see condImage).
func (t *txn) putImage(im *Image) {
	v, err := json.Marshal(im)
	if err != nil {
		panic(err) // Image always marshals
	}
	t.put(prefixImage+im.ID, v)
}

// condImage adds the condition that img/<id> is still prev's, the
// published record the change was decided on (absent when prev is nil: a
// new image). Every change of a record has it.
func (t *txn) condImage(id string, prev *Image) {
	var rev int64
	if prev != nil {
		rev = prev.rev
	}
	t.cond(prefixImage+id, rev)
}

// deleteImage removes prev's record, under the condition that it is
// still prev's.
func (t *txn) deleteImage(prev *Image) {
	t.condImage(prev.ID, prev)
	t.del(prefixImage + prev.ID)
}

// putName claims name for id: the batch commits only if nobody holds it.
func (t *txn) putName(name, id string) {
	t.cond(prefixName+name, 0)
	t.put(prefixName+name, []byte(id))
}

func (t *txn) deleteName(name string) { t.del(prefixName + name) }

func (t *txn) putTombstone(id string) { t.put(prefixTombstone+id, nil) }

func (t *txn) deleteTombstone(id string) { t.del(prefixTombstone + id) }

// putSeqIno advances the inode sequence to next (the caller adds the
// condition that seq/ino is still at the ModRev the store last saw:
// Store.seqRev).
func (t *txn) putSeqIno(next uint64) {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], next)
	t.put(keySeqIno, v[:])
}

// check reports whether the batch could be committed now, without
// committing it: ErrCatalog once the catalog failed, ErrNoSpace (which
// wraps syscall.ENOSPC) when its filesystem lacks the batch plus
// headroom.
func (t *txn) check() error { return catalogErr(t.c.kv.Check(&t.b)) }

// commit applies the batch atomically and durably, or changes nothing and
// returns an error: ErrNoSpace (see check) when the catalog's filesystem
// lacks the batch plus headroom, ErrCatalog when the catalog failed, now
// or earlier (see pebblekv), ErrUnavailable, errConflict. On success
// t.rev is the commit's revision. Failures are logged (ErrUnavailable by
// the backend, once per outage; errConflict is none).
func (t *txn) commit() error {
	ctx, cancel := t.c.ctx()
	defer cancel()
	res, err := t.c.kv.Commit(ctx, &t.b)
	if errors.Is(err, kv.ErrConflict) {
		// Not a failure: the caller applies t.cur and decides again.
		t.rev, t.cur = res.Rev, res.Current
		return catalogErr(err)
	}
	if errors.Is(err, kv.ErrUnavailable) || errors.Is(err, kv.ErrReplaced) {
		// Logged by the backend, once per outage (or once for a catalog
		// replaced under this host), not per request.
		return catalogErr(err)
	}
	if err != nil {
		err = catalogErr(err)
		t.c.log.Error("catalog commit failed; nothing was changed", "err", err)
		return err
	}
	t.rev = res.Rev
	return nil
}

// uploadRecord is the value of upload/<id>.
type uploadRecord struct {
	Host  string `json:"host"`
	Since string `json:"since"` // RFC 3339, UTC
}

// uploadOps adds the writes of upload/<id> that the status change of
// image id from old to new implies (nil: no record), in a shared catalog
// only (the embedded one keeps no upload keys): entering saving puts the
// key, Leased, naming host; leaving it (a seal, a kill, a delete)
// deletes it. Both commit under the condition that the key's ModRev is
// known (0: absent), as the store last saw it: so a seal whose lease
// expired (the key vanished) does not commit, and of several hosts
// killing an orphan one wins. It returns +1 (put), -1 (delete) or 0.
func (t *txn) uploadOps(id string, old, new *Image, host string, known int64, now time.Time) int {
	if !t.c.kv.Shared() {
		return 0
	}
	was := old != nil && old.Status == StatusSaving
	is := new != nil && new.Status == StatusSaving
	switch {
	case is && !was:
		v, err := json.Marshal(uploadRecord{Host: host, Since: now.UTC().Format(time.RFC3339)})
		if err != nil {
			panic(err)
		}
		t.cond(prefixUpload+id, known)
		t.b.Ops = append(t.b.Ops, kv.Op{Kind: kv.Put, Key: prefixUpload + id, Value: v, Leased: true})
		return 1
	case was && !is:
		t.cond(prefixUpload+id, known)
		t.del(prefixUpload + id)
		return -1
	}
	return 0
}

// uploadHost returns the host named by an upload/<id> value ("" if it
// does not decode).
func uploadHost(v []byte) string {
	var r uploadRecord
	if json.Unmarshal(v, &r) != nil {
		return ""
	}
	return r.Host
}

// isKey reports whether key is under prefix; id is the rest.
func isKey(key, prefix string) (id string, ok bool) {
	return strings.CutPrefix(key, prefix)
}
