// Package pebblekv is the embedded catalog: Pebble in STORE/catalog
// behind kv.Backend and kv.Iterable.
//
// One process writes it, and the store serializes its commits under its
// own lock (Store.mu), reading the state it decides on from its published
// records: a batch's conditions hold by construction, so Commit does not
// check them (it ignores Batch.Conds). Revisions are not kept: every
// existing key reports ModRev and CreateRev 1, Scan ignores its rev and
// returns 1, and a Commit's Result.Rev is 1. It has no watch (Shared is
// false, Watch returns nil) and no leases (Op.Leased is ignored).
//
// # A failed commit
//
// Pebble cannot take back a batch whose WAL write failed: it is already
// in the memtable (readable), the WAL writer keeps the error, and Pebble
// reports it through Logger.Fatalf. So the backend keeps Pebble from
// meeting a full disk (a commit needs its batch plus headroom free on the
// catalog's filesystem, by its Batch.Room, or fails with ENOSPC before
// Pebble sees it), and when a commit fails all the same (an I/O error, a
// disk that filled meanwhile) the catalog is marked broken: that commit
// and every later one, and every read, fail with kv.ErrBroken, so the
// failed batch is never seen. At the next Open, Pebble replays its WAL up
// to the last complete record.
package pebblekv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/imagefs/imagefs/store/kv"
)

// Headroom: the free space a commit leaves on the catalog's filesystem,
// by kv.Room.
const (
	// GrowsHeadroom (kv.Grows: a new image, a property value up to
	// 64 KiB): room for Pebble's WAL and a memtable flush.
	GrowsHeadroom = 8 << 20
	// SmallHeadroom (kv.Small: a seal, a status change, a removal: a
	// change that must not wait for space).
	SmallHeadroom = 1 << 20
	// FreesHeadroom (kv.Frees: a delete, which frees space, so must work
	// on a full disk). When the disk has less free than that, the commit
	// first gives back the reserve (ReserveSize bytes in
	// STORE/catalog/imagefs-reserve, kept for this), commits, and the
	// reserve is made again once there is room.
	FreesHeadroom = 64 << 10
	// ReserveSize is the size of the reserve for deletes.
	ReserveSize = 1 << 20
)

// ReserveName is the file in the catalog's directory that keeps
// ReserveSize bytes for deletes (Pebble ignores files whose names it does
// not know).
const ReserveName = "imagefs-reserve"

// ErrBusy: another process holds the catalog's lock (Open).
var ErrBusy = errors.New("catalog locked")

// FS is Pebble's filesystem interface (for Options.FS).
type FS = vfs.FS

// Options configure Open.
type Options struct {
	// FS is the filesystem Pebble uses (tests inject errors); nil means
	// the OS's, with every directory created 0700 and every file 0600.
	FS FS
	// Logger receives Pebble's errors and the backend's own lines; nil
	// means slog.Default().
	Logger *slog.Logger
	// FreeSpace returns the bytes available on the filesystem holding dir
	// (tests simulate a full disk); nil means FreeSpace.
	FreeSpace func(dir string) (int64, error)
}

// FreeSpace returns the bytes available to this process on the filesystem
// holding dir (statfs(2)'s f_bavail * f_bsize).
func FreeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// DB is an open embedded catalog. Its methods are safe for concurrent
// use; commits are expected to be serialized by the caller (they are not
// checked against each other).
type DB struct {
	db        *pebble.DB
	dir       string
	log       *slog.Logger
	freeSpace func(string) (int64, error)
	// broken is the commit failure after which the catalog is neither
	// written nor read until it is opened again; nil while healthy.
	broken atomic.Pointer[error]
	// reserve is the path of the space kept for deletes (FreesHeadroom;
	// made by RefillReserve, not by a check); reserveMu orders its
	// release and its refill (held across that file's creation or
	// removal; nothing is taken under it).
	reserve   string
	reserveMu sync.Mutex
	// reserveMissing is set while the reserve is missing (given back for
	// a delete, or not made for want of room): every successful commit
	// then tries to make it again, and costs nothing otherwise.
	reserveMissing atomic.Bool
}

var (
	_ kv.Backend  = (*DB)(nil)
	_ kv.Iterable = (*DB)(nil)
)

