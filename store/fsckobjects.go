package store

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// DataObjects is implemented by a DataBackend that keeps each sealed
// image as a manifest object naming segment objects in a remote store
// (store/swiftdata: OpenStack Swift), so that Check can check the
// records against the objects. The local backend does not implement it.
type DataObjects interface {
	// ListObjects lists the manifests and the segments. Errors wrap
	// ErrDataStore.
	ListObjects() (*ObjectListing, error)
	// Manifest reads the manifest of image id now. Errors wrap
	// ErrNotFound when id has none, ErrDataStore when the store failed.
	Manifest(id string) (*ManifestInfo, error)
	// RemoveManifest deletes the manifest of id now (its segments stay);
	// none is no error.
	RemoveManifest(id string) error
	// RemoveSegments deletes the segments of one upload (its
	// UploadObjects.Prefix) now.
	RemoveSegments(prefix string) error
	// ReadData streams the data of id from the store (not from a local
	// cache), each segment read on its own. Errors (of the call or of a
	// Read) wrap ErrNotFound when the manifest or one of its segments is
	// missing.
	ReadData(id string) (io.ReadCloser, error)
}

// ObjectListing is what a DataObjects store holds.
type ObjectListing struct {
	// Manifests are the ids that have a manifest, with its last change.
	Manifests map[string]time.Time
	// Uploads are the segments grouped by the upload that sent them,
	// sorted by Prefix.
	Uploads []UploadObjects
}

// UploadObjects are the segments one upload of image ID sent, named
// Prefix/NNNNNNNN (Prefix is ID/UPLOAD).
type UploadObjects struct {
	ID, Prefix string
	// Host is the host that sent them ("" when their names do not say:
	// an older version's).
	Host     string
	Segments []SegmentObject
}

// newest returns the last change of u's segments.
func (u *UploadObjects) newest() time.Time {
	var t time.Time
	for _, s := range u.Segments {
		if s.Modified.After(t) {
			t = s.Modified
		}
	}
	return t
}

// bytes returns the size of u's segments.
func (u *UploadObjects) bytes() int64 {
	var n int64
	for _, s := range u.Segments {
		n += s.Size
	}
	return n
}

// SegmentObject is one segment: its name in the segments' container, its
// size in bytes, its MD5 (lowercase hex, as the store has it; "" unknown)
// and its last change (zero when unknown).
type SegmentObject struct {
	Name     string
	Size     int64
	MD5      string
	Modified time.Time
}

// ManifestInfo is what a manifest says.
type ManifestInfo struct {
	// Size is the bytes of the image's data: the sum of its segments'
	// sizes (a plain object: its own size).
	Size     int64
	Modified time.Time
	// DeletedAt is when a host deleted the image (zero: not deleted);
	// its objects are removed DeleteDelay after it by that host.
	DeletedAt time.Time
	DeletedBy string
	// Segments are the segments it names, in order (nil: a plain object,
	// holding the data itself).
	Segments []SegmentObject
}

// uploadOf returns the upload prefix of a segment's name (its name less
// the last element).
func uploadOf(name string) string {
	if i := strings.LastIndexByte(name, '/'); i > 0 {
		return name[:i]
	}
	return name
}

// ProblemOrphanSegments: segments that no manifest names and no upload in
// progress can use (repair: removed). Data stores of objects only.
const ProblemOrphanSegments = "orphan-segments"

func init() { repairable[ProblemOrphanSegments] = true }

// DefaultDeleteDelay is CheckOptions.DeleteDelay's default: a data store
// of objects removes a deleted image's objects that long after the delete
// (store/swiftdata's default too).
const DefaultDeleteDelay = 10 * time.Minute

// objectsCheck is one run of checkObjects.
type objectsCheck struct {
	k       *checker
	do      DataObjects
	ls      *ObjectListing
	listed  map[string]SegmentObject   // segments by name
	uploads map[string][]UploadObjects // by image id
	tombs   map[string]bool
	hosts   map[string]bool // live hosts (host/<id> keys); nil: unknown (all taken as live)
	where   string
}

