package store

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
// from now on (nil stops it). fn is called on the goroutine of the Store
// method that made the change, after the change is committed, with no
// store lock held, and before that method returns: a FUSE request that
// changes a record drops the kernel's cached copies of it before it
// replies, so no reader sees the old record once the change is reported
// done. Changes are delivered once each, in commit order; when two
// goroutines change records at once either may deliver the other's, and
// neither returns before its own is delivered. fn may call the Store's
// read methods (Get, Lookup, List...), not the ones that change records.
func (s *Store) OnChange(fn func(Change)) {
	if fn == nil {
		s.onChange.Store(nil)
		return
	}
	s.onChange.Store(&fn)
}

// noteChange records a committed change for deliver. Must hold s.mu.
func (s *Store) noteChange(old, new *Image) {
	if s.onChange.Load() == nil {
		return
	}
	s.pending = append(s.pending, Change{Old: old, New: new})
	s.npending.Add(1)
}

// deliver hands the changes committed so far to the OnChange function.
// Every exported method that may change a record defers it first thing,
// so it runs after the method's own locks are released. Must not hold
// s.mu (nor Upload.mu, which ranks before it).
func (s *Store) deliver() {
	// npending counts the changes noted and not yet delivered to the end:
	// while another goroutine delivers this one's change, it is not zero
	// and this one waits for deliverMu.
	if s.npending.Load() == 0 {
		return
	}
	fn := s.onChange.Load()
	s.deliverMu.Lock()
	defer s.deliverMu.Unlock()
	s.mu.Lock()
	p := s.pending
	s.pending = nil
	s.mu.Unlock()
	if fn != nil {
		for _, c := range p {
			(*fn)(c)
		}
	}
	s.npending.Add(-int64(len(p)))
}
