package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/imagefs/imagefs/store/kv"
)

// The read side of a shared catalog (kv.Backend.Shared): the published
// state (images, byName, the property index) follows the catalog by
// list-then-watch. Open lists img/ (16 ranges read in parallel), upload/
// and seq/ino at one revision R, then one goroutine watches every key
// from R+1 and applies each batch of events under the store's locks, as a
// local commit is applied, then delivers the changes (OnChange: fs drops
// the kernel's caches of a record another host changed exactly as for a
// local change). When the watch ends (its revision was compacted, the
// backend gave up) the catalog is listed again at a new revision, the
// differences are applied as events, and the watch resumes from there.
//
// A backend that is not kv.Iterable (etcd) keeps no property index: the
// index is held in memory (memIndex), built from the records at Open and
// kept in step with every published change (noteChange).

// remoteState is the store's read-side state of a shared catalog.
type remoteState struct {
	// mem is the property index in memory when the backend is not
	// kv.Iterable, or nil. Replaced (rebuildIndex) holding commitMu for
	// writing; read holding commitMu or Store.mu.
	mem *memIndex
	// gone holds the ids whose delete this host published (its own, or a
	// remote one applied) and the watch has not reported yet: a put of
	// one of them that the watch reports late (an event older than the
	// delete) must not bring the image back. nil unless shared. Guarded
	// by Store.mu.
	gone map[string]struct{}
	// rev is the revision the published state is complete at (the load,
	// the last batch watched, the last relist). Guarded by Store.mu.
	rev int64
	// cancel stops the watch goroutine, which closes done as it ends;
	// nil when none runs. ctx is cancel's context; pending is the watch
	// catchUp opened, for the goroutine to go on with (nil: none).
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	pending <-chan kv.WatchBatch
	// fromSnapshot: Open's view came from the snapshot (caught up);
	// lists: how many times Open listed the catalog. For tests and logs.
	fromSnapshot bool
	lists        int
	// saved: Close wrote the snapshot (a second Close does not).
	saved bool
	// catalogID is meta/catalog-id as this host's view has it (read or
	// created at Open, then followed by the watch; "" when deleted, or
	// in Check, which neither reads nor writes snapshots). Guarded by
	// Store.mu.
	catalogID string
}

// relistRetry is how long the watch goroutine waits before it lists the
// catalog again after a failed list.
const relistRetry = time.Second

// listTries is how many times Open lists a shared catalog whose revision
// being listed is compacted meanwhile (etcd's auto-compaction keeps the
// last 10,000 revisions: a list of 100,000 records takes seconds, during
// which a busy catalog may pass that many) before it gives up.
const listTries = 3

// loadShared loads this host's view of a shared catalog and returns the
// revision it is complete at: it claims the host id (once), reads or
// creates the catalog id (catalogID), then starts from the snapshot a
// previous Close wrote (snapshot.go) when it belongs to this catalog (its
// identity and catalog id) and is not ahead of it, caught up by watching
// from its revision (catchUp); otherwise, or when that fails (the
// revision was compacted, the watch ended), it lists the catalog
// (listShared). Check (checkOnly) always lists, and neither reads nor
// creates the catalog id.
func (s *Store) loadShared() (int64, error) {
	var sn *snapshot
	if !s.opts.checkOnly {
		sn = s.openSnapshot()
	}
	claimRev, err := s.claimHost()
	if err != nil {
		return 0, err
	}
	if !s.opts.checkOnly {
		id, created, err := s.catalogID()
		if err != nil {
			return 0, err
		}
		s.remote.catalogID = id
		if sn != nil && sn.catalogID != id {
			why := "the catalog's id differs (the etcd cluster was recreated, or the namespace deleted and made again)"
			if created {
				why = "the catalog had no id yet (a new catalog: the etcd cluster was recreated, or the namespace deleted; or one made before catalog ids)"
			}
			s.log.Warn("catalog snapshot ignored: it is of an earlier catalog under this cluster id and namespace; listing the catalog",
				"path", s.snapshotPath(), "why", why, "snapshot_catalog_id", sn.catalogID, "catalog_id", id)
			sn = nil
		}
	}
	if sn != nil && sn.rev > claimRev {
		s.log.Warn("catalog snapshot ignored: its revision is ahead of the catalog's (a cluster restored from a backup?); listing the catalog",
			"path", s.snapshotPath(), "snapshot_rev", sn.rev, "catalog_rev", claimRev)
		sn = nil
	}
	if sn != nil {
		if err := s.checkHistory(sn); err != nil {
			s.log.Warn("catalog snapshot ignored: the catalog's history differs from the snapshot's (a cluster restored from a backup?); listing the catalog",
				"path", s.snapshotPath(), "snapshot_rev", sn.rev, "err", err)
			sn = nil
		}
	}
	if sn != nil {
		start := time.Now()
		rev, n, err := s.catchUp(sn, claimRev)
		if err == nil {
			s.remote.fromSnapshot = true
			s.log.Info("catalog loaded from this host's snapshot and caught up by watching",
				"images", len(s.images), "snapshot_rev", sn.rev, "rev", rev, "batches", n, "catch_up_ms", time.Since(start).Milliseconds())
			return rev, nil
		}
		s.log.Warn("catalog snapshot could not be caught up; listing the catalog", "snapshot_rev", sn.rev, "err", err)
		s.resetView()
	}
	return s.listShared()
}

