package store

import (
	"context"
	"encoding/binary"
	"encoding/json"

	"github.com/imagefs/imagefs/store/kv"
)

// STAND-IN (branch swrite): the minimal applyRemote the write path needs
// (update's conflict handling). Branch sread's real one (watch, memIndex,
// uploads of deleted images...) replaces this file at merge.

// applyRemote applies changes committed by other hosts (or the current
// state a conflicting commit returned) to the published state: img/ puts
// and deletes (skipped when not newer than the published record),
// upload/ keys (Store.uploadKeys) and seq/ino; each record change is
// noted for delivery. Must hold s.mu; takes commitMu and pubMu.
func (s *Store) applyRemote(evs []kv.Event) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	for _, ev := range evs {
		p := ev.Pair
		if id, ok := isKey(p.Key, prefixImage); ok {
			old := s.images[id]
			if old != nil && p.ModRev <= old.rev {
				continue
			}
			if ev.Type == kv.EventDelete {
				if old == nil {
					continue
				}
				s.noteChange(old, nil)
				s.pubMu.Lock()
				delete(s.images, id)
				if s.byName[old.Name] == id {
					delete(s.byName, old.Name)
				}
				s.pubMu.Unlock()
				s.setUploadKey(id, uploadKey{}, true)
				continue
			}
			im := new(Image)
			if err := json.Unmarshal(p.Value, im); err != nil {
				s.log.Error("undecodable record from the catalog", "key", p.Key, "err", err)
				continue
			}
			im.rev = p.ModRev
			s.noteChange(old, im)
			s.pubMu.Lock()
			s.images[id] = im
			if old != nil && old.Name != im.Name && s.byName[old.Name] == id {
				delete(s.byName, old.Name)
			}
			s.byName[im.Name] = id
			s.pubMu.Unlock()
			continue
		}
		if id, ok := isKey(p.Key, prefixUpload); ok {
			k := s.uploadKeys[id]
			if p.ModRev <= k.rev {
				continue
			}
			if ev.Type == kv.EventDelete {
				s.setUploadKey(id, uploadKey{rev: 0, host: k.host}, false)
			} else {
				s.setUploadKey(id, uploadKey{rev: p.ModRev, host: uploadHost(p.Value)}, false)
			}
			continue
		}
		if p.Key == keySeqIno && ev.Type == kv.EventPut && p.ModRev > s.seqRev && len(p.Value) == 8 {
			s.nextIno, s.seqRev = binary.BigEndian.Uint64(p.Value), p.ModRev
		}
	}
}

// loadShared is a STAND-IN (branch swrite) for sread's Open of a shared
// catalog, so that the write path's tests run on two Stores: it loads
// the records, the upload keys and seq/ino at one revision, kills the
// saving images whose upload key is absent or this host's, and follows
// the catalog from there (watchStub). No property index.
func (s *Store) loadShared() error {
	next, seqRev, rev, err := s.cat.nextInoBase()
	if err != nil {
		return err
	}
	s.nextIno, s.seqRev = next, seqRev
	err = s.cat.loadAll(rev, func(im *Image) error {
		s.images[im.ID] = im
		s.byName[im.Name] = im.ID
		return nil
	})
	if err != nil {
		return err
	}
	ctx, cancel := loadCtx()
	_, err = s.cat.kv.Scan(ctx, prefixUpload, "upload0", rev, func(p kv.Pair) error {
		s.setUploadKey(p.Key[len(prefixUpload):], uploadKey{rev: p.ModRev, host: uploadHost(p.Value)}, false)
		return nil
	})
	cancel()
	if err != nil {
		return catalogErr(err)
	}
	if !s.opts.checkOnly {
		s.mu.Lock()
		for id, im := range s.images {
			if im.Status == StatusSaving && !s.uploadsElsewhere(id) {
				s.update(id, kv.Small, func(cur *Image) (*Image, error) {
					if cur == nil || cur.Status != StatusSaving || s.uploadsElsewhere(id) {
						return nil, nil
					}
					c := cur.clone()
					c.Status = StatusKilled
					setExtra(c, KeyKillReason, "upload interrupted: imagefs stopped before the writer closed the file")
					return c, nil
				})
			}
		}
		s.mu.Unlock()
	}
	go s.watchStub(rev + 1)
	return nil
}

// watchStub applies the changes of the catalog from revision from on
// (applyRemote), delivers them, and reports the upload keys the catalog
// deleted (uploadKeyGone). It ends when the backend closes.
func (s *Store) watchStub(from int64) {
	for wb := range s.cat.kv.Watch(context.Background(), "", from) {
		if wb.Err != nil {
			s.log.Error("catalog watch ended", "err", wb.Err)
			return
		}
		var gone []string
		s.mu.Lock()
		for _, ev := range wb.Events {
			if id, ok := isKey(ev.Pair.Key, prefixUpload); ok && ev.Type == kv.EventDelete && ev.Pair.ModRev > s.uploadKeys[id].rev {
				gone = append(gone, id)
			}
		}
		s.applyRemote(wb.Events)
		s.mu.Unlock()
		s.deliver()
		for _, id := range gone {
			s.uploadKeyGone(id)
		}
	}
}

// indexApply is a STAND-IN (swrite): where a local commit's publish
// updates the in-memory property index of a shared catalog (memIndex)
// with the change old -> new (nil: none); sread's wiring replaces it.
// Called with s.mu, commitMu and pubMu held.
func (s *Store) indexApply(old, new *Image) {}
