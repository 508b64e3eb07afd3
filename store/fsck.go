package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// Kinds of problem Check reports.
const (
	ProblemInterrupted    = "interrupted-upload" // status saving with no writer (repair: killed)
	ProblemStaged         = "interrupted-import" // status uploading or importing of this host, whose staged data did not outlive its daemon (repair: queued)
	ProblemStaging        = "staging-leftover"   // staging file of no upload (repair: removed)
	ProblemUncommitted    = "uncommitted-seal"   // sealed data whose record did not commit (repair: verified and sealed)
	ProblemOrphanData     = "orphan-data"        // data file of no image (repair: moved to STORE/lost+found)
	ProblemDeletedData    = "deleted-data"       // data file of an image whose delete committed (repair: removed)
	ProblemMissingData    = "missing-data"       // active image without its data file
	ProblemSizeMismatch   = "size-mismatch"      // data file size differs from the record's size
	ProblemDataMode       = "data-mode"          // data file writable on the backing filesystem (repair: chmod 0400)
	ProblemStoreMode      = "store-mode"         // group or others may read the store (repair: directories 0700, files 0600, data 0400)
	ProblemNameIndex      = "name-index"         // name index disagrees with the records (repair: rewritten)
	ProblemRecord         = "record"             // a record breaks an invariant (unknown status, active without checksum)
	ProblemStaleHashes    = "stale-hashes"       // an image that is not sealed has checksum, hashes or size (repair: cleared)
	ProblemKillReason     = "kill-reason"        // a sealed image still has imagefs_kill_reason (repair: removed)
	ProblemInode          = "inode"              // two images share an inode range, or the next range is in use (repair: next range moved on)
	ProblemPropertyIndex  = "property-index"     // the property index disagrees with the records (repair: rebuilt)
	ProblemChecksum       = "checksum-mismatch"  // --verify-data: data does not hash to checksum/os_hash_value
	ProblemVerifyReadFail = "verify-read-error"  // --verify-data: data could not be read
	ProblemDataTemp       = "data-temp"          // a temporary file a crash left in the data directory: this host's, or another's unchanged for OrphanGrace (repair: removed)
	ProblemReserve        = "reserve-missing"    // STORE/catalog/imagefs-reserve (1 MiB kept for deletes on a full disk) is missing or short (repair: made again, once the disk has 9 MiB free)
)

// repairable are the kinds of problem Check with Repair fixes (save the
// two collisions it reports as not repairable: a name or an inode range
// used by two images).
var repairable = map[string]bool{
	ProblemInterrupted: true, ProblemStaged: true, ProblemStaging: true, ProblemUncommitted: true,
	ProblemOrphanData: true, ProblemDeletedData: true, ProblemDataMode: true,
	ProblemStoreMode: true, ProblemNameIndex: true, ProblemStaleHashes: true,
	ProblemKillReason: true, ProblemInode: true, ProblemPropertyIndex: true,
	ProblemReserve: true, ProblemDataTemp: true,
}

// Problem is one inconsistency found by Check. Repairable says whether
// Check with Repair fixes it (and every mount, for the kinds Open
// repairs); the others need the operator (restore the data file, or
// delete the image).
type Problem struct {
	Kind       string `json:"kind"`
	ID         string `json:"id,omitempty"`
	Detail     string `json:"detail"`
	Repairable bool   `json:"repairable"`
	Repaired   bool   `json:"repaired"`
}

func (p Problem) String() string {
	s := p.Kind + ": "
	if p.ID != "" {
		s += p.ID + ": "
	}
	s += p.Detail
	switch {
	case p.Repaired:
		s += " (repaired)"
	case p.Repairable:
		s += " (--repair fixes this)"
	}
	return s
}

