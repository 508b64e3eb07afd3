package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

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
	// nil when none runs.
	cancel context.CancelFunc
	done   chan struct{}
}

// relistRetry is how long the watch goroutine waits before it lists the
// catalog again after a failed list.
const relistRetry = time.Second

// loadShared completes the load of a shared catalog at revision rev (the
// records are loaded): the upload keys, and the ids deleted meanwhile.
func (s *Store) loadShared(rev int64) error {
	if err := s.claimHost(); err != nil {
		return err
	}
	ups, err := s.cat.loadUploads(rev)
	if err != nil {
		return err
	}
	s.uploadKeys = ups
	s.remote.gone = map[string]struct{}{}
	s.remote.rev = rev
	return nil
}

// loadMemIndex builds the in-memory property index from the loaded
// records (a backend that is not kv.Iterable).
func (s *Store) loadMemIndex() {
	m := newMemIndex()
	for _, im := range s.images {
		m.apply(nil, im)
	}
	s.remote.mem = m
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
// this host's uploads of it (its data file is the deleting host's to
// remove). upload/<id> keys are tracked in uploadKeys, seq/ino in nextIno
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
		im := new(Image)
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
// are abandoned. Must hold s.mu and commitMu (write).
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

// startRemote starts the watch goroutine from revision from.
func (s *Store) startRemote(from int64) {
	ctx, cancel := context.WithCancel(context.Background())
	s.remote.cancel, s.remote.done = cancel, make(chan struct{})
	go s.follow(ctx, from)
}

// stopRemote stops the watch goroutine, if one runs, and waits for it.
// Must not hold any store lock.
func (s *Store) stopRemote() {
	if s.remote.cancel == nil {
		return
	}
	s.remote.cancel()
	<-s.remote.done
	s.remote.cancel = nil
}

// follow watches the catalog from revision from until ctx ends, listing
// it again whenever a watch ends.
func (s *Store) follow(ctx context.Context, from int64) {
	defer close(s.remote.done)
	for {
		why := s.drain(ctx, s.cat.kv.Watch(ctx, "", from))
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
// of differences applied.
func (s *Store) relist(ctx context.Context) (rev int64, n int, err error) {
	logged := false
	for {
		rev, n, err = s.relistOnce()
		if err == nil {
			return rev, n, nil
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
// waits for (hostClaimWait). Errors: ErrBusy, the catalog's.
func (s *Store) claimHost() error {
	deadline := time.Now().Add(hostClaimWait)
	logged := false
	for {
		t := s.cat.begin()
		t.cond(prefixHost+s.opts.Host, 0)
		t.b.Ops = append(t.b.Ops, kv.Op{Kind: kv.Put, Key: prefixHost + s.opts.Host, Leased: true})
		err := t.commit()
		if err == nil {
			return nil
		}
		if !errors.Is(err, errConflict) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: host id %q is served by another live imagefs daemon of this catalog (give each host its own --host-id)", ErrBusy, s.opts.Host)
		}
		if !logged {
			s.log.Warn("host id in use in the catalog: waiting for a previous daemon's lease to expire", "host", s.opts.Host, "wait_max", hostClaimWait)
			logged = true
		}
		time.Sleep(250 * time.Millisecond)
	}
}
