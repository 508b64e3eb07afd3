package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// The write path of every record change, in both modes: decide on the
// published state, commit under the conditions of what was decided on
// (txn.condImage, putName, seq/ino), and on a conflict (a shared
// catalog, another host committed in between) apply what the catalog
// holds now and decide again. The embedded catalog never reports a
// conflict, so there each change is decided once, as before.

// minTries is how many attempts a change makes under contention at
// least; it goes on trying until the catalog's timeout has passed since
// its first (a host that commits to one record in a tight loop can win
// every race for a while: the loser is always a round trip behind; 8
// tries lost 16 of 400 property sets of a two-host race to one image).
const minTries = 8

// MaxRecordBytes limits an image's record: its JSON encoding in the
// catalog (the core fields plus every extra key and value, escaped) may
// not exceed 1 MiB after a property change (set, rename), in both modes;
// such a change is refused with ErrQuota (ENOSPC), like one property too
// many. It keeps a record, and the transaction that writes it, under a
// shared catalog's request limit (etcd's 1.5 MiB). Changes made by
// imagefs itself (a seal's VHD facts, a kill reason: a few hundred
// bytes) are not refused by it.
const MaxRecordBytes = 1 << 20

// checkRecordSize refuses a record whose encoding exceeds MaxRecordBytes
// (ErrQuota).
func checkRecordSize(im *Image) error {
	v, err := json.Marshal(im)
	if err != nil {
		panic(err) // Image always marshals
	}
	if len(v) > MaxRecordBytes {
		return fmt.Errorf("%w: image %s: its record would be %d bytes, limit %d (the sum of its properties' keys and values)", ErrQuota, im.ID, len(v), MaxRecordBytes)
	}
	return nil
}

// uploadKey is what the store knows of an upload/<id> key of a shared
// catalog (txn.uploadOps): its ModRev (0: the key is absent, deleted)
// and the host its last value named (kept after a delete, for the kill
// reason of uploadKeyGone). Store.uploadKeys holds one per image whose
// key exists or was seen deleted while its record is saving; it is
// guarded by Store.mu. Written by this host's commits (update, Delete)
// and by applyRemote (Scan, Watch, a conflict's current state); read by
// uploadOps' conditions, commitSeal and uploadKeyGone.
type uploadKey struct {
	rev  int64
	host string
}

// shared reports whether other hosts write the catalog.
func (s *Store) shared() bool { return s.cat.kv.Shared() }

// setUploadKey records image id's upload key (delete: forget it). Must
// hold s.mu.
func (s *Store) setUploadKey(id string, k uploadKey, forget bool) {
	if forget {
		delete(s.uploadKeys, id)
		return
	}
	if s.uploadKeys == nil {
		s.uploadKeys = map[string]uploadKey{}
	}
	s.uploadKeys[id] = k
}

// uploadsHere reports whether image id's upload key is this host's and
// present. Must hold s.mu.
func (s *Store) uploadsHere(id string) bool {
	k, ok := s.uploadKeys[id]
	return ok && k.rev != 0 && k.host == s.opts.Host
}

// uploadsElsewhere reports whether another host holds image id's upload
// key. Must hold s.mu.
func (s *Store) uploadsElsewhere(id string) bool {
	k, ok := s.uploadKeys[id]
	return ok && k.rev != 0 && k.host != s.opts.Host
}

// uploadingElsewhere refuses a change of image id's data or upload
// status while another host holds its upload key (that host's writer
// has the image's data open): ErrBusy naming the host, as a second
// writer on one host gets (openWriteTry), so that the second writer of
// two hosts is refused at open (or at its first write, when it opened
// before the other's first write), not at close. nil on the embedded
// catalog, and once the other host's upload ended (sealed: the caller's
// ErrImmutable; killed, its host gone: the key is deleted). Must hold s.mu.
func (s *Store) uploadingElsewhere(id string) error {
	if !s.shared() || !s.uploadsElsewhere(id) {
		return nil
	}
	return fmt.Errorf("%w: image %s is being uploaded by another writer (on host %s)", ErrBusy, id, s.uploadKeys[id].host)
}

// errContended: a change kept conflicting (see commitRetry).
var errContended = fmt.Errorf("%w: catalog contended: the record kept changing on other hosts", ErrBusy)

