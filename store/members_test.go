package store

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// statuses is im's members as "ID STATUS" lines (their times left out).
func statuses(im *Image) string {
	var lines []string
	for _, m := range im.Members() {
		lines = append(lines, m.ID+" "+string(m.Status))
	}
	return strings.Join(lines, "\n")
}

// listed reports whether c lists im (ListFor) and sees it by id (GetFor).
func listedAndByID(s *Store, c Caller, id string) (bool, bool) {
	listed := slices.ContainsFunc(s.ListFor(c), func(x *Image) bool { return x.ID == id })
	return listed, s.GetFor(c, id) != nil
}

// TestMembersAPI: the members rules through the API's calls (AddMember,
// SetMemberStatus, RemoveMember, MembersFor), as Glance's
// image_members.py and domain answer them.
func TestMembersAPI(t *testing.T) {
	s := openStore(t, t.TempDir())
	im := queued(t, s, alice, "a")

	// Only shared images have members.
	_, err := s.AddMember(alice, im.ID, "1002")
	assert.ErrorIs(t, err, ErrNotPermitted, "private")
	_, err = s.MembersFor(alice, im.ID)
	assert.ErrorIs(t, err, ErrNotPermitted, "list of a private image")
	im = withVisibility(t, s, im, "shared")

	// Only the owner (or root) adds; the image must be visible.
	_, err = s.AddMember(bob, im.ID, "1002")
	assert.ErrorIs(t, err, ErrNotFound, "bob sees no shared image he is no member of")
	m, err := s.AddMember(alice, im.ID, "1002")
	require.NoError(t, err)
	assert.Equal(t, Member{ID: "1002", Status: MemberPending, CreatedAt: m.CreatedAt, UpdatedAt: m.CreatedAt}, m)
	assert.WithinDuration(t, time.Now(), m.CreatedAt, time.Minute)
	_, err = s.AddMember(alice, im.ID, "1002")
	assert.ErrorIs(t, err, ErrExists, "an existing member")
	_, err = s.AddMember(bob, im.ID, "1003")
	assert.ErrorIs(t, err, ErrPermission, "a member adds no member")
	_, err = s.AddMember(alice, im.ID, "two words")
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = s.AddMember(alice, im.ID, "accepted")
	assert.ErrorIs(t, err, ErrInvalid, "a status word is no member id")
	_, err = s.AddMember(Root, im.ID, "3f9d2c5a0b7e4c1d8e6f5a4b3c2d1e0f") // a project id, unmapped
	require.NoError(t, err)

	// Pending: by id, not listed.
	listed, byID := listedAndByID(s, bob, im.ID)
	assert.Equal(t, [2]bool{false, true}, [2]bool{listed, byID}, "pending member")
	assert.True(t, VisibleAs(bob, s.Get(im.ID), ReachList, MemberPending))
	assert.True(t, VisibleAs(bob, s.Get(im.ID), ReachList, MemberAll))
	assert.False(t, VisibleAs(bob, s.Get(im.ID), ReachList, MemberRejected))

	// The owner does not accept; neither does another user; bad status.
	_, err = s.SetMemberStatus(alice, im.ID, "1002", MemberAccepted)
	assert.ErrorIs(t, err, ErrNotPermitted, "the owner accepts for the member")
	_, err = s.SetMemberStatus(bob, im.ID, "3f9d2c5a0b7e4c1d8e6f5a4b3c2d1e0f", MemberAccepted)
	assert.ErrorIs(t, err, ErrNoMember, "bob sets another member's status")
	_, err = s.SetMemberStatus(bob, im.ID, "1002", "notavalidstatus")
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = s.SetMemberStatus(carolC, im.ID, "1002", MemberAccepted)
	assert.ErrorIs(t, err, ErrNotFound, "not a member: the image is not there")

	// The member accepts: listed.
	before := s.Get(im.ID).Members()[0]
	time.Sleep(1100 * time.Millisecond) // times are in seconds
	m, err = s.SetMemberStatus(bob, im.ID, "1002", MemberAccepted)
	require.NoError(t, err)
	assert.Equal(t, MemberAccepted, m.Status)
	assert.Equal(t, before.CreatedAt, m.CreatedAt)
	assert.True(t, m.UpdatedAt.After(before.UpdatedAt), "updated_at moves")
	listed, byID = listedAndByID(s, bob, im.ID)
	assert.Equal(t, [2]bool{true, true}, [2]bool{listed, byID}, "accepted member")
	assert.Equal(t, "1002 accepted\n3f9d2c5a0b7e4c1d8e6f5a4b3c2d1e0f pending", statuses(s.Get(im.ID)), "the mount's view")

	// Rejected: by id, not listed.
	_, err = s.SetMemberStatus(bob, im.ID, "1002", MemberRejected)
	require.NoError(t, err)
	listed, byID = listedAndByID(s, bob, im.ID)
	assert.Equal(t, [2]bool{false, true}, [2]bool{listed, byID}, "rejected member")
	_, err = s.SetMemberStatus(Root, im.ID, "1002", MemberAccepted)
	require.NoError(t, err, "root (the admin) sets any member's status")

	// Who sees which members.
	all, err := s.MembersFor(alice, im.ID)
	require.NoError(t, err)
	assert.Len(t, all, 2)
	own, err := s.MembersFor(bob, im.ID)
	require.NoError(t, err)
	require.Len(t, own, 1, "a member sees its own membership only")
	assert.Equal(t, "1002", own[0].ID)
	_, err = s.Member(bob, im.ID, "3f9d2c5a0b7e4c1d8e6f5a4b3c2d1e0f")
	assert.ErrorIs(t, err, ErrNoMember)

	// A project member matches a caller acting for that project.
	proj := Caller{UID: 1005, GID: 1005, Project: "3f9d2c5a0b7e4c1d8e6f5a4b3c2d1e0f"}
	listed, byID = listedAndByID(s, proj, im.ID)
	assert.Equal(t, [2]bool{false, true}, [2]bool{listed, byID}, "project member, pending")
	_, err = s.SetMemberStatus(proj, im.ID, proj.Project, MemberAccepted)
	require.NoError(t, err)

	// Only the owner removes; a member does not remove itself.
	assert.ErrorIs(t, s.RemoveMember(bob, im.ID, "1002"), ErrPermission)
	assert.ErrorIs(t, s.RemoveMember(alice, im.ID, "1009"), ErrNoMember)
	require.NoError(t, s.RemoveMember(alice, im.ID, "1002"))
	listed, byID = listedAndByID(s, bob, im.ID)
	assert.Equal(t, [2]bool{false, false}, [2]bool{listed, byID}, "removed member")

	// Members stay when the visibility changes, and count again.
	withVisibility(t, s, im, "private")
	assert.Nil(t, s.GetFor(proj, im.ID))
	_, err = s.SetMemberStatus(Root, im.ID, proj.Project, MemberRejected)
	assert.ErrorIs(t, err, ErrNotPermitted)
	withVisibility(t, s, im, "shared")
	assert.NotNil(t, s.GetFor(proj, im.ID))

	// Survives a reopen, times included.
	want := s.Get(im.ID).Members()
	dir := s.Dir()
	require.NoError(t, s.Close())
	s = openStore(t, dir)
	defer s.Close()
	assert.Equal(t, want, s.Get(im.ID).Members())
}

