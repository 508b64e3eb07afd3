package store

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/imagefs/imagefs/store/kv"
)

// Image members, as Glance has them (glance/api/v2/image_members.py,
// glance/db): an image of visibility shared is seen by the members its
// owner adds; each member has a status, pending when added, which only
// the member itself (or root, Glance's admin) changes to accepted or
// rejected. A member sees the image by id whatever its status; it is
// listed for the member only when accepted (Glance's member_status
// filter lists the others). Every rule is here; the mount (the members
// property, which both the owner and the members write) and the API
// (/v2/images/{id}/members) translate.
//
// The record keeps the members in the members property (Extra), one per
// line, "ID STATUS CREATED UPDATED" (the times RFC 3339 UTC, seconds), in
// the order they were added. A line with an id alone is a member from
// before members had a status (a store written by an earlier imagefs,
// where every member saw and listed the image): it reads as accepted,
// added when the image was created, and the next change of the members
// writes it whole.

// MemberStatus is a member's status, as in Glance.
type MemberStatus string

// The member statuses.
const (
	MemberPending  MemberStatus = "pending"
	MemberAccepted MemberStatus = "accepted"
	MemberRejected MemberStatus = "rejected"
)

// MemberAll, as a member_status filter (VisibleAs), matches every status.
const MemberAll MemberStatus = "all"

// DefaultMemberQuota is Glance's image_member_quota default: members of
// one image.
const DefaultMemberQuota = 128

// MaxMemberIDBytes bounds a member id (Glance's member column, 255).
const MaxMemberIDBytes = 255

// Member is one member of an image.
type Member struct {
	// ID is a uid in decimal (a member on the mount, or an API project
	// mapped to a uid), or an API project id as given (one mapped to no
	// uid when it was added; a caller acting for that project matches
	// it: Caller.Project).
	ID        string
	Status    MemberStatus
	CreatedAt time.Time // when it was added (UTC, seconds)
	UpdatedAt time.Time // when its status last changed (UTC, seconds)
}

func validStatus(s string) bool {
	switch MemberStatus(s) {
	case MemberPending, MemberAccepted, MemberRejected:
		return true
	}
	return false
}

// ValidMemberID checks a member id: a decimal uid, or a project id of
// 1-255 printable characters without white space that is not a status
// word. Errors wrap ErrInvalid.
func ValidMemberID(id string) error {
	if id == "" || len(id) > MaxMemberIDBytes {
		return fmt.Errorf("%w: member id must be 1-%d bytes, got %d", ErrInvalid, MaxMemberIDBytes, len(id))
	}
	if validStatus(id) {
		return fmt.Errorf("%w: member id %q is a member status, not a uid or project", ErrInvalid, id)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("%w: member id %q contains %q (a uid or a project id, without white space)", ErrInvalid, id, r)
		}
	}
	return nil
}

// memberLine is one line of a members value as written: an id, a status,
// or both (and the times, which a write does not change).
type memberLine struct {
	id     string
	status MemberStatus // "" when not given
}

// parseMembers reads a members value: lines "ID", "ID STATUS", "ID
// STATUS CREATED UPDATED" (the file as read: the times are imagefs's and
// a write leaves them as they are) or, for a member writing its own
// status, "STATUS". Blank lines are skipped. Errors wrap ErrInvalid and
// name the line.
func parseMembers(value string) ([]memberLine, error) {
	var out []memberLine
	seen := map[string]bool{}
	for _, line := range strings.Split(value, "\n") {
		f := strings.Fields(line)
		var ml memberLine
		switch len(f) {
		case 0:
			continue
		case 1:
			if validStatus(f[0]) {
				ml.status = MemberStatus(f[0])
			} else {
				ml.id = f[0]
			}
		case 2, 4:
			if len(f) == 4 && (!validTime(f[2]) || !validTime(f[3])) {
				return nil, fmt.Errorf("%w: members: %q: the times after the status are RFC 3339 (as read; imagefs keeps them)", ErrInvalid, line)
			}
			if !validStatus(f[1]) {
				return nil, fmt.Errorf("%w: members: %q: the status must be pending, accepted or rejected (lines are ID or ID STATUS)", ErrInvalid, line)
			}
			ml = memberLine{id: f[0], status: MemberStatus(f[1])}
		default:
			return nil, fmt.Errorf("%w: members: %q: a line is ID or ID STATUS (a uid or a project id, then pending, accepted or rejected; then the times, as read)", ErrInvalid, line)
		}
		if ml.id != "" {
			if err := ValidMemberID(ml.id); err != nil {
				return nil, fmt.Errorf("%w (members: line %q)", err, line)
			}
			if seen[ml.id] {
				return nil, fmt.Errorf("%w: members: %s is listed twice", ErrInvalid, ml.id)
			}
			seen[ml.id] = true
		}
		out = append(out, ml)
	}
	return out, nil
}

