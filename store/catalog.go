package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// The catalog's Pebble key space. Every change that belongs together (a
// seal, a rename, a delete) is one batch committed with pebble.Sync.
//
//	img/<id>    -> JSON Image record
//	name/<name> -> id (names are unique)
//	seq/ino     -> next inode base, uint64 big-endian
//	prop/<key>\x00<value>\x00<id> -> "" (property index, see index.go)
//	meta/propindex -> property index version
//	del/<id>    -> "" (tombstone: the image's delete committed, its
//	               data file may still exist; see Store.Delete)
const (
	prefixImage     = "img/"
	prefixName      = "name/"
	keySeqIno       = "seq/ino"
	prefixTombstone = "del/"
)

// A failed commit. Pebble cannot take back a batch whose WAL write
// failed: it is already in the memtable (readable), the WAL writer keeps
// the error, and Pebble reports it through Logger.Fatalf. So imagefs keeps
// Pebble from meeting a full disk (a commit needs its batch plus headroom
// free on the catalog's filesystem, or fails with ENOSPC before Pebble
// sees it), and when a commit fails all the same (an I/O error, a disk
// that filled meanwhile) the catalog is marked broken: that commit and
// every later one fail with ErrCatalog (EIO), and the catalog is no
// longer read, so the failed batch is never seen. The in-memory records
// never took the change. At the next Open, Pebble replays its WAL up to
// the last complete record.
const (
	// catalogHeadroom is the free space a commit that may grow the
	// catalog (a new image, a property value up to 64 KiB) leaves on the
	// catalog's filesystem: room for Pebble's WAL and a memtable flush.
	catalogHeadroom = 8 << 20
	// smallHeadroom is what a small commit that must not wait for space
	// (a seal, a status change) leaves.
	smallHeadroom = 1 << 20
	// deleteHeadroom is what a delete leaves: it frees space, so it must
	// work on a full disk. When the disk has less free than that, the
	// delete first gives back the store's reserve (reserveSize bytes in
	// STORE/catalog/imagefs-reserve, kept for this), commits, and the
	// reserve is made again once there is room.
	deleteHeadroom = 64 << 10
	reserveSize    = 1 << 20
)

type catalog struct {
	db  *pebble.DB
	dir string
	log *slog.Logger
	// broken is the commit failure after which the catalog is neither
	// written nor read until the store is opened again; nil while healthy.
	// Set by a commit (under Store.mu), read by index scans without it.
	broken atomic.Pointer[error]
	// reserve is the path of the space kept for deletes (deleteHeadroom;
	// made at Open, not by a check);
	// reserveMu orders its release and its refill.
	reserve   string
	reserveMu sync.Mutex
	// reserveMissing is set while the reserve is missing (given back
	// for a delete, or not made for want of room): every successful
	// commit then tries to make it again, and costs nothing otherwise.
	reserveMissing atomic.Bool
}

