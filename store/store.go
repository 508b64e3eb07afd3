// Package store is the imagefs catalog and its rules: image records and
// properties in a catalog database (a store/kv Backend: Pebble by
// default), staged uploads, and sealed data files behind a DataBackend.
// It has no FUSE imports; fs/ translates kernel requests into calls here
// and maps the errors (errors.go) to errnos.
//
// # Locks
//
// Every mutex of the package, in the order they are taken (a lock is only
// ever taken while holding locks above it in this list, never below):
//
//  1. Upload.mu: one upload's staging file, size, hashes, writers and
//     state. Held through a whole WriteAt, Truncate and seal: inspection,
//     re-hash, fsync, data hand-over (DataBackend.Put) and the commit. May
//     be held across disk I/O and a catalog commit. Readers that must not
//     wait for it read atomics (Upload.Size, IsImageData, Removed). An
//     import (import.go) takes it in its request and the goroutine that
//     seals the staged data releases it.
//  2. liveImage.sealMu: makes the seals of one image take turns (and the
//     undo of a provisional seal, and DiscardUpload). Held across a whole
//     seal, I/O and commit included.
//  3. Store.mu: serializes the writers. Guards nextIno, seq and
//     liveImage's nextScratch; writers hold it to set liveImage's
//     provisional (an atomic pointer, read without a lock: stored before
//     the seal's active record is published) and alias (read under 5),
//     and to change what 5 guards. Held across each catalog commit (a
//     synced Pebble batch: an fsync) and the checks before it, and across
//     creating a staging file; never across a data hand-over or hashing.
//     The record readers never take it, nor do DataAlias, Provisional and
//     the provisional-seal check of OpenRead; a few rarer reads do
//     (CheckIndex, PropertyIndex, MayWriteProperty, CheckSetProperty):
//     they wait for a writer's checks and commit, never for a seal's data
//     work.
//  4. Store.commitMu (RWMutex): a commit that changes records holds it
//     for writing from before the commit until its records are
//     published; the readers (Get, Lookup, List, CurrentUpload,
//     DataPresent, Scratch, ScratchNames, and the property index scans
//     ViewKeys, ViewValues, ViewHasKey, ViewHasValue, ViewImages) hold
//     it for reading. So a read that arrives during a commit answers with
//     that change (fs relies on it: a property file's RELEASE commits
//     after close(2) has returned, and the next open's LOOKUP must find
//     the key), and a scan sees the index and the records of one moment
//     (Pebble shows a batch to iterators before its fsync returns). A
//     reader waits for at most one commit (one fsync: measured 0.5 ms
//     mean, 1.7 ms worst over 50 property commits on this ext4 disk),
//     never for the writers' checks, nor a seal's inspection, hashing,
//     fsync of the data or hand-over.
//  5. Store.pubMu (RWMutex): the published state: images, byName, live
//     and liveImage's upload, unlinked and scratch. Writers take it (while
//     holding 3, and 4 for a commit) only to update those maps; readers
//     take it for reading only for a lookup. Never held across I/O, nor
//     while taking another lock. Published *Image values are
//     immutable snapshots, read without a lock once obtained.
//  6. pebblekv.DB's reserveMu (the embedded catalog's): orders the
//     release and the refill of the delete reserve; held across that
//     file's creation or removal.
//  7. writerWatch.mu: guards writerWatch.pids (reopen.go); taken alone
//     (an exit of any process on the host takes only it) or under 3,
//     nothing taken under it.
//
// PropertyWrite's two mutexes (propwrite.go) rank before all of these:
// PropertyWrite.turn is held across a whole property commit (the store
// calls of ChangeProperty, its delivery, and OnCommit), then
// PropertyWrite.mu, held only to read or change the writer's buffer and
// state (it may be held across CheckSetProperty, never across a commit).
//
// So a GETATTR, LOOKUP, READDIR, property read or by-property listing
// never waits for a seal's data work (Upload.Size and friends are
// atomics) and waits for at most one catalog commit in flight. The
// callers' own locks (fs's) rank before all of these. Store.deliverMu is
// changes.go's: that file says what it guards, where it ranks and whether
// the OnChange function runs under it; that function may call the read
// methods, which take only 4 and 5, each for a moment. The Observer
// (events.go) may be called with 1, 2 or 3 held, so it must be quick and
// must not call the Store. Close runs after the server has stopped; it
// takes 1 (waiting for a seal in flight), then 3.
//
// Store.metadefMu (metadefs.go) is apart from all of these: it
// serializes the changes of metadata definitions, held across their
// catalog reads and commit, and neither is taken under another store lock
// nor takes one.
package store

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/pebblekv"
)

// Caller identifies who asks: the uid and gid of the calling process.
type Caller struct {
	UID, GID uint32
	// Project is the API project the caller acts for ("" on the mount):
	// a member of an image named by this project id matches the caller
	// too (a project added as a member before it was mapped to a uid).
	Project string
}

