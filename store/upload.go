package store

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// ImageDataName is the name of a VHD image's data file in its image
// directory; a raw image's is RawDataName (formats.go: DataName).
const ImageDataName = "image.vhd"

// Upload is one staged data file being written: the upload of an image's
// image.vhd (also when created under another name that is not temporary,
// see CreateFile), or a scratch file under a temporary name in its
// directory (never sealed itself; a rename onto image.vhd or onto a name
// that is not temporary completes the upload with it).
//
// Writes that arrive in order (each at the end of what came before, or
// past it leaving a hole of zeros) are hashed as they arrive, so a seal does
// not re-read the data; any other write falls back to one hashing pass at
// seal.
type Upload struct {
	s    *Store
	id   string
	slot uint32 // scratch inode slot; 0 for image.vhd
	path string

	// mu guards the fields below it; it is held through a whole write,
	// truncate and seal (inspection, hashing, fsync, data hand-over,
	// commit). Readers that must not wait for that use the atomics:
	// sizeNow, isData, removed.
	mu      sync.Mutex
	name    string // scratch name, "" once it is the image's upload
	f       *os.File
	size    int64 // staged bytes; mirrored in sizeNow
	writers int
	dirty   bool      // modified since the last seal attempt
	warned  bool      // a scratch file's close was logged
	hash    *hashPipe // nil once writes went out of order
	// stream takes the in-order data as it is written, when the
	// DataBackend is a DataStreamer (nil otherwise, and once out of order).
	stream  DataStream
	started bool // "upload started" was logged
	// stage: a glance-direct stage (import.go): it ends without a seal
	// (EndStage) and is sealed by Import; the image is uploading, then
	// importing, never saving. Set at creation.
	stage  bool
	state  uploadState
	nospc  bool // a write failed with ENOSPC: the upload is incomplete
	exited int  // wait status of a writer that died holding the upload, or 0
	// truncated: set to 0 bytes (O_TRUNC, create, truncate -s 0); with
	// nothing written after, the last EndWriter seals (refuses) an empty
	// upload. Not at the opener's close: a shell opens, dup2s and closes
	// before its child writes.
	truncated bool
	opener    Writer // the process that opened the first write handle
	// Write-behind of in-order data (writeBehind): bytes before wbStarted
	// were handed to the kernel's writeback, bytes between
	// writebackWindow and wbDropped are on disk and out of the page cache.
	wbStarted, wbDropped int64

	// Written under mu, read without it (Getattr must not wait for a seal).
	sizeNow atomic.Int64 // size
	isData  atomic.Bool  // name == ""
	removed atomic.Bool  // state == uploadAbandoned
}

// writebackWindow is the write-behind step of an in-order upload: each
// time this much more has arrived it is handed to the kernel's writeback,
// and data two steps behind the writer is waited for and dropped from the
// page cache.
const writebackWindow = 8 << 20

type uploadState int

const (
	uploadOpen      uploadState = iota
	uploadSealed                // data moved to the DataBackend
	uploadAbandoned             // image deleted or upload replaced
)

func (s *Store) newUpload(id, name string, slot uint32) (*Upload, error) {
	s.seq++
	path := filepath.Join(s.staging, fmt.Sprintf("%s.%d.%d", id, time.Now().UnixNano(), s.seq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create staging file: %w", err)
	}
	u := &Upload{s: s, id: id, name: name, slot: slot, path: path, f: f}
	u.isData.Store(name == "")
	u.restartHash()
	return u, nil
}

// restartHash starts in-order hashing (and write-behind, and the data
// backend's stream) from byte 0.
func (u *Upload) restartHash() {
	u.hash = newHashPipe()
	u.wbStarted, u.wbDropped = 0, writebackWindow
	u.abortStream()
	if ds, ok := u.s.data.(DataStreamer); ok {
		u.stream = ds.Stream(u.id, u.path)
	}
}

// abortStream voids the data backend's stream, if any.
func (u *Upload) abortStream() {
	if u.stream != nil {
		u.stream.Abort()
		u.stream = nil
	}
}

// IsImageData reports whether u is (or always was) the upload of the
// image's image.vhd: true from the start for image.vhd and for a file
// created under a name that is not temporary, and once a scratch file is
// renamed onto image.vhd (or onto a name that is not temporary); false
// for a scratch file. It never waits for a seal.
func (u *Upload) IsImageData() bool { return u.isData.Load() }

// setName sets the scratch name ("" for the image's upload). Must hold u.mu.
func (u *Upload) setName(name string) {
	u.name = name
	u.isData.Store(name == "")
}

// setSize sets the staged size. Must hold u.mu.
func (u *Upload) setSize(n int64) {
	u.size = n
	u.sizeNow.Store(n)
}

// Removed reports whether the upload was abandoned: its scratch file was
// removed or renamed over, or its image deleted. Open handles still read
// it; stat of them shows no links. It never waits for a seal.
func (u *Upload) Removed() bool { return u.removed.Load() }

// Writers returns how many write handles the upload has open.
func (u *Upload) Writers() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.writers
}

// Slot returns the inode slot of a scratch file (0 for image.vhd).
func (u *Upload) Slot() uint32 { return u.slot }

// Size returns the staged size in bytes. It never waits for a write or
// a seal in progress (it reads an atomic copy).
func (u *Upload) Size() int64 { return u.sizeNow.Load() }

func (u *Upload) usable() error {
	switch u.state {
	case uploadSealed:
		return fmt.Errorf("%w: image %s is sealed", ErrImmutable, u.id)
	case uploadAbandoned:
		return fmt.Errorf("%w: upload of image %s was deleted or replaced", ErrNotFound, u.id)
	}
	return nil
}