// checkHistory checks that the catalog's history holds the snapshot's
// newest records (those of the highest ModRev M: one transaction's; 4 of
// them at most):
// img/<id> now has ModRev M (one Get each; the usual case), or, when it
// changed or went since, img/<id> as of revision M has ModRev M (one Scan
// of that key at M). A cluster restored from a backup older than the
// snapshot, and written to since, has other keys at those revisions, and
// the watch from the snapshot's revision cannot show what the restore
// undid (a record of the snapshot the catalog no longer has). nil for a
// snapshot without records. Errors: a mismatch, the catalog's
// (kv.ErrCompacted: M is no longer kept, so it cannot be checked).
func (s *Store) checkHistory(sn *snapshot) error {
	var newest []*Image
	for _, im := range sn.images {
		switch {
		case len(newest) == 0 || im.rev > newest[0].rev:
			newest = append(newest[:0], im)
		case im.rev == newest[0].rev:
			newest = append(newest, im)
		}
	}
	// One transaction's keys stand or fall together: a few are enough
	// (a migration's batch holds hundreds).
	for _, im := range newest[:min(len(newest), 4)] {
		if err := s.inHistory(prefixImage+im.ID, im.rev); err != nil {
			return err
		}
	}
	return nil
}

// inHistory checks that key was written at revision m (see checkHistory).
func (s *Store) inHistory(key string, m int64) error {
	ctx, cancel := s.cat.ctx()
	defer cancel()
	p, err := s.cat.kv.Get(ctx, key)
	switch {
	case err != nil:
		return catalogErr(err)
	case p.ModRev == m:
		return nil
	case p.ModRev != 0 && p.ModRev < m:
		return fmt.Errorf("%s has ModRev %d, older than the snapshot's %d", key, p.ModRev, m)
	}
	var got int64
	if _, err := s.cat.kv.Scan(ctx, key, key+"\x00", m, func(p kv.Pair) error {
		got = p.ModRev
		return nil
	}); err != nil {
		return catalogErr(err)
	}
	if got != m {
		return fmt.Errorf("%s at revision %d has ModRev %d (0: absent), the snapshot's %d", key, m, got, m)
	}
	return nil
}

// keyCatalogID: meta/catalog-id -> a random UUID (shared catalogs only),
// the identity of one catalog in its namespace: created by the first
// mount of a namespace that has none (a new catalog, or one made before
// catalog ids; fsck and migrate do not create it), never changed. A
// recreated etcd cluster (scripts/etcd.sh's cluster id repeats with the
// same member names and peer URLs) or a namespace deleted and made again
// has another one, so no host's snapshot of the earlier catalog is
// trusted.
const keyCatalogID = "meta/catalog-id"