// CheckOptions select what Check does.
type CheckOptions struct {
	// Repair fixes what can be fixed without losing data.
	Repair bool
	// VerifyData re-hashes every sealed image against checksum and
	// os_hash_value.
	VerifyData bool
	// Progress, if set, is called as verification advances: bytes done
	// and total over all sealed images.
	Progress func(done, total int64)
	// Catalog, when set, is a shared catalog (store/kv/etcdkv, other
	// hosts live on it): Check checks it against Data (the shared data
	// directory, required with it), and this host's staging in dir. See
	// Check for what differs from an embedded catalog.
	Catalog kv.Backend
	// Data is the shared data directory's backend (NewLocalData); only
	// with Catalog.
	Data DataBackend
	// Host is this host's name in a shared catalog ("" means
	// os.Hostname()).
	Host string
	// CatalogTimeout bounds each catalog call (0 means 5 s).
	CatalogTimeout time.Duration
	// OrphanGrace: in a shared catalog, a data file of no record and no
	// tombstone is an orphan only once it is older than this (by mtime):
	// a younger one may be another host's seal between the hand-over of
	// its data and its commit. 0 means DefaultOrphanGrace.
	OrphanGrace time.Duration
	// DeleteDelay: with a data store of objects (DataObjects: Swift), the
	// objects of an image deleted (marked so by its host) are left to
	// that host's delayed removal until this long after the delete, then
	// they are deleted-data. 0 means DefaultDeleteDelay.
	DeleteDelay time.Duration
	// quick skips the per-file checks (for the repair at every Open).
	quick bool
}

// DefaultOrphanGrace is CheckOptions.OrphanGrace's default.
const DefaultOrphanGrace = 10 * time.Minute

// CheckReport is what Check found. LostFound and LostFoundBytes count
// the files in STORE/lost+found and their bytes: data no record explains,
// kept for the operator (not a problem; see imagefs fsck).
type CheckReport struct {
	Images         int       `json:"images"`
	Sealed         int       `json:"sealed"`
	Verified       int       `json:"verified"`
	Problems       []Problem `json:"problems"`
	LostFound      int       `json:"lost_found"`
	LostFoundBytes int64     `json:"lost_found_bytes"`
	// LostFoundDir is the lost+found directory: STORE/lost+found, or
	// DATA/lost+found with a shared catalog (where every host sees it).
	LostFoundDir string `json:"lost_found_dir"`
}

// OK reports whether every problem found was repaired.
func (r *CheckReport) OK() bool {
	for _, p := range r.Problems {
		if !p.Repaired {
			return false
		}
	}
	return true
}

// Repairable reports whether every problem not repaired is one that Check
// with Repair fixes (true when there are none).
func (r *CheckReport) Repairable() bool {
	for _, p := range r.Problems {
		if !p.Repaired && !p.Repairable {
			return false
		}
	}
	return true
}

// Check opens the store in dir (which must not be mounted: the catalog
// is locked while imagefs serves it) and checks the catalog against the
// data files. It logs through slog.Default(). Errors are for a store that
// cannot be read at all (ErrBusy: it is mounted).
//
// With opts.Catalog (a shared catalog, other hosts live on it) dir is
// this host's STORE (its staging; locked like a mount's, ErrBusy when
// this host's daemon serves it) and the checks are the same, decided on
// the catalog and the shared data directory as other hosts change them:
// a saving image whose upload/<id> key is live (another host uploads or
// seals it) is left alone, its data file too; a data file of no record
// and no tombstone is an orphan only past opts.OrphanGrace; a problem
// seen on the loaded state is read again from the catalog before it is
// reported; repairs commit through the store's update path or under
// conditions on the keys they change (never a blind write); lost+found
// is DATA/lost+found; the property index is in memory (not checked).
// Check closes opts.Catalog.
func Check(dir string, opts CheckOptions) (*CheckReport, error) {
	o := Options{checkOnly: true}
	if opts.Catalog != nil {
		if opts.Data == nil {
			opts.Catalog.Close()
			return nil, fmt.Errorf("%w: a shared catalog needs its data directory", ErrInvalid)
		}
		o.Catalog, o.Data, o.Host, o.CatalogTimeout = opts.Catalog, opts.Data, opts.Host, opts.CatalogTimeout
	} else if _, err := os.Stat(filepath.Join(dir, "catalog")); err != nil {
		return nil, fmt.Errorf("%s is not an imagefs store: %w", dir, err)
	}
	s, err := Open(dir, o)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.check(opts)
}