// checkMembers is the rule of a members value alone (ValidValue): its
// syntax. Who may write what is membersAfter's.
func checkMembers(value string) error {
	_, err := parseMembers(value)
	return err
}

func validTime(s string) bool {
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

// Members returns the image's members in the order they were added. A
// member stored without a status (an earlier imagefs's) is accepted,
// added when the image was created.
func (im *Image) Members() []Member {
	v := im.Extra[KeyMembers]
	if v == "" {
		return nil
	}
	var out []Member
	for _, line := range strings.Split(v, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := Member{ID: f[0], Status: MemberAccepted, CreatedAt: im.CreatedAt, UpdatedAt: im.CreatedAt}
		if len(f) >= 2 {
			m.Status = MemberStatus(f[1])
		}
		if len(f) >= 4 {
			m.CreatedAt, _ = time.Parse(time.RFC3339, f[2])
			m.UpdatedAt, _ = time.Parse(time.RFC3339, f[3])
		}
		out = append(out, m)
	}
	return out
}

// matches reports whether member id m names caller c: its uid in
// decimal, or the API project it acts for.
func (c Caller) matches(id string) bool {
	if c.Project != "" && id == c.Project {
		return true
	}
	n, err := strconv.ParseUint(id, 10, 32)
	return err == nil && uint32(n) == c.UID
}

// MemberFor returns c's membership of im, if c is a member (root is no
// member unless listed).
func (im *Image) MemberFor(c Caller) (Member, bool) {
	if c.UID == Anyone.UID {
		return Member{}, false
	}
	for _, m := range im.Members() {
		if c.matches(m.ID) {
			return m, true
		}
	}
	return Member{}, false
}

// memberStatus is c's status as a member of im (Visible's question, asked
// of every shared image a listing meets: the lines' first two fields
// only, no times parsed).
func (im *Image) memberStatus(c Caller) (MemberStatus, bool) {
	v := im.Extra[KeyMembers]
	if c.UID == Anyone.UID || v == "" {
		return "", false
	}
	for line := range strings.SplitSeq(v, "\n") {
		id, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		if id == "" || !c.matches(id) {
			continue
		}
		status, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		if status == "" {
			return MemberAccepted, true // an earlier imagefs's member
		}
		return MemberStatus(status), true
	}
	return "", false
}

// IsMember reports whether uid is one of the image's members, whatever
// its status.
func (im *Image) IsMember(uid uint32) bool {
	_, ok := im.MemberFor(Caller{UID: uid, GID: uid})
	return ok
}

// setMembers writes list as im's members (a clone being changed), one
// "ID STATUS CREATED UPDATED" line each.
func setMembers(im *Image, list []Member) {
	if len(list) == 0 {
		deleteExtra(im, KeyMembers)
		return
	}
	lines := make([]string, len(list))
	for i, m := range list {
		lines[i] = m.ID + " " + string(m.Status) + " " + timeString(m.CreatedAt) + " " + timeString(m.UpdatedAt)
	}
	setExtra(im, KeyMembers, strings.Join(lines, "\n"))
}

// sharedOnly refuses a change of members of an image that is not shared,
// as Glance ("Only shared images have members."). Members kept from
// when it was shared stay (as in Glance) and count again if it becomes
// shared again.
func sharedOnly(im *Image) error {
	if im.Visibility != VisibilityShared {
		return fmt.Errorf("%w: only shared images have members (image %s is %s)", ErrNotPermitted, im.ID, im.Visibility)
	}
	return nil
}

// membersAfter returns im's members after caller c writes value to its
// members property, under every rule of members:
//
//   - Nothing changes: allowed to whoever may write the property.
//   - Only an image of visibility shared has its members changed
//     (ErrNotPermitted).
//   - The owner (or root) adds and removes members: the lines it writes
//     are the members; a line "ID" keeps that member's status, or makes
//     a new one pending; "ID STATUS" must give the status it has (a new
//     member: pending): only the member changes it (ErrNotPermitted).
//     Root, Glance's admin, may give any status.
//   - A member changes only its own status: it writes "STATUS", or its
//     own line "ID STATUS", or the whole list with only its own status
//     changed; anything else is ErrPermission.
//   - At most quota members (ErrQuota), as Glance's image_member_quota.
//
// Errors wrap ErrInvalid (the syntax), ErrPermission, ErrNotPermitted,
// ErrQuota.
func membersAfter(c Caller, im *Image, value string, quota int, now time.Time) ([]Member, error) {
	lines, err := parseMembers(value)
	if err != nil {
		return nil, err
	}
	cur := im.Members()
	byID := make(map[string]Member, len(cur))
	for _, m := range cur {
		byID[m.ID] = m
	}
	if !c.Owns(im) {
		me, ok := im.MemberFor(c)
		if !ok {
			return nil, fmt.Errorf("%w: uid %d neither owns image %s nor is one of its members", ErrPermission, c.UID, im.ID)
		}
		status, err := ownStatus(c, me, lines, cur)
		if err != nil {
			return nil, err
		}
		return withStatus(c, im, me.ID, status, now)
	}
	var next []Member
	for _, l := range lines {
		if l.id == "" {
			return nil, fmt.Errorf("%w: members: a line %q without an id (the owner writes ID or ID STATUS; a member writes its own status)", ErrInvalid, l.status)
		}
		m, exists := byID[l.id]
		switch {
		case !exists:
			m = Member{ID: l.id, Status: MemberPending, CreatedAt: now, UpdatedAt: now}
			if l.status != "" && l.status != MemberPending {
				if !c.IsRoot() {
					return nil, fmt.Errorf("%w: members: a new member is pending until it accepts (%s %s): only the member changes its status", ErrNotPermitted, l.id, l.status)
				}
				m.Status = l.status
			}
		case l.status != "" && l.status != m.Status:
			if !c.IsRoot() {
				return nil, fmt.Errorf("%w: members: only the member changes its status (%s is %s)", ErrNotPermitted, l.id, m.Status)
			}
			m.Status, m.UpdatedAt = l.status, now
		}
		next = append(next, m)
	}
	if sameMembers(cur, next) {
		return cur, nil
	}
	if err := sharedOnly(im); err != nil {
		return nil, err
	}
	if quota >= 0 && len(next) > len(cur) && len(next) > quota {
		return nil, fmt.Errorf("%w: image %s would have %d members, limit %d", ErrQuota, im.ID, len(next), quota)
	}
	return next, nil
}

// ownStatus is the status member me writes: a lone "STATUS", its own
// line, or the list as it is with only its own status changed.
func ownStatus(c Caller, me Member, lines []memberLine, cur []Member) (MemberStatus, error) {
	denied := fmt.Errorf("%w: a member changes only its own status (write accepted, rejected or pending); uid %d does not own the image", ErrPermission, c.UID)
	switch {
	case len(lines) == 1 && lines[0].id == "" && lines[0].status != "":
		return lines[0].status, nil
	case len(lines) == 1 && lines[0].id == me.ID && lines[0].status != "":
		return lines[0].status, nil
	case len(lines) != len(cur):
		return "", denied
	}
	status := me.Status
	for i, l := range lines {
		m := cur[i]
		if l.id != m.ID {
			return "", denied
		}
		if l.status != "" && l.status != m.Status {
			if m.ID != me.ID {
				return "", denied
			}
			status = l.status
		}
	}
	return status, nil
}

// withStatus returns im's members with member id's status set (a change
// only when it differs: its updated time moves then). The change of a
// status is refused on an image that is not shared (ErrNotPermitted).
func withStatus(c Caller, im *Image, id string, status MemberStatus, now time.Time) ([]Member, error) {
	cur := im.Members()
	next := slices.Clone(cur)
	for i := range next {
		if next[i].ID == id && next[i].Status != status {
			if err := sharedOnly(im); err != nil {
				return nil, err
			}
			next[i].Status, next[i].UpdatedAt = status, now
		}
	}
	return next, nil
}

func sameMembers(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(x, y Member) bool { return x.ID == y.ID && x.Status == y.Status })
}