// Root is the superuser caller.
var Root = Caller{}

// IsRoot reports whether the caller is uid 0.
func (c Caller) IsRoot() bool { return c.UID == 0 }

// Options configure a Store.
type Options struct {
	// PropertyQuota limits the custom properties of one image (core and
	// system ones do not count, as in Glance): adding one more is
	// ErrQuota. 0 means DefaultPropertyQuota.
	PropertyQuota int
	// MemberQuota limits the members of one image (Glance's
	// image_member_quota): adding one more is ErrQuota. 0 means
	// DefaultMemberQuota; negative, no limit.
	MemberQuota int
	// TagQuota limits the tags of one image (Glance's image_tag_quota):
	// more is ErrQuota. 0 means DefaultTagQuota.
	TagQuota int
	// Data keeps sealed data; nil means local files under STORE/data.
	Data DataBackend
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Events receives the store's events (for metrics); nil means none.
	Events Observer
	// Logger receives one line per significant event (image created,
	// sealed, refused, deleted, repaired at open...); nil means
	// slog.Default() at Open.
	Logger *slog.Logger
	// Catalog is the catalog's database; nil means Pebble in STORE/catalog (pebblekv).
	Catalog kv.Backend
	// Host names this host in a shared catalog (upload ownership, kill reasons); "" means os.Hostname().
	Host string
	// CatalogTimeout bounds each call into the catalog (a commit, a
	// read): past it the call fails with ErrUnavailable (a shared
	// catalog). 0 means 5 s. Open's load scans have 60 s each.
	CatalogTimeout time.Duration
	// checkOnly opens without the repair at open (for Check).
	checkOnly bool
	// catalogFS is the filesystem Pebble uses (tests inject errors); nil
	// means the OS's.
	catalogFS pebblekv.FS
}

// Store is an open image store: STORE/catalog (Pebble), STORE/staging
// (uploads in progress) and the sealed data.
type Store struct {
	lock    *os.File // STORE/imagefs.lock, held while open
	dir     string
	staging string
	cat     *catalog
	data    DataBackend
	opts    Options
	log     *slog.Logger // opts.Logger

	// mu serializes the writers: it is held across each catalog commit
	// (an fsync) and across the check before it. The record readers never
	// take it (a few rarer reads do: see the package doc).
	mu sync.Mutex
	// pubMu guards the published in-memory state below: writers change it
	// holding mu and then pubMu for the map update only; readers hold
	// pubMu.RLock for a map lookup only. Never held across I/O, nor while
	// taking another lock.
	pubMu sync.RWMutex
	// commitMu: a commit that changes records holds it (write) from before
	// the commit until its records are published; readers hold it for
	// reading. So a reader that arrives while a change commits answers
	// with that change (as fs expects: a property file's RELEASE commits
	// after close(2) returned, and the next open's LOOKUP must see it),
	// and an index scan sees the index and the records of one moment
	// (Pebble shows a batch to iterators before its fsync returns). A
	// reader so waits for at most one commit (one fsync), never for the
	// writers' checks, nor a seal's hashing or data hand-over.
	commitMu sync.RWMutex
	images   map[string]*Image     // id -> current snapshot; guarded by mu (write) and pubMu
	byName   map[string]string     // name -> id; guarded by mu (write) and pubMu
	live     map[string]*liveImage // guarded by mu (write) and pubMu
	nextIno  uint64                // guarded by mu
	seqRev   int64                 // ModRev of seq/ino (0: absent); guarded by mu
	seq      uint64                // staging file names; guarded by mu
	// uploadKeys: the upload/<id> keys of a shared catalog (see
	// uploadKey in shared.go); guarded by mu.
	uploadKeys map[string]uploadKey

	// The change hook (changes.go): changes committed and not yet
	// taken for delivery, how many were ever noted, the first numbers
	// of the batches being delivered (all guarded by deliverMu, which
	// delivered waits on), and how many are noted and not yet
	// delivered to the end.
	pending    []Change
	noted      uint64
	delivering []uint64
	delivered  sync.Cond
	npending   atomic.Int64
	deliverMu  sync.Mutex
	onChange   atomic.Pointer[func(Change)]

	ww writerWatch // writers of provisional seals (reopen.go)

	remote remoteState // a shared catalog's watch, the in-memory property index (watch.go)

	metadefMu sync.Mutex // serializes metadefs changes, read to commit (metadefs.go)

	imports sync.WaitGroup // imports' seals in flight (import.go); Close waits for them
}