// checkObjects checks the records against a data store of objects (a
// shared catalog's Swift container), in place of checkDataFiles and
// checkDataFileModes:
//
//   - a sealed image: its manifest names segments that are all listed
//     with the size and MD5 it records (missing-data, checksum-mismatch),
//     and its size is the record's (size-mismatch); the segments of its
//     other uploads are orphans (a sealed image takes no upload). Without
//     its manifest (missing-data, from checkRecords) its segments are
//     left alone;
//   - an image that is not sealed: a manifest is an orphan unless its
//     upload/<id> key is live (another host's seal in flight); segments
//     are orphans when the host that sent them (named in their upload's
//     prefix) is gone (no host/<host> key); an upload of an older
//     version, which names no host, only once its newest segment is
//     older than OrphanGrace and no upload/<id> key is live;
//   - no record: a manifest marked deleted is left to its delete until
//     DeleteDelay after the mark (its segments too), then its objects are
//     deleted-data (repair: removed now); a tombstone without a mark is
//     deleted-data (repair: Remove, which marks it and removes the
//     objects after the delay); otherwise the manifest is orphan-data
//     and the segments orphan-segments (repair: removed).
//
// Each problem is confirmed against the catalog (the record, the
// tombstone, the upload key) and the store (the manifest) as they are
// now before it is reported or repaired.
func (k *checker) checkObjects(do DataObjects) error {
	ls, err := do.ListObjects()
	if err != nil {
		return err
	}
	tombs, err := k.s.cat.loadTombstones()
	if err != nil {
		return err
	}
	c := &objectsCheck{k: k, do: do, ls: ls, listed: map[string]SegmentObject{},
		uploads: map[string][]UploadObjects{}, tombs: tombs, hosts: k.liveHosts(), where: k.dataWhere()}
	ids := map[string]bool{}
	for id := range ls.Manifests {
		ids[id] = true
	}
	for _, u := range ls.Uploads {
		for _, s := range u.Segments {
			c.listed[s.Name] = s
		}
		c.uploads[u.ID] = append(c.uploads[u.ID], u)
		ids[u.ID] = true
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if err := c.image(id); err != nil {
			return err
		}
	}
	if k.opts.Repair {
		return k.dropTombstonesShared(tombs)
	}
	return nil
}

// image checks the objects of image id.
func (c *objectsCheck) image(id string) error {
	k := c.k
	var mi *ManifestInfo
	if _, ok := c.ls.Manifests[id]; ok {
		var err error
		mi, err = c.do.Manifest(id)
		switch {
		case errors.Is(err, ErrNotFound):
			delete(k.hasData, id) // gone since the listing
		case err != nil:
			k.add(ProblemVerifyReadFail, id, err.Error(), false)
			return nil
		}
	}
	im := k.get(id)
	switch {
	case im != nil && im.Status.Sealed():
		c.sealed(im, mi)
	case im != nil:
		c.unsealed(im, mi)
	default:
		c.noRecord(id, mi)
	}
	return nil
}

