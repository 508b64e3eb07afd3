package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// Outcomes of one image in a migration (MigrateItem.Outcome).
const (
	// MigrateDone: the record (and, sealed, the verified data) was written.
	MigrateDone = "migrated"
	// MigrateSkipped: the destination already holds this record, equal
	// (an earlier run migrated it).
	MigrateSkipped = "already-migrated"
	// MigrateSaving: an upload was in progress when the store stopped;
	// not migrated (upload the image again).
	MigrateSaving = "saving"
	// MigrateConflict: the destination holds the name under another id,
	// the id with another record, or the inode range under another id;
	// nothing is overwritten.
	MigrateConflict = "conflict"
	// MigrateDataError: the sealed data is missing, unreadable, of the
	// wrong size or does not hash to checksum/os_hash_value; the record
	// is not written and no data file stays in the destination.
	MigrateDataError = "data-error"
	// MigrateNeedsRepair: the store has a problem imagefs fsck --repair
	// fixes first (an uncommitted seal: data of an image not sealed).
	MigrateNeedsRepair = "needs-repair"
	// MigrateTooLarge: the record exceeds what the shared catalog takes
	// in one request.
	MigrateTooLarge = "too-large"
)

// MigrateOptions tune Migrate.
type MigrateOptions struct {
	// Progress, if set, is called after each image with the number of
	// images handled so far, the total, and the image's item.
	Progress func(done, total int, it MigrateItem)
	// TempDir is where data is copied before DataBackend.Put when the
	// backend is not the local one (which gets its temporary files in
	// its own directory, so that Put is a rename). Default os.TempDir().
	TempDir string
	// DryRun writes nothing: the source's data is read and verified,
	// the destination read, and the report says what a run would do
	// (MigrateDone: would be migrated).
	DryRun bool
}

// MigrateItem is what became of one image of the source.
type MigrateItem struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Outcome string `json:"outcome"` // Migrate* constants
	Detail  string `json:"detail,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"` // data bytes copied
	// InoFrom and InoTo: the image was renumbered (the destination had
	// handed its inode base in the source out before: to another image,
	// as another store's migrated before, or to one deleted since): its
	// inode numbers are InoTo|slot in the catalog instead of
	// InoFrom|slot. Zero when kept.
	InoFrom uint64 `json:"ino_from,omitempty"`
	InoTo   uint64 `json:"ino_to,omitempty"`
}

// OK reports whether the image is in the destination.
func (it MigrateItem) OK() bool { return it.Outcome == MigrateDone || it.Outcome == MigrateSkipped }

// MigrateReport is what Migrate did: one item per image record of the
// source (key order), counts, and the destination's inode sequence.
type MigrateReport struct {
	Images   int    `json:"images"`   // records in the source
	Migrated int    `json:"migrated"` // written by this run
	Skipped  int    `json:"skipped"`  // already in the destination
	Failed   int    `json:"failed"`   // not migrated (see Items)
	Deleted  int    `json:"deleted"`  // records of deleted images (tombstoned), left out
	Bytes    int64  `json:"bytes"`    // data bytes copied and verified
	SeqIno   uint64 `json:"seq_ino"`  // seq/ino in the destination afterwards
	// Renumbered: images migrated by this run with new inode numbers
	// (MigrateItem.InoFrom, InoTo).
	Renumbered int           `json:"renumbered"`
	DryRun     bool          `json:"dry_run"` // nothing was written (MigrateOptions.DryRun)
	Items      []MigrateItem `json:"items"`
	// Metadata definitions (metadefs.go): namespaces and resource types
	// written (a dry run: to be written), already there, and those the
	// destination holds with other records (not written).
	Metadefs         int      `json:"metadefs"`
	MetadefsSkipped  int      `json:"metadefs_skipped"`
	MetadefConflicts []string `json:"metadef_conflicts,omitempty"`
}

// OK reports whether every image and metadata definition of the source
// is in the destination.
func (r *MigrateReport) OK() bool { return r.Failed == 0 && len(r.MetadefConflicts) == 0 }