// liveImage is the in-memory state of an image's uploads.
type liveImage struct {
	upload *Upload // image.vhd upload in progress, or nil; guarded by Store.mu (write) and Store.pubMu
	// unlinked: image.vhd of this unsealed image was removed (rm, or the
	// unlink before cp --remove-destination, install, mv across
	// filesystems) and not created again yet. Guarded by Store.mu (write)
	// and Store.pubMu.
	unlinked    bool
	scratch     map[string]*Upload // scratch files by name; guarded by Store.mu (write) and Store.pubMu
	nextScratch uint32             // guarded by Store.mu
	// sealMu is held through a seal, from the check that the image is not
	// sealed to the commit (see Store.seal). Lock order: Upload.mu, then
	// sealMu, then Store.mu.
	sealMu sync.Mutex
	// provisional: the last seal, made at a read-write opener's close,
	// which that process may still undo (reopen.go). alias: the name the
	// upload's writer created its file under, if not image.vhd.
	// Writers set both holding Store.mu; readers read provisional
	// without a lock and alias under Store.pubMu (read).
	provisional atomic.Pointer[provisionalSeal]
	alias       string // guarded by Store.mu (write) and Store.pubMu
}

// Open opens (creating if missing, for the daemon's user only: directories
// 0700, files 0600, sealed data 0400) the store in dir and reconciles it
// after an unclean stop: uploads that were in flight become killed,
// leftover staging files are removed, the data of deleted images is
// removed, and a store that group or others can read is made private.
//
// With a shared Options.Catalog (kv.Backend.Shared: etcd), the records
// are listed at one revision and then followed (watch.go): changes other
// hosts commit are published here and delivered to OnChange as local
// ones; the reconcile leaves alone the uploads other hosts hold (their
// upload/<id> key is live), and the property index is held in memory
// when the backend is not kv.Iterable.
func Open(dir string, opts Options) (*Store, error) {
	if opts.PropertyQuota <= 0 {
		opts.PropertyQuota = DefaultPropertyQuota
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Host == "" {
		opts.Host, _ = os.Hostname()
	}
	for _, d := range []string{dir, filepath.Join(dir, "staging")} {
		if err := os.MkdirAll(d, modeDir); err != nil {
			return nil, fmt.Errorf("create store %s: %w", dir, err)
		}
	}
	if opts.Data == nil {
		d, err := NewLocalData(filepath.Join(dir, "data"))
		if err != nil {
			return nil, fmt.Errorf("create store %s: %w", dir, err)
		}
		opts.Data = d
	}
	if ld, ok := opts.Data.(*localData); ok && ld.host == "" {
		ld.host = opts.Host // names this host's temporary files (datatmp.go)
	}
	// STORE's lock keeps a second process off the store, whichever its
	// catalog (Pebble's own LOCK covers only an embedded one): a store a
	// daemon serves from a shared catalog cannot be opened at the same
	// time as a single-host store (which would make it a catalog of its
	// own), nor by fsck or migrate.
	lock, err := lockStore(dir)
	if err != nil {
		return nil, err
	}
	if err := checkStoreKind(dir, opts.Catalog != nil && opts.Catalog.Shared()); err != nil {
		lock.Close()
		return nil, err
	}
	cat, err := openCatalog(filepath.Join(dir, "catalog"), opts.Catalog, opts.catalogFS, opts.Logger)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, err
	}
	cat.timeout = opts.CatalogTimeout
	s := &Store{
		dir: dir, staging: filepath.Join(dir, "staging"), cat: cat,
		data: opts.Data, opts: opts, log: opts.Logger,
		images: map[string]*Image{}, byName: map[string]string{},
		live: map[string]*liveImage{}, lock: lock,
	}
	s.delivered.L = &s.deliverMu
	if err := s.load(); err != nil {
		cat.close()
		if lock != nil {
			lock.Close()
		}
		return nil, err
	}
	if len(s.images) >= freeAfterLoad {
		// The load's garbage (the catalog's pages and decoding buffers,
		// about the size of the records again) goes back to the OS now,
		// in the background, rather than over minutes of scavenging.
		go debug.FreeOSMemory()
	}
	return s, nil
}

// freeAfterLoad is the number of records from which Open returns the
// load's garbage to the OS (debug.FreeOSMemory), in both modes.
const freeAfterLoad = 10_000

// sharedMarker is the file that makes STORE a host's store of a shared
// catalog (its staging and lock; the records are in etcd).
const sharedMarker = "shared-catalog"