// commitRetry commits a change decided by try on the published state:
// try returns the txn to commit (nil: nothing to do) and the function
// that publishes it once committed (called with commitMu held, given the
// commit's revision). On a conflict the catalog's current state of the
// conditions' keys is applied as a remote change and try runs again, at
// least minTries times and until the catalog's timeout (then
// errContended). Errors: try's, the commit's.
// Must hold s.mu.
func (s *Store) commitRetry(try func() (*txn, func(rev int64), error)) error {
	start := time.Now()
	for i := 1; ; i++ {
		t, publish, err := try()
		if err != nil || t == nil {
			return err
		}
		s.commitMu.Lock()
		err = t.commit()
		if err == nil {
			publish(t.rev)
			s.commitMu.Unlock()
			return nil
		}
		s.commitMu.Unlock()
		if !errors.Is(err, errConflict) {
			return err
		}
		if i >= minTries {
			if time.Since(start) > s.cat.timeoutOrDefault() {
				s.log.Warn("change given up: the catalog kept changing", "attempts", i)
				return fmt.Errorf("%w (%d attempts in %v)", errContended, i, time.Since(start).Round(time.Millisecond))
			}
			time.Sleep(time.Duration(rand.Int64N(int64(2 * time.Millisecond))))
		}
		s.applyConflict(t)
	}
}

// applyConflict applies the current state a conflicting commit returned
// (t.cur) to the published state, as a remote change: a present key as a
// put, an absent one as a delete at the catalog's revision. A name that
// another image holds brings that image's record too (read now), so
// that the next attempt finds the name taken. Must hold s.mu.
func (s *Store) applyConflict(t *txn) {
	evs := make([]kv.Event, 0, len(t.cur)+1)
	for _, p := range t.cur {
		if p.ModRev == 0 {
			evs = append(evs, kv.Event{Type: kv.EventDelete, Pair: kv.Pair{Key: p.Key, ModRev: t.rev}})
			continue
		}
		evs = append(evs, kv.Event{Type: kv.EventPut, Pair: p})
		if _, ok := isKey(p.Key, prefixName); ok {
			ctx, cancel := s.cat.ctx()
			rp, err := s.cat.kv.Get(ctx, prefixImage+string(p.Value))
			cancel()
			if err == nil && rp.ModRev != 0 {
				evs = append(evs, kv.Event{Type: kv.EventPut, Pair: rp})
			}
		}
	}
	s.applyRemote(evs)
}

// update commits f(current record of id) (nil current: no such image; f
// decides) and publishes it: f returns the new record (a modified
// clone; nil: nothing to change) or an error (nothing changed). The
// commit has the condition that img/<id> is still the record f saw, a
// new name's claim, and the upload key a status change implies
// (txn.uploadOps). On a conflict (another host changed the record, or
// took the name, in between) the current state is applied and f runs
// again on the fresh record, so its rules are checked anew; at most
// minTries times and until the catalog's timeout. room is the commit's free space rule (kv.Grows for a
// change that may grow the catalog, kv.Small for a status change or a
// removal). Returns the change committed (zero when f changed nothing).
// Errors: f's, the commit's (ErrNoSpace, ErrCatalog, ErrUnavailable),
// errContended. Must hold s.mu.
func (s *Store) update(id string, room kv.Room, f func(cur *Image) (*Image, error)) (Change, error) {
	var ch Change
	err := s.commitRetry(func() (*txn, func(rev int64), error) {
		cur := s.images[id]
		next, err := f(cur)
		if err != nil || next == nil {
			return nil, nil, err
		}
		t := s.cat.begin()
		t.b.Room = room
		t.condImage(id, cur)
		t.putImage(next)
		t.reindex(cur, next)
		if cur != nil && cur.Name != next.Name {
			t.deleteName(cur.Name)
			t.putName(next.Name, id)
		}
		up := t.uploadOps(id, cur, next, s.opts.Host, s.uploadKeys[id].rev, s.opts.Now())
		return t, func(rev int64) {
			next.rev = rev // next is not published yet
			switch up {
			case 1:
				s.setUploadKey(id, uploadKey{rev: rev, host: s.opts.Host}, false)
			case -1:
				s.setUploadKey(id, uploadKey{}, true)
			}
			s.noteChange(cur, next)
			s.pubMu.Lock()
			s.images[id] = next
			if cur != nil && cur.Name != next.Name {
				if s.byName[cur.Name] == id {
					delete(s.byName, cur.Name)
				}
			}
			s.byName[next.Name] = id
			s.pubMu.Unlock()
			ch = Change{Old: cur, New: next}
		}, nil
	})
	return ch, err
}