// Migrate copies the single-host store in src (which must not be
// mounted: its catalog is locked while imagefs serves it, and Migrate
// holds it so) into a shared catalog dst and the shared data backend
// data, keeping every record as it is (the same JSON under img/<id>:
// id, name, owner, checksums, timestamps, inode base and slots) and its
// name under name/<name>. The source is only read.
//
// First seq/ino in dst is raised to at least the source's next inode
// base and past every base the source uses (never lowered; under a
// condition on its ModRev), so that inode numbers stay those of the
// source and unique; an image whose base dst handed out before (below
// its seq/ino: another image's, or a deleted one's) gets a new one
// (MigrateItem.InoFrom, InoTo), so only into a fresh catalog are all
// numbers kept. Then, for each record: sealed images (active,
// deactivated) have their data copied into data, hashed on the way
// (MD5 = checksum, SHA-512 = os_hash_value, size = size) into a
// temporary file that is fsynced and then handed to data.Put; only then
// is the record committed (one transaction per image: img/<id> and
// name/<name>, each conditioned on being absent), so an interruption
// never leaves a sealed record without its data, and a re-run completes
// what was cut off. queued and killed images are migrated as records;
// saving ones are not (MigrateSaving: upload them again); records of
// deleted images (a del/<id> tombstone) are left out. Last, the
// metadata definitions (the API's metadefs): each namespace and resource
// type the destination lacks is written, one that it holds differently
// is reported (MigrateReport.MetadefConflicts) and left as it is there.
//
// Safe to run again: an image whose record is already in dst, equal as
// JSON, is skipped (its data is copied again only if missing). A name
// held in dst by another id, an id with a different record, or an inode
// range used by another id is a MigrateConflict: nothing of that image is
// written.
//
// With opts.DryRun nothing is written: the data is verified and the
// report says what a run would do.
//
// Per-image failures are in the report, not in the error. Errors stop the
// run (the report says what was done before): the source is not a store,
// ErrBusy (it is mounted), ErrCatalog (its catalog cannot be read),
// ErrUnavailable (dst did not answer), I/O errors of the data backend or
// the temporary directory, ctx's error when it ends.
func Migrate(ctx context.Context, src string, dst kv.Backend, data DataBackend, opts MigrateOptions) (MigrateReport, error) {
	r := MigrateReport{DryRun: opts.DryRun}
	if _, err := os.Stat(filepath.Join(src, "catalog")); err != nil {
		return r, fmt.Errorf("%s is not an imagefs store: %w", src, err)
	}
	s, err := Open(src, Options{checkOnly: true})
	if err != nil {
		return r, err
	}
	defer s.Close()
	if ld, ok := data.(*localData); ok && ld.host == "" {
		ld.host = "imagefs-migrate" // its temporary files (datatmp.go): no mount removes them, fsck does once old
	}
	m := &migration{ctx: ctx, s: s, dst: dst, data: data, opts: opts, r: &r}
	if err := m.run(); err != nil {
		return r, err
	}
	return r, nil
}

// migrateCallTimeout bounds one call of Migrate into the destination
// catalog outside its scans (the data directory's identity).
const migrateCallTimeout = 30 * time.Second

// migration is one run of Migrate.
type migration struct {
	ctx  context.Context
	s    *Store
	dst  kv.Backend
	data DataBackend
	opts MigrateOptions
	r    *MigrateReport

	// The destination as read at the start.
	dstImg    map[string]kv.Pair // id -> img/<id>
	dstName   map[string]kv.Pair // name -> name/<name>
	dstIno    map[uint64]string  // inode base -> id
	dstSealed []string           // ids of the sealed images in the destination
	dstRev    int64              // the revision they were read at
	// newBase: the inode base each renumbered source image gets (set
	// by raiseSeqIno).
	newBase map[string]uint64
	srcData map[string]bool // ids with a data file in the source
}

// migrateRecord is one record of the source: its JSON as stored, decoded.
type migrateRecord struct {
	raw []byte
	im  *Image
}

