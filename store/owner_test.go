package store

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The owner as a uid or a Keystone project (owner.go), and who may
// deactivate (access.go: checkStatusChange).

const projectX = "0f3c9a2e5b7d4e1f8a6b5c4d3e2f1a0b"

func ownerProp(t *testing.T, s *Store, id string) string {
	t.Helper()
	im := s.Get(id)
	require.NotNil(t, im)
	v, ok := im.Property(KeyOwner)
	require.True(t, ok)
	return v
}

// TestSetOwnerRootOnly: only root gives an image to another uid or to a
// project; the new owner has the owner's powers, the old one loses them;
// an image a project owns is uid 0's on the mount (root's powers only).
func TestSetOwnerRootOnly(t *testing.T) {
	s := newStore(t)
	im := queued(t, s, alice, "a")
	for _, c := range []Caller{alice, bob, Anyone} {
		_, err := s.SetOwner(c, im.ID, Owner{UID: bob.UID, GID: bob.GID})
		assert.ErrorIs(t, err, ErrNotPermitted, "uid %d", c.UID)
		unchanged(t, s, im)
	}
	ch, err := s.SetOwner(Root, im.ID, Owner{UID: bob.UID, GID: 1005})
	require.NoError(t, err)
	require.NotNil(t, ch.New)
	assert.Equal(t, "1002", ownerProp(t, s, im.ID))
	assert.Equal(t, uint32(1005), s.Get(im.ID).GID)
	assert.Nil(t, s.GetFor(alice, im.ID), "private: the old owner sees it no more")
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, "os_distro", "x", SetAny), ErrPermission)
	require.NoError(t, s.SetProperty(bob, im.ID, "os_distro", "superos", SetAny), "the new owner changes it")
	_, err = s.SetOwner(bob, im.ID, Owner{UID: alice.UID, GID: alice.GID})
	assert.ErrorIs(t, err, ErrNotPermitted, "the owner does not give it away")

	// The same owner again commits nothing, for anyone (chown to oneself).
	before := s.Get(im.ID)
	for _, c := range []Caller{Root, bob, alice} {
		ch, err = s.SetOwner(c, im.ID, Owner{UID: bob.UID, GID: 1005})
		require.NoError(t, err)
		assert.Nil(t, ch.New)
		assert.Same(t, before, s.Get(im.ID))
	}

	// A project: uid 0 on the mount, the project in the property.
	_, err = s.SetOwner(Root, im.ID, Owner{Project: projectX})
	require.NoError(t, err)
	got := s.Get(im.ID)
	assert.Equal(t, projectX, ownerProp(t, s, im.ID))
	assert.Equal(t, uint32(0), got.Owner)
	assert.Equal(t, uint32(0), got.GID)
	assert.Equal(t, Owner{Project: projectX}, OwnerOf(got))
	for _, c := range []Caller{alice, bob, {UID: 1003, GID: 1003, Project: projectX}} {
		assert.False(t, c.Owns(got), "uid %d", c.UID)
		assert.Nil(t, s.GetFor(c, im.ID), "uid %d: private", c.UID)
	}
	assert.True(t, Root.Owns(got))
	require.NoError(t, s.SetProperty(Root, im.ID, "os_distro", "y", SetAny))

	// Back to a uid: the project goes.
	_, err = s.SetOwner(Root, im.ID, Owner{UID: alice.UID, GID: alice.GID})
	require.NoError(t, err)
	assert.Equal(t, "1001", ownerProp(t, s, im.ID))
	assert.Empty(t, s.Get(im.ID).OwnerProject)
	assert.True(t, alice.Owns(s.Get(im.ID)))

	_, err = s.SetOwner(Root, "no-such-id", Owner{UID: 1})
	assert.ErrorIs(t, err, ErrNotFound)
}

// TestOwnerPropertyStaysSystem: writing the owner property (a property
// file, user.owner) is refused to everyone, root included; removing it
// too.
func TestOwnerPropertyStaysSystem(t *testing.T) {
	s := newStore(t)
	im := queued(t, s, alice, "a")
	for _, c := range []Caller{alice, Root} {
		assert.ErrorIs(t, s.SetProperty(c, im.ID, KeyOwner, "1002", SetAny), ErrImmutable)
		assert.ErrorIs(t, s.SetProperty(c, im.ID, KeyOwner, projectX, SetAny), ErrImmutable)
		assert.ErrorIs(t, s.MayWriteProperty(c, im.ID, KeyOwner), ErrImmutable)
		assert.ErrorIs(t, s.RemoveProperty(c, im.ID, KeyOwner), ErrImmutable)
		_, err := s.ChangeProperties(c, im.ID, []PropertyOp{{Key: KeyOwner, Remove: true}})
		assert.ErrorIs(t, err, ErrImmutable)
	}
	unchanged(t, s, im)
}

