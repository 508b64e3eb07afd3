package store

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/imagefs/imagefs/store/kv"
)

// What the HTTP face (imagesapi, Glance's Images API v2) needs beyond what
// the mount uses: an image created with the id its caller chose, and an
// upload whose client went away before the end of its body.

// KeyValue is one property of CreateWithID.
type KeyValue struct{ Key, Value string }

// CreateWithID is Create with the image's id chosen by the caller, as
// Glance's POST /v2/images accepts one, and with properties (custom ones,
// visibility, protected, min_ram, min_disk, disk_format, container_format)
// set in the same commit, each
// under SetProperty's rules, and the owner (KeyOwner, ParseOwner's form:
// root only, as SetOwner; the image is c's otherwise): the image appears
// whole or not at all. id
// must be a UUID in its canonical 36-character lower-case form. As in
// Glance, disk_format and container_format are unset unless props set
// them (no data is accepted until both are: FormatsMissing). Errors:
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
	return s.create(c, id, name, imageFormats{}, props)
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

// PropertyOp is one change of ChangeProperties: set Key to Value, or
// remove the custom property Key.
type PropertyOp struct {
	Key, Value string
	Remove     bool
}

// ChangeProperties applies ops to image id in order, in one commit, each
// under the rules of SetProperty (SetAny) or RemoveProperty on the record
// as the ops before it leave it: all or nothing, as a Glance JSON-Patch.
// A set of KeyOwner (ParseOwner's form) gives the image to that owner,
// root only, as SetOwner (a remove of it is refused as SetProperty's).
// Errors: those of SetProperty and RemoveProperty; nothing is changed.
func (s *Store) ChangeProperties(c Caller, id string, ops []PropertyOp) (Change, error) {
	defer s.deliver()
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, err := s.update(id, kv.Grows, func(im *Image) (*Image, error) {
		if im == nil {
			return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
		}
		next := im.clone()
		for _, op := range ops {
			if op.Key == KeyOwner && !op.Remove { // root only (owner.go)
				if err := ownerOp(c, next, op.Value); err != nil {
					return nil, err
				}
				continue
			}
			if op.Remove {
				if err := checkRemove(c, next, op.Key); err != nil {
					return nil, err
				}
				deleteExtra(next, op.Key)
				continue
			}
			if err := s.setPropertyRules(c, next, op.Key, op.Value, SetAny); err != nil {
				return nil, err
			}
			s.applyChange(c, next, op.Key, op.Value)
		}
		next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
		if err := checkRecordSize(next); err != nil {
			return nil, err
		}
		return next, nil
	})
	if err != nil {
		s.log.Warn("property changes refused", "id", id, "uid", c.UID, "err", err)
		return Change{}, err
	}
	s.log.Info("properties changed", "id", id, "ops", len(ops), "uid", c.UID)
	return ch, nil
}