// catalogID returns meta/catalog-id, creating it (a new random UUID,
// committed only if the key is still absent) when there is none; created
// reports that this call created it. One Get when it exists. Errors: the
// catalog's.
func (s *Store) catalogID() (id string, created bool, err error) {
	for try := 0; ; try++ {
		ctx, cancel := s.cat.ctx()
		p, err := s.cat.kv.Get(ctx, keyCatalogID)
		cancel()
		if err != nil {
			return "", false, catalogErr(err)
		}
		if p.ModRev != 0 && len(p.Value) != 0 {
			return string(p.Value), false, nil
		}
		id := uuid.NewString()
		t := s.cat.begin().small()
		t.cond(keyCatalogID, p.ModRev)
		t.b.Ops = append(t.b.Ops, kv.Op{Kind: kv.Put, Key: keyCatalogID, Value: []byte(id)})
		err = t.commit()
		if err == nil {
			s.log.Info("catalog id created", "catalog_id", id)
			return id, true, nil
		}
		if !errors.Is(err, errConflict) || try == 2 {
			return "", false, err
		}
		// Another host created it meanwhile: read it.
	}
}

// resetView empties the published state (a snapshot given up on) before
// a list.
func (s *Store) resetView() {
	s.images, s.byName = map[string]*Image{}, map[string]string{}
	s.uploadKeys, s.remote.mem = nil, nil
	s.nextIno, s.seqRev = 0, 0
}

// listShared lists the records, the upload keys and seq/ino at one
// revision; when that revision is compacted during the list it lists
// again at a new one, up to listTries times. Errors: the catalog's
// (ErrCatalog wrapping kv.ErrCompacted after the last try).
func (s *Store) listShared() (int64, error) {
	for try := 1; ; try++ {
		s.remote.lists++
		rev, list, err := s.listRecords()
		var ups map[string]uploadKey
		if err == nil {
			ups, err = s.cat.loadUploads(rev)
		}
		if err == nil {
			s.uploadKeys = ups
			s.remote.gone = map[string]struct{}{}
			s.remote.rev = rev
			if s.cat.it == nil {
				s.remote.mem = buildMemIndex(list) // in id order: not sorted again
			}
			return rev, nil
		}
		if !errors.Is(err, kv.ErrCompacted) || try == listTries {
			return 0, err
		}
		s.log.Warn("catalog compacted past the revision being listed; listing again at a new one",
			"rev", rev, "attempt", try, "err", err)
		s.resetView()
	}
}

// openSnapshot reads this host's snapshot and returns it when it belongs
// to this catalog (kv.Identified), else nil (logged, except when there
// is none). A backend that cannot name its catalog has no snapshot.
func (s *Store) openSnapshot() *snapshot {
	id := s.catalogIdentity()
	if id == "" {
		return nil
	}
	start := time.Now()
	sn, err := readSnapshot(s.snapshotPath())
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		s.log.Warn("catalog snapshot unreadable; listing the catalog", "err", err)
		return nil
	case sn.identity != id:
		s.log.Warn("catalog snapshot of another catalog ignored; listing the catalog",
			"path", s.snapshotPath(), "snapshot_of", sn.identity, "catalog", id)
		return nil
	}
	s.log.Info("catalog snapshot read", "path", s.snapshotPath(), "images", len(sn.images), "rev", sn.rev, "ms", time.Since(start).Milliseconds())
	return sn
}

// catalogIdentity names the shared catalog ("" when the backend cannot).
func (s *Store) catalogIdentity() string {
	if b, ok := s.cat.kv.(kv.Identified); ok {
		return b.Identity()
	}
	return ""
}