// WriteAt writes p at off. Errors: ErrImmutable once sealed, ErrNotFound
// once abandoned, ErrBusy at the first write when another host of a shared
// catalog began uploading the image since this open, the staging file's
// I/O errors (ENOSPC) as they are.
func (u *Upload) WriteAt(p []byte, off int64) (int, error) {
	defer u.s.deliver()
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.usable(); err != nil {
		return 0, err
	}
	if err := u.touch(); err != nil {
		return 0, err
	}
	n, err := u.f.WriteAt(p, off)
	if errors.Is(err, syscall.ENOSPC) {
		u.nospc = true
	}
	end := off + int64(n)
	if u.hash != nil {
		// While hashing in order, nothing at or past hash.n was ever
		// written: a write there leaves a hole of zeros before it.
		if off >= u.hash.n {
			u.hash.zeros(off - u.hash.n)
			u.hash.write(p[:n])
			u.writeBehind(u.hash.n)
			if u.stream != nil {
				u.stream.Written(u.hash.n)
			}
		} else {
			u.dropHash()
		}
	} else {
		u.abortStream() // (after a seal that failed past hashing)
	}
	u.setSize(max(u.size, end))
	return n, err
}

// writeBehind keeps the dirty data of an in-order upload small: every
// writebackWindow bytes the new data goes to the kernel's writeback, and
// data two windows behind the writer is waited for and dropped from the
// page cache. So the fsync at seal finds at most a few windows left to
// write (it took 0.4 s per GiB when the whole upload was still dirty), and
// an upload of any size occupies a few windows of page cache, recycling
// its own pages instead of filling memory. The first window (the VHD's
// headers and block table, which the seal reads) stays cached. Must hold
// u.mu; end is the end of the in-order data.
func (u *Upload) writeBehind(end int64) {
	if end-u.wbStarted < writebackWindow {
		return
	}
	fd := u.f.Fd()
	startWriteback(fd, u.wbStarted, end-u.wbStarted)
	u.wbStarted = end
	if to := end - 2*writebackWindow; to-u.wbDropped >= writebackWindow {
		dropWritten(fd, u.wbDropped, to-u.wbDropped)
		u.wbDropped = to
	}
}

// dropHash abandons in-order hashing; the seal hashes in one pass.
func (u *Upload) dropHash() {
	if u.hash != nil {
		u.hash.stop()
		u.hash = nil
	}
	u.abortStream()
}

// touch marks the upload modified and moves the image to saving. Must
// hold u.mu.
func (u *Upload) touch() error {
	if u.dirty || u.name != "" {
		u.dirty = true
		return nil
	}
	if err := u.s.setStatus(u.id, StatusSaving, ""); err != nil {
		return err
	}
	if !u.started {
		u.started = true
		u.s.log.Info("upload started", "id", u.id)
	}
	u.dirty = true
	return nil
}

// ReadAt reads staged data at off.
func (u *Upload) ReadAt(p []byte, off int64) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state == uploadAbandoned {
		return 0, fmt.Errorf("%w: upload of image %s", ErrNotFound, u.id)
	}
	if u.f == nil {
		return 0, io.EOF
	}
	return u.f.ReadAt(p, off)
}

// Truncate sets the staged size (ftruncate). Extending leaves a hole of
// zeros.
func (u *Upload) Truncate(size int64) error {
	defer u.s.deliver()
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.truncateLocked(size)
}

func (u *Upload) truncateLocked(size int64) error {
	if err := u.usable(); err != nil {
		return err
	}
	if size == 0 {
		// An O_TRUNC open, a create or `truncate -s 0`: if nothing is
		// written after it, the last close refuses an empty upload.
		u.truncated = true
	}
	if size == u.size {
		return nil
	}
	if err := u.touch(); err != nil {
		return err
	}
	if err := u.f.Truncate(size); err != nil {
		return err
	}
	if size == 0 {
		u.dropHash()
		u.restartHash()
	} else if u.hash == nil || size < u.hash.n {
		u.dropHash()
	}
	u.setSize(size)
	return nil
}

// Sync flushes the staged data to disk (fsync).
func (u *Upload) Sync() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.f == nil {
		return nil
	}
	return u.f.Sync()
}

// abandon closes and removes the staging file. Must not hold u.mu.
func (u *Upload) abandon() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.discard()
}

// discard closes and removes the staging file. Must hold u.mu.
func (u *Upload) discard() {
	if u.state != uploadOpen {
		return
	}
	u.state = uploadAbandoned
	u.removed.Store(true)
	u.dropHash() // and the stream
	u.f.Close()
	os.Remove(u.path)
}

// setStatus moves image id to status st (queued, saving or killed, with a
// kill reason), if it is not there already. A sealed image never goes back:
// ErrImmutable (an upload that lost a race with another's seal).
func (s *Store) setStatus(id string, st Status, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.update(id, kv.Small, func(im *Image) (*Image, error) {
		if im == nil {
			return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
		}
		if im.Status.Sealed() {
			return nil, fmt.Errorf("%w: image %s is %s; its data never changes", ErrImmutable, id, im.Status)
		}
		if stagedStatus(im.Status) {
			// Staged for import (import.go moves it on).
			return nil, fmt.Errorf("%w: image %s is %s (staged for import)", ErrBusy, id, im.Status)
		}
		if err := s.uploadingElsewhere(id); err != nil {
			return nil, err // the other host's upload key and status are its own
		}
		if im.Status == st && (st != StatusKilled || im.Extra[KeyKillReason] == reason) {
			return nil, nil
		}
		next := im.clone()
		next.Status = st
		if st == StatusKilled {
			setExtra(next, KeyKillReason, reason)
		} else {
			deleteExtra(next, KeyKillReason)
		}
		next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
		return next, nil
	})
	return err
}