// TestMemberQuota: image_member_quota (Options.MemberQuota) for both
// faces, checked before the duplicate as in Glance.
func TestMemberQuota(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MemberQuota: 2})
	require.NoError(t, err)
	defer s.Close()
	im := withVisibility(t, s, queued(t, s, alice, "a"), "shared")
	for _, id := range []string{"1002", "1003"} {
		_, err := s.AddMember(alice, im.ID, id)
		require.NoError(t, err)
	}
	_, err = s.AddMember(alice, im.ID, "1004")
	assert.ErrorIs(t, err, ErrQuota)
	_, err = s.AddMember(alice, im.ID, "1002")
	assert.ErrorIs(t, err, ErrQuota, "Glance counts before it looks for the duplicate")
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "1002\n1003\n1004", SetAny), ErrQuota)
	require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, "1002\n1004", SetAny), "a change within the quota")
	assert.Equal(t, "1002 pending\n1004 pending", statuses(s.Get(im.ID)))
}

// TestMembersProperty: the mount's face, the members property written by
// the owner and by a member.
func TestMembersProperty(t *testing.T) {
	s := newStore(t)
	im := queued(t, s, alice, "a")
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "1002", SetAny), ErrNotPermitted, "only shared images have members")
	im = withVisibility(t, s, im, "shared")

	// The owner writes uids (the format of earlier imagefs): pending.
	require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, "1002\n1003\n", SetAny))
	assert.Equal(t, "1002 pending\n1003 pending", statuses(s.Get(im.ID)))
	listed, byID := listedAndByID(s, bob, im.ID)
	assert.Equal(t, [2]bool{false, true}, [2]bool{listed, byID})
	// Syntax.
	for _, bad := range []string{"bob smith\n", "1002 maybe\n", "1002\n1002\n", "1002 pending extra\n"} {
		assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, bad, SetAny), ErrInvalid, bad)
	}
	// The owner does not set a status.
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "1002 accepted\n1003\n", SetAny), ErrNotPermitted)
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "1002\n1003\n1004 accepted", SetAny), ErrNotPermitted, "a new member accepted")
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "accepted", SetAny), ErrInvalid, "a status alone from the owner")

	// A member writes its own status: alone, its line, or the list.
	require.NoError(t, s.MayWriteProperty(bob, im.ID, KeyMembers), "a member opens members for writing")
	assert.ErrorIs(t, s.MayWriteProperty(bob, im.ID, "os_distro"), ErrPermission)
	require.NoError(t, s.SetProperty(bob, im.ID, KeyMembers, "accepted\n", SetAny))
	assert.Equal(t, "1002 accepted\n1003 pending", statuses(s.Get(im.ID)))
	listed, byID = listedAndByID(s, bob, im.ID)
	assert.Equal(t, [2]bool{true, true}, [2]bool{listed, byID}, "accepted on the mount")
	require.NoError(t, s.SetProperty(carolC, im.ID, KeyMembers, "1003 rejected\n", SetAny))
	require.NoError(t, s.SetProperty(bob, im.ID, KeyMembers, "1002 pending\n1003 rejected\n", SetAny))
	assert.Equal(t, "1002 pending\n1003 rejected", statuses(s.Get(im.ID)))
	before := s.Get(im.ID)
	assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyMembers, "1003 accepted\n", SetAny), ErrPermission, "another member's line")
	assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyMembers, "1002 accepted\n1003 accepted\n", SetAny), ErrPermission, "another's status")
	assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyMembers, "1002 pending\n1003 rejected\n1004\n", SetAny), ErrPermission, "adds a member")
	assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyMembers, "1003 rejected\n1002 pending\n", SetAny), ErrPermission, "reorders")
	assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyMembers, "", SetAny), ErrPermission, "empties")
	assert.ErrorIs(t, s.RemoveProperty(bob, im.ID, KeyMembers), ErrPermission)
	unchanged(t, s, before)
	// Its own line alone is its status (the others stay).
	require.NoError(t, s.SetProperty(bob, im.ID, KeyMembers, "1002 accepted\n", SetAny))
	assert.Equal(t, "1002 accepted\n1003 rejected", statuses(s.Get(im.ID)))

	// The file as read: each line with its times (added, last changed),
	// which a write of the file as read leaves as they are.
	v := s.Get(im.ID).Extra[KeyMembers]
	ms := s.Get(im.ID).Members()
	assert.Equal(t, "1002 accepted "+timeString(ms[0].CreatedAt)+" "+timeString(ms[0].UpdatedAt)+"\n"+
		"1003 rejected "+timeString(ms[1].CreatedAt)+" "+timeString(ms[1].UpdatedAt), v)
	require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, v+"\n", SetAny))
	require.NoError(t, s.SetProperty(carolC, im.ID, KeyMembers, v+"\n", SetAny))
	assert.Equal(t, ms, s.Get(im.ID).Members())
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "1002 accepted yesterday today\n1003", SetAny), ErrInvalid)
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyMembers, "1002 accepted 2026-12-07T17:00:00Z\n1003", SetAny), ErrInvalid, "three fields")

	// The owner's list keeps the statuses it does not name.
	require.NoError(t, s.SetProperty(alice, im.ID, KeyMembers, "1003\n1002\n1005\n", SetAny))
	assert.Equal(t, "1003 rejected\n1002 accepted\n1005 pending", statuses(s.Get(im.ID)))
	// Root sets any status.
	require.NoError(t, s.SetProperty(Root, im.ID, KeyMembers, "1003 accepted\n1002 accepted\n1005 rejected\n", SetAny))

	// Removing the property removes every member (the owner, shared only).
	withVisibility(t, s, im, "private")
	assert.ErrorIs(t, s.RemoveProperty(alice, im.ID, KeyMembers), ErrNotPermitted)
	withVisibility(t, s, im, "shared")
	require.NoError(t, s.RemoveProperty(alice, im.ID, KeyMembers))
	assert.Nil(t, s.GetFor(bob, im.ID))
}