// TestOwnerValues: the owner's forms (ParseOwner) and what is refused.
func TestOwnerValues(t *testing.T) {
	for v, want := range map[string]Owner{
		"1002":                         {UID: 1002, GID: 1002},
		"0":                            {},
		projectX:                       {Project: projectX},
		"demo":                         {Project: "demo"},
		"12ab":                         {Project: "12ab"},
		strings.Repeat("p", 255):       {Project: strings.Repeat("p", 255)},
		"ünïcode project / with slash": {Project: "ünïcode project / with slash"},
	} {
		got, err := ParseOwner(v)
		require.NoError(t, err, v)
		assert.Equal(t, want, got, v)
		assert.Equal(t, v, got.String(), v)
	}
	for _, bad := range []string{"", strings.Repeat("p", 256), "a\nb", "tab\there", "4294967295", "99999999999"} {
		_, err := ParseOwner(bad)
		assert.ErrorIs(t, err, ErrInvalid, "%q", bad)
	}
	s := newStore(t)
	im := queued(t, s, alice, "a")
	for _, o := range []Owner{{Project: "1234"}, {Project: "a\x00b"}, {Project: strings.Repeat("p", 256)}, {UID: Anyone.UID}} {
		_, err := s.SetOwner(Root, im.ID, o)
		assert.ErrorIs(t, err, ErrInvalid, "%+v", o)
	}
	unchanged(t, s, im)
}

// TestCreateAndChangeOwner: the owner among CreateWithID's properties and
// ChangeProperties' ops (the Images API's create and patch): root only,
// in the same commit as the rest, all or nothing.
func TestCreateAndChangeOwner(t *testing.T) {
	s := newStore(t)
	const id1, id2, id3 = "7a1e0c1e-5a4c-4f5e-9d1c-0b6f3e2a1c01", "7a1e0c1e-5a4c-4f5e-9d1c-0b6f3e2a1c02", "7a1e0c1e-5a4c-4f5e-9d1c-0b6f3e2a1c03"
	_, err := s.CreateWithID(alice, id1, "by-alice", []KeyValue{{KeyOwner, projectX}})
	assert.ErrorIs(t, err, ErrNotPermitted)
	assert.Nil(t, s.Get(id1), "nothing created")

	im, err := s.CreateWithID(Root, id1, "for-project", []KeyValue{{"os_distro", "superos"}, {KeyOwner, projectX}})
	require.NoError(t, err)
	assert.Equal(t, projectX, ownerProp(t, s, im.ID))
	assert.Equal(t, "superos", s.Get(im.ID).Extra["os_distro"])
	im2, err := s.CreateWithID(Root, id2, "for-bob", []KeyValue{{KeyOwner, "1002"}})
	require.NoError(t, err)
	assert.True(t, bob.Owns(im2))
	_, err = s.CreateWithID(Root, id3, "bad", []KeyValue{{KeyOwner, "a\tb"}})
	assert.ErrorIs(t, err, ErrInvalid)
	assert.Nil(t, s.Get(id3))

	// A patch: the owner's op and the others in one commit, or none.
	before := s.Get(im2.ID)
	_, err = s.ChangeProperties(bob, im2.ID, []PropertyOp{{Key: "os_distro", Value: "x"}, {Key: KeyOwner, Value: "1001"}})
	assert.ErrorIs(t, err, ErrNotPermitted, "the owner does not give it away")
	unchanged(t, s, before)
	_, err = s.ChangeProperties(Root, im2.ID, []PropertyOp{{Key: "os_distro", Value: "x"}, {Key: KeyOwner, Value: "demo-project"}, {Key: KeyMinRAM, Value: "-1"}})
	assert.ErrorIs(t, err, ErrInvalid)
	unchanged(t, s, before)
	_, err = s.ChangeProperties(Root, im2.ID, []PropertyOp{{Key: "os_distro", Value: "x"}, {Key: KeyOwner, Value: "demo-project"}})
	require.NoError(t, err)
	assert.Equal(t, "demo-project", ownerProp(t, s, im2.ID))
	assert.Equal(t, "x", s.Get(im2.ID).Extra["os_distro"])
}