// catchUp publishes snapshot sn and applies the catalog's changes after
// its revision, watching from sn.rev+1 until the watch has passed rev
// (the revision of this Open's host claim, so every change committed
// before the Open is applied), within loadTimeout. The watch is kept for
// the watch goroutine (startRemote). It returns the revision reached and
// the batches applied. Errors: the watch's (kv.ErrCompacted: the
// snapshot's revision is gone), its end, the timeout; the caller then
// lists the catalog.
func (s *Store) catchUp(sn *snapshot, rev int64) (int64, int, error) {
	for _, im := range sn.images {
		s.images[im.ID] = im
		s.byName[im.Name] = im.ID
	}
	s.nextIno, s.seqRev = max(sn.nextIno, 1), sn.seqRev
	s.uploadKeys = sn.uploads
	s.remote.gone = map[string]struct{}{}
	s.remote.rev = sn.rev
	start := time.Now()
	if s.cat.it == nil {
		s.remote.mem = buildMemIndex(sn.images) // in id order (saveSnapshot)
	}
	s.log.Debug("catalog snapshot published", "index_ms", time.Since(start).Milliseconds())
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.cat.kv.Watch(ctx, "", sn.rev+1)
	timeout := time.NewTimer(loadTimeout)
	defer timeout.Stop()
	n := 0
	for s.remote.rev < rev {
		select {
		case wb, ok := <-ch:
			if !ok {
				cancel()
				return 0, n, errors.New("the watch ended")
			}
			if wb.Err != nil {
				cancel()
				return 0, n, wb.Err
			}
			s.applyWatched(wb)
			n++
		case <-timeout.C:
			cancel()
			return 0, n, fmt.Errorf("the watch did not reach revision %d within %v", rev, loadTimeout)
		}
	}
	s.remote.ctx, s.remote.cancel, s.remote.pending = ctx, cancel, ch
	return s.remote.rev, n, nil
}

// saveSnapshot writes this host's view of a shared catalog to
// STORE/catalog-snapshot (snapshot.go), for the next Open; called by
// Close once the watch goroutine has stopped. A failure is logged (the
// next Open lists the catalog).
func (s *Store) saveSnapshot() {
	if !s.cat.kv.Shared() || s.opts.checkOnly {
		return
	}
	id := s.catalogIdentity()
	if id == "" || s.remote.rev == 0 || s.remote.saved {
		return
	}
	s.remote.saved = true
	if err := s.catalogReplaced(); err != nil {
		// This host's view is of a catalog that is gone: no later
		// mount may start from it.
		os.Remove(s.snapshotPath())
		s.log.Warn("catalog snapshot not written: the catalog is not the one this host mounted; the next mount lists the catalog")
		return
	}
	start := time.Now()
	s.mu.Lock()
	if s.remote.catalogID == "" {
		// The catalog id was deleted (the namespace with it): a
		// snapshot could not be told from a later catalog's.
		s.mu.Unlock()
		os.Remove(s.snapshotPath())
		s.log.Warn("catalog snapshot not written: the catalog has no id (its namespace was deleted?); the next mount lists the catalog")
		return
	}
	s.pubMu.RLock()
	sn := &snapshot{identity: id, catalogID: s.remote.catalogID, rev: s.remote.rev, nextIno: s.nextIno, seqRev: s.seqRev,
		images: slices.Collect(maps.Values(s.images)), uploads: maps.Clone(s.uploadKeys)}
	s.pubMu.RUnlock()
	s.mu.Unlock()
	slices.SortFunc(sn.images, func(a, b *Image) int { return strings.Compare(a.ID, b.ID) })
	if err := writeSnapshot(s.snapshotPath(), sn); err != nil {
		s.log.Error("writing the catalog snapshot failed (the next mount lists the catalog)", "path", s.snapshotPath(), "err", err)
		os.Remove(s.snapshotPath())
		return
	}
	s.log.Info("catalog snapshot written", "path", s.snapshotPath(), "images", len(sn.images), "rev", sn.rev, "ms", time.Since(start).Milliseconds())
}

// notePublished keeps what derives from the published records in step
// with a change being published (old -> new, nil for none): the
// in-memory property index, and the ids whose delete the watch has yet
// to report. Must hold s.mu (and commitMu for writing).
func (s *Store) notePublished(old, new *Image) {
	if m := s.remote.mem; m != nil {
		m.apply(old, new)
	}
	if new == nil && old != nil && s.remote.gone != nil {
		s.remote.gone[old.ID] = struct{}{}
	}
}

// applyRemote applies changes of the catalog made elsewhere (the watch's
// events, or the current keys a conflicting commit reported, as events)
// to the published state, as a local commit would publish them, and
// notes them for delivery (the caller calls s.deliver once it holds no
// store lock). Events this host's state already has are skipped: a put
// of img/<id> whose ModRev is not above the published record's, a delete
// whose ModRev is not above it. A delete removes the image and abandons
// this host's uploads of it (its data is the deleting host's to remove;
// a copy of it on this host is evicted: DataCache). upload/<id> keys are tracked in uploadKeys, seq/ino in nextIno
// and seqRev. A delete converted from a conflict's Current (key absent)
// must carry the revision the database reported (Result.Rev), not 0.
// Must hold s.mu; takes commitMu (write) for the whole batch and pubMu.
func (s *Store) applyRemote(evs []kv.Event) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	for _, ev := range evs {
		s.applyEvent(ev)
	}
}