// check runs the checks on a loaded store that serves no requests yet,
// one function each, in this order (the order of the report).
func (s *Store) check(opts CheckOptions) (*CheckReport, error) {
	s.pubMu.RLock()
	k := &checker{s: s, opts: opts, r: &CheckReport{Images: len(s.images), LostFoundDir: s.lostFoundDir()},
		now: s.opts.Now().UTC().Truncate(time.Second), hasData: map[string]bool{},
		shared: s.shared()}
	k.ids = slices.Sorted(maps.Keys(s.images))
	s.pubMu.RUnlock()
	if k.opts.OrphanGrace <= 0 {
		k.opts.OrphanGrace = DefaultOrphanGrace
	}
	if k.opts.DeleteDelay <= 0 {
		k.opts.DeleteDelay = DefaultDeleteDelay
	}
	do, objects := s.data.(DataObjects)
	k.objects = objects
	var err error
	if k.dataIDs, err = s.data.List(); err != nil {
		return nil, fmt.Errorf("list data files: %w", err)
	}
	for _, id := range k.dataIDs {
		k.hasData[id] = true
	}

	k.checkRecords()
	if objects && !opts.quick {
		if err := k.checkObjects(do); err != nil {
			return nil, err
		}
	} else if err := k.checkDataFiles(); err != nil {
		return nil, err
	}
	if !objects {
		k.checkDataFileModes()
	}
	k.checkStaging()
	k.checkDataTemps()
	k.checkStoreMode()
	if opts.quick {
		return k.r, nil
	}
	k.checkReserve()
	k.countLostFound()
	if err := k.checkNameIndex(); err != nil {
		return nil, err
	}
	k.checkInodes()
	k.checkPropertyIndex()
	if opts.VerifyData {
		s.verify(k.sealed, opts, k.add, k.r)
	}
	return k.r, nil
}

// checker is one run of check: what it found so far.
type checker struct {
	s       *Store
	opts    CheckOptions
	r       *CheckReport
	now     time.Time
	dataIDs []string        // ids with a data file
	hasData map[string]bool // the same, less those removed
	ids     []string        // ids of the records, sorted
	sealed  []*Image        // sealed images with their data file
	shared  bool            // a shared catalog: other hosts change it meanwhile
	objects bool            // the data store is one of objects (DataObjects: Swift)
}

// get returns the published record of id (a shared catalog's watch may
// change it meanwhile), or nil.
func (k *checker) get(id string) *Image { return k.s.published(id) }

// current reads img/<id> from the catalog now (shared catalogs: a
// problem seen on the loaded state is confirmed before it is reported):
// the record, or nil when there is none. ok is false when the catalog
// could not be read (then the problem is not reported).
func (k *checker) current(id string) (im *Image, ok bool) {
	ctx, cancel := k.s.cat.ctx()
	defer cancel()
	p, err := k.s.cat.kv.Get(ctx, prefixImage+id)
	if err != nil {
		return nil, false
	}
	if p.ModRev == 0 {
		return nil, true
	}
	im = newRecord()
	if json.Unmarshal(p.Value, im) != nil {
		return nil, false
	}
	im.rev = p.ModRev
	return im, true
}

// uploadLive reports whether image id's upload/<id> key is present and
// names another host (shared catalogs): that host is uploading or
// sealing it. A key of this host is not live: its daemon is not running
// (Check holds the store's lock), the key waits for its lease to expire.
func (k *checker) uploadLive(id string) bool {
	if !k.shared {
		return false
	}
	ctx, cancel := k.s.cat.ctx()
	defer cancel()
	p, err := k.s.cat.kv.Get(ctx, prefixUpload+id)
	if err != nil {
		return true // unreadable: leave it alone
	}
	return p.ModRev != 0 && uploadHost(p.Value) != k.s.opts.Host
}

// add reports a problem; repaired says whether it was repaired.
func (k *checker) add(kind, id, detail string, repaired bool) {
	k.r.Problems = append(k.r.Problems, Problem{Kind: kind, ID: id, Detail: detail, Repairable: repairable[kind], Repaired: repaired})
}

// manual adds a problem of a repairable kind that Repair cannot fix.
func (k *checker) manual(kind, id, detail string) {
	k.r.Problems = append(k.r.Problems, Problem{Kind: kind, ID: id, Detail: detail})
}

// checkRecords checks each record against its status and its data file,
// and collects the sealed images that have their data.
func (k *checker) checkRecords() {
	for _, id := range k.ids {
		if im := k.checkRecord(id); im != nil {
			k.sealed = append(k.sealed, im)
		}
	}
	k.r.Sealed = len(k.sealed)
}