// leaseKillReason is the kill reason of an upload whose host stopped
// (died, or lost the catalog for longer than its lease) while its
// writer had the file open: README's wording, naming the host.
func leaseKillReason(host string) string {
	return fmt.Sprintf("upload interrupted: host %s stopped (its etcd lease expired) before the writer closed the file", host)
}

// interruptedReason is the kill reason of image id's upload found in
// flight (saving) by a mount's repair or fsck --repair. On a single host:
// imagefs stopped. In a shared catalog the upload's host is named: the
// host its last upload key named (seen by this host's watch), or this
// host when its upload key is this host's or its STORE/staging holds the
// image's staging file (this host stopped mid-upload); when no host
// knows (the key expired while no host watched), the reason says so.
// Must hold s.mu.
func (s *Store) interruptedReason(id string) string {
	if !s.shared() {
		return "upload interrupted: imagefs stopped before the writer closed the file"
	}
	k := s.uploadKeys[id]
	switch {
	case k.host != "":
		return leaseKillReason(k.host)
	case s.stagedHere(id):
		return leaseKillReason(s.opts.Host)
	}
	return "upload interrupted: its host stopped (its etcd lease expired) before the writer closed the file; no live host saw which host it was"
}

// stagedHere reports whether STORE/staging holds a staging file of image
// id (<id>.<time>.<seq>, see newUpload).
func (s *Store) stagedHere(id string) bool {
	m, _ := filepath.Glob(filepath.Join(s.staging, id+".*"))
	return len(m) > 0
}

// noteRemoteKill logs, on the writer's host, that another host killed
// this host's upload in progress (cur saving, next killed: this host's
// lease expired while it was cut off from etcd, or an operator deleted
// its upload key): one line with the image's id, name and kill reason.
// The writer learns it at close (EIO). Must hold s.mu.
func (s *Store) noteRemoteKill(cur, next *Image) {
	if cur == nil || cur.Status != StatusSaving || next.Status != StatusKilled {
		return
	}
	if l := s.live[next.ID]; l == nil || l.upload == nil {
		return
	}
	s.log.Warn("upload of this host killed by another host: its writer's close will fail (EIO) and the data is not kept",
		"id", next.ID, "name", next.Name, "reason", next.Extra[KeyKillReason])
}

// uploadKeyGone handles the delete of image id's upload key by the
// catalog (its host's lease expired: the host died, or lost the catalog
// for longer than the lease), reported by the watch with no store lock
// held: an image still saving, whose key is still absent and that this
// host is not uploading, is killed, with a reason naming the host. Every
// host may do it at once: the commit's conditions let one win; the
// others find the record killed and do nothing.
func (s *Store) uploadKeyGone(id string) {
	defer s.deliver()
	s.mu.Lock()
	defer s.mu.Unlock()
	var reason string
	ch, err := s.update(id, kv.Small, func(cur *Image) (*Image, error) {
		if cur == nil || cur.Status != StatusSaving {
			return nil, nil
		}
		k := s.uploadKeys[id]
		if k.rev != 0 {
			return nil, nil // a new upload started meanwhile
		}
		if l := s.live[id]; l != nil && l.upload != nil {
			return nil, nil // this host's upload: its seal's condition decides
		}
		host := k.host
		if host == "" {
			host = "(unknown)"
		}
		reason = leaseKillReason(host)
		next := cur.clone()
		next.Status = StatusKilled
		setExtra(next, KeyKillReason, reason)
		next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
		return next, nil
	})
	if err != nil {
		s.log.Error("killing an upload whose host's lease expired (the next mount kills it)", "id", id, "err", err)
		return
	}
	if ch.New != nil {
		s.log.Warn("upload killed: its host's lease expired", "id", id, "reason", reason)
		s.emit(Event{Kind: EventKilled, ID: id, Reason: reason})
	}
	// The deleted key is remembered only while its record is saving (a
	// seal's delete of its own key, seen by every host, leaves nothing).
	if k, ok := s.uploadKeys[id]; ok && k.rev == 0 {
		if im := s.images[id]; im == nil || im.Status != StatusSaving {
			s.setUploadKey(id, uploadKey{}, true)
		}
	}
}