func (m *migration) run() error {
	var recs []migrateRecord
	_, err := m.s.cat.kv.Scan(context.Background(), prefixImage, "img0", 0, func(p kv.Pair) error {
		raw := bytes.Clone(p.Value)
		im := newRecord()
		if err := json.Unmarshal(raw, im); err != nil {
			return fmt.Errorf("%w: record %s: %v", ErrCatalog, p.Key, err)
		}
		recs = append(recs, migrateRecord{raw: raw, im: im})
		return nil
	})
	if err != nil {
		if !errors.Is(err, ErrCatalog) {
			err = catalogErr(err)
		}
		return err
	}
	tombs, err := m.s.cat.loadTombstones()
	if err != nil {
		return err
	}
	ids, err := m.s.data.List()
	if err != nil {
		return fmt.Errorf("list the source's data files: %w", err)
	}
	m.srcData = map[string]bool{}
	for _, id := range ids {
		m.srcData[id] = true
	}
	m.r.Images = len(recs)
	if err := m.readDst(); err != nil {
		return err
	}
	if err := checkDataDir(dataDirCheck{
		b: m.dst, data: m.data, host: "imagefs-migrate", images: len(m.dstImg), sealed: m.dstSealed,
		claim: !m.opts.DryRun, now: time.Now(), log: m.s.log,
		ctx: func() (context.Context, context.CancelFunc) { return context.WithTimeout(m.ctx, migrateCallTimeout) },
	}); err != nil {
		return err
	}
	if err := m.raiseSeqIno(recs, tombs); err != nil {
		return err
	}
	for i, rec := range recs {
		if err := m.ctx.Err(); err != nil {
			return err
		}
		im := rec.im
		if tombs[im.ID] {
			m.r.Deleted++
			continue
		}
		it, err := m.image(rec)
		if err != nil {
			return err
		}
		switch {
		case it.Outcome == MigrateDone:
			m.r.Migrated++
		case it.Outcome == MigrateSkipped:
			m.r.Skipped++
		default:
			m.r.Failed++
		}
		m.r.Bytes += it.Bytes
		m.r.Items = append(m.r.Items, it)
		if m.opts.Progress != nil {
			m.opts.Progress(i+1, len(recs), it)
		}
	}
	return m.metadefs()
}

// readDst reads the destination's records and names (one revision).
func (m *migration) readDst() error {
	m.dstImg, m.dstName, m.dstIno = map[string]kv.Pair{}, map[string]kv.Pair{}, map[uint64]string{}
	m.dstSealed = nil
	rev, err := m.dst.Scan(m.ctx, prefixImage, "img0", 0, func(p kv.Pair) error {
		p.Value = bytes.Clone(p.Value)
		id := p.Key[len(prefixImage):]
		m.dstImg[id] = p
		var im Image
		if err := json.Unmarshal(p.Value, &im); err == nil {
			m.dstIno[im.InoBase] = id
			if im.Status.Sealed() {
				m.dstSealed = append(m.dstSealed, id)
			}
		}
		return nil
	})
	if err != nil {
		return m.dstErr(err)
	}
	m.dstRev = rev
	_, err = m.dst.Scan(m.ctx, prefixName, "name0", rev, func(p kv.Pair) error {
		p.Value = bytes.Clone(p.Value)
		m.dstName[p.Key[len(prefixName):]] = p
		return nil
	})
	return m.dstErr(err)
}

// dstErr maps an error of the destination catalog (nil stays nil).
func (m *migration) dstErr(err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := m.ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return fmt.Errorf("destination catalog: %w", catalogErr(err))
}