// checkRecord checks record id; it returns the record when it is sealed
// and has its data file.
func (k *checker) checkRecord(id string) *Image {
	s, opts := k.s, k.opts
	im := k.get(id)
	if im == nil {
		return nil // deleted by another host meanwhile
	}
	if k.shared && im.Status == StatusSaving && k.uploadLive(id) {
		return nil // another host's upload, or its seal in flight
	}
	switch im.Status {
	case StatusQueued, StatusKilled, StatusSaving, StatusActive, StatusDeactivated, StatusUploading, StatusImporting:
	default:
		k.add(ProblemRecord, id, fmt.Sprintf("unknown status %q", im.Status), false)
		return nil
	}
	switch {
	case k.shared && stagedStatus(im.Status) && im.Extra[KeyStageHost] != s.opts.Host:
		return nil // another host's stage or import (its seal may be in flight)
	case im.Status == StatusSaving && s.uploadsElsewhere(id):
		// Another host's upload in flight (its lease is live): its data
		// file, if present, is a seal in flight.
		return nil
	case k.hasData[id] && !im.Status.Sealed() && !k.objects:
		return k.checkUncommittedSeal(im)
	case im.Status == StatusSaving:
		k.checkInterrupted(im)
		return nil
	case stagedStatus(im.Status):
		k.checkStaged(im)
		return nil
	case !im.Status.Sealed():
		k.checkStaleHashes(im)
		return nil
	}
	if im.Checksum == "" || im.OSHashValue == "" || im.Size < 0 {
		k.add(ProblemRecord, id, fmt.Sprintf("%s image without checksum, os_hash_value or size: its data cannot be verified (upload it again as a new image)", im.Status), false)
	}
	if _, ok := im.Extra[KeyKillReason]; ok {
		repaired := false
		if opts.Repair {
			repaired = s.repair(id, func(cur *Image) *Image {
				if _, ok := cur.Extra[KeyKillReason]; !ok || !cur.Status.Sealed() {
					return nil
				}
				c := cur.clone()
				deleteExtra(c, KeyKillReason)
				return c
			})
		}
		k.add(ProblemKillReason, id, fmt.Sprintf("%s image has %s", im.Status, KeyKillReason), repaired)
		if cur := k.get(id); cur != nil {
			im = cur
		}
	}
	if !k.hasData[id] {
		if k.shared {
			// Deleted by another host since the load (its data went
			// with it)? Or its data came since the listing?
			if cur, ok := k.current(id); !ok || cur == nil || !cur.Status.Sealed() {
				return nil
			}
			if k.objects {
				if _, err := s.data.(DataObjects).Manifest(id); !errors.Is(err, ErrNotFound) {
					if err != nil {
						return nil // the store cannot say (the object check reports it)
					}
					k.hasData[id] = true
					return im
				}
			} else if f, err := s.data.Open(id, ExpectOf(im)); err == nil {
				f.Close()
				k.hasData[id] = true
				return im
			}
		}
		if k.objects {
			k.add(ProblemMissingData, id, "its object is missing from "+k.dataWhere(), false)
			return nil
		}
		k.add(ProblemMissingData, id, "the data file is missing", false)
		return nil
	}
	return im
}

// checkUncommittedSeal: sealed data of an image that is not sealed. A
// crash between moving the data into place and committing the record:
// the repair finishes the seal from the data itself.
func (k *checker) checkUncommittedSeal(im *Image) *Image {
	repaired := k.opts.Repair && k.s.completeSeal(im) == nil
	k.add(ProblemUncommitted, im.ID, fmt.Sprintf("sealed data present but status is %s", im.Status), repaired)
	if repaired {
		return k.get(im.ID)
	}
	return nil
}

// checkInterrupted: an upload in flight when imagefs stopped (repair:
// killed).
func (k *checker) checkInterrupted(im *Image) {
	repaired := false
	if k.opts.Repair {
		repaired = k.s.repair(im.ID, func(cur *Image) *Image {
			if cur.Status != StatusSaving {
				return nil
			}
			c := cur.clone()
			c.Status = StatusKilled
			setExtra(c, KeyKillReason, k.s.interruptedReason(im.ID))
			c.UpdatedAt = k.now
			return c
		})
	}
	k.add(ProblemInterrupted, im.ID, "upload was in flight when imagefs stopped", repaired)
}

// checkStaged: an image uploading or importing whose staged data was in
// this host's STORE/staging when imagefs stopped (a remount drops staged
// data: import.go); repair: queued again, its import task failed. Another
// host's stage is left alone (that host's daemon may be running).
func (k *checker) checkStaged(im *Image) {
	if host := im.Extra[KeyStageHost]; k.shared && host != k.s.opts.Host {
		return
	}
	repaired := false
	if k.opts.Repair {
		repaired = k.s.repair(im.ID, func(cur *Image) *Image {
			if !stagedStatus(cur.Status) {
				return nil
			}
			return unstaged(cur, "Error: the import was interrupted: imagefs stopped before it ended (stage the data again)", k.now)
		})
	}
	k.add(ProblemStaged, im.ID, fmt.Sprintf("status %s, but staged data does not outlive imagefs", im.Status), repaired)
}