// TestOwnerProjectViews: the property index (by-property/owner/...) finds
// an image by its project owner, and follows a change of owner.
func TestOwnerProjectViews(t *testing.T) {
	s := newStore(t)
	im := queued(t, s, alice, "a")
	_, err := s.SetOwner(Root, im.ID, Owner{Project: projectX})
	require.NoError(t, err)
	ims, err := s.ViewImages(Root, KeyOwner, projectX)
	require.NoError(t, err)
	require.Len(t, ims, 1)
	assert.Equal(t, im.ID, ims[0].ID)
	ims, err = s.ViewImages(Root, KeyOwner, "1001")
	require.NoError(t, err)
	assert.Empty(t, ims, "no longer alice's")
	_, err = s.SetOwner(Root, im.ID, Owner{UID: bob.UID, GID: bob.GID})
	require.NoError(t, err)
	ims, err = s.ViewImages(Root, KeyOwner, projectX)
	require.NoError(t, err)
	assert.Empty(t, ims)
	ims, err = s.ViewImages(bob, KeyOwner, "1002")
	require.NoError(t, err)
	assert.Len(t, ims, 1)
	require.NoError(t, s.CheckIndex())
}

// TestOwnerProjectReopen: a project owner survives a close and an Open
// of the store (the catalog's record).
func TestOwnerProjectReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	im := queued(t, s, alice, "a")
	_, err := s.SetOwner(Root, im.ID, Owner{Project: projectX})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	s2 := openStore(t, dir)
	defer s2.Close()
	assert.Equal(t, projectX, ownerProp(t, s2, im.ID))
	assert.Equal(t, uint32(0), s2.Get(im.ID).Owner)
	ims, err := s2.ViewImages(Root, KeyOwner, projectX)
	require.NoError(t, err)
	assert.Len(t, ims, 1)
}

// TestSharedSnapshotOwnerProject: a host that closes writes an image's
// project owner into its catalog snapshot and reads it back from there
// (the snapshot's format carries it), as the other host sees it.
func TestSharedSnapshotOwnerProject(t *testing.T) {
	cat := newSharedCatalog(t)
	dir := filepath.Join(t.TempDir(), "store")
	a, _ := cat.open("a", dir)
	b, _ := cat.open("b", "")
	im, err := a.Create(alice, "p")
	require.NoError(t, err)
	_, err = a.SetOwner(Root, im.ID, Owner{Project: projectX})
	require.NoError(t, err)
	within(t, "B sees the owner", func() bool { g := b.Get(im.ID); return g != nil && g.OwnerProject == projectX })
	require.NoError(t, a.Close())
	a2, _ := cat.open("a", dir)
	assert.True(t, a2.remote.fromSnapshot, "opened from the snapshot")
	assert.Equal(t, projectX, ownerProp(t, a2, im.ID))
	assert.Equal(t, uint32(0), a2.Get(im.ID).Owner)
	sameView(t, b, a2)
}

// TestOwnerDeactivates: the owner deactivates and reactivates its active
// image (as Glance's default policy lets the owner's project); others
// may not; the owner reads no data of it while deactivated (only root
// does).
func TestOwnerDeactivates(t *testing.T) {
	s := newStore(t)
	im, data := active(t, s, alice, "a")
	im = withVisibility(t, s, im, "public")
	require.NoError(t, s.MayWriteProperty(alice, im.ID, KeyStatus), "the owner may open properties/status")
	assert.ErrorIs(t, s.MayWriteProperty(bob, im.ID, KeyStatus), ErrImmutable)
	assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyStatus, "deactivated", SetAny), ErrNotPermitted)
	require.NoError(t, s.SetProperty(alice, im.ID, KeyStatus, "deactivated", SetAny))
	assert.Equal(t, StatusDeactivated, s.Get(im.ID).Status)
	for _, c := range []Caller{alice, bob} {
		_, err := s.OpenRead(c, im.ID)
		assert.ErrorIs(t, err, ErrPermission, "uid %d", c.UID)
	}
	assert.Equal(t, data, readAll(t, s, Root, im.ID))
	assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyStatus, "active", SetAny), ErrNotPermitted)
	require.NoError(t, s.SetProperty(alice, im.ID, KeyStatus, "active", SetAny))
	assert.Equal(t, data, readAll(t, s, alice, im.ID))
	assert.False(t, s.Get(im.ID).Fixed(KeyStatus), "properties/status of a sealed image: 0644")

	// A queued image: status is the system's, for the owner too.
	q := queued(t, s, alice, "q")
	assert.True(t, q.Fixed(KeyStatus))
	assert.ErrorIs(t, s.MayWriteProperty(alice, q.ID, KeyStatus), ErrImmutable)
	assert.ErrorIs(t, s.SetProperty(alice, q.ID, KeyStatus, "deactivated", SetAny), ErrImmutable)

	// An image a project owns: root only (uid 0 on the mount).
	_, err := s.SetOwner(Root, im.ID, Owner{Project: projectX})
	require.NoError(t, err)
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyStatus, "deactivated", SetAny), ErrNotPermitted)
	require.NoError(t, s.SetProperty(Root, im.ID, KeyStatus, "deactivated", SetAny))
}