// raiseSeqIno sets seq/ino in dst to at least the source's next inode
// base and past every base of the source's records, before any record is
// written; it never lowers it. A source image to be written whose inode
// base the destination has handed out already (below its seq/ino: held
// by another image, as when a second store is migrated into one catalog
// and every store numbers from 1, or by an image deleted since, whose
// inode numbers a mounted host's kernel may still cache) is renumbered:
// it gets a base of its own past them (m.newBase), taken in the same
// commit. Only into a fresh catalog (no seq/ino) do all images keep the
// source's numbers. The first run of a source records, in the same
// commit, seq/ino as it found it under migrate/<hash of the source's
// ids>: a re-run after an interruption takes that as the bound, so the
// images the first run reserved bases for and did not write keep them. The
// commit is conditioned on seq/ino as it was when the destination was
// read, so that an image another host creates meanwhile (it takes a base
// and moves seq/ino) is seen before the plan is made again. Records of
// deleted images (tombs) and uploads cut off are left out.
func (m *migration) raiseSeqIno(recs []migrateRecord, tombs map[string]bool) error {
	// The first run of this source records seq/ino as it found it (the
	// bases handed out before), so a re-run after an interruption keeps
	// the bases that run reserved for the images it did not write.
	h := sha256.New()
	for _, rec := range recs {
		h.Write([]byte(rec.im.ID + "\n"))
	}
	markKey := prefixMigrate + hex.EncodeToString(h.Sum(nil)[:16])
	for attempt := 0; ; attempt++ {
		want := m.s.nextIno
		for _, rec := range recs {
			want = max(want, rec.im.InoBase>>inoShift+1)
		}
		p, err := m.dst.Get(m.ctx, keySeqIno)
		if err != nil {
			return m.dstErr(err)
		}
		if p.ModRev > m.dstRev && attempt < 10 {
			// An image was created after the destination was read.
			if err := m.readDst(); err != nil {
				return err
			}
			continue
		}
		cur := uint64(1)
		if p.ModRev != 0 {
			if len(p.Value) != 8 {
				return fmt.Errorf("%w: destination %s is %d bytes, want 8", ErrCatalog, keySeqIno, len(p.Value))
			}
			cur = binary.BigEndian.Uint64(p.Value)
		}
		mark, err := m.dst.Get(m.ctx, markKey)
		if err != nil {
			return m.dstErr(err)
		}
		handed := cur // bases below were handed out before this source's first run
		if mark.ModRev != 0 && len(mark.Value) == 8 {
			handed = min(cur, binary.BigEndian.Uint64(mark.Value))
		}
		var moved []string
		for _, rec := range recs {
			im := rec.im
			if tombs[im.ID] || im.Status == StatusSaving || stagedStatus(im.Status) {
				continue
			}
			if _, ok := m.dstImg[im.ID]; ok {
				continue // a re-run: the image keeps the base it got
			}
			// Held by another image, or handed out by the catalog
			// before (below seq/ino: an image deleted since, whose
			// numbers a mounted host's kernel may still cache).
			if other, ok := m.dstIno[im.InoBase]; ok && other != im.ID || im.InoBase>>inoShift < handed {
				moved = append(moved, im.ID)
			}
		}
		first := max(cur, want)
		m.newBase = map[string]uint64{}
		for i, id := range moved {
			m.newBase[id] = (first + uint64(i)) << inoShift
		}
		next := first + uint64(len(moved))
		if cur >= next && mark.ModRev != 0 || m.opts.DryRun {
			m.r.SeqIno = max(cur, next)
			return nil
		}
		b := &kv.Batch{
			Conds: []kv.Cond{{Key: keySeqIno, ModRev: p.ModRev}},
			Room:  kv.Small,
		}
		if cur < next {
			var v [8]byte
			binary.BigEndian.PutUint64(v[:], next)
			b.Ops = append(b.Ops, kv.Op{Kind: kv.Put, Key: keySeqIno, Value: v[:]})
		}
		if mark.ModRev == 0 {
			var v [8]byte
			binary.BigEndian.PutUint64(v[:], cur)
			b.Conds = append(b.Conds, kv.Cond{Key: markKey, ModRev: 0})
			b.Ops = append(b.Ops, kv.Op{Kind: kv.Put, Key: markKey, Value: v[:]})
		}
		_, err = m.dst.Commit(m.ctx, b)
		switch {
		case err == nil:
			m.r.SeqIno = max(cur, next)
			return nil
		case errors.Is(err, kv.ErrConflict) && attempt < 10:
			// Another host took an inode base meanwhile: read again.
			if err := m.readDst(); err != nil {
				return err
			}
			continue
		}
		return m.dstErr(err)
	}
}

// renumbered returns rec with its inode base set to base: the record's
// JSON with "ino" replaced (every other field as stored).
func renumbered(rec migrateRecord, base uint64) (migrateRecord, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(rec.raw, &fields); err != nil {
		return rec, fmt.Errorf("%w: record %s: %v", ErrCatalog, rec.im.ID, err)
	}
	fields["ino"] = json.RawMessage(strconv.FormatUint(base, 10))
	raw, err := json.Marshal(fields)
	if err != nil {
		return rec, err
	}
	im := rec.im.clone()
	im.InoBase = base
	return migrateRecord{raw: raw, im: im}, nil
}