// sealed checks a sealed image's manifest and its other uploads.
func (c *objectsCheck) sealed(im *Image, mi *ManifestInfo) {
	k, id := c.k, im.ID
	if mi == nil {
		// Its object is missing (checkRecords reports it): its segments
		// are left to the operator, who may write the manifest again.
		return
	}
	if mi.Size != im.Size {
		if cur, ok := k.current(id); ok && cur != nil && cur.Status.Sealed() && cur.Size == im.Size {
			k.add(ProblemSizeMismatch, id, fmt.Sprintf("its object in %s is %d bytes, record says %d", c.where, mi.Size, im.Size), false)
		}
	}
	named := map[string]bool{}
	var missing []string
	for _, s := range mi.Segments {
		named[uploadOf(s.Name)] = true
		l, ok := c.listed[s.Name]
		switch {
		case !ok:
			missing = append(missing, s.Name)
		case l.Size != s.Size:
			k.add(ProblemSizeMismatch, id, fmt.Sprintf("segment %s is %d bytes, its manifest says %d", s.Name, l.Size, s.Size), false)
		case s.MD5 != "" && l.MD5 != "" && !strings.EqualFold(s.MD5, l.MD5):
			k.add(ProblemChecksum, id, fmt.Sprintf("segment %s has md5 %s, its manifest says %s (replaced or damaged)", s.Name, l.MD5, s.MD5), false)
		}
	}
	if len(missing) > 0 {
		if _, err := c.do.Manifest(id); err == nil { // not deleted meanwhile
			k.add(ProblemMissingData, id, fmt.Sprintf("%d of the %d segments its manifest names are missing from %s (first %s)", len(missing), len(mi.Segments), c.where, missing[0]), false)
		}
	}
	for _, u := range c.uploads[id] {
		if named[u.Prefix] {
			continue
		}
		// A sealed image takes no upload: these are an earlier upload's
		// (killed, or cut off) or one abandoned in flight.
		c.orphanUpload(u, func() bool {
			cur, ok := k.current(id)
			return ok && cur != nil && cur.Status.Sealed()
		})
	}
}

// unsealed checks the objects of an image that is not sealed: a manifest
// of a seal that did not commit, the segments of uploads.
func (c *objectsCheck) unsealed(im *Image, mi *ManifestInfo) {
	k, id := c.k, im.ID
	if mi != nil {
		still := func() bool {
			if k.uploadLive(id) {
				return false // another host's seal in flight
			}
			cur, ok := k.current(id)
			return ok && cur != nil && !cur.Status.Sealed()
		}
		if !still() {
			return // its uploads are that seal's
		}
		repaired := false
		if k.opts.Repair {
			repaired = c.removeManifest(id, still)
		}
		k.add(ProblemOrphanData, id, fmt.Sprintf("object in %s of a %s image (a seal that did not commit, its host gone)", c.where, im.Status), repaired)
	}
	for _, u := range c.uploads[id] {
		if !c.uploadGone(u) {
			continue
		}
		c.orphanUpload(u, func() bool {
			if u.Host == "" && k.uploadLive(id) {
				return false
			}
			cur, ok := k.current(id)
			return ok && (cur == nil || !cur.Status.Sealed())
		})
	}
}

// uploadGone reports whether the upload that sent u can no longer be in
// progress: its host is gone (no host/<id> key: no daemon serves it; this
// host's own key goes with its daemon's lease, since Check takes no
// claim), or (an upload that names no host) its newest segment is older
// than OrphanGrace.
func (c *objectsCheck) uploadGone(u UploadObjects) bool {
	if u.Host != "" {
		return c.hosts != nil && !c.hosts[u.Host]
	}
	return c.k.s.opts.Now().Sub(u.newest()) >= c.k.opts.OrphanGrace
}

// noRecord checks the objects of an image that has no record.
func (c *objectsCheck) noRecord(id string, mi *ManifestInfo) {
	k := c.k
	if k.s.recordNow(id) {
		return // created by another host since the load
	}
	if mi != nil && !mi.DeletedAt.IsZero() {
		due := mi.DeletedAt.Add(k.opts.DeleteDelay)
		if k.s.opts.Now().Before(due) {
			return // in its delayed-delete window: its host removes it
		}
		repaired := k.opts.Repair && c.removeAll(id)
		k.add(ProblemDeletedData, id, fmt.Sprintf("objects in %s of an image deleted at %s by %s, still there past the delete delay %v (its host did not remove them)",
			c.where, mi.DeletedAt.UTC().Format(time.RFC3339), mi.DeletedBy, k.opts.DeleteDelay.Truncate(time.Millisecond)), repaired)
		return
	}
	if mi != nil && (c.tombs[id] || c.tombstoneNow(id)) {
		// The delete committed and its host stopped before it marked the
		// objects: marked now, removed after the delay.
		repaired := k.opts.Repair && k.s.data.Remove(id) == nil
		k.add(ProblemDeletedData, id, fmt.Sprintf("objects in %s of a deleted image (its removal was interrupted)", c.where), repaired)
		return
	}
	gone := func() bool { return !k.s.recordNow(id) }
	if mi != nil {
		repaired := k.opts.Repair && c.removeManifest(id, func() bool {
			if !gone() {
				return false
			}
			cur, err := c.do.Manifest(id)
			return err == nil && cur.DeletedAt.IsZero()
		})
		k.add(ProblemOrphanData, id, fmt.Sprintf("object in %s of no image", c.where), repaired)
	}
	for _, u := range c.uploads[id] {
		c.orphanUpload(u, gone)
	}
}

