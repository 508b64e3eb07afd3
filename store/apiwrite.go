package store

import (
	"fmt"

	"github.com/google/uuid"
)

// What the HTTP face (imagesapi, Glance's Images API v2) needs beyond what
// the mount uses: an image created with the id its caller chose, and an
// upload whose client went away before the end of its body.

// KeyValue is one property of CreateWithID.
type KeyValue struct{ Key, Value string }

// CreateWithID is Create with the image's id chosen by the caller, as
// Glance's POST /v2/images accepts one, and with properties (custom ones,
// visibility, protected, min_ram, min_disk) set in the same commit, each
// under SetProperty's rules: the image appears whole or not at all. id
// must be a UUID in its canonical 36-character lower-case form. Errors:
// ErrInvalid (id, name, a key or value; the name among props),
// ErrExists (the id or the name is taken), and SetProperty's errors for
// props (ErrImmutable, ErrNotPermitted, ErrTooBig, ErrQuota), ErrCatalog.
func (s *Store) CreateWithID(c Caller, id, name string, props []KeyValue) (*Image, error) {
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id {
		return nil, fmt.Errorf("%w: image id %q is not a UUID in canonical lower-case form", ErrInvalid, id)
	}
	for _, p := range props {
		if p.Key == KeyName {
			return nil, fmt.Errorf("%w: the name is CreateWithID's argument, not a property", ErrInvalid)
		}
	}
	return s.create(c, id, name, props)
}

// AbortWriter ends a write handle of u (in place of EndWriter) whose
// writer never finished: an HTTP upload cut off mid-body (client gone,
// body shorter than its Content-Length, too big). When it was the only
// writer, the staged data is dropped unsealed and the image returns to
// queued, as Glance restores an image whose upload failed; it is never
// sealed. reason is logged. Errors: ErrCatalog (the status change did not
// commit: the image stays saving until the next Open kills it).
func (s *Store) AbortWriter(u *Upload, reason string) error {
	defer s.deliver()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.writers--
	if u.writers > 0 || u.name != "" || u.state != uploadOpen {
		return nil
	}
	u.dirty = false
	l, err := s.sealTurn(u) // the image's turn: no seal of it runs meanwhile
	if l != nil {
		defer l.sealMu.Unlock()
	}
	if err != nil {
		return nil // deleted or sealed meanwhile: sealTurn dropped u
	}
	s.log.Warn("upload aborted; image queued again", "id", u.id, "size", u.size, "reason", reason)
	u.discard()
	s.dropUpload(u)
	return s.setStatus(u.id, StatusQueued, "")
}

// CheckRemoveProperty reports whether RemoveProperty(c, id, key) would
// succeed, without changing anything (an API patch checks all its
// operations before applying the first). Errors: as RemoveProperty.
func (s *Store) CheckRemoveProperty(c Caller, id, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.getLocked(id)
	if err != nil {
		return err
	}
	return checkRemove(c, im, key)
}
