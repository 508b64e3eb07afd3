package store

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Kinds of problem Check reports.
const (
	ProblemInterrupted    = "interrupted-upload" // status saving with no writer (repair: killed)
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
	ProblemReserve        = "reserve-missing"    // STORE/catalog/imagefs-reserve (1 MiB kept for deletes on a full disk) is missing or short (repair: made again, once the disk has 9 MiB free)
)

// repairable are the kinds of problem Check with Repair fixes (save the
// two collisions it reports as not repairable: a name or an inode range
// used by two images).
var repairable = map[string]bool{
	ProblemInterrupted: true, ProblemStaging: true, ProblemUncommitted: true,
	ProblemOrphanData: true, ProblemDeletedData: true, ProblemDataMode: true,
	ProblemStoreMode: true, ProblemNameIndex: true, ProblemStaleHashes: true,
	ProblemKillReason: true, ProblemInode: true, ProblemPropertyIndex: true,
	ProblemReserve: true,
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
	// quick skips the per-file checks (for the repair at every Open).
	quick bool
}

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
// data files. Errors are for a store that cannot be read at all.
func Check(dir string, opts CheckOptions) (*CheckReport, error) {
	if _, err := os.Stat(filepath.Join(dir, "catalog")); err != nil {
		return nil, fmt.Errorf("%s is not an imagefs store: %w", dir, err)
	}
	s, err := Open(dir, Options{checkOnly: true})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.check(opts)
}