// applyEvent applies one event. Must hold s.mu and commitMu (write).
func (s *Store) applyEvent(ev kv.Event) {
	key, rev := ev.Pair.Key, ev.Pair.ModRev
	switch {
	case strings.HasPrefix(key, prefixImage):
		id := key[len(prefixImage):]
		if ev.Type == kv.EventDelete {
			s.dropRemote(id, rev)
			return
		}
		im := newRecord()
		if err := json.Unmarshal(ev.Pair.Value, im); err != nil || im.ID != id {
			s.log.Error("catalog: a record another host wrote cannot be read; ignored", "key", key, "rev", rev, "err", err)
			return
		}
		im.rev = rev
		s.putRemote(im)
	case strings.HasPrefix(key, prefixUpload):
		id := key[len(prefixUpload):]
		if s.uploadKeys == nil {
			s.uploadKeys = map[string]uploadKey{}
		}
		k := s.uploadKeys[id]
		if rev <= k.rev {
			return // known already (this host's own commit)
		}
		if ev.Type == kv.EventDelete {
			// Kept with rev 0 (absent) and its host while the record is
			// saving, for uploadKeyGone's kill (shared.go); forgotten
			// otherwise (a seal or a kill deleted it).
			if im := s.images[id]; im != nil && im.Status == StatusSaving {
				s.uploadKeys[id] = uploadKey{host: k.host}
			} else {
				delete(s.uploadKeys, id)
			}
			return
		}
		s.uploadKeys[id] = uploadKey{rev: rev, host: uploadHost(ev.Pair.Value)}
	case key == keySeqIno:
		if ev.Type == kv.EventPut && len(ev.Pair.Value) == 8 && rev > s.seqRev {
			s.nextIno, s.seqRev = binary.BigEndian.Uint64(ev.Pair.Value), rev
		}
	case key == keyCatalogID:
		// The namespace deleted (and made again): the snapshot Close
		// writes must carry the catalog's id now, or none.
		if ev.Type == kv.EventDelete {
			s.remote.catalogID = ""
		} else {
			s.remote.catalogID = string(ev.Pair.Value)
		}
	}
}

// putRemote publishes im, a record another host committed, unless the
// published one is as recent or the image was deleted since. Must hold
// s.mu and commitMu (write).
func (s *Store) putRemote(im *Image) {
	cur := s.images[im.ID]
	if cur != nil && im.rev <= cur.rev {
		return
	}
	if _, gone := s.remote.gone[im.ID]; cur == nil && gone {
		return
	}
	s.pubMu.Lock()
	s.images[im.ID] = im
	if cur != nil && cur.Name != im.Name && s.byName[cur.Name] == im.ID {
		delete(s.byName, cur.Name)
	}
	// A record older than another's claim of the same name (this host
	// published the later one first: its own commit, or a conflict's
	// current state) does not take the name: the later one holds it.
	if o := s.images[s.byName[im.Name]]; o == nil || o.ID == im.ID || o.Name != im.Name || o.rev < im.rev {
		s.byName[im.Name] = im.ID
	}
	s.pubMu.Unlock()
	s.noteChange(cur, im)
	s.noteRemoteKill(cur, im)
}

// dropRemote removes image id, deleted by another host at revision rev,
// unless the published record is as recent; this host's uploads of it
// are abandoned and its copy of the data evicted (DataCache). Must hold
// s.mu and commitMu (write).
func (s *Store) dropRemote(id string, rev int64) {
	cur := s.images[id]
	if cur == nil || cur.rev >= rev {
		return
	}
	s.pubMu.Lock()
	delete(s.images, id)
	if s.byName[cur.Name] == id {
		delete(s.byName, cur.Name)
	}
	l := s.live[id]
	delete(s.live, id)
	s.pubMu.Unlock()
	delete(s.uploadKeys, id)
	s.noteChange(cur, nil)
	s.evictCopy(id) // this host's copy of its data (datacache.go)
	if l != nil {
		// Upload.mu ranks above Store.mu: abandon them without it, as
		// Store.Delete does after it unlocks.
		var uploads []*Upload
		if l.upload != nil {
			uploads = append(uploads, l.upload)
		}
		for _, u := range l.scratch {
			uploads = append(uploads, u)
		}
		go func() {
			for _, u := range uploads {
				u.abandon()
			}
		}()
	}
	s.log.Info("image deleted by another host", "id", id, "name", cur.Name)
}