// image migrates one record. Its error stops the run; what befell the
// image is in the item.
func (m *migration) image(rec migrateRecord) (MigrateItem, error) {
	im := rec.im
	it := MigrateItem{ID: im.ID, Name: im.Name, Status: im.Status}
	fail := func(outcome, format string, a ...any) (MigrateItem, error) {
		it.Outcome, it.Detail = outcome, fmt.Sprintf(format, a...)
		return it, nil
	}
	if err := ValidName(im.Name); err != nil || im.ID == "" || strings.ContainsAny(im.ID, "/\x00") || im.ID == "." || im.ID == ".." {
		return fail(MigrateConflict, "the record's id or name is not valid (imagefs fsck the store)")
	}
	switch im.Status {
	case StatusSaving, StatusUploading, StatusImporting:
		return fail(MigrateSaving, "an upload (or a stage or import) was in progress when the store was last unmounted: not migrated; upload the image again")
	case StatusQueued, StatusKilled:
		if m.srcData[im.ID] {
			return fail(MigrateNeedsRepair, "a data file of this %s image is in the store (a seal that did not commit): run imagefs fsck --repair on the store first", im.Status)
		}
	case StatusActive, StatusDeactivated:
		if im.Checksum == "" || im.OSHashValue == "" || im.Size < 0 {
			return fail(MigrateDataError, "%s image without checksum, os_hash_value or size: its data cannot be verified", im.Status)
		}
	default:
		return fail(MigrateConflict, "unknown status %q (imagefs fsck the store)", im.Status)
	}

	// Already there? (Renumbered by an earlier run: the same record but
	// for its inode base.)
	if p, ok := m.dstImg[im.ID]; ok {
		same := migrateJSONEqual(p.Value, rec.raw)
		var d Image
		if !same && json.Unmarshal(p.Value, &d) == nil && d.InoBase != im.InoBase {
			if r2, err := renumbered(rec, d.InoBase); err == nil && migrateJSONEqual(p.Value, r2.raw) {
				same = true
				it.InoFrom, it.InoTo = im.InoBase, d.InoBase
			}
		}
		if !same {
			return fail(MigrateConflict, "the destination has a different record for this id (changed since an earlier migration?): left as it is")
		}
		if n, ok := m.dstName[im.Name]; ok && string(n.Value) != im.ID {
			return fail(MigrateConflict, "the destination's name %q is held by image %s", im.Name, n.Value)
		}
		if im.Status.Sealed() {
			if _, err := m.data.Blocks(im.ID); errors.Is(err, ErrNotFound) {
				n, msg, err := m.copyData(im)
				if err != nil || msg != "" {
					return it, m.noteData(&it, msg, err)
				}
				it.Bytes = n
			} else if err != nil {
				return it, fmt.Errorf("destination data of %s: %w", im.ID, err)
			}
		}
		if _, ok := m.dstName[im.Name]; !ok && !m.opts.DryRun {
			// The record without its name (changed by hand?): claim it.
			if err := m.commit(rec, false); err != nil {
				return it, m.noteCommit(&it, err)
			}
		}
		it.Outcome = MigrateSkipped
		return it, nil
	}
	if n, ok := m.dstName[im.Name]; ok && string(n.Value) != im.ID {
		return fail(MigrateConflict, "the name is held in the destination by image %s: rename one of them (in the store, or on the shared mount) and run again", n.Value)
	}
	if base, ok := m.newBase[im.ID]; ok {
		other := m.dstIno[im.InoBase]
		r2, err := renumbered(rec, base)
		if err != nil {
			return it, err
		}
		it.InoFrom, it.InoTo = im.InoBase, base
		if other != "" {
			it.Detail = fmt.Sprintf("renumbered: inode base %d is image %s's in the catalog (every store numbers its images from 1); this image's inode numbers are now %d|slot", im.InoBase, other, base)
		} else {
			it.Detail = fmt.Sprintf("renumbered: the catalog handed inode base %d out before (to an image deleted since, or being created); this image's inode numbers are now %d|slot", im.InoBase, base)
		}
		rec, im = r2, r2.im
	}
	if other, ok := m.dstIno[im.InoBase]; ok && other != im.ID {
		return fail(MigrateConflict, "inode base %d is used in the destination by image %s (it was taken meanwhile: run again)", im.InoBase, other)
	}

	if im.Status.Sealed() {
		n, msg, err := m.copyData(im)
		if err != nil || msg != "" {
			return it, m.noteData(&it, msg, err)
		}
		it.Bytes = n
	}
	if m.opts.DryRun {
		it.Outcome = MigrateDone
		if it.InoTo != 0 {
			m.r.Renumbered++
		}
		return it, nil
	}
	if err := m.commit(rec, true); err != nil {
		if err := m.noteCommit(&it, err); err != nil {
			return it, err // the run stops; a re-run completes the image
		}
		if im.Status.Sealed() {
			// Not migrated (a conflict: someone else wrote this id or
			// name meanwhile; too large): the data file copied is ours
			// to remove unless a record of the id exists.
			if p, gerr := m.dst.Get(m.ctx, prefixImage+im.ID); gerr == nil && p.ModRev == 0 {
				if rerr := m.data.Remove(im.ID); rerr != nil {
					return it, fmt.Errorf("destination data of %s: %w", im.ID, rerr)
				}
			}
			it.Bytes = 0
		}
		return it, nil
	}
	m.dstIno[im.InoBase] = im.ID
	it.Outcome = MigrateDone
	if it.InoTo != 0 {
		m.r.Renumbered++
	}
	return it, nil
}