// Open opens (creating if missing) the catalog in dir. Errors: ErrBusy
// (another process has it open), or Pebble's, wrapped.
func Open(dir string, o Options) (*DB, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.FreeSpace == nil {
		o.FreeSpace = FreeSpace
	}
	opts := &pebble.Options{Logger: quietLogger{o.Logger}, FS: privateFS{vfs.Default}}
	if o.FS != nil {
		opts.FS = o.FS
	}
	db, err := pebble.Open(dir, opts)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) ||
		(err != nil && strings.Contains(err.Error(), "lock held")) {
		return nil, fmt.Errorf("%w: catalog %s is locked by another process (is the store mounted?)", ErrBusy, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return &DB{db: db, dir: dir, log: o.Logger, freeSpace: o.FreeSpace,
		reserve: filepath.Join(dir, ReserveName)}, nil
}

// usable returns kv.ErrBroken once a commit has failed.
func (d *DB) usable() error {
	if b := d.broken.Load(); b != nil {
		return fmt.Errorf("%w: the catalog failed earlier (%v); unmount and mount the store again", kv.ErrBroken, *b)
	}
	return nil
}

// Scan calls fn for every key in [lo, hi) in key order; rev is ignored
// (there is one revision) and 1 is returned. Pair.Value is valid only
// during fn. Errors: kv.ErrBroken, Pebble's, fn's.
func (d *DB) Scan(_ context.Context, lo, hi string, _ int64, fn func(kv.Pair) error) (int64, error) {
	it, err := d.NewIter(lo, hi)
	if err != nil {
		return 0, err
	}
	for valid := it.First(); valid; valid = it.Next() {
		if err := fn(kv.Pair{Key: string(it.Key()), Value: it.Value(), ModRev: 1, CreateRev: 1}); err != nil {
			it.Close()
			return 0, err
		}
	}
	err = it.Error()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	return 1, err
}

// Get returns key's Pair (ModRev 0 when absent; the value is a copy).
func (d *DB) Get(_ context.Context, key string) (kv.Pair, error) {
	if err := d.usable(); err != nil {
		return kv.Pair{}, err
	}
	v, closer, err := d.db.Get([]byte(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return kv.Pair{Key: key}, nil
	}
	if err != nil {
		return kv.Pair{}, err
	}
	defer closer.Close()
	return kv.Pair{Key: key, Value: append([]byte(nil), v...), ModRev: 1, CreateRev: 1}, nil
}

// NewIter returns a Pebble iterator over [lo, hi). Errors: kv.ErrBroken
// (its memtable may hold a failed batch), Pebble's.
func (d *DB) NewIter(lo, hi string) (kv.Iter, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte(lo), UpperBound: []byte(hi)})
	if err != nil {
		return nil, err
	}
	return it, nil
}

// batch builds b's Pebble batch.
func (d *DB) batch(b *kv.Batch) *pebble.Batch {
	pb := d.db.NewBatch()
	for _, op := range b.Ops {
		switch op.Kind {
		case kv.Put:
			_ = pb.Set([]byte(op.Key), op.Value, nil)
		case kv.Delete:
			_ = pb.Delete([]byte(op.Key), nil)
		case kv.DeleteRange:
			_ = pb.DeleteRange([]byte(op.Key), []byte(op.End), nil)
		}
	}
	return pb
}

// headroom is the free space a batch of room r leaves.
func headroom(r kv.Room) int64 {
	switch r {
	case kv.Small:
		return SmallHeadroom
	case kv.Frees:
		return FreesHeadroom
	}
	return GrowsHeadroom
}

// Check reports whether b could be committed now: kv.ErrBroken once a
// commit failed, an error wrapping syscall.ENOSPC when the catalog's
// filesystem lacks the batch plus its Room's headroom. For kv.Frees it
// may give back the reserve to make room.
func (d *DB) Check(b *kv.Batch) error {
	pb := d.batch(b)
	defer pb.Close()
	return d.check(b, pb)
}

func (d *DB) check(b *kv.Batch, pb *pebble.Batch) error {
	if err := d.usable(); err != nil {
		return err
	}
	need := int64(pb.Len()) + headroom(b.Room)
	free, err := d.freeSpace(d.dir)
	if err == nil && free < need && b.Room == kv.Frees && d.releaseReserve() {
		free, err = d.freeSpace(d.dir)
	}
	if err == nil && free < need {
		return fmt.Errorf("catalog %s: %w: %d bytes free, a commit needs %d", d.dir, syscall.ENOSPC, free, need)
	}
	return nil
}

// Commit applies b atomically (durably unless b.NoSync), or changes
// nothing and returns an error: ENOSPC (see Check), kv.ErrBroken when the
// catalog failed, now (Pebble's fatal WAL error) or earlier. b.Conds are
// not checked: the store's lock makes it the only writer and it decides
// on its published state, so they hold by construction. Result.Rev is 1.
func (d *DB) Commit(_ context.Context, b *kv.Batch) (res kv.Result, err error) {
	pb := d.batch(b)
	defer pb.Close()
	if err := d.check(b, pb); err != nil {
		return kv.Result{}, err
	}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(pebbleFatal)
			if !ok {
				panic(r)
			}
			e := errors.New(string(f))
			d.broken.Store(&e)
			err = fmt.Errorf("%w: commit: %s", kv.ErrBroken, f)
		}
	}()
	wo := pebble.Sync
	if b.NoSync {
		wo = pebble.NoSync
	}
	if err := pb.Commit(wo); err != nil {
		return kv.Result{}, fmt.Errorf("commit: %w", err)
	}
	if d.reserveMissing.Load() {
		// Space may have come back (a delete, the operator freeing it).
		d.RefillReserve()
	}
	return kv.Result{Rev: 1}, nil
}