// dropUpload forgets u as image id's upload, if it still is.
func (s *Store) dropUpload(u *Upload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.live[u.id]; l != nil && l.upload == u {
		s.pubMu.Lock()
		l.upload = nil
		s.pubMu.Unlock()
	}
}

func (s *Store) liveLocked(id string) *liveImage {
	l := s.live[id]
	if l == nil {
		l = &liveImage{scratch: map[string]*Upload{}}
		s.pubMu.Lock()
		s.live[id] = l
		s.pubMu.Unlock()
	}
	return l
}

// writable checks that c may upload data to im. Must hold s.mu.
func writable(c Caller, im *Image) error {
	if im.Status.Sealed() {
		return fmt.Errorf("%w: image %s is %s; its data never changes", ErrImmutable, im.ID, im.Status)
	}
	return mayModify(c, im)
}

// OpenWrite opens image id's data for writing by c, starting an upload if
// none is in progress; trunc discards staged data (O_TRUNC). Every
// successful OpenWrite must be paired with EndWriter. Errors: ErrNotFound,
// ErrImmutable (sealed), ErrPermission, ErrBusy (another writer has the
// upload open: on this host, or on another host of a shared catalog,
// whose upload key is in the catalog).
func (s *Store) OpenWrite(c Caller, id string, trunc bool) (*Upload, error) {
	return s.OpenWriteBy(c, id, trunc, Writer{})
}

// OpenWriteBy is OpenWrite by process w: a read-write opener that opens
// the image it sealed a moment ago undoes that seal (reopen.go).
func (s *Store) OpenWriteBy(c Caller, id string, trunc bool, w Writer) (*Upload, error) {
	defer s.deliver()
	if w.ReadWrite && w.PID != 0 {
		if err := s.reopenProvisional(c, id, w); err != nil {
			return nil, err
		}
	}
	for {
		u, err := s.openWriteTry(c, id, trunc, w)
		if err != errUploadChanged {
			return u, err
		}
	}
}

// errUploadChanged: the upload openWriteTry found was ended meanwhile
// (an EndWriter that discarded an empty upload, a seal that refused it)
// and the image has another one, or none: look again.
var errUploadChanged = errors.New("upload changed")