// checkStaleHashes: an image that is not sealed keeps no hashes or sizes
// (repair: cleared).
func (k *checker) checkStaleHashes(im *Image) {
	if im.Checksum == "" && im.OSHashValue == "" && im.OSHashAlgo == "" && im.Size < 0 && im.VirtualSize < 0 {
		return
	}
	repaired := false
	if k.opts.Repair {
		repaired = k.s.repair(im.ID, func(cur *Image) *Image {
			if cur.Status.Sealed() {
				return nil
			}
			c := cur.clone()
			c.Checksum, c.OSHashAlgo, c.OSHashValue, c.Size, c.VirtualSize = "", "", "", -1, -1
			return c
		})
	}
	k.add(ProblemStaleHashes, im.ID, fmt.Sprintf("status %s but checksum %q, size %d: hashes of data it does not have", im.Status, im.Checksum, im.Size), repaired)
}

// checkDataFiles checks that each data file is of an image: of a deleted
// image it is removed, of no record at all it is kept in lost+found.
// Then the tombstones that have done their work are dropped.
func (k *checker) checkDataFiles() error {
	s, opts := k.s, k.opts
	tombs, err := s.cat.loadTombstones()
	if err != nil {
		return err
	}
	for _, id := range k.dataIDs {
		switch ok := k.get(id) != nil; {
		case ok:
		case tombs[id]:
			repaired := opts.Repair && s.data.Remove(id) == nil
			if repaired {
				delete(k.hasData, id)
			}
			k.add(ProblemDeletedData, id, "data file of a deleted image (its removal was interrupted)", repaired)
		case k.shared && !k.orphanShared(id):
			// A shared catalog: younger than the grace (another host's
			// seal may be about to commit), or of an image created
			// after the load (by another host) whose seal stored its
			// data since.
		default:
			k.add(ProblemOrphanData, id, "data file of no image", opts.Repair && s.moveToLostFound(id) == nil)
		}
	}
	if !opts.Repair {
		return nil
	}
	if k.shared {
		return k.dropTombstonesShared(tombs)
	}
	// Tombstones whose data is gone, or (never written so) whose
	// image still has a record, have done their work.
	t := s.cat.begin().small()
	n := 0
	for id := range tombs {
		if !k.hasData[id] || k.get(id) != nil {
			t.deleteTombstone(id)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return t.commit()
}

// orphanShared reports whether data file id (no record loaded, no
// tombstone) of a shared data directory is an orphan: older than the
// grace (a younger one may be a seal of another host between its data's
// hand-over and its commit) and still of no record in the catalog.
func (k *checker) orphanShared(id string) bool {
	ld, ok := k.s.data.(*localData)
	if !ok {
		return false // no age to go by: left alone
	}
	fi, err := os.Stat(ld.path(id))
	if err != nil || k.s.opts.Now().Sub(fi.ModTime()) < k.opts.OrphanGrace {
		return false
	}
	return !k.s.recordNow(id)
}

// dropTombstonesShared drops the tombstones whose data is gone and whose
// record is absent, each under the condition that the record is still
// absent (a shared catalog; a conflict leaves the tombstone for the
// next run).
func (k *checker) dropTombstonesShared(tombs map[string]bool) error {
	for id := range tombs {
		if k.hasData[id] || k.get(id) != nil {
			continue
		}
		t := k.s.cat.begin().small()
		t.cond(prefixImage+id, 0)
		t.deleteTombstone(id)
		if err := t.commit(); err != nil && !errors.Is(err, errConflict) {
			return err
		}
	}
	return nil
}

// checkDataFileModes checks the size and mode of each sealed image's data
// file (not at Open).
func (k *checker) checkDataFileModes() {
	if k.opts.quick {
		return
	}
	for _, im := range k.sealed {
		f, err := k.s.data.Open(im.ID, ExpectOf(im))
		if err != nil {
			if k.shared {
				if cur, ok := k.current(im.ID); !ok || cur == nil {
					continue // deleted by another host meanwhile
				}
			}
			k.add(ProblemMissingData, im.ID, err.Error(), false)
			continue
		}
		fi, err := f.Stat()
		if err == nil && fi.Size() != im.Size {
			k.add(ProblemSizeMismatch, im.ID, fmt.Sprintf("data file is %d bytes, record says %d", fi.Size(), im.Size), false)
		}
		if err == nil && fi.Mode().Perm()&0o222 != 0 {
			k.add(ProblemDataMode, im.ID, fmt.Sprintf("data file mode is %04o, want 0400", fi.Mode().Perm()), k.opts.Repair && f.Chmod(modeDataFile) == nil)
		}
		f.Close()
	}
}

// checkStaging reports staging leftovers: nothing is uploading while the
// store is checked.
func (k *checker) checkStaging() {
	if ents, err := os.ReadDir(k.s.staging); err == nil {
		for _, e := range ents {
			removed := k.opts.Repair && os.Remove(filepath.Join(k.s.staging, e.Name())) == nil
			if removed {
				k.s.voidStreamed(e.Name())
			}
			k.add(ProblemStaging, "", e.Name(), removed)
		}
	}
}

// voidStreamed removes what the data backend's stream (DataStreamer) sent
// of the upload staged as STORE/staging/name (ID.NANOS.SEQ), which a stop
// cut off: Swift's segments of a daemon killed mid-upload go at its next
// mount.
func (s *Store) voidStreamed(name string) {
	ds, ok := s.data.(DataStreamer)
	if !ok {
		return
	}
	if id, _, ok := strings.Cut(name, "."); ok && id != "" {
		ds.Stream(id, filepath.Join(s.staging, name)).Abort()
	}
}

// checkStoreMode checks the permissions: at Open only when STORE or one
// of its directories lets others in (a private directory keeps its files
// private).
func (k *checker) checkStoreMode() {
	if !k.opts.quick || looseStore(k.s.dir) {
		if what, ok := tighten(k.s.dir, k.opts.Repair, k.s.log); what != "" {
			k.add(ProblemStoreMode, "", what, k.opts.Repair && ok)
		}
	}
}

// checkReserve reports a missing or short reserve for deletes (every
// mount makes it when there is room; not checked at Open).
func (k *checker) checkReserve() {
	c := k.s.cat.db
	if c == nil {
		return // no embedded catalog, no reserve
	}
	if fi, err := os.Stat(c.ReservePath()); err != nil || fi.Size() < reserveSize {
		repaired := false
		if k.opts.Repair {
			c.RefillReserve()
			fi, err := os.Stat(c.ReservePath())
			repaired = err == nil && fi.Size() >= reserveSize
		}
		k.add(ProblemReserve, "", fmt.Sprintf("%s is missing or short: a delete on a full disk fails with ENOSPC (made again when the disk has %d MiB free)", c.ReservePath(), (reserveSize+catalogHeadroom)>>20), repaired)
	}
}

// countLostFound counts what lost+found holds.
func (k *checker) countLostFound() {
	if ents, err := os.ReadDir(k.s.lostFoundDir()); err == nil {
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
				k.r.LostFound++
				k.r.LostFoundBytes += fi.Size()
			}
		}
	}
}