// Shared is false: only this process writes the catalog.
func (d *DB) Shared() bool { return false }

// Watch returns nil: nobody else writes the catalog.
func (d *DB) Watch(context.Context, string, int64) <-chan kv.WatchBatch { return nil }

// Compact flushes the memtable and compacts the whole catalog, so that
// reads meet one sorted run per level rather than the overlapping files
// and tombstones a bulk load leaves.
func (d *DB) Compact() error {
	if err := d.db.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if err := d.db.Compact(context.Background(), []byte{0}, []byte{0xff, 0xff}, true); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	return nil
}

// Pebble returns the database itself, for tests that write behind the
// store's back.
func (d *DB) Pebble() *pebble.DB { return d.db }

// Close closes Pebble. After a failed commit Pebble may retry a failed
// flush for as long as the disk stays full, so Close then gives up after
// a few seconds rather than hang the unmount: the WAL holds every commit
// that succeeded.
func (d *DB) Close() error {
	if d.broken.Load() == nil {
		return d.db.Close()
	}
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("%w: close: %v", kv.ErrBroken, r)
			}
		}()
		done <- d.db.Close()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%w: close did not finish within 5 s after a failed commit", kv.ErrBroken)
	}
}

// ReservePath is the reserve's file, STORE/catalog/imagefs-reserve.
func (d *DB) ReservePath() string { return d.reserve }

// RefillReserve makes the reserve (ReserveSize bytes, mode 0600) if it is
// missing or short and the disk has room for it and GrowsHeadroom
// besides. Best effort: without it, a delete on a full disk fails with
// ENOSPC. While it stays missing, the next successful commit calls this
// again.
func (d *DB) RefillReserve() {
	d.reserveMu.Lock()
	defer d.reserveMu.Unlock()
	if fi, err := os.Stat(d.reserve); err == nil && fi.Size() >= ReserveSize {
		if fi.Mode().Perm() != modeFile {
			os.Chmod(d.reserve, modeFile)
		}
		d.reserveMissing.Store(false)
		return
	}
	d.reserveMissing.Store(true)
	if free, err := d.freeSpace(d.dir); err != nil || free < ReserveSize+GrowsHeadroom {
		return
	}
	f, err := os.OpenFile(d.reserve, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, modeFile)
	if err != nil {
		d.log.Warn("cannot make the store's reserve for deletes", "path", d.reserve, "err", err)
		return
	}
	defer f.Close()
	if syscall.Fallocate(int(f.Fd()), 0, 0, ReserveSize) != nil {
		// No fallocate (some filesystems): write the zeros.
		if _, err := f.WriteAt(make([]byte, ReserveSize), 0); err != nil {
			f.Close()
			os.Remove(d.reserve)
			d.log.Warn("cannot make the store's reserve for deletes", "path", d.reserve, "err", err)
			return
		}
	}
	d.reserveMissing.Store(false)
	d.log.Info("the store's reserve for deletes was made", "path", d.reserve)
}

// releaseReserve removes the reserve; it reports whether there was one.
func (d *DB) releaseReserve() bool {
	d.reserveMu.Lock()
	defer d.reserveMu.Unlock()
	if err := os.Remove(d.reserve); err != nil {
		return false
	}
	d.reserveMissing.Store(true)
	d.log.Info("disk full: the store's reserve was given back for a delete", "path", d.reserve)
	return true
}

// quietLogger drops Pebble's informational messages and keeps errors.
type quietLogger struct{ log *slog.Logger }

func (quietLogger) Infof(string, ...any) {}
func (q quietLogger) Errorf(format string, args ...any) {
	q.log.Error(fmt.Sprintf("pebble: "+format, args...))
}

// Fatalf panics with a pebbleFatal: Commit recovers it; in Pebble's
// background work it ends the daemon, which the next Open recovers from
// like any crash.
func (q quietLogger) Fatalf(format string, args ...any) {
	q.log.Error(fmt.Sprintf("pebble fatal: "+format, args...))
	panic(pebbleFatal(fmt.Sprintf(format, args...)))
}

// pebbleFatal is the panic value of quietLogger.Fatalf.
type pebbleFatal string