// openWriteTry is one attempt of OpenWriteBy.
func (s *Store) openWriteTry(c Caller, id string, trunc bool, w Writer) (*Upload, error) {
	s.mu.Lock()
	im, err := s.getLocked(id)
	if err == nil {
		err = uploadable(c, im)
	}
	if err == nil {
		err = s.uploadingElsewhere(id) // one writer across hosts too
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	l := s.liveLocked(id)
	u := l.upload
	if u == nil {
		if u, err = s.newUpload(id, "", 0); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.pubMu.Lock()
		l.upload = u
		s.pubMu.Unlock()
	}
	s.mu.Unlock()

	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state == uploadAbandoned {
		// Ended between the look-up and this lock (the RELEASE of
		// qemu-img's first, empty open races its next open): if the image
		// has moved on, so does this open.
		s.mu.Lock()
		changed := s.live[id] != l || l.upload != u
		s.mu.Unlock()
		if changed {
			return nil, errUploadChanged
		}
	}
	if err := u.usable(); err != nil {
		return nil, err
	}
	if u.stage {
		return nil, fmt.Errorf("%w: image %s has data staged for import", ErrBusy, id)
	}
	if u.writers > 0 {
		// Two writers at once (two cp into one image) would interleave
		// their bytes into a VHD that is neither; the first one wins.
		return nil, fmt.Errorf("%w: image %s is being uploaded by another writer", ErrBusy, id)
	}
	if trunc {
		if err := u.truncateLocked(0); err != nil {
			return nil, err
		}
	}
	u.writers++
	if u.writers == 1 {
		u.opener = w
	}
	s.mu.Lock()
	s.pubMu.Lock()
	l.unlinked = false
	s.pubMu.Unlock()
	l.provisional.Store(nil)
	s.mu.Unlock()
	return u, nil
}

// DataPresent reports whether image id shows its image.vhd: always, but
// for an unsealed image whose image.vhd was removed and not created again.
func (s *Store) DataPresent(id string) bool {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	s.pubMu.RLock()
	defer s.pubMu.RUnlock()
	l := s.live[id]
	return l == nil || !l.unlinked
}

// CurrentUpload returns the image's upload in progress, or nil. It waits
// for at most one catalog commit in flight, never for a seal's work.
func (s *Store) CurrentUpload(id string) *Upload {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	s.pubMu.RLock()
	defer s.pubMu.RUnlock()
	if l := s.live[id]; l != nil {
		return l.upload
	}
	return nil
}

// CloseWriter is a writer's close(2) of one file descriptor of u (the
// handle stays open until EndWriter). When it is the only write handle and
// the data changed, the upload is checked and sealed now, so that when
// close(2) returns the image is active or killed. Errors: ErrRefused (the image is now killed;
// the reason is its imagefs_kill_reason property), ErrCatalog, I/O errors.
func (s *Store) CloseWriter(u *Upload) error {
	return s.CloseWriterExiting(u, 0)
}

// CloseWriterExiting is CloseWriter for the close of a writer that is exiting with
// wait status status without having closed the file itself (killed by
// SIGKILL mid-copy, or exit(1)); 0: not exiting, or exiting with status 0.
// A writer that failed leaves an incomplete upload whatever its bytes look
// like, so it is refused with that reason.
func (s *Store) CloseWriterExiting(u *Upload, status int) error {
	defer s.deliver()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.writers == 1 && u.dirty && u.name == "" && u.state == uploadOpen {
		if status != 0 {
			u.exited = status
		}
		return s.seal(u)
	}
	return nil
}

// EndWriter ends one write handle opened by OpenWrite, CreateFile,
// CreateScratch or Reopen. The last one seals a changed (or emptied)
// upload that CloseWriter did not seal, and drops an upload opened and
// closed with nothing written.
func (s *Store) EndWriter(u *Upload) error {
	defer s.deliver()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.writers--
	// A read-write opener (qemu-img) truncates, closes and opens again:
	// its empty close is no upload yet.
	emptied := u.truncated && u.size == 0 && !u.opener.ReadWrite
	if u.writers == 0 && (u.dirty || emptied) && u.name == "" && u.state == uploadOpen {
		return s.seal(u)
	}
	if u.writers == 0 && !u.dirty && u.name == "" && u.state == uploadOpen && u.size == 0 {
		// Opened for writing and closed with nothing written (touch):
		// no staging file outlives its upload.
		u.discard()
		s.dropUpload(u)
		return nil
	}
	if u.writers == 0 && u.name != "" && u.state == uploadOpen && !u.warned {
		// cp FILE images/NAME/ lands here: say what happens to it.
		u.warned = true
		s.log.Warn("scratch file closed: it is never sealed and is dropped at unmount; rename it onto the image's data file (image.vhd, or image.raw for a raw image) to upload it",
			"id", u.id, "file", u.name, "size", u.size)
	}
	return nil
}

// seal checks the staged data and, when it is an acceptable VHD, hashes
// it, hands it to the DataBackend and commits the record (checksum,
// hashes, size, virtual_size, VHD facts, status active) in one synced
// batch. A refused upload makes the image killed with the reason. Must
// hold u.mu (readers do not wait for it: Upload.Size and the Store's
// reads take no lock a seal holds across I/O).
//
// An image may have several uploads at once (an upload detached by a
// discard or replaced by a rename is still sealing when the next one
// starts), so the seals of one image take turns (liveImage.sealMu), and
// an image found sealed when this one's turn comes refuses it: sealed
// data is never replaced.
//
// The steps: take the image's turn (sealTurn), inspect the data
// (inspectStaged), refuse it (refuse) or hash it (hashStaged), hand it to
// the DataBackend (handOver), commit the record (commitSeal).
func (s *Store) seal(u *Upload) error {
	u.dirty = false
	start := time.Now()
	l, err := s.sealTurn(u)
	if l != nil {
		defer l.sealMu.Unlock()
	}
	if err != nil {
		return err
	}
	format := ""
	if im := s.Get(u.id); im != nil {
		format = im.DiskFormat
	}
	facts, vsize, refusal, err := u.inspectStaged(format)
	if err != nil {
		return err
	}
	if refusal != "" {
		return s.refuse(u, refusal)
	}
	md5hex, shahex, rehashed, err := u.hashStaged()
	if err != nil {
		return err
	}
	if err := s.handOver(u); err != nil {
		if errors.Is(err, ErrDataStore) {
			// A remote data store (Swift) that cannot take the data:
			// never active without its object; the writer uploads again.
			return s.refuse(u, "the data store did not take the upload: "+err.Error())
		}
		return err
	}
	im, err := s.commitSeal(u, format, md5hex, shahex, vsize, facts)
	if err != nil {
		return err
	}
	s.log.Info("image sealed", "id", u.id, "name", im.Name, "size", u.size,
		"checksum", md5hex, "rehashed", rehashed, "seal_ms", time.Since(start).Milliseconds())
	s.emit(Event{Kind: EventSealed, ID: u.id, Size: u.size, Duration: time.Since(start)})
	return nil
}

// sealTurn waits for the turn of u's image to seal (its liveImage's
// sealMu, returned locked when the liveImage is not nil) and checks that
// the image still exists and is not sealed; if it is gone or sealed, u is
// dropped and the error says why. Must hold u.mu.
func (s *Store) sealTurn(u *Upload) (*liveImage, error) {
	s.mu.Lock()
	l := s.live[u.id]
	s.mu.Unlock()
	if l != nil {
		l.sealMu.Lock()
	}
	if im := s.Get(u.id); l == nil || im == nil || im.Status.Sealed() {
		u.discard()
		s.dropUpload(u)
		if im == nil {
			return l, fmt.Errorf("%w: image %s was deleted", ErrNotFound, u.id)
		}
		return l, fmt.Errorf("%w: image %s is %s; its data never changes", ErrImmutable, u.id, im.Status)
	}
	return l, nil
}

// inspectStaged decides whether the staged data may be sealed as disk
// format format (the record's disk_format): refusal says why not (no
// space, a writer that failed, empty, no disk_format, not an acceptable
// VHD, not a raw disk); otherwise facts are its VHD facts (none for raw)
// and vsize its virtual size. Must hold u.mu.
func (u *Upload) inspectStaged(format string) (facts map[string]string, vsize int64, refusal string, err error) {
	switch {
	case u.nospc:
		return nil, 0, reasonNoSpace(u.size), nil
	case u.exited != 0:
		return nil, 0, reasonWriterFailed(u.size, u.exited), nil
	case u.size == 0:
		return nil, 0, reasonEmpty, nil
	case format == DiskFormatRaw:
		vsize, refusal = inspectRaw(u.f, u.size)
		return nil, vsize, refusal, nil
	case format != DiskFormatVHD:
		// Not reached: no upload starts without a disk_format, nor may it
		// change during one.
		return nil, 0, "the image has no disk_format (set it, then upload again)", nil
	}
	if facts, vsize, refusal, err = inspectVHD(u.f, u.size); err != nil {
		return nil, 0, "", fmt.Errorf("inspect staged data of %s: %w", u.id, err)
	}
	return facts, vsize, refusal, nil
}

// refuse drops a refused upload and kills its image with the reason; the
// error wraps ErrRefused. Must hold u.mu.
func (s *Store) refuse(u *Upload, refusal string) error {
	if u.stage {
		return s.refuseImport(u, refusal) // import.go: queued again
	}
	s.log.Warn("upload refused; image killed", "id", u.id, "reason", refusal)
	// Give the space back first (a refused upload is often one that
	// filled the disk); a new upload starts from scratch.
	u.discard()
	s.dropUpload(u)
	if err := s.setStatus(u.id, StatusKilled, refusal); err != nil {
		return err // still saving: the next Open kills it
	}
	s.emit(Event{Kind: EventKilled, ID: u.id, Reason: refusal})
	return fmt.Errorf("%w: %s", ErrRefused, refusal)
}

// hashStaged finishes the hashes of the staged data: the in-order hash
// completed with the zeros of a trailing hole, or (rehashed) one pass
// over data written out of order. Must hold u.mu.
func (u *Upload) hashStaged() (md5hex, shahex string, rehashed bool, err error) {
	rehashed = u.hash == nil
	if rehashed {
		u.hash = newHashPipe()
		if err := u.hash.readFrom(io.NewSectionReader(u.f, 0, u.size)); err != nil {
			u.dropHash()
			return "", "", true, fmt.Errorf("hash staged data of %s: %w", u.id, err)
		}
	} else if u.hash.n < u.size {
		u.hash.zeros(u.size - u.hash.n)
	}
	md5hex, shahex = u.hash.finish()
	u.hash = nil
	return md5hex, shahex, rehashed, nil
}

// handOver makes the staged data durable (fsync) and hands it to the
// DataBackend; u is sealed from then on. Must hold u.mu.
func (s *Store) handOver(u *Upload) error {
	if err := u.f.Sync(); err != nil {
		return fmt.Errorf("sync staged data of %s: %w", u.id, err)
	}
	u.stream = nil // Put takes what it sent, or voids it on failure
	if err := s.data.Put(u.id, u.path); err != nil {
		return fmt.Errorf("store sealed data of %s: %w", u.id, err)
	}
	u.f.Close()
	u.f = nil
	u.state = uploadSealed
	return nil
}

// commitSeal commits the sealed record of u's image and returns it. If
// the image was deleted meanwhile, or the commit fails, the handed-over
// data is removed (and the image killed, if the catalog takes that). A
// read-write opener's seal is recorded as provisional (reopen.go). Must
// hold u.mu.
func (s *Store) commitSeal(u *Upload, format, md5hex, shahex string, vsize int64, facts map[string]string) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.live[u.id]; l != nil && l.upload == u {
		s.pubMu.Lock()
		l.upload = nil
		s.pubMu.Unlock()
	}
	im, err := s.getLocked(u.id)
	if err != nil {
		s.data.Remove(u.id) // deleted while sealing
		return nil, err
	}
	// The provisional note is in place before the active record is
	// published: a reader that sees the image active sees it too.
	l := s.live[u.id]
	var prov *provisionalSeal
	if l != nil {
		if _, ok := s.data.(dataReclaimer); ok && u.opener.ReadWrite && u.opener.PID != 0 && u.name == "" {
			if start := procStart(u.opener.PID); start != "" {
				prov = &provisionalSeal{proc: u.opener.PID, start: start, path: u.path, at: time.Now()}
			}
		}
		l.provisional.Store(prov)
	}
	ch, err := s.update(u.id, kv.Small, func(cur *Image) (*Image, error) {
		if cur == nil {
			return nil, fmt.Errorf("%w: image %s was deleted", ErrNotFound, u.id)
		}
		if err := s.sealable(cur, u); err != nil {
			return nil, err
		}
		if cur.DiskFormat != format {
			// Another host's change (this host refuses one during an
			// upload): the data was checked as the other format.
			return nil, fmt.Errorf("%w: image %s: disk_format changed from %s to %s during the seal", errUploadLost, u.id, format, cur.DiskFormat)
		}
		return s.sealRecord(cur, md5hex, shahex, u.size, vsize, facts), nil
	})
	if err != nil {
		if l != nil {
			l.provisional.Store(nil)
		}
		// The writer's close fails: take the data back so that nothing
		// half-sealed stays (a delete would leave it as an orphan), and kill
		// the image if the catalog takes that; if not, it is still saving
		// and the next Open kills it.
		if rerr := s.data.Remove(u.id); rerr != nil {
			s.log.Error("removing data of a seal that did not commit", "id", u.id, "err", rerr)
		}
		reason := "the seal could not be recorded in the catalog; upload again"
		if errors.Is(err, errUploadLost) {
			reason = "the seal was refused: " + err.Error() + "; upload again"
		}
		kill, kerr := s.update(u.id, kv.Small, func(cur *Image) (*Image, error) {
			if u.stage {
				// An import: queued again, as a refused one (import.go).
				if cur == nil || cur.Status != StatusImporting {
					return nil, nil
				}
				return unstaged(cur, "Error: "+reason, s.now()), nil
			}
			// Not an image that another host killed, or uploads now.
			if cur == nil || s.shared() && (cur.Status != StatusSaving || s.uploadsElsewhere(u.id)) {
				return nil, nil
			}
			killed := cur.clone()
			killed.Status = StatusKilled
			setExtra(killed, KeyKillReason, reason)
			killed.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
			return killed, nil
		})
		if kerr == nil && kill.New != nil && !u.stage {
			s.emit(Event{Kind: EventKilled, ID: u.id, Reason: reason})
		}
		return nil, err
	}
	im = ch.Old
	if prov != nil {
		s.watchWriter(u.opener.PID, u.id, md5hex)
	}
	return im, nil
}

