package store

import (
	"fmt"
	"strconv"
	"time"

	"github.com/imagefs/imagefs/store/kv"
)

// An image's owner is a uid on the mount, or a Keystone project that no
// uid maps (an Images API admin gave the image to a project imagefs does
// not know: Glance keeps any string). An image owned by a project has
// uid 0 on the mount (Image.Owner 0), so only root (the admin role) has
// an owner's powers over it; its owner property shows the project id.
//
// Only root changes an owner: SetOwner (the mount's chown of an image
// directory), and the owner key of CreateWithID and ChangeProperties (the
// Images API's create and patch). Writing properties/owner or the
// attribute user.owner stays ErrImmutable (system-maintained), root
// included.

// MaxProjectBytes bounds a project owner's id (Glance's owner maxLength).
const MaxProjectBytes = 255

// Owner names an image's owner: Project "" means the uid UID (group
// GID); otherwise the Keystone project Project, UID and GID 0.
type Owner struct {
	UID, GID uint32
	Project  string
}

// String is the owner property's value: the project id, or the uid in
// decimal.
func (o Owner) String() string {
	if o.Project != "" {
		return o.Project
	}
	return strconv.FormatUint(uint64(o.UID), 10)
}

// OwnerOf returns im's owner.
func OwnerOf(im *Image) Owner {
	if im.OwnerProject != "" {
		return Owner{Project: im.OwnerProject}
	}
	return Owner{UID: im.Owner, GID: im.GID}
}

// ParseOwner reads an owner property's value: a decimal uid (below
// 2^32-1) is that uid, with the group of the same number (as an Images
// API caller's: a mapped project's uid is its gid too); anything else
// is a project id, which ValidProject checks. Errors wrap ErrInvalid.
func ParseOwner(v string) (Owner, error) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		if uint32(n) == Anyone.UID {
			return Owner{}, fmt.Errorf("%w: owner %s is not a uid (it stands for every user)", ErrInvalid, v)
		}
		return Owner{UID: uint32(n), GID: uint32(n)}, nil
	}
	if err := ValidProject(v); err != nil {
		return Owner{}, err
	}
	return Owner{Project: v}, nil
}

// ValidProject checks a project owner's id: 1-255 bytes, no control
// character, not all decimal digits (that names a uid: the owner
// property would read the same for both). Errors wrap ErrInvalid.
func ValidProject(p string) error {
	if p == "" || len(p) > MaxProjectBytes {
		return fmt.Errorf("%w: owner: a project id must be 1-%d bytes, got %d", ErrInvalid, MaxProjectBytes, len(p))
	}
	digits := true
	for i := 0; i < len(p); i++ {
		b := p[i]
		if b < 0x20 || b == 0x7f {
			return fmt.Errorf("%w: owner %q contains the control character %q", ErrInvalid, p, b)
		}
		if b < '0' || b > '9' {
			digits = false
		}
	}
	if digits {
		return fmt.Errorf("%w: owner %q: a decimal number names a uid, not a project", ErrInvalid, p)
	}
	return nil
}

// checkOwnerChange reports whether c may give im to o: root only.
// Errors: ErrNotPermitted (not root), ErrInvalid (o).
func checkOwnerChange(c Caller, im *Image, o Owner) error {
	if !c.IsRoot() {
		return fmt.Errorf("%w: only root changes the owner of image %s (uid %d is not root)", ErrNotPermitted, im.ID, c.UID)
	}
	if o.Project != "" {
		return ValidProject(o.Project)
	}
	if o.UID == Anyone.UID || o.GID == Anyone.GID {
		return fmt.Errorf("%w: uid or gid %d is not an owner (it stands for every user)", ErrInvalid, Anyone.UID)
	}
	return nil
}

// applyOwner sets o as im's owner (a cloned record).
func applyOwner(im *Image, o Owner) {
	im.Owner, im.GID, im.OwnerProject = o.UID, o.GID, o.Project
	if o.Project != "" {
		im.Owner, im.GID = 0, 0
	}
}

// ownerOp applies the owner value v (ParseOwner's form) of a create or
// a ChangeProperties op to im, for caller c: root only.
func ownerOp(c Caller, im *Image, v string) error {
	o, err := ParseOwner(v)
	if err == nil {
		err = checkOwnerChange(c, im, o)
	}
	if err != nil {
		return err
	}
	applyOwner(im, o)
	return nil
}

// SetOwner gives image id to o (a uid and group, or a project), for
// caller c: only root may (the mount's chown of an image directory; an
// Images API admin). The image's members, visibility and data stay. The
// owner it has already is no change, for any caller (chown(2) to oneself),
// and commits nothing. Errors:
// ErrNotFound, ErrNotPermitted (not root), ErrInvalid (o), ErrCatalog,
// ErrUnavailable.
func (s *Store) SetOwner(c Caller, id string, o Owner) (Change, error) {
	defer s.deliver()
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, err := s.update(id, kv.Grows, func(im *Image) (*Image, error) {
		if im == nil {
			return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
		}
		if OwnerOf(im) == o {
			return nil, nil // nothing to change (chown to the owner it has: anyone)
		}
		if err := checkOwnerChange(c, im, o); err != nil {
			return nil, err
		}
		next := im.clone()
		applyOwner(next, o)
		next.UpdatedAt = s.opts.Now().UTC().Truncate(time.Second)
		return next, nil
	})
	if err != nil {
		s.log.Warn("owner change refused", "id", id, "owner", o.String(), "uid", c.UID, "err", err)
		return Change{}, err
	}
	if ch.New != nil {
		s.log.Info("owner changed", "id", id, "from", OwnerOf(ch.Old).String(), "to", o.String(), "uid", c.UID)
	}
	return ch, nil
}
