package store

import "slices"

// Change is one committed change of an image record: Old is the record
// before it (nil for a new image), New the record after it (nil once the
// image is deleted). Both are immutable snapshots.
type Change struct {
	Old, New *Image
}

// ID returns the id of the changed image.
func (c Change) ID() string {
	if c.New != nil {
		return c.New.ID
	}
	return c.Old.ID
}

// OnChange makes fn receive every change of an image record committed
// from now on (nil stops it). fn is called on the goroutine of a Store
// method that changes records, after the change is committed, with no
// store lock held, and before that method returns: a FUSE request that
// changes a record drops the kernel's cached copies of it before it
// replies, so no reader sees the old record once the change is reported
// done. Changes are delivered once each. The changes one call hands to
// fn come in commit order; when several goroutines change records at
// once, each may deliver a batch of the others' changes, fn may run on
// several goroutines at once (an earlier change's call may still be
// running when a later one's starts), and none returns before its own
// changes are delivered. A change another host committed to a shared
// catalog is delivered the same way by the goroutine that watches the
// catalog (watch.go), right after it is published. fn may call the
// Store's read methods (Get, Lookup, List...), not the ones that change
// records.
func (s *Store) OnChange(fn func(Change)) {
	if fn == nil {
		s.onChange.Store(nil)
		return
	}
	s.onChange.Store(&fn)
}

// noteChange records a committed change for deliver, and keeps what
// derives from the records in step (notePublished). Must hold s.mu (and
// commitMu for writing); takes deliverMu.
func (s *Store) noteChange(old, new *Image) {
	s.notePublished(old, new)
	if s.onChange.Load() == nil {
		return
	}
	s.deliverMu.Lock()
	s.pending = append(s.pending, Change{Old: old, New: new})
	s.noted++
	s.deliverMu.Unlock()
	s.npending.Add(1)
}

// deliver hands the changes committed so far to the OnChange function.
// Every exported method that may change a record defers it first thing,
// so it runs after the method's own locks are released. Must not hold
// any store lock: it calls fn with none held (deliverMu guards only the
// queue, never a call of fn), and may wait for other goroutines' calls
// of fn that deliver this one's changes.
func (s *Store) deliver() {
	// npending counts the changes noted and not yet delivered to the end:
	// zero means this goroutine's changes (noted before) are delivered.
	if s.npending.Load() == 0 {
		return
	}
	fn := s.onChange.Load()
	s.deliverMu.Lock()
	// Every change of this goroutine is numbered below target: it is in
	// the batch taken here, or in a batch another goroutine took before.
	target := s.noted
	batch, start := s.pending, s.noted-uint64(len(s.pending))
	s.pending = nil
	if len(batch) > 0 {
		s.delivering = append(s.delivering, start)
	}
	s.deliverMu.Unlock()
	if fn != nil {
		for _, c := range batch {
			(*fn)(c)
		}
	}
	s.deliverMu.Lock()
	defer s.deliverMu.Unlock()
	if len(batch) > 0 {
		s.delivering = slices.DeleteFunc(s.delivering, func(b uint64) bool { return b == start })
		s.npending.Add(-int64(len(batch)))
		s.delivered.Broadcast()
	}
	// Wait for the batches still being delivered that hold a change of
	// this goroutine (each batch starts at its first change's number).
	for slices.ContainsFunc(s.delivering, func(b uint64) bool { return b < target }) {
		s.delivered.Wait()
	}
}