// errUploadLost: a seal whose image is no longer this host's upload in a
// shared catalog (its lease expired and another host killed it, or took
// it over).
var errUploadLost = fmt.Errorf("%w: the upload is no longer this host's", ErrCatalog)

// sealable checks that a seal of this host may commit on record im: in a
// shared catalog, an upload that moved the image to saving (started)
// must find it still saving with this host's upload key (another host
// kills an upload whose host's lease expired); a file written under
// another name and renamed onto image.vhd (never saving) needs the image
// queued or killed and uploaded by no other host. The embedded catalog
// has no such keys: any record may be sealed. Errors: errUploadLost.
// Must hold s.mu.
func (s *Store) sealable(im *Image, u *Upload) error {
	if !s.shared() {
		return nil
	}
	started := u.started
	if u.stage {
		// An import (import.go): the image importing, staged here.
		if im.Status != StatusImporting || im.Extra[KeyStageHost] != s.opts.Host {
			return fmt.Errorf("%w: image %s is %s, staged on host %q (not %s)", errUploadLost, im.ID, im.Status, im.Extra[KeyStageHost], s.opts.Host)
		}
		return nil
	}
	switch {
	case started && im.Status != StatusSaving:
		return fmt.Errorf("%w: image %s is %s (its upload lease of host %s expired?)", errUploadLost, im.ID, im.Status, s.opts.Host)
	}
	switch im.Status {
	case StatusSaving:
		if !s.uploadsHere(im.ID) {
			return fmt.Errorf("%w: image %s: the upload key of host %s is gone (its etcd lease expired)", errUploadLost, im.ID, s.opts.Host)
		}
	case StatusQueued, StatusKilled:
		// A file written under another name and renamed onto image.vhd
		// (rsync, mv) seals without passing through saving; no other
		// host may be uploading (the record's condition covers a start
		// racing this commit).
		if s.uploadsElsewhere(im.ID) {
			return fmt.Errorf("%w: image %s is being uploaded by host %s", errUploadLost, im.ID, s.uploadKeys[im.ID].host)
		}
	default:
		return fmt.Errorf("%w: image %s is %s (its upload lease of host %s expired?)", errUploadLost, im.ID, im.Status, s.opts.Host)
	}
	return nil
}