// mayWriteMembers is MayWriteProperty's rule for the members property:
// the owner, root and the image's members may open it for writing (what
// each may change is membersAfter's).
func mayWriteMembers(c Caller, im *Image) error {
	if c.Owns(im) {
		return nil
	}
	if _, ok := im.MemberFor(c); ok {
		return nil
	}
	return mayModify(c, im)
}

// applyChange sets key to value on next (a clone) as c's change: the
// members property merges what c wrote into the members (membersAfter,
// checked before by setPropertyRules), every other key is applyValue.
func (s *Store) applyChange(c Caller, next *Image, key, value string) {
	if key != KeyMembers {
		applyValue(next, key, value)
		return
	}
	list, err := membersAfter(c, next, value, s.memberQuota(), s.now())
	if err != nil {
		return // checked by setPropertyRules before: not reached
	}
	setMembers(next, list)
}

func (s *Store) now() time.Time { return s.opts.Now().UTC().Truncate(time.Second) }

// memberQuota is Options.MemberQuota: 0 means DefaultMemberQuota, a
// negative quota none (-1 to membersAfter).
func (s *Store) memberQuota() int {
	switch q := s.opts.MemberQuota; {
	case q == 0:
		return DefaultMemberQuota
	case q < 0:
		return -1
	default:
		return q
	}
}

