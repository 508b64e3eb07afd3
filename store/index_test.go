package store

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scanProperties computes what the property index must hold by reading
// every record: (key, value) -> sorted ids.
func scanProperties(s *Store) map[KV][]string {
	out := map[KV][]string{}
	for _, im := range s.List() {
		for _, k := range im.Keys() {
			v, _ := im.Property(k)
			out[KV{k, v}] = append(out[KV{k, v}], im.ID)
		}
	}
	for kv := range out {
		slices.Sort(out[kv])
	}
	return out
}

// requireIndexMatchesScan fails unless the index equals a full scan.
func requireIndexMatchesScan(t *testing.T, s *Store, when string) {
	t.Helper()
	got, err := s.PropertyIndex()
	require.NoError(t, err)
	want := scanProperties(s)
	if !assert.Equal(t, want, got, "property index vs full scan %s", when) {
		t.FailNow()
	}
	require.NoError(t, s.CheckIndex(), when)
}

// indexValues are the values the random test sets: shared ones (so views
// have several images), escaping cases and a long one.
var indexValues = []string{
	"superos", "superos", "hyperos", "a/b", "50%", "%2F", "", "x\x00y",
	"\x01", "\x00", "two\nlines", strings.Repeat("v", 300), "ünïcode",
}

var indexKeys = []string{"os_distro", "os_version", "com.rackspace__1__release_id", "k y", "."}

// TestIndexMatchesScanAfterRandomChanges changes a catalog at random
// (create, set, remove, rename, delete, seal, refused upload, deactivate,
// visibility, members, an upload interrupted by a restart) and checks
// after every batch of changes, and after reopening, that the index holds
// exactly the records' properties.
func TestIndexMatchesScanAfterRandomChanges(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 7))
	dir := t.TempDir()
	s := openStore(t, dir)
	defer func() { s.Close() }()
	vhd := fixedVHD(t, 64<<10)
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	ids := func() []string {
		var out []string
		for _, im := range s.List() {
			out = append(out, im.ID)
		}
		return out
	}
	names := 0
	done := map[int]int{} // successful changes by kind
	for round := range 6 {
		for range 40 {
			all := ids()
			if len(all) < 3 || r.IntN(8) == 0 {
				names++
				_, err := s.Create([]Caller{alice, bob, Root}[r.IntN(3)], fmt.Sprintf("img-%d", names))
				require.NoError(t, err)
				continue
			}
			id := all[r.IntN(len(all))]
			var err error
			op := r.IntN(12)
			switch op {
			case 0, 1, 2:
				err = s.SetProperty(Root, id, pick(indexKeys), pick(indexValues), SetAny)
			case 3:
				key := pick(indexKeys)
				for k := range s.Get(id).Extra {
					if slices.Contains(indexKeys, k) {
						key = k // one it has, mostly
					}
				}
				err = s.RemoveProperty(Root, id, key)
			case 4:
				err = s.SetProperty(Root, id, KeyMinRAM, fmt.Sprint(r.IntN(3)*512), SetAny)
			case 5:
				err = s.SetProperty(Root, id, KeyVisibility, pick([]string{"private", "shared", "community", "public"}), SetAny)
			case 6:
				names++
				err = s.Rename(Root, id, fmt.Sprintf("img-%d", names))
			case 7:
				err = s.SetProperty(Root, id, KeyProtected, pick([]string{"true", "false", "false"}), SetAny)
				if err == nil && r.IntN(2) == 0 {
					err = s.Delete(Root, id)
				}
			case 8:
				err = tryUpload(s, id, vhd)
			case 9:
				err = tryUpload(s, id, vhd[:1000]) // refused: killed
			case 10:
				err = s.SetProperty(Root, id, KeyStatus, pick([]string{"deactivated", "active"}), SetAny)
			case 11:
				err = s.SetProperty(Root, id, KeyMembers, "1001\n1002", SetAny)
			}
			// Refusals (sealed data, protected, no such key) are part of
			// the mix.
			if err == nil {
				done[op]++
			}
		}
		requireIndexMatchesScan(t, s, fmt.Sprintf("after round %d", round))
		if round%2 == 1 {
			// An upload in flight at the stop becomes killed at Open, in
			// the same batch as its index entries.
			var queued string
			for _, im := range s.List() {
				if !im.Status.Sealed() {
					queued = im.ID
					break
				}
			}
			if queued != "" {
				u, err := s.OpenWrite(Root, queued, true)
				require.NoError(t, err)
				_, err = u.WriteAt(vhd[:4096], 0)
				require.NoError(t, err)
			}
			require.NoError(t, s.Close())
			s = openStore(t, dir)
			requireIndexMatchesScan(t, s, fmt.Sprintf("after reopen %d", round))
			if queued != "" {
				assert.Equal(t, StatusKilled, s.Get(queued).Status)
			}
		}
	}
	t.Logf("successful changes by kind: %v", done)
	for _, op := range []int{0, 3, 6, 8} { // set, remove, rename, seal
		assert.NotZero(t, done[op], "kind %d never succeeded", op)
	}
}