// freeSpace returns the bytes available to imagefs on the filesystem
// holding dir (a variable for tests).
var freeSpace = func(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func openCatalog(dir string, fs vfs.FS, log *slog.Logger) (*catalog, error) {
	opts := &pebble.Options{Logger: quietLogger{log}, FS: privateFS{vfs.Default}}
	if fs != nil {
		opts.FS = fs
	}
	db, err := pebble.Open(dir, opts)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) ||
		(err != nil && strings.Contains(err.Error(), "lock held")) {
		return nil, fmt.Errorf("%w: catalog %s is locked by another process (is the store mounted?)", ErrBusy, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v", ErrCatalog, dir, err)
	}
	return &catalog{db: db, dir: dir, log: log, reserve: filepath.Join(dir, reserveName)}, nil
}

// reserveName is the file in the catalog's directory that keeps
// reserveSize bytes for deletes (Pebble ignores files whose names it does
// not know).
const reserveName = "imagefs-reserve"

// refillReserve makes STORE/catalog/imagefs-reserve (reserveSize bytes,
// mode 0600) if it is missing or short and the disk has room for it and a
// commit's headroom besides. Best effort: without it, a delete on a full
// disk fails with ENOSPC. While it stays missing, reserveMissing is set
// and the next successful commit calls this again.
func (c *catalog) refillReserve() {
	c.reserveMu.Lock()
	defer c.reserveMu.Unlock()
	if fi, err := os.Stat(c.reserve); err == nil && fi.Size() >= reserveSize {
		if fi.Mode().Perm() != 0o600 {
			os.Chmod(c.reserve, 0o600)
		}
		c.reserveMissing.Store(false)
		return
	}
	c.reserveMissing.Store(true)
	if free, err := freeSpace(c.dir); err != nil || free < reserveSize+catalogHeadroom {
		return
	}
	f, err := os.OpenFile(c.reserve, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		c.log.Warn("cannot make the store's reserve for deletes", "path", c.reserve, "err", err)
		return
	}
	defer f.Close()
	if syscall.Fallocate(int(f.Fd()), 0, 0, reserveSize) != nil {
		// No fallocate (some filesystems): write the zeros.
		if _, err := f.WriteAt(make([]byte, reserveSize), 0); err != nil {
			f.Close()
			os.Remove(c.reserve)
			c.log.Warn("cannot make the store's reserve for deletes", "path", c.reserve, "err", err)
			return
		}
	}
	c.reserveMissing.Store(false)
	c.log.Info("the store's reserve for deletes was made", "path", c.reserve)
}

// releaseReserve removes the reserve; it reports whether there was one.
func (c *catalog) releaseReserve() bool {
	c.reserveMu.Lock()
	defer c.reserveMu.Unlock()
	if err := os.Remove(c.reserve); err != nil {
		return false
	}
	c.reserveMissing.Store(true)
	c.log.Info("disk full: the store's reserve was given back for a delete", "path", c.reserve)
	return true
}

// usable returns ErrCatalog once a commit has failed.
func (c *catalog) usable() error {
	if b := c.broken.Load(); b != nil {
		return fmt.Errorf("%w: the catalog failed earlier (%v); unmount and mount the store again", ErrCatalog, *b)
	}
	return nil
}

// close closes Pebble. After a failed commit Pebble may retry a failed
// flush for as long as the disk stays full, so close then gives up after
// a few seconds rather than hang the unmount: the WAL holds every commit
// that succeeded.
func (c *catalog) close() error {
	if c.broken.Load() == nil {
		return c.db.Close()
	}
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("%w: close: %v", ErrCatalog, r)
			}
		}()
		done <- c.db.Close()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%w: close did not finish within 5 s after a failed commit", ErrCatalog)
	}
}

// loadAll reads every image record and calls fn for each, in key order.
// The records are read and decoded by up to GOMAXPROCS workers, each over
// its own range of ids: decoding the JSON took 460 ms of a 750 ms mount
// start at 100,000 images on 2 cores.
func (c *catalog) loadAll(fn func(*Image) error) error {
	k := min(runtime.GOMAXPROCS(0), 8)
	bounds := make([][]byte, k+1)
	bounds[0], bounds[k] = []byte(prefixImage), []byte("img0")
	const hexDigits = "0123456789abcdef" // ids are UUIDs; any id falls in one range
	for i := 1; i < k; i++ {
		bounds[i] = []byte(prefixImage + hexDigits[16*i/k:16*i/k+1])
	}
	shards := make([][]*Image, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { shards[i], errs[i] = c.loadRange(bounds[i], bounds[i+1]) })
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

// loadRange decodes the image records with keys in [lower, upper).
func (c *catalog) loadRange(lower, upper []byte) ([]*Image, error) {
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	defer it.Close()
	var out []*Image
	for it.First(); it.Valid(); it.Next() {
		im := new(Image)
		if err := json.Unmarshal(it.Value(), im); err != nil {
			return nil, fmt.Errorf("%w: record %s: %v", ErrCatalog, it.Key(), err)
		}
		out = append(out, im)
	}
	return out, it.Error()
}

// loadNames reads the name index.
func (c *catalog) loadNames(fn func(name, id string)) error {
	it, err := c.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefixName), UpperBound: []byte("name0"),
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		fn(string(it.Key()[len(prefixName):]), string(it.Value()))
	}
	return it.Error()
}

// loadTombstones returns the ids whose delete committed while their data
// may remain (see Store.Delete).
func (c *catalog) loadTombstones() (map[string]bool, error) {
	it, err := c.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefixTombstone), UpperBound: []byte("del0"),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	defer it.Close()
	out := map[string]bool{}
	for it.First(); it.Valid(); it.Next() {
		out[string(it.Key()[len(prefixTombstone):])] = true
	}
	return out, it.Error()
}