// noteData records a data problem (msg) in it, or returns err (which
// stops the run).
func (m *migration) noteData(it *MigrateItem, msg string, err error) error {
	if err != nil {
		return err
	}
	it.Outcome, it.Detail = MigrateDataError, msg
	return nil
}

// noteCommit records in it why the record's commit failed, or returns
// the error that stops the run.
func (m *migration) noteCommit(it *MigrateItem, err error) error {
	switch {
	case errors.Is(err, kv.ErrConflict):
		it.Outcome, it.Detail = MigrateConflict, "the destination's record or name changed during the migration (another host?): run again to see what holds it"
		return nil
	case errors.Is(err, kv.ErrTooLarge):
		it.Outcome, it.Detail = MigrateTooLarge, fmt.Sprintf("the record is too large for the shared catalog: %v (remove properties in the store, then run again)", err)
		return nil
	}
	return m.dstErr(err)
}

// commit writes rec's record and name into dst in one transaction. With
// record, img/<id> must be absent and is written; name/<name> must be
// absent (or be this id's at the ModRev read) and is written.
func (m *migration) commit(rec migrateRecord, record bool) error {
	im := rec.im
	b := &kv.Batch{Room: kv.Grows}
	if record {
		b.Conds = append(b.Conds, kv.Cond{Key: prefixImage + im.ID})
		b.Ops = append(b.Ops, kv.Op{Kind: kv.Put, Key: prefixImage + im.ID, Value: rec.raw})
	}
	b.Conds = append(b.Conds, kv.Cond{Key: prefixName + im.Name, ModRev: m.dstName[im.Name].ModRev})
	b.Ops = append(b.Ops, kv.Op{Kind: kv.Put, Key: prefixName + im.Name, Value: []byte(im.ID)})
	_, err := m.dst.Commit(m.ctx, b)
	return err
}