// ErrNoMember is the error of a member that is not one of the image's
// (or not one the caller may see): it wraps ErrNotFound.
var ErrNoMember = fmt.Errorf("%w: member", ErrNotFound)

// visibleByID returns image id as c may use it by id, or ErrNotFound.
func (s *Store) visibleByID(c Caller, im *Image, id string) error {
	if im == nil || !Visible(c, im, ReachID) {
		return fmt.Errorf("%w: image %s", ErrNotFound, id)
	}
	return nil
}

// MembersFor returns the members of image id that c may see: all of them
// for the owner and root, its own membership for a member (as Glance's
// member list). Errors: ErrNotFound (no image c may see), ErrNotPermitted
// (the image is not shared: only shared images have members).
func (s *Store) MembersFor(c Caller, id string) ([]Member, error) {
	im := s.Get(id)
	if err := s.visibleByID(c, im, id); err != nil {
		return nil, err
	}
	if err := sharedOnly(im); err != nil {
		return nil, err
	}
	if c.Owns(im) {
		return im.Members(), nil
	}
	if m, ok := im.MemberFor(c); ok {
		return []Member{m}, nil
	}
	return nil, nil
}

// Member returns member of image id as c may see it (MembersFor).
// Errors: as MembersFor, and ErrNoMember.
func (s *Store) Member(c Caller, id, member string) (Member, error) {
	list, err := s.MembersFor(c, id)
	if err != nil {
		return Member{}, err
	}
	for _, m := range list {
		if m.ID == member {
			return m, nil
		}
	}
	return Member{}, fmt.Errorf("%w %s of image %s", ErrNoMember, member, id)
}

// changeMembers commits f's members for image id in one change (the
// record's updated_at moves, as for any property change), and returns
// the member named by id among them.
func (s *Store) changeMembers(c Caller, id, what string, f func(im *Image) ([]Member, error)) error {
	defer s.deliver()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.update(id, kv.Grows, func(im *Image) (*Image, error) {
		if err := s.visibleByID(c, im, id); err != nil {
			return nil, err
		}
		list, err := f(im)
		if err != nil {
			return nil, err
		}
		if sameMembers(im.Members(), list) {
			return nil, nil // nothing to commit
		}
		next := im.clone()
		setMembers(next, list)
		next.UpdatedAt = s.now()
		if err := checkRecordSize(next); err != nil {
			return nil, err
		}
		return next, nil
	})
	if err != nil {
		s.log.Warn("member change refused", "id", id, "change", what, "uid", c.UID, "err", err)
		return err
	}
	s.log.Info("members changed", "id", id, "change", what, "uid", c.UID)
	return nil
}

// AddMember adds member (a decimal uid or a project id) to image id,
// pending, for its owner c (or root). The checks, in Glance's order:
// ErrNotFound (no image c may see), ErrNotPermitted (not shared),
// ErrPermission (c does not own it), ErrQuota (image_member_quota),
// ErrExists (already a member), ErrInvalid (the id); and ErrCatalog.
func (s *Store) AddMember(c Caller, id, member string) (Member, error) {
	var added Member
	err := s.changeMembers(c, id, "add "+member, func(im *Image) ([]Member, error) {
		if err := sharedOnly(im); err != nil {
			return nil, err
		}
		if err := mayModify(c, im); err != nil {
			return nil, err
		}
		cur := im.Members()
		if q := s.memberQuota(); q >= 0 && len(cur)+1 > q {
			return nil, fmt.Errorf("%w: image %s has %d members, limit %d", ErrQuota, im.ID, len(cur), q)
		}
		if slices.ContainsFunc(cur, func(m Member) bool { return m.ID == member }) {
			return nil, fmt.Errorf("%w: %s is already a member of image %s", ErrExists, member, im.ID)
		}
		if err := ValidMemberID(member); err != nil {
			return nil, err
		}
		now := s.now()
		added = Member{ID: member, Status: MemberPending, CreatedAt: now, UpdatedAt: now}
		return append(cur, added), nil
	})
	return added, err
}