// startRemote starts the watch goroutine from revision from (going on
// with the watch catchUp opened, when there is one).
func (s *Store) startRemote(from int64) {
	if s.remote.ctx == nil {
		s.remote.ctx, s.remote.cancel = context.WithCancel(context.Background())
	}
	s.remote.done = make(chan struct{})
	ch := s.remote.pending
	s.remote.pending = nil
	go s.follow(s.remote.ctx, from, ch)
}

// stopRemote stops the watch goroutine, if one runs, and waits for it
// (or drops the watch catchUp opened). Must not hold any store lock.
func (s *Store) stopRemote() {
	if s.remote.cancel == nil {
		return
	}
	s.remote.cancel()
	if s.remote.done != nil {
		<-s.remote.done
	}
	s.remote.ctx, s.remote.cancel, s.remote.done, s.remote.pending = nil, nil, nil, nil
}

// follow watches the catalog from revision from (on ch, when not nil: a
// watch from there already open) until ctx ends, listing it again
// whenever a watch ends; it stops once the catalog is found replaced
// (no longer the one this host mounted).
func (s *Store) follow(ctx context.Context, from int64, ch <-chan kv.WatchBatch) {
	defer close(s.remote.done)
	for {
		if ch == nil {
			ch = s.cat.kv.Watch(ctx, "", from)
		}
		why := s.drain(ctx, ch)
		ch = nil
		if ctx.Err() != nil {
			return
		}
		start := time.Now()
		rev, n, err := s.relist(ctx)
		if err != nil {
			return // ctx ended
		}
		s.log.Warn("catalog watch ended; listed the catalog again and applied the differences",
			"watched_from", from, "why", why.Error(), "listed_at", rev, "changes", n, "ms", time.Since(start).Milliseconds())
		from = rev + 1
	}
}