// sealRecord returns im sealed: status active with its hashes, sizes and
// VHD facts.
func (s *Store) sealRecord(im *Image, md5hex, shahex string, size, vsize int64, facts map[string]string) *Image {
	next := im.clone()
	next.Status = StatusActive
	next.Checksum = md5hex
	next.OSHashAlgo = "sha512"
	next.OSHashValue = shahex
	next.Size = size
	next.VirtualSize = vsize
	deleteExtra(next, KeyKillReason)
	deleteExtra(next, KeyStageHost)
	if im.Status == StatusImporting {
		finishTask(next, TaskSuccess, "", s.now())
	}
	for _, k := range slices.Sorted(maps.Keys(facts)) {
		setExtra(next, k, facts[k])
	}
	next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
	return next
}

// OpenRead opens the sealed data of image id for reading by c. Errors:
// ErrNotFound (no such image, or c does not see it); ErrPermission: the
// image is not active (queued or saving: an upload is read through
// OpenUploadRead; killed; deactivated and c is not root), or its seal is
// provisional (OpenRead knows no process: only OpenReadBy of the writer's
// process opens it then).
func (s *Store) OpenRead(c Caller, id string) (*os.File, error) {
	return s.OpenReadBy(c, id, nil)
}

// OpenReadBy is OpenRead by the process proc returns (nil: unknown),
// asked only when the image's seal is provisional: only its writer reads
// it then, others get ErrPermission (reopen.go).
func (s *Store) OpenReadBy(c Caller, id string, proc func() uint32) (*os.File, error) {
	im := s.GetFor(c, id)
	if im == nil {
		return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	switch im.Status {
	case StatusActive:
	case StatusDeactivated:
		if !c.IsRoot() {
			return nil, fmt.Errorf("%w: image %s is deactivated", ErrPermission, id)
		}
	case StatusKilled:
		return nil, fmt.Errorf("%w: image %s is killed: %s", ErrPermission, id, im.Extra[KeyKillReason])
	default:
		// Only sealed bits are ever handed out for reading: a hypervisor
		// must not boot half an upload. The writer reads its own data
		// through its write handle.
		return nil, fmt.Errorf("%w: image %s is %s: only an active image can be read", ErrPermission, id, im.Status)
	}
	if err := s.provisionalFor(id, proc); err != nil {
		return nil, err
	}
	return s.data.Open(id, ExpectOf(im))
}

// OpenUploadRead checks that c may open upload u (a scratch file, or
// image.vhd being uploaded) for reading: only the image's owner and root
// read unsealed data, whatever the image's visibility. Errors: ErrNotFound
// (the image is gone, or c does not see it), ErrPermission (c sees the
// image but does not own it).
func (s *Store) OpenUploadRead(c Caller, u *Upload) error {
	im := s.GetFor(c, u.id)
	if im == nil {
		return fmt.Errorf("%w: image %s", ErrNotFound, u.id)
	}
	if !c.Owns(im) {
		return fmt.Errorf("%w: image %s: only its owner (or root) reads data not yet sealed", ErrPermission, u.id)
	}
	return nil
}

// DiscardUpload drops the staged data of an unsealed image (unlink of
// image.vhd before it is sealed); the image returns to queued. Errors:
// ErrImmutable (sealed), ErrPermission, ErrNotFound, ErrBusy (a writer
// has the upload open).
//
// The check and the change happen under the upload's lock and the image's
// seal lock, so a seal that races the unlink either happens before the
// check (the unlink fails with ErrImmutable and image.vhd stays) or after
// the change (there is nothing left to seal).
func (s *Store) DiscardUpload(c Caller, id string) error {
	defer s.deliver()
	for {
		s.mu.Lock()
		im, err := s.getLocked(id)
		if err == nil {
			err = writable(c, im)
		}
		if err != nil {
			s.mu.Unlock()
			return err
		}
		l := s.liveLocked(id)
		u := l.upload
		s.mu.Unlock()
		if done, err := s.discardUpload(c, id, l, u); done {
			return err
		}
	}
}

// discardUpload is DiscardUpload for the upload u that image id had a
// moment ago; done is false when the image's upload changed meanwhile
// (look again).
func (s *Store) discardUpload(c Caller, id string, l *liveImage, u *Upload) (done bool, err error) {
	if u != nil { // Upload.mu, then sealMu, then Store.mu
		u.mu.Lock()
		defer u.mu.Unlock()
	}
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	s.mu.Lock()
	if s.live[id] != l || l.upload != u {
		s.mu.Unlock()
		return false, nil
	}
	im, err := s.getLocked(id)
	if err == nil {
		err = writable(c, im)
	}
	if err == nil && stagedStatus(im.Status) {
		return true, s.discardStaged(im, l, u) // import.go; releases s.mu
	}
	if err == nil && u != nil && u.writers > 0 {
		err = fmt.Errorf("%w: image %s is being uploaded", ErrBusy, id)
	}
	if err == nil {
		err = s.uploadingElsewhere(id)
	}
	if err != nil {
		s.mu.Unlock()
		return true, err
	}
	// In the same critical section as the check: a writer that creates
	// image.vhd again or renames a file onto it afterwards shows it again.
	s.pubMu.Lock()
	l.upload = nil
	l.unlinked = true
	s.pubMu.Unlock()
	s.mu.Unlock()
	if u != nil {
		u.discard()
		s.log.Info("upload discarded", "id", id, "uid", c.UID)
	}
	if err := s.setStatus(id, StatusQueued, ""); err != nil {
		s.mu.Lock()
		if l.upload == nil {
			s.pubMu.Lock()
			l.unlinked = false
			s.pubMu.Unlock()
		}
		s.mu.Unlock()
		return true, err
	}
	return true, nil
}

// IsTempName reports whether name is a temporary name in an image
// directory: it starts with '.' (rsync's .NAME.XXXXXX, mktemp -p DIR
// .tmpXXXX). A file under a temporary name is a scratch file, never
// sealed by itself; a file created under any other name is an upload of
// the image's data (see CreateFile).
func IsTempName(name string) bool {
	return strings.HasPrefix(name, ".")
}

// CreateFile creates file name in image id's directory, opened for
// writing by c (pair with EndWriter). The image's data file (DataName:
// image.vhd, or image.raw for a raw image), and any name that is not a
// temporary name (cp FILE.vhd images/NAME/), starts an upload of the
// image's data as OpenWrite with trunc does: it is sealed at the opener's
// close and then shows under the data file's name only; the returned
// Upload's Name is "". A temporary name makes a scratch file
// (CreateScratch). Errors: as OpenWrite and CreateScratch (ErrImmutable
// for a sealed image, ErrBusy while another writer uploads, ErrInvalid
// while a format is unset), ErrInvalid for the other format's data file
// name (image.vhd in a raw image's directory, image.raw in a VHD one's).
func (s *Store) CreateFile(c Caller, id, name string, w Writer) (*Upload, error) {
	im := s.Get(id)
	if im == nil {
		return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	if err := wrongDataName(im, name); err != nil {
		if werr := writable(c, im); werr != nil {
			return nil, werr // a sealed image, another's: as for any name
		}
		return nil, err
	}
	dataName := im.DataName()
	if name != dataName {
		if err := validScratchName(name); err != nil {
			return nil, err
		}
		if IsTempName(name) {
			return s.CreateScratch(c, id, name)
		}
	}
	u, err := s.OpenWriteBy(c, id, true, w)
	if err == nil {
		s.mu.Lock()
		if l := s.live[id]; l != nil {
			s.pubMu.Lock()
			l.alias = ""
			if name != dataName {
				l.alias = name // qemu-img opens it again by that name
			}
			s.pubMu.Unlock()
		}
		s.mu.Unlock()
	}
	return u, err
}

// CreateScratch creates the scratch file name in image id's directory,
// opened for writing (pair with EndWriter). Errors: ErrExists, ErrInvalid,
// ErrImmutable (sealed image), ErrPermission, ErrNotFound.
func (s *Store) CreateScratch(c Caller, id, name string) (*Upload, error) {
	if err := validScratchName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.getLocked(id)
	if err == nil {
		err = uploadable(c, im)
	}
	if err != nil {
		return nil, err
	}
	l := s.liveLocked(id)
	if _, ok := l.scratch[name]; ok {
		return nil, fmt.Errorf("%w: scratch file %s", ErrExists, name)
	}
	u, err := s.newUpload(id, name, SlotScratchBase+l.nextScratch)
	if err != nil {
		return nil, err
	}
	l.nextScratch++
	u.writers = 1
	s.pubMu.Lock()
	l.scratch[name] = u
	s.pubMu.Unlock()
	return u, nil
}

func validScratchName(name string) error {
	if IsDataName(name) || name == "properties" {
		return fmt.Errorf("%w: %s is reserved", ErrExists, name)
	}
	if err := ValidName(name); err != nil {
		return err
	}
	return nil
}

// Scratch returns the scratch file name of image id, or nil.
func (s *Store) Scratch(id, name string) *Upload {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	s.pubMu.RLock()
	defer s.pubMu.RUnlock()
	if l := s.live[id]; l != nil {
		return l.scratch[name]
	}
	return nil
}

// ScratchNames lists the scratch files of image id, sorted.
func (s *Store) ScratchNames(id string) []string {
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	s.pubMu.RLock()
	defer s.pubMu.RUnlock()
	if l := s.live[id]; l != nil && len(l.scratch) > 0 {
		return slices.Sorted(maps.Keys(l.scratch))
	}
	return nil
}

// Reopen opens upload u (a scratch file) for writing again (pair with
// EndWriter); trunc discards its data. Errors: ErrNotFound (deleted),
// ErrImmutable (sealed), ErrPermission.
func (s *Store) Reopen(c Caller, u *Upload, trunc bool) error {
	defer s.deliver()
	s.mu.Lock()
	im, err := s.getLocked(u.id)
	if err == nil {
		err = writable(c, im)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.usable(); err != nil {
		return err
	}
	if trunc {
		if err := u.truncateLocked(0); err != nil {
			return err
		}
	}
	u.writers++
	return nil
}

// RemoveScratch deletes a scratch file.
func (s *Store) RemoveScratch(c Caller, id, name string) error {
	s.mu.Lock()
	im, err := s.getLocked(id)
	if err == nil {
		err = mayModify(c, im)
	}
	var u *Upload
	if err == nil {
		l := s.live[id]
		if l != nil {
			u = l.scratch[name]
		}
		if u == nil {
			err = fmt.Errorf("%w: scratch file %s", ErrNotFound, name)
		} else {
			s.pubMu.Lock()
			delete(l.scratch, name)
			s.pubMu.Unlock()
		}
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	u.abandon()
	return nil
}

// RenameScratch renames scratch file from to to in image id's directory.
// Renaming onto the data file (image.vhd, or image.raw for a raw image),
// or onto any name that is not a temporary name (rsync's .FILE.XXXXXX
// onto FILE), completes the upload with the scratch file's data: it is
// checked and sealed now if no writer still has it open, and then shows
// as the data file only. Errors: as CreateScratch, plus ErrRefused from
// the seal and ErrBusy while another writer has the data file open (one
// writer at a time), ErrNotPermitted for a rename of a data file or from
// or to properties, ErrInvalid onto the other format's data file name,
// and with RenameNoReplace ErrExists when to is taken (the data file
// always is), decided under the store's lock.
func (s *Store) RenameScratch(c Caller, id, from, to string, mode RenameMode) error {
	defer s.deliver()
	if IsDataName(from) || from == "properties" || to == "properties" {
		return fmt.Errorf("%w: the data file and properties keep their names", ErrNotPermitted)
	}
	toData := IsDataName(to) || !IsTempName(to)
	if !IsDataName(to) {
		if err := validScratchName(to); err != nil {
			return err
		}
	}
	var u, replaced *Upload
	for {
		s.mu.Lock()
		l := s.live[id]
		var cur *Upload
		if l != nil {
			cur = l.upload
		}
		s.mu.Unlock()
		if toData && cur != nil {
			cur.mu.Lock() // Upload.mu before Store.mu
		}
		done, err := func() (bool, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			im, err := s.getLocked(id)
			if err == nil {
				err = mayModify(c, im)
			}
			if err == nil && toData {
				err = uploadable(c, im)
				if err == nil {
					err = s.uploadingElsewhere(id)
				}
			}
			if err == nil {
				err = wrongDataName(im, to)
			}
			if err != nil {
				return true, err
			}
			if s.live[id] != l || (l != nil && l.upload != cur) {
				return false, nil // changed meanwhile: look again
			}
			if l != nil {
				u = l.scratch[from]
			}
			if u == nil {
				return true, fmt.Errorf("%w: scratch file %s", ErrNotFound, from)
			}
			if mode == RenameNoReplace && (to == im.DataName() || l.scratch[to] != nil) {
				return true, fmt.Errorf("%w: %s (no replace)", ErrExists, to)
			}
			if toData && cur != nil && cur.writers > 0 && cur.state == uploadOpen {
				return true, fmt.Errorf("%w: image %s is being uploaded by another writer", ErrBusy, id)
			}
			s.pubMu.Lock()
			delete(l.scratch, from)
			if toData {
				l.upload = u
				l.unlinked = false
			} else {
				replaced, l.scratch[to] = l.scratch[to], u
			}
			s.pubMu.Unlock()
			if toData && cur != nil {
				cur.discard() // replaced by the rename
			}
			return true, nil
		}()
		if toData && cur != nil {
			cur.mu.Unlock()
		}
		if err != nil {
			return err
		}
		if done {
			break
		}
	}
	if replaced != nil {
		replaced.abandon()
	}

	u.mu.Lock()
	defer u.mu.Unlock()
	if !toData {
		u.setName(to)
		return nil
	}
	u.setName("")
	if err := u.touch(); err != nil {
		// Sealed meanwhile by image.vhd's own writer: this upload is void.
		u.discard()
		s.dropUpload(u)
		return err
	}
	if u.writers == 0 && u.state == uploadOpen {
		return s.seal(u)
	}
	return nil
}
