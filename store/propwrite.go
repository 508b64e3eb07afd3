package store

import (
	"fmt"
	"sync"
)

// PropertyWrite is one writer's open property file: the protocol of a
// value written as a file (echo, an editor, touch). Writes build the new
// value in a buffer; a write that completes a line is checked against
// every rule of the change (CheckSetProperty) at once, so the writer sees
// the refusal even where the shell ignores close errors; the value is set
// (committed) at Close and Sync after a write, and at End for a
// truncation or a creation never written (": > f", touch). A refused
// write sets nothing, ever. A property file made by CreatePropertyWrite
// does not exist until its first commit; before it nothing is stored, so
// a refused creation has nothing to undo. That commit is a SetCreate for
// an exclusive creation (O_EXCL: ErrExists if another writer, on this
// host or another, created the key meanwhile), else a SetAny: the key
// created meanwhile is overwritten, the last writer's value wins, as an
// open of an existing file without O_EXCL would.
//
// Its methods may be called from several goroutines; commits take turns:
// turn is held across the whole commit (the store's ChangeProperty,
// which delivers the change, and OnCommit), mu is not; no lock of the
// store is held across the delivery.
type PropertyWrite struct {
	s       *Store
	c       Caller
	id, key string
	// OnCommit, when set, receives each change a commit made (Old and New
	// records), after the commit: for the callers that act on a rename
	// of the image (key name).
	OnCommit func(Change)

	turn sync.Mutex // one commit at a time; held across ChangeProperty and OnCommit
	mu   sync.Mutex // guards the fields below; never held across a commit
	buf  []byte     // the file's content: the value and its newline
	// state: what the buffer holds against what is set.
	state writeState
	// created: the property is this writer's own creation, not committed
	// yet (the next commit creates it).
	created bool
	// excl: an exclusive creation (O_EXCL): the commit of created is a
	// SetCreate, not a SetAny.
	excl bool
}

// writeState is where a PropertyWrite stands.
type writeState uint8

const (
	writeClean     writeState = iota // nothing to set: the buffer is what was last set (or read)
	writeTruncated                   // truncated or created, nothing written: set at End
	writeWritten                     // written since the last set: set at Close, Sync and End
	writeRefused                     // a write was refused: nothing is set any more
	writeTooBig                      // a write went past the longest value: Close says ErrTooBig
	writeEnded                       // End ran
)

// OpenPropertyWrite opens property key of image id for writing by c: the
// buffer starts with its value and a newline, or empty with trunc
// (O_TRUNC, which End sets if nothing is written). Errors: as
// MayWriteProperty, ErrNotFound (no such key).
func (s *Store) OpenPropertyWrite(c Caller, id, key string, trunc bool) (*PropertyWrite, error) {
	if err := s.MayWriteProperty(c, id, key); err != nil {
		return nil, err
	}
	w := &PropertyWrite{s: s, c: c, id: id, key: key}
	if trunc {
		w.state = writeTruncated
		return w, nil
	}
	im := s.Get(id)
	if im == nil {
		return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	v, ok := im.Property(key)
	if !ok {
		return nil, fmt.Errorf("%w: property %s", ErrNotFound, key)
	}
	w.buf = []byte(v + "\n")
	return w, nil
}

// CreatePropertyWrite creates property file key of image id for c
// (open(2) with O_CREAT of a name not there; excl: with O_EXCL): every
// rule of a new key (owner, key, quota, free space) is checked now, so
// the create fails with the error the commit would; the property exists
// from the first commit on (an empty value at End if nothing is
// written). Without excl a key created meanwhile (by another host of a
// shared catalog, or another writer) is overwritten: the commit is a
// SetAny, the last writer wins. Errors: as CheckSetProperty with
// SetCreate (excl) or SetAny.
func (s *Store) CreatePropertyWrite(c Caller, id, key string, excl bool) (*PropertyWrite, error) {
	w := &PropertyWrite{s: s, c: c, id: id, key: key, state: writeTruncated, created: true, excl: excl}
	if err := s.CheckSetProperty(c, id, key, "", w.mode()); err != nil {
		return nil, err
	}
	return w, nil
}

// Key returns the property key written.
func (w *PropertyWrite) Key() string { return w.key }

// mode returns the SetMode of the next commit. Must hold w.mu.
func (w *PropertyWrite) mode() SetMode {
	if w.created && w.excl {
		return SetCreate
	}
	return SetAny
}

// Uncommitted reports whether the property is this writer's creation,
// not committed yet, and the writer has not ended: the file exists for
// this writer only.
func (w *PropertyWrite) Uncommitted() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.created && w.state != writeEnded
}

// Pending returns the size in bytes of the file as written and whether it
// differs from what is set (a commit is due).
func (w *PropertyWrite) Pending() (int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.buf), w.state == writeTruncated || w.state == writeWritten
}

// ReadAt copies the file as written from byte off into p and returns the
// count (0 at or past its end).
func (w *PropertyWrite) ReadAt(p []byte, off int64) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if off >= int64(len(w.buf)) {
		return 0
	}
	return copy(p, w.buf[off:])
}