func (c *catalog) nextInoBase() (uint64, error) {
	v, closer, err := c.db.Get([]byte(keySeqIno))
	if errors.Is(err, pebble.ErrNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	defer closer.Close()
	return binary.BigEndian.Uint64(v), nil
}

// txn collects the writes of one change; commit applies them atomically
// and durably.
type txn struct {
	c *catalog
	b *pebble.Batch
	// headroom is the free space the commit must leave (catalogHeadroom
	// unless small or frees was called).
	headroom int64
	// noSync: commit without waiting for the disk (see lazy).
	noSync bool
	// freeing: the commit frees space (a delete); it may use the reserve.
	freeing bool
}

func (c *catalog) begin() *txn {
	return &txn{c: c, b: c.db.NewBatch(), headroom: catalogHeadroom}
}

// small marks a commit that needs only smallHeadroom: it changes a
// record's status or removes one.
func (t *txn) small() *txn {
	t.headroom = smallHeadroom
	return t
}

// lazy marks a commit that need not be durable when it returns: one
// whose loss in a crash the next Open repairs (dropping a tombstone).
func (t *txn) lazy() *txn {
	t.noSync = true
	return t
}

// frees marks a commit that frees space (a delete): it needs only
// deleteHeadroom, and on a full disk it may use the store's reserve.
func (t *txn) frees() *txn {
	t.headroom = deleteHeadroom
	t.freeing = true
	return t
}

func (t *txn) putImage(im *Image) {
	v, err := json.Marshal(im)
	if err != nil {
		panic(err) // Image always marshals
	}
	_ = t.b.Set([]byte(prefixImage+im.ID), v, nil)
}

func (t *txn) deleteImage(id string) { _ = t.b.Delete([]byte(prefixImage+id), nil) }

func (t *txn) putName(name, id string) { _ = t.b.Set([]byte(prefixName+name), []byte(id), nil) }

func (t *txn) deleteName(name string) { _ = t.b.Delete([]byte(prefixName+name), nil) }

func (t *txn) putTombstone(id string) { _ = t.b.Set([]byte(prefixTombstone+id), nil, nil) }

func (t *txn) deleteTombstone(id string) { _ = t.b.Delete([]byte(prefixTombstone+id), nil) }

func (t *txn) putSeqIno(next uint64) {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], next)
	_ = t.b.Set([]byte(keySeqIno), v[:], nil)
}

// check reports whether the batch could be committed now, without
// committing it: ErrCatalog once the catalog failed, ErrNoSpace (which
// wraps syscall.ENOSPC) when its filesystem lacks the batch plus
// headroom.
func (t *txn) check() error {
	if err := t.c.usable(); err != nil {
		return err
	}
	need := int64(t.b.Len()) + t.headroom
	free, err := freeSpace(t.c.dir)
	if err == nil && free < need && t.freeing && t.c.releaseReserve() {
		free, err = freeSpace(t.c.dir)
	}
	if err == nil && free < need {
		return fmt.Errorf("catalog %s: %w: %d bytes free, a commit needs %d", t.c.dir, ErrNoSpace, free, need)
	}
	return nil
}

// commit applies the batch atomically and durably, or changes nothing and
// returns an error: ErrNoSpace (see check) when the catalog's filesystem lacks
// the batch plus headroom, ErrCatalog when the catalog failed, now or
// earlier (see catalog). Failures are logged.
func (t *txn) commit() (err error) {
	defer t.b.Close()
	defer func() {
		if err != nil {
			t.c.log.Error("catalog commit failed; nothing was changed", "err", err)
		}
	}()
	if err := t.check(); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(pebbleFatal)
			if !ok {
				panic(r)
			}
			b := errors.New(string(f))
			t.c.broken.Store(&b)
			err = fmt.Errorf("%w: commit: %s", ErrCatalog, f)
		}
	}()
	wo := pebble.Sync
	if t.noSync {
		wo = pebble.NoSync
	}
	if err := t.b.Commit(wo); err != nil {
		return fmt.Errorf("%w: commit: %v", ErrCatalog, err)
	}
	if t.c.reserveMissing.Load() {
		// Space may have come back (a delete, the operator freeing it).
		t.c.refillReserve()
	}
	return nil
}

// quietLogger drops Pebble's informational messages and keeps errors.
type quietLogger struct{ log *slog.Logger }

func (quietLogger) Infof(string, ...any) {}
func (q quietLogger) Errorf(format string, args ...any) {
	q.log.Error(fmt.Sprintf("pebble: "+format, args...))
}

// Fatalf panics with a pebbleFatal: a commit recovers it (txn.commit); in
// Pebble's background work it ends the daemon, which the next Open
// recovers from like any crash.
func (q quietLogger) Fatalf(format string, args ...any) {
	q.log.Error(fmt.Sprintf("pebble fatal: "+format, args...))
	panic(pebbleFatal(fmt.Sprintf(format, args...)))
}

// pebbleFatal is the panic value of quietLogger.Fatalf.
type pebbleFatal string