// RemoveMember removes member from image id, for its owner c (or root;
// a member does not remove itself, as in Glance). Errors: ErrNotFound
// (no image c may see), ErrNotPermitted (not shared), ErrPermission (c
// does not own it), ErrNoMember, ErrCatalog.
func (s *Store) RemoveMember(c Caller, id, member string) error {
	return s.changeMembers(c, id, "remove "+member, func(im *Image) ([]Member, error) {
		if err := sharedOnly(im); err != nil {
			return nil, err
		}
		if err := mayModify(c, im); err != nil {
			return nil, err
		}
		cur := im.Members()
		i := slices.IndexFunc(cur, func(m Member) bool { return m.ID == member })
		if i < 0 {
			return nil, fmt.Errorf("%w %s of image %s", ErrNoMember, member, im.ID)
		}
		return slices.Delete(slices.Clone(cur), i, i+1), nil
	})
}

// SetMemberStatus sets member's status on image id: the member itself
// does (c matches it), or root; the owner does not (unless root). The
// checks, in Glance's order: ErrNotFound (no image c may see),
// ErrNotPermitted (not shared; c is the owner), ErrNoMember (no such
// member, or one that is not c), ErrInvalid (status is not pending,
// accepted or rejected); and ErrCatalog. It returns the member as set.
func (s *Store) SetMemberStatus(c Caller, id, member string, status MemberStatus) (Member, error) {
	err := s.changeMembers(c, id, "status "+member+" "+string(status), func(im *Image) ([]Member, error) {
		if err := sharedOnly(im); err != nil {
			return nil, err
		}
		if !c.IsRoot() && c.UID == im.Owner {
			return nil, fmt.Errorf("%w: the owner does not change the status of a member of image %s: only the member does", ErrNotPermitted, im.ID)
		}
		m, ok := Member{}, false
		for _, x := range im.Members() {
			if x.ID == member && (c.IsRoot() || c.matches(x.ID)) {
				m, ok = x, true
			}
		}
		if !ok {
			return nil, fmt.Errorf("%w %s of image %s", ErrNoMember, member, im.ID)
		}
		if !validStatus(string(status)) {
			return nil, fmt.Errorf("%w: Status must be \"pending\", \"accepted\" or \"rejected\".", ErrInvalid)
		}
		return withStatus(c, im, m.ID, status, s.now())
	})
	if err != nil {
		return Member{}, err
	}
	im := s.Get(id)
	if im != nil {
		for _, m := range im.Members() {
			if m.ID == member {
				return m, nil
			}
		}
	}
	return Member{}, fmt.Errorf("%w %s of image %s (removed meanwhile)", ErrNoMember, member, id)
}

// membersRules is setPropertyRules for the members property: mode's
// condition, then membersAfter's rules.
func (s *Store) membersRules(c Caller, im *Image, value string, mode SetMode) error {
	_, exists := im.Extra[KeyMembers]
	switch {
	case mode == SetCreate && exists:
		return fmt.Errorf("%w: property %s", ErrExists, KeyMembers)
	case mode == SetReplace && !exists:
		return fmt.Errorf("%w: property %s", ErrNotFound, KeyMembers)
	}
	_, err := membersAfter(c, im, value, s.memberQuota(), s.now())
	return err
}

// takeMembers is checkTake's rule for removing (or renaming away) the
// members property: it removes every member, which only a shared image
// allows when it has some.
func takeMembers(im *Image, key string) error {
	if key != KeyMembers || len(im.Members()) == 0 {
		return nil
	}
	return sharedOnly(im)
}

// OthersWrite reports whether users other than the owner write property
// key: the members property, where each member sets its own status. Its
// file's mode lets them open it for writing (0666); what each may change
// is the store's rule (membersAfter).
func OthersWrite(key string) bool { return key == KeyMembers }