// TestMembersEarlierFormat: a store written by an earlier imagefs keeps
// its members as uids, one per line: they read as accepted (they saw
// and listed the image), and the next change writes their status.
func TestMembersEarlierFormat(t *testing.T) {
	s := newStore(t)
	im := withVisibility(t, s, queued(t, s, alice, "a"), "shared")
	// The record as an earlier imagefs wrote it.
	old := s.Get(im.ID).clone()
	setExtra(old, KeyMembers, "1002\n1003")
	b, err := json.Marshal(old)
	require.NoError(t, err)
	var back Image
	require.NoError(t, json.Unmarshal(b, &back))
	ms := back.Members()
	require.Len(t, ms, 2)
	assert.Equal(t, MemberAccepted, ms[0].Status)
	assert.Equal(t, back.CreatedAt, ms[0].CreatedAt)
	assert.True(t, Visible(bob, &back, ReachList), "listed, as before")
	assert.True(t, back.IsMember(1003))
	assert.False(t, back.IsMember(1004))

	// Through the store: committed as the earlier format, then changed.
	s.mu.Lock()
	_, err = s.update(im.ID, 0, func(*Image) (*Image, error) { return old, nil })
	s.mu.Unlock()
	require.NoError(t, err)
	listed, byID := listedAndByID(s, bob, im.ID)
	assert.Equal(t, [2]bool{true, true}, [2]bool{listed, byID})
	require.NoError(t, s.SetProperty(carolC, im.ID, KeyMembers, "rejected", SetAny))
	assert.Equal(t, "1002 accepted\n1003 rejected", statuses(s.Get(im.ID)))
}