// tryUpload uploads data as root in one write, returning any refusal.
func tryUpload(s *Store, id string, data []byte) error {
	u, err := s.OpenWrite(Root, id, true)
	if err != nil {
		return err
	}
	_, err = u.WriteAt(data, 0)
	if ferr := s.CloseWriter(u); err == nil {
		err = ferr
	}
	if rerr := s.EndWriter(u); err == nil {
		err = rerr
	}
	return err
}

// TestIndexBuiltAtOpen: a catalog without the index (written before it
// existed) or with an index of another version gets a complete index at
// Open.
func TestIndexBuiltAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	for i := range 20 {
		im, err := s.Create(alice, fmt.Sprintf("old-%d", i))
		require.NoError(t, err)
		require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", []string{"superos", "hyperos"}[i%2], SetAny))
	}
	// Make it a catalog from before the index.
	require.NoError(t, s.cat.db.Pebble().DeleteRange([]byte(prefixProp), []byte(endProp), nil))
	require.NoError(t, s.cat.db.Pebble().Delete([]byte(keyIndexVersion), nil))
	idx, err := s.PropertyIndex()
	require.NoError(t, err)
	require.Empty(t, idx)
	require.Error(t, s.CheckIndex())
	require.NoError(t, s.Close())

	s = openStore(t, dir)
	requireIndexMatchesScan(t, s, "after building at open")
	ims, err := s.ViewImages(Root, "os_distro", "superos")
	require.NoError(t, err)
	assert.Len(t, ims, 10)

	// Another version: a stale entry is dropped by the rebuild.
	require.NoError(t, s.cat.db.Pebble().Set(entryKey("os_distro", "gone", "no-such-id"), nil, nil))
	require.NoError(t, s.cat.db.Pebble().Set([]byte(keyIndexVersion), []byte("0"), nil))
	require.Error(t, s.CheckIndex())
	require.NoError(t, s.Close())
	s = openStore(t, dir)
	defer s.Close()
	requireIndexMatchesScan(t, s, "after rebuilding another version")
}

func imageNames(ims []*Image) []string {
	out := []string{}
	for _, im := range ims {
		out = append(out, im.Name)
	}
	return out
}