// check runs the checks on a loaded store that serves no requests yet.
func (s *Store) check(opts CheckOptions) (*CheckReport, error) {
	r := &CheckReport{Images: len(s.images)}
	add := func(kind, id, detail string, repaired bool) {
		r.Problems = append(r.Problems, Problem{Kind: kind, ID: id, Detail: detail, Repairable: repairable[kind], Repaired: repaired})
	}
	// manual adds a problem of a repairable kind that Repair cannot fix.
	manual := func(kind, id, detail string) {
		r.Problems = append(r.Problems, Problem{Kind: kind, ID: id, Detail: detail})
	}
	now := s.opts.Now().UTC().Truncate(time.Second)

	dataIDs, err := s.data.List()
	if err != nil {
		return nil, fmt.Errorf("list data files: %w", err)
	}
	hasData := map[string]bool{}
	for _, id := range dataIDs {
		hasData[id] = true
	}

	// Records.
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range s.images {
			if !yield(id) {
				return
			}
		}
	})
	var sealed []*Image
	for _, id := range ids {
		im := s.images[id]
		switch im.Status {
		case StatusQueued, StatusKilled, StatusSaving, StatusActive, StatusDeactivated:
		default:
			add(ProblemRecord, id, fmt.Sprintf("unknown status %q", im.Status), false)
			continue
		}
		if hasData[id] && !im.Status.Sealed() {
			// A crash between moving the data into place and committing
			// the record: finish the seal from the data itself.
			err := opts.Repair && s.completeSeal(im) == nil
			add(ProblemUncommitted, id, fmt.Sprintf("sealed data present but status is %s", im.Status), err)
			if err {
				sealed = append(sealed, s.images[id])
			}
			continue
		}
		if im.Status == StatusSaving {
			repaired := false
			if opts.Repair {
				c := im.clone()
				c.Status = StatusKilled
				setExtra(c, KeyKillReason, "upload interrupted: imagefs stopped before the writer closed the file")
				c.UpdatedAt = now
				repaired = s.publishSmall(c, im.Name) == nil
			}
			add(ProblemInterrupted, id, "upload was in flight when imagefs stopped", repaired)
			continue
		}
		if !im.Status.Sealed() {
			if im.Checksum != "" || im.OSHashValue != "" || im.OSHashAlgo != "" || im.Size >= 0 || im.VirtualSize >= 0 {
				repaired := false
				if opts.Repair {
					c := im.clone()
					c.Checksum, c.OSHashAlgo, c.OSHashValue, c.Size, c.VirtualSize = "", "", "", -1, -1
					repaired = s.publishSmall(c, im.Name) == nil
				}
				add(ProblemStaleHashes, id, fmt.Sprintf("status %s but checksum %q, size %d: hashes of data it does not have", im.Status, im.Checksum, im.Size), repaired)
			}
			continue
		}
		if im.Checksum == "" || im.OSHashValue == "" || im.Size < 0 {
			add(ProblemRecord, id, fmt.Sprintf("%s image without checksum, os_hash_value or size: its data cannot be verified (upload it again as a new image)", im.Status), false)
		}
		if _, ok := im.Extra[KeyKillReason]; ok {
			repaired := false
			if opts.Repair {
				c := im.clone()
				deleteExtra(c, KeyKillReason)
				repaired = s.publishSmall(c, im.Name) == nil
			}
			add(ProblemKillReason, id, fmt.Sprintf("%s image has %s", im.Status, KeyKillReason), repaired)
			im = s.images[id]
		}
		if !hasData[id] {
			add(ProblemMissingData, id, "the data file is missing", false)
			continue
		}
		sealed = append(sealed, im)
	}
	r.Sealed = len(sealed)

	// Data files: of an image, of a deleted image (removed), or of no
	// record at all (kept in lost+found).
	tombs, err := s.cat.loadTombstones()
	if err != nil {
		return nil, err
	}
	for _, id := range dataIDs {
		switch _, ok := s.images[id]; {
		case ok:
		case tombs[id]:
			repaired := opts.Repair && s.data.Remove(id) == nil
			if repaired {
				delete(hasData, id)
			}
			add(ProblemDeletedData, id, "data file of a deleted image (its removal was interrupted)", repaired)
		default:
			add(ProblemOrphanData, id, "data file of no image", opts.Repair && s.moveToLostFound(id) == nil)
		}
	}
	if opts.Repair {
		// Tombstones whose data is gone, or (never written so) whose
		// image still has a record, have done their work.
		t := s.cat.begin().small()
		n := 0
		for id := range tombs {
			if !hasData[id] || s.images[id] != nil {
				t.deleteTombstone(id)
				n++
			}
		}
		if n > 0 {
			if err := t.commit(); err != nil {
				return nil, err
			}
		} else {
			t.b.Close()
		}
	}
	for _, im := range sealed {
		if opts.quick {
			break
		}
		f, err := s.data.Open(im.ID)
		if err != nil {
			add(ProblemMissingData, im.ID, err.Error(), false)
			continue
		}
		fi, err := f.Stat()
		if err == nil && fi.Size() != im.Size {
			add(ProblemSizeMismatch, im.ID, fmt.Sprintf("data file is %d bytes, record says %d", fi.Size(), im.Size), false)
		}
		if err == nil && fi.Mode().Perm()&0o222 != 0 {
			add(ProblemDataMode, im.ID, fmt.Sprintf("data file mode is %04o, want 0400", fi.Mode().Perm()), opts.Repair && f.Chmod(modeDataFile) == nil)
		}
		f.Close()
	}

	// Staging leftovers: nothing is uploading while the store is checked.
	if ents, err := os.ReadDir(s.staging); err == nil {
		for _, e := range ents {
			add(ProblemStaging, "", e.Name(), opts.Repair && os.Remove(filepath.Join(s.staging, e.Name())) == nil)
		}
	}

	// The reserve for deletes (every mount makes it when there is room).
	if !opts.quick {
		if fi, err := os.Stat(s.cat.reserve); err != nil || fi.Size() < reserveSize {
			repaired := false
			if opts.Repair {
				s.cat.refillReserve()
				fi, err := os.Stat(s.cat.reserve)
				repaired = err == nil && fi.Size() >= reserveSize
			}
			add(ProblemReserve, "", fmt.Sprintf("%s is missing or short: a delete on a full disk fails with ENOSPC (made again when the disk has %d MiB free)", s.cat.reserve, (reserveSize+catalogHeadroom)>>20), repaired)
		}
	}

	// Permissions: at Open only when STORE or one of its directories
	// lets others in (a private directory keeps its files private).
	if !opts.quick || looseStore(s.dir) {
		if what, ok := tighten(s.dir, opts.Repair); what != "" {
			add(ProblemStoreMode, "", what, opts.Repair && ok)
		}
	}

	if opts.quick {
		return r, nil
	}

	// What lost+found holds.
	if ents, err := os.ReadDir(filepath.Join(s.dir, "lost+found")); err == nil {
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
				r.LostFound++
				r.LostFoundBytes += fi.Size()
			}
		}
	}

	// Name index.
	names := map[string]string{}
	if err := s.cat.loadNames(func(name, id string) { names[name] = id }); err != nil {
		return nil, err
	}
	fix := s.cat.begin()
	bad := 0
	for name, id := range names {
		if im := s.images[id]; im == nil || im.Name != name {
			add(ProblemNameIndex, id, fmt.Sprintf("name %q points to an image that does not have it", name), opts.Repair)
			fix.deleteName(name)
			bad++
		}
	}
	byName := map[string]string{}
	for _, id := range ids {
		im := s.images[id]
		if other, dup := byName[im.Name]; dup {
			manual(ProblemNameIndex, id, fmt.Sprintf("name %q is also used by %s", im.Name, other))
			continue
		}
		byName[im.Name] = id
		if names[im.Name] != id {
			add(ProblemNameIndex, id, fmt.Sprintf("name %q missing from the name index", im.Name), opts.Repair)
			fix.putName(im.Name, id)
			bad++
		}
	}
	if opts.Repair && bad > 0 {
		if err := fix.commit(); err != nil {
			return nil, err
		}
	} else {
		fix.b.Close()
	}

	// Inode ranges: one per image, all below the next one handed out.
	byIno := map[uint64]string{}
	maxBase := uint64(0)
	for _, id := range ids {
		im := s.images[id]
		base := im.InoBase >> inoShift
		if other, dup := byIno[base]; dup {
			manual(ProblemInode, id, fmt.Sprintf("inode range %d is also used by %s", base, other))
		}
		byIno[base] = id
		maxBase = max(maxBase, base)
	}
	if len(ids) > 0 && s.nextIno <= maxBase {
		repaired := false
		if opts.Repair {
			t := s.cat.begin().small()
			t.putSeqIno(maxBase + 1)
			if repaired = t.commit() == nil; repaired {
				s.nextIno = maxBase + 1
			}
		}
		add(ProblemInode, "", fmt.Sprintf("the next inode range %d is already in use (highest %d)", s.nextIno, maxBase), repaired)
	}

	// Property index.
	if err := s.CheckIndex(); err != nil {
		add(ProblemPropertyIndex, "", err.Error(), opts.Repair && s.rebuildIndex() == nil)
	}

	if opts.VerifyData {
		s.verify(sealed, opts, add, r)
	}
	return r, nil
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
		f, err := s.data.Open(im.ID)
		if err != nil {
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
	f, err := s.data.Open(im.ID)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	facts, vsize, refusal, err := inspectVHD(f, fi.Size())
	if err != nil {
		return err
	}
	if refusal != "" {
		if err := s.moveToLostFound(im.ID); err != nil {
			return err
		}
		c := im.clone()
		c.Status = StatusKilled
		setExtra(c, KeyKillReason, refusal)
		return s.publishSmall(c, im.Name)
	}
	p := newHashPipe()
	if err := p.readFrom(f); err != nil {
		p.stop()
		return err
	}
	md5hex, shahex := p.finish()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.publishSmall(s.sealRecord(im, md5hex, shahex, fi.Size(), vsize, facts), im.Name)
}

// moveToLostFound moves the data file of id out of the data area into
// STORE/lost+found (local backend only), losing nothing; it is 0400
// there, whatever its mode was.
func (s *Store) moveToLostFound(id string) error {
	ld, ok := s.data.(*localData)
	if !ok {
		return fmt.Errorf("lost+found needs the local data backend")
	}
	dir := filepath.Join(s.dir, "lost+found")
	if err := os.MkdirAll(dir, modeDir); err != nil {
		return err
	}
	dst := filepath.Join(dir, id+".vhd")
	if err := os.Rename(ld.path(id), dst); err != nil {
		return err
	}
	return os.Chmod(dst, modeDataFile)
}
