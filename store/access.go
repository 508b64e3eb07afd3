package store

import (
	"fmt"
)

// KeyMembers lists the members of an image (visibility shared), one
// "ID STATUS" line each (members.go): the owner adds and removes them,
// each member sets its own status.
const KeyMembers = "members"

// Reach says how a caller reaches an image, for the visibility rules.
// (Not to be confused with the by-property views, index.go.)
type Reach int

const (
	// ReachList: listing images/ or by-id/, or looking an image up by name.
	ReachList Reach = iota
	// ReachID: looking an image up by id and reading its data.
	ReachID
)

// Visibility is an image's visibility property, as in Glance.
type Visibility string

// The visibilities (see Visible).
const (
	VisibilityPrivate   Visibility = "private"
	VisibilityShared    Visibility = "shared"
	VisibilityCommunity Visibility = "community"
	VisibilityPublic    Visibility = "public"
)

// Visible reports whether caller c may see im through v. The rules are
// Glance's visibility (../shared/docs/concepts.md):
//
//	visibility  owner/root  members  everyone else
//	private     list, id    -        -
//	shared      list, id    list (accepted), id (any status) -
//	community   list, id    id       id (usable by id, not listed)
//	public      list, id    list, id list, id
//
// Everyone else gets ENOENT, as if the image did not exist.
func Visible(c Caller, im *Image, v Reach) bool {
	ms := MemberAccepted
	if v == ReachID {
		ms = MemberAll
	}
	return VisibleAs(c, im, v, ms)
}

// VisibleAs is Visible with Glance's member_status list filter: a member
// of a shared image sees it when its status is ms (MemberAll: any).
// Visible lists with MemberAccepted and reaches by id with MemberAll.
func VisibleAs(c Caller, im *Image, v Reach, ms MemberStatus) bool {
	if c.UID == Anyone.UID {
		return im.Visibility == VisibilityPublic
	}
	if c.Owns(im) {
		return true
	}
	switch im.Visibility {
	case VisibilityPublic:
		return true
	case VisibilityCommunity:
		return v == ReachID
	case VisibilityShared:
		st, ok := im.memberStatus(c)
		return ok && (ms == MemberAll || st == ms)
	}
	return false
}

// Owns reports whether c is im's owner or root: who sees the image
// whatever its visibility and members say, so whose access no change can
// revoke.
func (c Caller) Owns(im *Image) bool { return c.IsRoot() || c.UID == im.Owner }

// Anyone stands for every user at once: it sees what all users see, the
// public images (by list and by id), for what is shared between users,
// such as the kernel's cached entries of a mount with --allow-other. Its
// uid is (uid_t)-1, which no process can have.
var Anyone = Caller{UID: ^uint32(0), GID: ^uint32(0)}

// OthersMayRead reports whether users other than the owner may use the
// image at all; the mode bits of its files show it (0755/0644 rather than
// 0700/0600). The daemon enforces Visible whatever the mode bits say.
func (im *Image) OthersMayRead() bool { return im.Visibility != VisibilityPrivate }

// checkStatusChange allows the image's owner and root to deactivate an
// active image and to reactivate a deactivated one (as Glance's default
// policy lets the admin and the owner's project); every other status
// change is the system's. Data reads of a deactivated image stay root's
// only (OpenReadBy).
func checkStatusChange(c Caller, im *Image, value string) error {
	from, to := im.Status, Status(value)
	allowed := (from == StatusActive && to == StatusDeactivated) ||
		(from == StatusDeactivated && to == StatusActive)
	if !allowed {
		return fmt.Errorf("%w: status is maintained by imagefs (the owner or root may only deactivate an active image or reactivate a deactivated one; %s -> %s)", ErrImmutable, from, value)
	}
	if !c.Owns(im) {
		return fmt.Errorf("%w: only the owner of image %s or root may %s it", ErrNotPermitted, im.ID, map[Status]string{StatusDeactivated: "deactivate", StatusActive: "reactivate"}[to])
	}
	return nil
}

// LookupFor returns the image named name if c may see it by name.
func (s *Store) LookupFor(c Caller, name string) *Image {
	if im := s.Lookup(name); im != nil && Visible(c, im, ReachList) {
		return im
	}
	return nil
}

// GetFor returns image id if c may use it by id.
func (s *Store) GetFor(c Caller, id string) *Image {
	if im := s.Get(id); im != nil && Visible(c, im, ReachID) {
		return im
	}
	return nil
}

// ListFor returns the images c may see listed, sorted by name.
func (s *Store) ListFor(c Caller) []*Image {
	all := s.List()
	out := all[:0]
	for _, im := range all {
		if Visible(c, im, ReachList) {
			out = append(out, im)
		}
	}
	return out
}