// drain applies the batches of a watch until it ends, and returns why.
func (s *Store) drain(ctx context.Context, ch <-chan kv.WatchBatch) error {
	for wb := range ch {
		if wb.Err != nil {
			return wb.Err
		}
		s.applyWatched(wb)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("the watch ended")
}

// applyWatched applies one batch of the watch and delivers its changes.
func (s *Store) applyWatched(wb kv.WatchBatch) {
	var gone []string
	s.mu.Lock()
	s.applyRemote(wb.Events)
	for _, ev := range wb.Events {
		if ev.Type != kv.EventDelete {
			continue
		}
		if id, ok := strings.CutPrefix(ev.Pair.Key, prefixImage); ok {
			delete(s.remote.gone, id) // the watch is past its delete
		} else if id, ok := strings.CutPrefix(ev.Pair.Key, prefixUpload); ok {
			gone = append(gone, id)
		}
	}
	s.remote.rev = max(s.remote.rev, wb.Rev)
	s.mu.Unlock()
	s.deliver()
	for _, id := range gone {
		s.uploadKeyGone(id)
	}
}

// relist lists the catalog again at a new revision and applies the
// differences from the published state as events; it retries a failed
// list every relistRetry (logging the first failure) until ctx ends (its
// error is then returned). It returns the revision listed and the number
// of differences applied. A replaced catalog (catalogReplaced) ends it
// with its error at once.
func (s *Store) relist(ctx context.Context) (rev int64, n int, err error) {
	logged := false
	for {
		rev, n, err = s.relistOnce()
		if err == nil {
			return rev, n, nil
		}
		if rerr := s.catalogReplaced(); rerr != nil {
			// Not the catalog this host mounted (the backend logged
			// why): nothing to follow until a remount.
			return 0, 0, rerr
		}
		if !logged {
			s.log.Error("listing the catalog failed; retrying every second", "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(relistRetry):
		}
	}
}

// relistOnce lists seq/ino, img/ and upload/ at one new revision R and
// applies what differs from the published state.
func (s *Store) relistOnce() (int64, int, error) {
	next, seqRev, rev, err := s.cat.nextInoBase()
	if err != nil {
		return 0, 0, err
	}
	listed := map[string]*Image{}
	if err := s.cat.loadAll(rev, func(im *Image) error {
		listed[im.ID] = im
		return nil
	}); err != nil {
		return 0, 0, err
	}
	ups, err := s.cat.loadUploads(rev)
	if err != nil {
		return 0, 0, err
	}
	var goneUploads []string
	n := 0
	s.mu.Lock()
	s.commitMu.Lock()
	if seqRev != 0 {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], next)
		s.applyEvent(kv.Event{Type: kv.EventPut, Pair: kv.Pair{Key: keySeqIno, Value: v[:], ModRev: seqRev}})
	}
	for id, im := range listed {
		if cur := s.images[id]; cur == nil || cur.rev < im.rev {
			s.putRemote(im)
			n++
		}
	}
	for id, cur := range s.images {
		if listed[id] == nil && cur.rev < rev {
			s.dropRemote(id, rev)
			n++
		}
	}
	for id := range s.remote.gone {
		if listed[id] == nil {
			delete(s.remote.gone, id) // no older event of it will come
		}
	}
	for id, k := range ups {
		if s.uploadKeys[id].rev < k.rev {
			s.uploadKeys[id] = k
		}
	}
	for id, k := range s.uploadKeys {
		if _, ok := ups[id]; !ok && k.rev != 0 && k.rev <= rev {
			// Deleted meanwhile: as applyEvent does.
			s.applyEvent(kv.Event{Type: kv.EventDelete, Pair: kv.Pair{Key: prefixUpload + id, ModRev: rev}})
			goneUploads = append(goneUploads, id)
		}
	}
	s.remote.rev = max(s.remote.rev, rev)
	s.commitMu.Unlock()
	s.mu.Unlock()
	s.deliver()
	for _, id := range goneUploads {
		s.uploadKeyGone(id)
	}
	return rev, n, nil
}

// recordNow reports whether a shared catalog has a record of id now
// (the loaded state may predate it), or cannot say; false for an
// embedded catalog.
func (s *Store) recordNow(id string) bool {
	if !s.cat.kv.Shared() {
		return false
	}
	p, err := s.cat.kv.Get(context.Background(), prefixImage+id)
	return err != nil || p.ModRev != 0
}

// prefixHost: host/<host id> -> "" (shared catalogs only), Leased: held
// by the daemon that serves that host id while it lives.
const prefixHost = "host/"

// hostClaimWait is how long Open waits for the claim of a host id held
// by a previous daemon of this host that died (its lease expires after
// lease_ttl, 10 s by default) before it gives up.
var hostClaimWait = 20 * time.Second

// claimHost makes this daemon the one that serves Options.Host: a leased
// host/<id> key, created only if absent. Two live daemons with one host
// id would each take the other's uploads for their own (a restart's
// reconcile kills them), so the second is refused; a key left by a
// daemon of this host that died vanishes with its lease, which Open
// waits for (hostClaimWait). It returns the revision of the claim.
// Errors: ErrBusy, the catalog's.
func (s *Store) claimHost() (int64, error) {
	deadline := time.Now().Add(hostClaimWait)
	logged := false
	for {
		t := s.cat.begin()
		t.cond(prefixHost+s.opts.Host, 0)
		t.b.Ops = append(t.b.Ops, kv.Op{Kind: kv.Put, Key: prefixHost + s.opts.Host, Leased: true})
		err := t.commit()
		if err == nil {
			return t.rev, nil
		}
		if !errors.Is(err, errConflict) {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%w: host id %q is served by another live imagefs daemon of this catalog (give each host its own --host-id)", ErrBusy, s.opts.Host)
		}
		if !logged {
			s.log.Warn("host id in use in the catalog: waiting for a previous daemon's lease to expire", "host", s.opts.Host, "wait_max", hostClaimWait)
			logged = true
		}
		time.Sleep(250 * time.Millisecond)
	}
}