// orphanUpload reports u's segments as orphans (repair: removed) when
// still() confirms it.
func (c *objectsCheck) orphanUpload(u UploadObjects, still func() bool) {
	k := c.k
	if !still() {
		return
	}
	repaired := false
	if k.opts.Repair {
		repaired = c.do.RemoveSegments(u.Prefix) == nil
	}
	by := "an upload that names no host"
	if u.Host != "" {
		by = "host " + u.Host
	}
	k.add(ProblemOrphanSegments, u.ID, fmt.Sprintf("%d segments (%d bytes) %s/ in %s sent by %s, named by no manifest and of no upload in progress",
		len(u.Segments), u.bytes(), u.Prefix, c.where, by), repaired)
}

// removeManifest removes id's manifest if still() holds.
func (c *objectsCheck) removeManifest(id string, still func() bool) bool {
	if !still() {
		return false
	}
	if c.do.RemoveManifest(id) != nil {
		return false
	}
	delete(c.k.hasData, id)
	return true
}

// removeAll removes id's manifest and every segment of it (an image
// whose delete is done).
func (c *objectsCheck) removeAll(id string) bool {
	if c.k.s.recordNow(id) {
		return false
	}
	ok := c.removeManifest(id, func() bool { return true })
	for _, u := range c.uploads[id] {
		if c.do.RemoveSegments(u.Prefix) != nil {
			ok = false
		}
	}
	return ok
}

// tombstoneNow reports whether image id's tombstone is in the catalog
// now (unreadable: true, as the safe answer).
func (c *objectsCheck) tombstoneNow(id string) bool {
	ctx, cancel := c.k.s.cat.ctx()
	defer cancel()
	p, err := c.k.s.cat.kv.Get(ctx, prefixTombstone+id)
	return err != nil || p.ModRev != 0
}

// liveHosts returns the hosts with a host/<id> key (a daemon serving
// them), or nil when the catalog cannot say.
func (k *checker) liveHosts() map[string]bool {
	if !k.shared {
		return nil
	}
	ctx, cancel := k.s.cat.ctx()
	defer cancel()
	hosts := map[string]bool{}
	end := prefixHost[:len(prefixHost)-1] + string(rune(prefixHost[len(prefixHost)-1]+1))
	if _, err := k.s.cat.kv.Scan(ctx, prefixHost, end, 0, func(p kv.Pair) error {
		hosts[p.Key[len(prefixHost):]] = true
		return nil
	}); err != nil {
		return nil
	}
	return hosts
}

// dataWhere names the data store in problems.
func (k *checker) dataWhere() string {
	if di, ok := k.s.data.(DataIdentity); ok {
		return di.DataWhere()
	}
	return "the data store"
}

// readSealed opens the sealed data of im for --verify-data: from a data
// store of objects, streamed from it (never a cached copy); else the
// backend's own Open.
func (s *Store) readSealed(im *Image) (io.ReadCloser, error) {
	if do, ok := s.data.(DataObjects); ok {
		return do.ReadData(im.ID)
	}
	return s.data.Open(im.ID, ExpectOf(im))
}
