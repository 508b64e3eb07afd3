package store

import (
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