// checkNameIndex checks the name index against the records (repair:
// each wrong name key rewritten or removed under the conditions that it
// and the record it is made to agree with are as seen; a name used by
// two images needs the operator). With a shared catalog a disagreement
// is read again from the catalog before it is reported.
func (k *checker) checkNameIndex() error {
	s, opts := k.s, k.opts
	names := map[string]kv.Pair{}
	if err := s.cat.loadNames(func(p kv.Pair) { names[p.Key[len(prefixName):]] = p }); err != nil {
		return err
	}
	byName := map[string]*Image{}
	for _, id := range k.ids {
		im := k.get(id)
		if im == nil {
			continue
		}
		if other, dup := byName[im.Name]; dup {
			k.manual(ProblemNameIndex, id, fmt.Sprintf("name %q is also used by %s", im.Name, other.ID))
			continue
		}
		byName[im.Name] = im
	}
	// want: the fix of each wrong name key (the record that has the
	// name; nil: remove the key).
	type fix struct {
		want     *Image
		problems []int
	}
	fixes := map[string]*fix{}
	note := func(name string, want *Image, id, detail string) {
		f := fixes[name]
		if f == nil {
			f = &fix{want: want}
			fixes[name] = f
		}
		f.problems = append(f.problems, len(k.r.Problems))
		k.add(ProblemNameIndex, id, detail, false)
	}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		id := string(names[name].Value)
		if im := k.get(id); im == nil || im.Name != name {
			if k.shared && !k.nameWrong(name, names[name]) {
				continue
			}
			note(name, byName[name], id, fmt.Sprintf("name %q points to an image that does not have it", name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		im := byName[name]
		if p, ok := names[name]; !ok || string(p.Value) != im.ID {
			if k.shared && !k.nameWrong(name, names[name]) {
				continue
			}
			note(name, im, im.ID, fmt.Sprintf("name %q missing from the name index", name))
		}
	}
	if !opts.Repair {
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(fixes)) {
		f := fixes[name]
		t := s.cat.begin()
		t.cond(prefixName+name, names[name].ModRev)
		if f.want != nil {
			t.condImage(f.want.ID, f.want)
			t.put(prefixName+name, []byte(f.want.ID))
		} else {
			if p := names[name]; p.ModRev != 0 {
				if im := k.get(string(p.Value)); im != nil {
					t.condImage(im.ID, im)
				} else {
					t.cond(prefixImage+string(p.Value), 0)
				}
			}
			t.del(prefixName + name)
		}
		err := t.commit()
		if err != nil && !errors.Is(err, errConflict) {
			return err
		}
		for _, i := range f.problems {
			k.r.Problems[i].Repaired = err == nil
		}
	}
	return nil
}

// nameWrong confirms, in a shared catalog, that name/<name> (seen as p)
// still disagrees with the records: read again, the key must be as seen
// and the record it names must not have the name, or a record must have
// the name without the key naming it. Renames of other hosts in between
// are not problems.
func (k *checker) nameWrong(name string, p kv.Pair) bool {
	ctx, cancel := k.s.cat.ctx()
	cur, err := k.s.cat.kv.Get(ctx, prefixName+name)
	cancel()
	if err != nil || cur.ModRev != p.ModRev {
		return false
	}
	if cur.ModRev != 0 {
		if im, ok := k.current(string(cur.Value)); !ok || im != nil && im.Name == name {
			return false
		}
		return true
	}
	// The key is absent: does the record that had the name still have it?
	for _, id := range k.ids {
		if im := k.get(id); im != nil && im.Name == name {
			cur, ok := k.current(id)
			return ok && cur != nil && cur.Name == name
		}
	}
	return false
}

// checkInodes checks the inode ranges: one per image, all below the next
// one handed out (repair: the next range moved on).
func (k *checker) checkInodes() {
	s := k.s
	byIno := map[uint64]string{}
	maxBase := uint64(0)
	for _, id := range k.ids {
		im := k.get(id)
		if im == nil {
			continue
		}
		base := im.InoBase >> inoShift
		if other, dup := byIno[base]; dup {
			k.manual(ProblemInode, id, fmt.Sprintf("inode range %d is also used by %s", base, other))
		}
		byIno[base] = id
		maxBase = max(maxBase, base)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(k.ids) == 0 || s.nextIno > maxBase {
		return
	}
	repaired := false
	if k.opts.Repair {
		t := s.cat.begin().small()
		t.cond(keySeqIno, s.seqRev)
		t.putSeqIno(maxBase + 1)
		if repaired = t.commit() == nil; repaired {
			s.nextIno, s.seqRev = maxBase+1, t.rev
		}
	}
	k.add(ProblemInode, "", fmt.Sprintf("the next inode range %d is already in use (highest %d)", s.nextIno, maxBase), repaired)
}

// checkPropertyIndex checks the property index against the records
// (repair: rebuilt).
func (k *checker) checkPropertyIndex() {
	if k.s.cat.it == nil {
		return // no index in the catalog: memIndex is rebuilt from the records at every Open
	}
	if err := k.s.CheckIndex(); err != nil {
		k.add(ProblemPropertyIndex, "", err.Error(), k.opts.Repair && k.s.rebuildIndex() == nil)
	}
}

// verify re-hashes sealed data.
func (s *Store) verify(sealed []*Image, opts CheckOptions, add func(kind, id, detail string, repaired bool), r *CheckReport) {
	var total, done int64
	for _, im := range sealed {
		total += max(im.Size, 0)
	}
	for _, im := range sealed {
		if im.Checksum == "" && im.OSHashValue == "" {
			done += max(im.Size, 0)
			continue // nothing to verify against (reported as ProblemRecord)
		}
		f, err := s.readSealed(im)
		if err != nil {
			if s.shared() && s.deletedNow(im.ID) {
				continue
			}
			add(ProblemVerifyReadFail, im.ID, err.Error(), false)
			continue
		}
		p := newHashPipe()
		err = p.readFrom(&progressReader{r: f, fn: func(n int64) {
			done += n
			if opts.Progress != nil {
				opts.Progress(done, total)
			}
		}})
		f.Close()
		if err != nil {
			p.stop()
			if s.shared() && s.deletedNow(im.ID) {
				continue
			}
			add(ProblemVerifyReadFail, im.ID, err.Error(), false)
			continue
		}
		md5hex, shahex := p.finish()
		r.Verified++
		if (im.Checksum != "" && md5hex != im.Checksum) || (im.OSHashValue != "" && shahex != im.OSHashValue) {
			add(ProblemChecksum, im.ID, fmt.Sprintf("data hashes to md5 %s, record says %s (bit rot or tampering on the backing disk)", md5hex, im.Checksum), false)
		}
	}
}

type progressReader struct {
	r  io.Reader
	fn func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.fn(int64(n))
	return n, err
}

// completeSeal finishes a seal whose record did not commit: the data is
// checked and hashed again and the record made active. If the data is not
// an acceptable VHD the image is killed and the data moved aside.
func (s *Store) completeSeal(im *Image) error {
	f, err := s.data.Open(im.ID, Expect{})
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	var facts map[string]string
	var vsize int64
	var refusal string
	if im.DiskFormat == DiskFormatRaw {
		vsize, refusal = inspectRaw(f, fi.Size()) // as the seal checked it
	} else if facts, vsize, refusal, err = inspectVHD(f, fi.Size()); err != nil {
		return err
	}
	if refusal != "" {
		if err := s.moveToLostFound(im.ID); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		_, err := s.update(im.ID, kv.Small, func(cur *Image) (*Image, error) {
			if cur == nil || cur.Status.Sealed() {
				return nil, nil
			}
			if stagedStatus(cur.Status) {
				return unstaged(cur, "Error: "+refusal, s.now()), nil // an import: queued (import.go)
			}
			c := cur.clone()
			c.Status = StatusKilled
			setExtra(c, KeyKillReason, refusal)
			return c, nil
		})
		return err
	}
	p := newHashPipe()
	if err := p.readFrom(f); err != nil {
		p.stop()
		return err
	}
	md5hex, shahex := p.finish()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err = s.update(im.ID, kv.Small, func(cur *Image) (*Image, error) {
		if cur == nil || cur.Status.Sealed() {
			return nil, nil
		}
		return s.sealRecord(cur, md5hex, shahex, fi.Size(), vsize, facts), nil
	})
	return err
}

// repair commits fix(current record of id), a repair of fsck (nil: no
// longer needed), through update; it reports whether it committed (or
// was not needed).
func (s *Store) repair(id string, fix func(cur *Image) *Image) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.update(id, kv.Small, func(cur *Image) (*Image, error) {
		if cur == nil {
			return nil, nil
		}
		return fix(cur), nil
	})
	return err == nil
}

// lostFoundDir is where data no record explains goes: STORE/lost+found,
// or with a shared catalog DATA/lost+found (the shared data directory's,
// seen by every host, and on its filesystem).
func (s *Store) lostFoundDir() string {
	if ld, ok := s.data.(*localData); ok && s.shared() {
		return filepath.Join(ld.dir, "lost+found")
	}
	return filepath.Join(s.dir, "lost+found")
}

// deletedNow reports whether image id has no record in the catalog now
// (read from it: a shared catalog's other hosts may have deleted it).
func (s *Store) deletedNow(id string) bool {
	ctx, cancel := s.cat.ctx()
	defer cancel()
	p, err := s.cat.kv.Get(ctx, prefixImage+id)
	return err == nil && p.ModRev == 0
}

// moveToLostFound moves the data file of id out of the data area into
// STORE/lost+found (local backend only), losing nothing; it is 0400
// there, whatever its mode was.
func (s *Store) moveToLostFound(id string) error {
	ld, ok := s.data.(*localData)
	if !ok {
		return fmt.Errorf("lost+found needs the local data backend")
	}
	dir := s.lostFoundDir()
	if err := os.MkdirAll(dir, modeDir); err != nil {
		return err
	}
	dst := filepath.Join(dir, id+".vhd")
	if err := os.Rename(ld.path(id), dst); err != nil {
		return err
	}
	return os.Chmod(dst, modeDataFile)
}