// checkStoreKind refuses to open a single-host store (one with its own
// catalog) on a shared catalog, which would hide its images, and a
// host's store of a shared catalog as a single-host one, which would
// start an empty catalog of its own; a store used the first time on a
// shared catalog is marked so. Errors: ErrInvalid naming the way out.
func checkStoreKind(dir string, shared bool) error {
	marker := filepath.Join(dir, sharedMarker)
	_, merr := os.Stat(marker)
	ents, _ := os.ReadDir(filepath.Join(dir, "catalog"))
	switch {
	case shared && len(ents) > 0:
		return fmt.Errorf("%w: %s is a single-host store (its catalog is %s): mount it without --catalog, or move its images into the shared catalog with imagefs migrate and mount a new STORE", ErrInvalid, dir, filepath.Join(dir, "catalog"))
	case shared && merr != nil:
		if err := os.WriteFile(marker, []byte("this STORE is a host's store of a shared catalog: mount it with --catalog and --data\n"), modeFile); err != nil {
			return fmt.Errorf("mark store %s: %w", dir, err)
		}
	case !shared && merr == nil:
		return fmt.Errorf("%w: %s is a host's store of a shared catalog (%s): mount it with --catalog and --data", ErrInvalid, dir, marker)
	}
	return nil
}

// lockName is the lock file of a store (see lockStore).
const lockName = "imagefs.lock"

// lockStore takes STORE/imagefs.lock (flock, exclusive, not waiting).
// Errors: ErrBusy when another process holds it.
func lockStore(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, modeFile)
	if err != nil {
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	f.Chmod(modeFile) // an older or loosened store's file is made private like the rest
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: store %s is in use by another imagefs process (is the store mounted?)", ErrBusy, dir)
		}
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	return f, nil
}

func (s *Store) load() error {
	var rev int64
	var err error
	if s.cat.kv.Shared() {
		rev, err = s.loadShared() // watch.go: from the snapshot, or listed
		if err == nil {
			err = s.checkDataDir() // dataid.go: --data is this catalog's
		}
	} else {
		rev, _, err = s.listRecords()
	}
	if err != nil {
		return err
	}
	if s.cat.it == nil && s.remote.mem == nil {
		s.remote.mem = buildMemIndex(slices.Collect(maps.Values(s.images)))
	}
	if s.opts.checkOnly {
		return nil
	}
	s.cat.refillReserve()
	if err := s.ensureIndex(); err != nil {
		s.stopRemote()
		return err
	}
	if err := s.reconcile(); err != nil {
		s.stopRemote()
		return err
	}
	if s.cat.kv.Shared() {
		s.evictOrphanCopies() // datacache.go
		s.startRemote(rev + 1)
	}
	return nil
}

// listRecords lists seq/ino and every record at one revision into the
// published state, and returns that revision and the records in id
// order.
func (s *Store) listRecords() (int64, []*Image, error) {
	next, seqRev, rev, err := s.cat.nextInoBase()
	if err != nil {
		return 0, nil, err
	}
	if testHookListing != nil {
		testHookListing(rev)
	}
	s.nextIno, s.seqRev = next, seqRev
	var list []*Image
	err = s.cat.loadAll(rev, func(im *Image) error {
		s.images[im.ID] = im
		s.byName[im.Name] = im.ID
		list = append(list, im)
		return nil
	})
	return rev, list, err
}

// testHookListing, when set (tests), is called by listRecords with the
// revision it is about to list at.
var testHookListing func(rev int64)

// reconcile repairs what an unclean stop can leave (see Check): in-flight
// uploads (status saving) become killed, staging files are removed, a seal
// whose record did not commit is completed from its data, and data files
// of no image are moved to STORE/lost+found.
func (s *Store) reconcile() error {
	r, err := s.check(CheckOptions{Repair: true, quick: true})
	if err != nil {
		return err
	}
	for _, p := range r.Problems {
		s.log.Warn("store repaired at open", "problem", p.Kind, "id", p.ID, "detail", p.Detail, "repaired", p.Repaired)
		if p.Kind == ProblemInterrupted && p.Repaired {
			s.emit(Event{Kind: EventKilled, ID: p.ID, Reason: p.Detail})
		}
	}
	return nil
}