// WriteAt writes p at byte off of the file. A write that would make the
// value longer than MaxValueBytes is ErrTooBig (and Close reports it); a
// write that ends a line checks the value so far against every rule of
// the commit and is refused with its error (nothing is set any more: the
// value stays as it was, a created key does not appear). On a shared
// catalog that does not answer, every write is refused with
// ErrUnavailable (the mount says EBUSY), ErrCatalog (EIO) on one that is
// not the catalog mounted (catalogReachable): the data is not taken and the
// truncation of an O_TRUNC open is not set at End, but the writer is not
// refused for good (a write again once the catalog is back is set at
// Close as usual). A catalog lost after the write is reported by Close.
func (w *PropertyWrite) WriteAt(p []byte, off int64) error {
	if err := w.s.catalogReachable(); err != nil {
		w.mu.Lock()
		if w.state == writeTruncated {
			w.state = writeClean // echo's failed write: End does not empty the value
		}
		w.mu.Unlock()
		w.s.log.Debug("property write refused: catalog unreachable", "id", w.id, "key", w.key, "uid", w.c.UID, "err", err)
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	end := off + int64(len(p))
	if end > MaxValueBytes+1 {
		w.state = writeTooBig
		return fmt.Errorf("%w: %s: value of %d bytes or more, limit %d", ErrTooBig, w.key, end, MaxValueBytes)
	}
	// A copy: a refused write leaves w.buf as it was.
	buf := make([]byte, max(end, int64(len(w.buf))))
	copy(buf, w.buf)
	copy(buf[off:], p)
	if len(buf) > 0 && buf[len(buf)-1] == '\n' {
		if err := w.s.CheckSetProperty(w.c, w.id, w.key, stripNewline(buf), w.mode()); err != nil {
			if w.state != writeTooBig {
				w.state = writeRefused
			}
			w.s.log.Warn("property write refused", "id", w.id, "key", w.key, "uid", w.c.UID, "err", err)
			return err
		}
	}
	w.buf = buf
	if w.state != writeRefused && w.state != writeTooBig {
		w.state = writeWritten
	}
	return nil
}

// Truncate sets the file's size (ftruncate, or a truncate by path of a
// file this writer created): it counts as a write, set at Close.
func (w *PropertyWrite) Truncate(size int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if size < int64(len(w.buf)) {
		w.buf = w.buf[:size]
	} else {
		w.buf = append(w.buf, make([]byte, size-int64(len(w.buf)))...)
	}
	if w.state != writeRefused && w.state != writeTooBig {
		w.state = writeWritten
	}
}

// Close is the writer's close(2): it sets what was written (nothing
// without a write: the shell closing its copy of a file before echo
// writes, touch, whose value End sets). After a refused write it sets
// nothing: ErrTooBig for a value too long, nil otherwise (the write
// reported the refusal). Errors: as SetProperty.
func (w *PropertyWrite) Close() error {
	return w.commitIf(writeWritten, true)
}

// Sync is fsync(2): it sets what was written so far (an editor's write,
// fsync, close); nothing after a refused write. Errors: as SetProperty.
func (w *PropertyWrite) Sync() error {
	return w.commitIf(writeWritten, false)
}

// End is the last reference to the file going (FUSE release): it sets a
// truncation never written (": > f") and the empty value of a created
// key never written (touch); after a refused write it sets nothing.
// Errors: as SetProperty.
func (w *PropertyWrite) End() error {
	err := w.commitIf(writeTruncated, false)
	w.mu.Lock()
	w.state = writeEnded
	w.mu.Unlock()
	return err
}

// commitIf sets the buffered value when the state is writeWritten, or
// also writeTruncated when at is writeTruncated; tooBig: report a value
// too long. Commits take turns (w.turn); w.mu is not held across the
// store call, whose delivery of the change may wait for the readers of
// the file.
func (w *PropertyWrite) commitIf(at writeState, tooBig bool) error {
	w.turn.Lock()
	defer w.turn.Unlock()
	w.mu.Lock()
	st := w.state
	due := st == writeWritten || at == writeTruncated && st == writeTruncated
	if st == writeTooBig && tooBig {
		w.mu.Unlock()
		return fmt.Errorf("%w: %s: value over %d bytes", ErrTooBig, w.key, MaxValueBytes)
	}
	if !due {
		w.mu.Unlock()
		return nil
	}
	value, mode, created := stripNewline(w.buf), w.mode(), w.created
	w.state = writeClean
	w.mu.Unlock()
	ch, err := w.s.ChangeProperty(w.c, w.id, w.key, value, mode)
	if err != nil {
		if created {
			// Nothing was created: the file never existed for anyone else.
			w.s.log.Warn("new property not created", "id", w.id, "key", w.key, "uid", w.c.UID, "err", err)
		}
		return err
	}
	w.mu.Lock()
	w.created = false
	w.mu.Unlock()
	if w.OnCommit != nil {
		w.OnCommit(ch)
	}
	return nil
}

// stripNewline returns b without the one trailing newline echo adds.
func stripNewline(b []byte) string {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	return string(b)
}

// SetPropertyFileAttr applies setattr a by c to property file key of
// image id. A system key refuses every change (ErrImmutable), and so does
// an image c may not modify (ErrPermission); mode, owner and time changes
// are otherwise ignored. A size through w (a writer's ftruncate, or the
// file w created and has not committed, by path) truncates w's buffer,
// set when w closes; a size by path (w nil) sets the value to the first
// a.Size bytes of the file (the value and its newline) now, and returns
// the change. Errors: as MayWriteProperty and SetProperty.
func (s *Store) SetPropertyFileAttr(c Caller, id, key string, w *PropertyWrite, a AttrChange) (Change, error) {
	if err := s.MayWriteProperty(c, id, key); err != nil {
		return Change{}, err
	}
	if !a.HasSize {
		return Change{}, nil
	}
	if w != nil {
		w.Truncate(a.Size)
		return Change{}, nil
	}
	im := s.Get(id)
	if im == nil {
		return Change{}, fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	v, _ := im.Property(key)
	b := []byte(v + "\n")
	if a.Size < int64(len(b)) {
		b = b[:a.Size]
	}
	return s.ChangeProperty(c, id, key, stripNewline(b), SetAny)
}