// TestViewVisibility: the view queries apply Visible with ReachList, as
// ListFor does: private images of others are not listed, nor are their
// keys and values; community images only for their owner; shared ones for
// members.
func TestViewVisibility(t *testing.T) {
	s := newStore(t)
	carol := Caller{UID: 1003, GID: 1003}
	mk := func(c Caller, name, vis string, props ...string) *Image {
		im, err := s.Create(c, name)
		require.NoError(t, err)
		if vis != "private" { // first: only a shared image has members
			require.NoError(t, s.SetProperty(Root, im.ID, KeyVisibility, vis, SetAny))
		}
		for i := 0; i < len(props); i += 2 {
			require.NoError(t, s.SetProperty(c, im.ID, props[i], props[i+1], SetAny))
		}
		return s.Get(im.ID)
	}
	mk(alice, "a-private", "private", "os_distro", "superos", "secret_project", "apollo")
	mk(alice, "a-community", "community", "os_distro", "superos")
	shared := mk(alice, "a-shared", "shared", "os_distro", "superos", KeyMembers, "1002")
	require.NoError(t, s.SetProperty(bob, shared.ID, KeyMembers, "accepted", SetAny)) // listed once accepted
	mk(Root, "pub", "public", "os_distro", "superos", "empty", "")
	mk(carol, "c-private", "private", "os_distro", "carolos")

	view := func(c Caller, k, v string) []string {
		ims, err := s.ViewImages(c, k, v)
		require.NoError(t, err)
		return imageNames(ims)
	}
	assert.Equal(t, []string{"a-community", "a-private", "a-shared", "pub"}, view(alice, "os_distro", "superos"))
	assert.Equal(t, []string{"a-community", "a-private", "a-shared", "pub"}, view(Root, "os_distro", "superos"))
	assert.Equal(t, []string{"a-shared", "pub"}, view(bob, "os_distro", "superos"))
	assert.Equal(t, []string{"pub"}, view(carol, "os_distro", "superos"))
	assert.Equal(t, []string{}, view(bob, "secret_project", "apollo"))
	assert.Equal(t, []string{}, view(bob, "os_distro", "carolos"))
	assert.Equal(t, []string{"c-private"}, view(carol, "os_distro", "carolos"))

	// The views agree with ListFor for every caller and every value.
	for _, c := range []Caller{Root, alice, bob, carol} {
		for _, im := range s.ListFor(c) {
			for _, k := range im.Keys() {
				v, _ := im.Property(k)
				assert.Contains(t, view(c, k, v), im.Name, "uid %d %s=%q", c.UID, k, v)
			}
		}
	}

	keys := func(c Caller, ok func(string) bool) []string {
		ks, err := s.ViewKeys(c, ok)
		require.NoError(t, err)
		return ks
	}
	values := func(c Caller, k string, ok func(string) bool) []string {
		vs, err := s.ViewValues(c, k, ok)
		require.NoError(t, err)
		return vs
	}
	assert.Contains(t, keys(alice, nil), "secret_project")
	assert.NotContains(t, keys(bob, nil), "secret_project")
	assert.Equal(t, []string{"superos"}, values(bob, "os_distro", nil))
	assert.Equal(t, []string{"carolos", "superos"}, values(carol, "os_distro", nil))
	assert.Equal(t, []string{"carolos", "superos"}, values(Root, "os_distro", nil))
	nonEmpty := func(v string) bool { return v != "" }
	assert.Contains(t, keys(Root, nil), "empty")
	assert.NotContains(t, keys(Root, nonEmpty), "empty")
	assert.Equal(t, []string{""}, values(Root, "empty", nil))
	assert.Empty(t, values(Root, "empty", nonEmpty))

	has := func(c Caller, k string) bool {
		ok, err := s.ViewHasKey(c, k, nonEmpty)
		require.NoError(t, err)
		return ok
	}
	hasValue := func(c Caller, k, v string) bool {
		ok, err := s.ViewHasValue(c, k, v)
		require.NoError(t, err)
		return ok
	}
	assert.True(t, has(alice, "secret_project"))
	assert.False(t, has(bob, "secret_project"))
	assert.False(t, has(Root, "empty"))
	assert.False(t, has(Root, "no_such_key"))
	assert.True(t, hasValue(carol, "os_distro", "carolos"))
	assert.False(t, hasValue(bob, "os_distro", "carolos"))
	assert.False(t, hasValue(Root, "os_distro", "nobody"))
	// Every key ViewKeys lists is one ViewHasKey accepts, for each caller.
	for _, c := range []Caller{Root, alice, bob, carol} {
		for _, k := range keys(c, nonEmpty) {
			assert.True(t, has(c, k), "uid %d key %s", c.UID, k)
			assert.NotEmpty(t, values(c, k, nonEmpty), "uid %d key %s", c.UID, k)
		}
	}
}

// TestViewFollowsChanges: setting, changing and removing a property moves
// the image between views at once; a rename changes the name in the
// view; a delete removes it.
func TestViewFollowsChanges(t *testing.T) {
	s := newStore(t)
	a, err := s.Create(alice, "a")
	require.NoError(t, err)
	b, err := s.Create(alice, "b")
	require.NoError(t, err)
	view := func(v string) []string {
		ims, err := s.ViewImages(alice, "os_distro", v)
		require.NoError(t, err)
		return imageNames(ims)
	}
	require.NoError(t, s.SetProperty(alice, a.ID, "os_distro", "superos", SetAny))
	require.NoError(t, s.SetProperty(alice, b.ID, "os_distro", "superos", SetAny))
	assert.Equal(t, []string{"a", "b"}, view("superos"))
	require.NoError(t, s.SetProperty(alice, a.ID, "os_distro", "hyperos", SetAny))
	assert.Equal(t, []string{"b"}, view("superos"))
	assert.Equal(t, []string{"a"}, view("hyperos"))
	require.NoError(t, s.Rename(alice, b.ID, "b2"))
	assert.Equal(t, []string{"b2"}, view("superos"))
	require.NoError(t, s.RemoveProperty(alice, a.ID, "os_distro"))
	assert.Equal(t, []string{}, view("hyperos"))
	vs, err := s.ViewValues(alice, "os_distro", nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"superos"}, vs)
	require.NoError(t, s.Delete(alice, b.ID))
	ks, err := s.ViewKeys(alice, nil)
	require.NoError(t, err)
	assert.NotContains(t, ks, "os_distro")
	assert.Contains(t, ks, KeyStatus)
	st, err := s.ViewImages(alice, KeyStatus, "queued")
	require.NoError(t, err)
	assert.Equal(t, []string{"a"}, imageNames(st))
}

func TestIndexEscaping(t *testing.T) {
	for _, v := range []string{"", "a", "\x00", "\x01", "\x00\x01\x02", "a\x01\x01b", "\x01\x00"} {
		e := escIndex(v)
		assert.NotContains(t, e, "\x00")
		assert.Equal(t, v, unescIndex(e))
		k, ev, id, ok := decodeEntry(entryKey("key", v, "id-1"))
		require.True(t, ok)
		assert.Equal(t, []string{"key", e, "id-1"}, []string{k, ev, id})
	}
}