// copyData copies the sealed data of im from the source into the
// destination's data backend, verified on the way: it returns the bytes
// copied, or a message saying why the data is refused (nothing is left
// in the destination then), or an error that stops the run.
func (m *migration) copyData(im *Image) (int64, string, error) {
	f, err := m.s.data.Open(im.ID, ExpectOf(im))
	if errors.Is(err, ErrNotFound) {
		return 0, "the data file is missing in the store: restore it from a backup (or delete the image), then run again", nil
	}
	if err != nil {
		return 0, fmt.Sprintf("the data file cannot be opened: %v", err), nil
	}
	defer f.Close()
	if m.opts.DryRun {
		return m.verifyData(im, f)
	}
	dir := m.opts.TempDir
	if ld, ok := m.data.(*localData); ok {
		dir = ld.dir // Put is then a rename within one filesystem
	} else if dir == "" {
		dir = os.TempDir()
	}
	// Not ".vhd": the data backend's List must not take it for data.
	tmp := filepath.Join(dir, im.ID+".vhd.migrating")
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, modeFile)
	if err != nil {
		return 0, "", fmt.Errorf("temporary data file: %w", err)
	}
	put := false
	defer func() {
		if !put {
			out.Close()
			os.Remove(tmp)
		}
	}()
	w := &migrateWriter{f: out}
	var readErr error
	p := newHashPipe()
	err = p.readFrom(io.TeeReader(&migrateCtxReader{ctx: m.ctx, r: migrateReadErr{r: f, err: &readErr}}, w))
	if err != nil {
		p.stop()
		switch {
		case m.ctx.Err() != nil:
			return 0, "", m.ctx.Err()
		case readErr != nil:
			return 0, fmt.Sprintf("the data file cannot be read: %v", readErr), nil
		}
		return 0, "", fmt.Errorf("temporary data file: %w", err)
	}
	n := p.n
	if msg := migrateMismatch(im, p); msg != "" {
		return 0, msg, nil
	}
	if err := w.finish(n); err != nil {
		return 0, "", fmt.Errorf("temporary data file: %w", err)
	}
	if err := out.Sync(); err != nil {
		return 0, "", fmt.Errorf("temporary data file: %w", err)
	}
	if err := out.Close(); err != nil {
		return 0, "", fmt.Errorf("temporary data file: %w", err)
	}
	put = true
	if err := m.data.Put(im.ID, tmp); err != nil {
		os.Remove(tmp)
		return 0, "", fmt.Errorf("destination data of %s: %w", im.ID, err)
	}
	return n, "", nil
}

// verifyData hashes the source's data f of im (a dry run).
func (m *migration) verifyData(im *Image, f *os.File) (int64, string, error) {
	p := newHashPipe()
	if err := p.readFrom(&migrateCtxReader{ctx: m.ctx, r: f}); err != nil {
		p.stop()
		if m.ctx.Err() != nil {
			return 0, "", m.ctx.Err()
		}
		return 0, fmt.Sprintf("the data file cannot be read: %v", err), nil
	}
	n := p.n
	if msg := migrateMismatch(im, p); msg != "" {
		return 0, msg, nil
	}
	return n, "", nil
}

// migrateMismatch finishes p and says how the data it hashed differs from
// im's record ("" when it does not).
func migrateMismatch(im *Image, p *hashPipe) string {
	md5hex, shahex := p.finish()
	switch {
	case p.n != im.Size:
		return fmt.Sprintf("the data file has %d bytes, the record says %d: not migrated (imagefs fsck --verify-data the store)", p.n, im.Size)
	case md5hex != im.Checksum || shahex != im.OSHashValue:
		return fmt.Sprintf("the data hashes to md5 %s, the record says %s (or its SHA-512 differs): not migrated (bit rot or tampering in the store; imagefs fsck --verify-data)", md5hex, im.Checksum)
	}
	return ""
}

// migrateWriter writes a stream to f, leaving a hole for each chunk that
// is all zeros (the source's holes stay holes).
type migrateWriter struct {
	f   *os.File
	off int64
}

func (w *migrateWriter) Write(b []byte) (int, error) {
	if !migrateAllZero(b) {
		if _, err := w.f.WriteAt(b, w.off); err != nil {
			return 0, err
		}
	}
	w.off += int64(len(b))
	return len(b), nil
}

// finish sets the file's size to n (a trailing hole).
func (w *migrateWriter) finish(n int64) error { return w.f.Truncate(n) }

func migrateAllZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.NativeEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 })
}

// migrateCtxReader fails with ctx's error once ctx ends.
type migrateCtxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *migrateCtxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// migrateReadErr keeps the source's read error apart from the
// destination's write error.
type migrateReadErr struct {
	r   io.Reader
	err *error
}

func (t migrateReadErr) Read(b []byte) (int, error) {
	n, err := t.r.Read(b)
	if err != nil && err != io.EOF {
		*t.err = err
	}
	return n, err
}

// migrateJSONEqual reports whether a and b are the same JSON value.
func migrateJSONEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