// Close stops following a shared catalog, writes this host's view of it
// to STORE/catalog-snapshot (snapshot.go; the next Open starts from it),
// and closes the catalog (Options.Catalog too, when set). Uploads
// still open are abandoned (they become killed at the next Open). Call
// it once the server has stopped (no request in flight, none to come): it
// waits for a seal still in progress (each upload's lock, taken in the
// lock order: Upload.mu before Store.mu), and any store call after it
// fails.
func (s *Store) Close() error {
	s.imports.Wait() // an import's seal commits before the catalog closes
	s.stopWatch()
	s.stopRemote()
	s.saveSnapshot() // watch.go: a shared catalog's view, for the next Open
	var uploads []*Upload
	s.pubMu.RLock()
	for _, l := range s.live {
		if l.upload != nil {
			uploads = append(uploads, l.upload)
		}
		for _, u := range l.scratch {
			uploads = append(uploads, u)
		}
	}
	s.pubMu.RUnlock()
	for _, u := range uploads {
		u.abandon()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.cat.close()
	if s.lock != nil {
		s.lock.Close()
	}
	return err
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Space is the size and free space of the filesystem holding the store,
// as statfs(2) reports them.
type Space struct {
	Blocks, BlocksFree, BlocksAvail uint64 // in FragmentSize units; Avail: to unprivileged users
	Files, FilesFree                uint64 // inodes
	BlockSize, FragmentSize         uint32 // bytes
	NameLen                         uint32 // longest file name, bytes
}

// Space reports the size and free space of the filesystem holding the
// store. Errors: statfs(2)'s.
func (s *Store) Space() (Space, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return Space{}, err
	}
	return Space{
		Blocks: st.Blocks, BlocksFree: st.Bfree, BlocksAvail: st.Bavail,
		Files: st.Files, FilesFree: st.Ffree,
		BlockSize: uint32(st.Bsize), FragmentSize: uint32(st.Frsize), NameLen: uint32(st.Namelen),
	}, nil
}

// Get returns the image with id, or nil. It waits for at most one
// catalog commit in flight, never for a seal's work (see Locks).
func (s *Store) Get(id string) *Image {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	return s.published(id)
}

// published returns the published record of id, or nil (pubMu only: for
// callers that hold commitMu already).
func (s *Store) published(id string) *Image {
	s.pubMu.RLock()
	defer s.pubMu.RUnlock()
	return s.images[id]
}

// Lookup returns the image named name, or nil. It waits for at most one
// catalog commit in flight, never for a seal's work.
func (s *Store) Lookup(name string) *Image {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	s.pubMu.RLock()
	defer s.pubMu.RUnlock()
	return s.images[s.byName[name]]
}

// List returns every image, sorted by name. It waits for at most one
// catalog commit in flight, never for a seal's work.
func (s *Store) List() []*Image {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	s.pubMu.RLock()
	out := make([]*Image, 0, len(s.images))
	for _, im := range s.images {
		out = append(out, im)
	}
	s.pubMu.RUnlock()
	slices.SortFunc(out, func(a, b *Image) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// mayModify checks that c owns im or is root. Errors wrap ErrPermission.
func mayModify(c Caller, im *Image) error {
	if c.IsRoot() || c.UID == im.Owner {
		return nil
	}
	return fmt.Errorf("%w: uid %d does not own image %s (owner %s)", ErrPermission, c.UID, im.ID, OwnerOf(im))
}

// Create makes a new image named name owned by c (uid, and gid as its
// group): a v4 UUID, status queued, visibility private, min_ram and
// min_disk 0, not protected, disk_format vhd, container_format bare.
// Errors: ErrInvalid (name), ErrExists (name taken), ErrCatalog.
func (s *Store) Create(c Caller, name string) (*Image, error) {
	return s.create(c, uuid.NewString(), name, mountFormats, nil)
}

// imageFormats are the disk_format and container_format a new image
// starts with ("": unset).
type imageFormats struct{ disk, container string }

// mountFormats are those of an image made on the mount (mkdir): vhd,
// bare. An image created through the Images API starts with none, as in
// Glance (CreateWithID).
var mountFormats = imageFormats{DiskFormatVHD, ContainerFormatBare}

// create is Create with the image's id given (a v4 UUID Create made, or
// the one an API caller chose: CreateWithID), its initial formats, and
// properties set in the same commit, each under SetProperty's rules. An
// id in use is ErrExists.
func (s *Store) create(c Caller, id, name string, formats imageFormats, props []KeyValue) (*Image, error) {
	defer s.deliver()
	if err := ValidName(name); err != nil {
		return nil, err
	}
	now := s.opts.Now().UTC().Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Decided on the published state; on a conflict (another host took
	// the name or the inode base meanwhile) decided again (commitRetry).
	var im *Image
	err := s.commitRetry(func() (*txn, func(rev int64), error) {
		if _, ok := s.byName[name]; ok {
			return nil, nil, fmt.Errorf("%w: image name %q", ErrExists, name)
		}
		if _, ok := s.images[id]; ok {
			return nil, nil, fmt.Errorf("%w: image id %s", ErrExists, id)
		}
		next := s.nextIno
		im = &Image{
			ID: id, InoBase: next << inoShift, Name: name,
			Status: StatusQueued, Owner: c.UID, GID: c.GID, Visibility: VisibilityPrivate,
			DiskFormat: formats.disk, ContainerFormat: formats.container,
			Size: -1, VirtualSize: -1, CreatedAt: now, UpdatedAt: now,
			NextSlot: slotExtraBase,
		}
		for _, p := range props {
			if p.Key == KeyOwner { // root only (owner.go)
				if err := ownerOp(c, im, p.Value); err != nil {
					return nil, nil, err
				}
				continue
			}
			if err := s.setPropertyRules(c, im, p.Key, p.Value, SetAny); err != nil {
				return nil, nil, err
			}
			s.applyChange(c, im, p.Key, p.Value)
		}
		if err := checkRecordSize(im); err != nil {
			return nil, nil, err
		}
		t := s.cat.begin()
		t.condImage(im.ID, nil)
		t.putImage(im)
		t.reindex(nil, im)
		t.putName(name, im.ID)
		t.cond(keySeqIno, s.seqRev)
		t.putSeqIno(next + 1)
		return t, func(rev int64) {
			im.rev = rev
			s.nextIno = next + 1
			s.seqRev = rev
			s.noteChange(nil, im)
			s.pubMu.Lock()
			s.images[im.ID] = im
			s.byName[name] = im.ID
			s.pubMu.Unlock()
		}, nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("image created", "id", im.ID, "name", name, "owner", OwnerOf(im).String(), "uid", c.UID)
	s.emit(Event{Kind: EventCreated, ID: im.ID})
	return im, nil
}

func (s *Store) getLocked(id string) (*Image, error) {
	im := s.images[id]
	if im == nil {
		return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	return im, nil
}

// Rename gives image id the name newName. It never replaces another
// image: a taken name is ErrExists, checked and changed under one lock,
// so it is also rename(2) with RENAME_NOREPLACE. Errors: ErrNotFound,
// ErrPermission, ErrInvalid, ErrExists, ErrCatalog.
func (s *Store) Rename(c Caller, id, newName string) error {
	return s.SetProperty(c, id, KeyName, newName, SetAny)
}

// SetMode says whether SetProperty may create or replace a value, as the
// flags of setxattr(2).
type SetMode int

const (
	SetAny     SetMode = iota // create or replace
	SetCreate                 // fail with ErrExists if the key exists (XATTR_CREATE)
	SetReplace                // fail with ErrNotFound if it does not (XATTR_REPLACE)
)

// RenameMode says whether a rename may replace its target.
type RenameMode int

const (
	RenameReplace   RenameMode = iota // replace a target that exists (rename(2))
	RenameNoReplace                   // fail with ErrExists if it exists (RENAME_NOREPLACE)
)

// SetProperty sets key to value on image id for caller c. Errors:
// ErrNotFound (image, or key with SetReplace), ErrExists (SetCreate, or a
// taken name), ErrImmutable (system key), ErrPermission (not the owner),
// ErrInvalid/ErrTooBig (the key's rule), ErrQuota, ErrCatalog. A rejected
// write changes nothing.
func (s *Store) SetProperty(c Caller, id, key, value string, mode SetMode) error {
	_, err := s.ChangeProperty(c, id, key, value, mode)
	return err
}

// ChangeProperty is SetProperty, returning the change it committed: the
// record before (Old) and after (New), read under the commit's lock (a
// change of key name tells the old name). Errors: as SetProperty.
func (s *Store) ChangeProperty(c Caller, id, key, value string, mode SetMode) (Change, error) {
	defer s.deliver()
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, err := s.update(id, kv.Grows, func(im *Image) (*Image, error) {
		if im == nil {
			return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
		}
		if err := s.setPropertyRules(c, im, key, value, mode); err != nil {
			s.log.Warn("property change refused", "id", id, "key", key, "uid", c.UID, "err", err)
			return nil, err
		}
		next := im.clone()
		s.applyChange(c, next, key, value)
		next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
		if err := checkRecordSize(next); err != nil {
			s.log.Warn("property change refused", "id", id, "key", key, "uid", c.UID, "err", err)
			return nil, err
		}
		return next, nil
	})
	if err != nil {
		return Change{}, err
	}
	s.log.Info("property changed", "id", id, "key", key, "uid", c.UID)
	return ch, nil
}

// setPropertyRules checks SetProperty's rules for setting key to value on
// im (mode: SetAny, SetCreate, SetReplace). Must hold s.mu.
func (s *Store) setPropertyRules(c Caller, im *Image, key, value string, mode SetMode) error {
	if key == KeyStatus {
		return checkStatusChange(c, im, value)
	}
	if IsSystemKey(key) {
		return fmt.Errorf("%w: %s is maintained by imagefs", ErrImmutable, key)
	}
	if key == KeyMembers {
		return s.membersRules(c, im, value, mode)
	}
	if err := mayModify(c, im); err != nil {
		return err
	}

	if !IsCoreKey(key) {
		if err := ValidKey(key); err != nil {
			return err
		}
	}
	if key == KeyDiskFormat || key == KeyContainerFormat {
		// Fixed once there is data, whatever the value (EPERM first).
		if err := s.checkFormatChange(im, key); err != nil {
			return err
		}
	}
	if err := ValidValue(key, value); err != nil {
		return err
	}
	_, exists := im.Property(key)
	switch {
	case mode == SetCreate && exists:
		return fmt.Errorf("%w: property %s", ErrExists, key)
	case mode == SetReplace && !exists:
		return fmt.Errorf("%w: property %s", ErrNotFound, key)
	}
	if key == KeyVisibility && Visibility(value) == VisibilityPublic && !c.IsRoot() && im.Visibility != VisibilityPublic {
		return fmt.Errorf("%w: only root may make an image public", ErrNotPermitted)
	}
	if key == KeyName && value != im.Name {
		if _, taken := s.byName[value]; taken {
			return fmt.Errorf("%w: image name %q", ErrExists, value)
		}
	}
	if key == KeyTags {
		if err := s.checkTagQuota(value); err != nil {
			return err
		}
	}
	if n := im.customCount(); !exists && key != KeyTags && n >= s.opts.PropertyQuota {
		return fmt.Errorf("%w: image %s has %d custom properties, limit %d", ErrQuota, im.ID, n, s.opts.PropertyQuota)
	}
	if !exists && im.NextSlot >= SlotScratchBase {
		return fmt.Errorf("%w: image %s has used all property inode slots", ErrQuota, im.ID)
	}
	return nil
}

// RemoveProperty deletes custom property key. Errors: ErrNotFound,
// ErrImmutable (system key), ErrNotPermitted (core key), ErrPermission,
// ErrCatalog.
func (s *Store) RemoveProperty(c Caller, id, key string) error {
	defer s.deliver()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.update(id, kv.Small, func(im *Image) (*Image, error) {
		if im == nil {
			return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
		}
		if err := checkRemove(c, im, key); err != nil {
			return nil, err
		}
		next := im.clone()
		deleteExtra(next, key)
		next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
		return next, nil
	})
	if err != nil {
		return err
	}
	s.log.Info("property removed", "id", id, "key", key, "uid", c.UID)
	return nil
}

// checkRemove reports whether c may remove property key of im.
func checkRemove(c Caller, im *Image, key string) error {
	return checkTake(c, im, key, false)
}

// checkTake is checkRemove, or with rename the check of a property
// renamed onto another key (RenameProperty): an edit, which a protected
// image allows.
func checkTake(c Caller, im *Image, key string, rename bool) error {
	var err error
	switch {
	case IsSystemKey(key):
		err = fmt.Errorf("%w: %s is maintained by imagefs", ErrImmutable, key)
	case IsCoreKey(key):
		err = fmt.Errorf("%w: core property %s cannot be removed", ErrNotPermitted, key)
	default:
		err = mayModify(c, im)
	}
	if err == nil {
		err = takeMembers(im, key)
	}
	if err == nil && im.Protected && !rename && key != KeyTags { // as RemoveTag
		err = fmt.Errorf("%w: image %s is protected: its properties cannot be removed (set protected=false first)", ErrNotPermitted, im.ID)
	}
	if err != nil {
		return err
	}
	if _, ok := im.Extra[key]; !ok {
		return fmt.Errorf("%w: property %s", ErrNotFound, key)
	}
	return nil
}

// RenameProperty gives key to the value of custom property from and
// removes from, in one commit: how editors and `sed -i` save a file (write
// a temporary file, rename it over the original). It is an edit, so a
// protected image allows it (only RemoveProperty is refused there).
// Errors: as RemoveProperty for from (protected aside) and SetProperty
// for to; with RenameNoReplace, ErrExists when to is set (decided under
// the store's lock, with the commit).
func (s *Store) RenameProperty(c Caller, id, from, to string, mode RenameMode) error {
	defer s.deliver()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.update(id, kv.Grows, func(im *Image) (*Image, error) {
		if im == nil {
			return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
		}
		if _, ok := im.Property(to); ok && mode == RenameNoReplace {
			return nil, fmt.Errorf("%w: property %s (no replace)", ErrExists, to)
		}
		if err := checkTake(c, im, from, true); err != nil {
			return nil, err
		}
		value := im.Extra[from]
		next := im.clone()
		deleteExtra(next, from)
		if err := s.setPropertyRules(c, next, to, value, SetAny); err != nil {
			s.log.Warn("property rename refused", "id", id, "from", from, "key", to, "uid", c.UID, "err", err)
			return nil, err
		}
		s.applyChange(c, next, to, value)
		next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
		if err := checkRecordSize(next); err != nil {
			s.log.Warn("property rename refused", "id", id, "from", from, "key", to, "uid", c.UID, "err", err)
			return nil, err
		}
		return next, nil
	})
	if err != nil {
		return err
	}
	s.log.Info("property renamed", "id", id, "from", from, "key", to, "uid", c.UID)
	return nil
}

// Delete removes image id: its record, its name and its data. Readers
// that have the data open keep reading the same bytes until they close.
// Errors: ErrNotFound, ErrPermission, ErrNotPermitted (protected),
// ErrCatalog.
func (s *Store) Delete(c Caller, id string) error {
	defer s.deliver()
	s.mu.Lock()
	// Decided on the published record; on a conflict (another host
	// changed it meanwhile) decided again on the fresh one (commitRetry).
	var im *Image
	err := s.commitRetry(func() (*txn, func(rev int64), error) {
		var err error
		im, err = s.getLocked(id)
		if err == nil {
			err = mayModify(c, im)
		}
		if err == nil && im.Protected {
			err = fmt.Errorf("%w: image %s is protected", ErrNotPermitted, id)
		}
		if err != nil {
			return nil, nil, err
		}
		t := s.cat.begin().frees()
		t.deleteImage(im)
		t.reindex(im, nil)
		t.deleteName(im.Name)
		t.uploadOps(id, im, nil, s.opts.Host, s.uploadKeys[id].rev, s.opts.Now())
		if l := s.live[id]; im.Status.Sealed() || l != nil && (l.upload != nil || len(l.scratch) > 0) {
			// Until the data file is gone (or, for an upload in flight whose
			// seal may still store data, until the next Open): a crash before
			// that leaves data the next Open removes, not an orphan for
			// lost+found.
			t.putTombstone(id)
		}
		return t, func(int64) {
			s.setUploadKey(id, uploadKey{}, true)
			s.noteChange(im, nil)
			s.pubMu.Lock()
			delete(s.images, id)
			if s.byName[im.Name] == id {
				delete(s.byName, im.Name)
			}
			s.pubMu.Unlock()
		}, nil
	})
	if err != nil {
		s.mu.Unlock()
		return err
	}
	// The uploads to abandon, read while holding s.mu: a DiscardUpload
	// that looked the liveImage up before may still write to it.
	var uploads []*Upload
	if l := s.live[id]; l != nil {
		if l.upload != nil {
			uploads = append(uploads, l.upload)
		}
		for _, u := range l.scratch {
			uploads = append(uploads, u)
		}
	}
	s.pubMu.Lock()
	delete(s.live, id)
	s.pubMu.Unlock()
	s.mu.Unlock()

	for _, u := range uploads {
		u.abandon()
	}
	if im.Status.Sealed() {
		if err := s.data.Remove(id); err != nil {
			s.log.Error("removing data of deleted image (the next mount removes it)", "id", id, "err", err)
		} else {
			// Not durable: a tombstone without data is dropped at Open.
			s.mu.Lock()
			t := s.cat.begin().small().lazy()
			t.deleteTombstone(id)
			t.commit() // a failure is logged; the next Open drops it
			s.mu.Unlock()
		}
	}
	s.cat.refillReserve()
	s.log.Info("image deleted", "id", id, "name", im.Name, "uid", c.UID)
	s.emit(Event{Kind: EventDeleted, ID: id})
	return nil
}

// The checks of a property change, from the least known to the most:
//
//	ValidKey, ValidValue  the key's and the value's own rules (rules.go)
//	MayWriteProperty      may c write key of image id at all (no value yet)
//	CheckSetProperty      would SetProperty(c, id, key, value, mode) succeed
//	setPropertyRules      what SetProperty and CheckSetProperty check

// CheckSetProperty reports whether SetProperty(c, id, key, value, mode)
// would succeed: every rule it applies, free space for its commit
// included (ErrNoSpace), without changing anything (for a property file's
// write, before its close; SetCreate for a property file being created,
// whose value is set with SetCreate when the file is closed). Errors: as
// SetProperty.
func (s *Store) CheckSetProperty(c Caller, id, key, value string, mode SetMode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.getLocked(id)
	if err != nil {
		return err
	}
	if err := s.setPropertyRules(c, im, key, value, mode); err != nil {
		return err
	}
	// The commit SetProperty would make, checked against the free space
	// it needs but not committed.
	next := im.clone()
	s.applyChange(c, next, key, value)
	if err := checkRecordSize(next); err != nil {
		return err
	}
	t := s.cat.begin()
	t.condImage(next.ID, im)
	t.putImage(next)
	t.reindex(im, next)
	if next.Name != im.Name {
		t.deleteName(im.Name)
		t.putName(next.Name, next.ID)
	}
	return t.check()
}

// MayWriteProperty reports whether c may set key on image id at all
// (system key, ownership), before any value is known: for opening a
// property file for writing. Errors: as SetProperty.
func (s *Store) MayWriteProperty(c Caller, id, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.getLocked(id)
	if err != nil {
		return err
	}
	if key == KeyStatus && c.Owns(im) && im.Status.Sealed() {
		return nil // the owner or root may deactivate or reactivate
	}
	if IsSystemKey(key) {
		return fmt.Errorf("%w: %s is maintained by imagefs", ErrImmutable, key)
	}
	if key == KeyMembers {
		return mayWriteMembers(c, im)
	}
	if err := mayModify(c, im); err != nil {
		return err
	}
	if key == KeyDiskFormat || key == KeyContainerFormat {
		return s.checkFormatChange(im, key)
	}
	return nil
}
