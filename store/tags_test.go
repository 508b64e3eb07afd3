package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidTag(t *testing.T) {
	for tag, ok := range map[string]bool{
		"x86":                    true,
		"a b":                    true,
		"a/b%c":                  true,
		strings.Repeat("é", 255): true, // characters, not bytes
		strings.Repeat("x", 255): true,
		strings.Repeat("x", 256): false,
		strings.Repeat("é", 256): false,
		"":                       false,
		"a\nb":                   false,
		"a\tb":                   false,
		"nul\x00":                false,
		"del\x7f":                false,
		"\xff\xfe not utf-8":     false,
		"日本語":                    true,
		" leading and trailing ": true,
	} {
		err := ValidTag(tag)
		if (err == nil) != ok {
			t.Errorf("ValidTag(%.30q): %v, want ok=%v", tag, err, ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidTag(%.30q): %v is not ErrInvalid", tag, err)
		}
	}
	assert.Equal(t, []string{"a", "b", "c"}, ParseTags("c\n\na\nb\na\n"))
	assert.Nil(t, ParseTags(""))
	assert.Equal(t, "a\nb", FormatTags([]string{"b", "a", "b", ""}))
	assert.Equal(t, "", FormatTags(nil))
}

// TestTagsProperty: the tags value is a set (sorted, each once, empty
// lines skipped), absent when empty; each tag checked; the tag quota
// (not the property quota) bounds it; a refused value changes nothing.
func TestTagsProperty(t *testing.T) {
	s := newStore(t)
	im := queued(t, s, alice, "a")
	_, has := im.Property(KeyTags)
	assert.False(t, has, "no tags: no tags property")
	assert.Equal(t, []string{}, im.Tags())

	require.NoError(t, s.SetProperty(alice, im.ID, KeyTags, "x86\nsuperos\n\nx86\n", SetAny))
	im = s.Get(im.ID)
	v, _ := im.Property(KeyTags)
	assert.Equal(t, "superos\nx86", v)
	assert.Equal(t, []string{"superos", "x86"}, im.Tags())
	assert.True(t, im.HasTag("x86"))
	assert.False(t, im.HasTag("x8"))
	assert.False(t, im.HasTag(""))
	assert.Contains(t, im.Keys(), KeyTags)

	for _, bad := range []string{strings.Repeat("x", 256), "ok\nbad\x01tag"} {
		err := s.SetProperty(alice, im.ID, KeyTags, bad, SetAny)
		assert.ErrorIs(t, err, ErrInvalid, "%.30q", bad)
		unchanged(t, s, im)
	}
	assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyTags, "mine", SetAny), ErrPermission)
	unchanged(t, s, im)

	// The quota: 128 tags, not one more.
	many := make([]string, DefaultTagQuota+1)
	for i := range many {
		many[i] = fmt.Sprintf("t%03d", i)
	}
	err := s.SetProperty(alice, im.ID, KeyTags, strings.Join(many, "\n"), SetAny)
	require.ErrorIs(t, err, ErrQuota)
	assert.Contains(t, err.Error(), "Attempted: 129, Maximum: 128")
	unchanged(t, s, im)
	require.NoError(t, s.SetProperty(alice, im.ID, KeyTags, strings.Join(many[:DefaultTagQuota], "\n"), SetAny))
	assert.Len(t, s.Get(im.ID).Tags(), DefaultTagQuota)
	err = s.AddTag(alice, im.ID, "one-more")
	assert.ErrorIs(t, err, ErrQuota)
	assert.NoError(t, s.AddTag(alice, im.ID, many[0]), "a tag it has: no change in count")

	// An empty value is no tags: the key goes.
	require.NoError(t, s.SetProperty(alice, im.ID, KeyTags, "\n", SetAny))
	_, has = s.Get(im.ID).Property(KeyTags)
	assert.False(t, has)
}

// TestTagsOutsidePropertyQuota: tags do not count as a custom property
// (as in Glance, where they are not properties at all).
func TestTagsOutsidePropertyQuota(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{PropertyQuota: 1, TagQuota: 2})
	require.NoError(t, err)
	defer s.Close()
	im := queued(t, s, alice, "a")
	require.NoError(t, s.SetProperty(alice, im.ID, "os_distro", "superos", SetAny))
	require.NoError(t, s.SetProperty(alice, im.ID, KeyTags, "a\nb", SetCreate))
	require.NoError(t, s.SetProperty(alice, im.ID, KeyOSHidden, "true", SetAny))
	assert.ErrorIs(t, s.SetProperty(alice, im.ID, "os_version", "1", SetAny), ErrQuota)
	assert.ErrorIs(t, s.AddTag(alice, im.ID, "c"), ErrQuota, "TagQuota 2")
}

// TestAddRemoveTag: the API's single-tag changes, each one commit on the
// record as it is then.
func TestAddRemoveTag(t *testing.T) {
	s := newStore(t)
	im, _ := active(t, s, alice, "a")
	require.NoError(t, s.AddTag(alice, im.ID, "b"))
	require.NoError(t, s.AddTag(Root, im.ID, "a"))
	assert.Equal(t, []string{"a", "b"}, s.Get(im.ID).Tags())

	before := s.Get(im.ID)
	assert.ErrorIs(t, s.AddTag(bob, im.ID, "c"), ErrPermission)
	assert.ErrorIs(t, s.AddTag(alice, im.ID, strings.Repeat("x", 256)), ErrInvalid)
	assert.ErrorIs(t, s.AddTag(alice, "no-such-image", "c"), ErrNotFound)
	err := s.RemoveTag(alice, im.ID, "c")
	assert.ErrorIs(t, err, ErrNoTag)
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorIs(t, s.RemoveTag(bob, im.ID, "a"), ErrPermission)
	unchanged(t, s, before)

	// A protected image's tags change, as in Glance (protected only
	// forbids deleting the image), also by removing the tags file.
	require.NoError(t, s.SetProperty(alice, im.ID, KeyProtected, "true", SetAny))
	require.NoError(t, s.RemoveTag(alice, im.ID, "a"))
	assert.Equal(t, []string{"b"}, s.Get(im.ID).Tags())
	require.NoError(t, s.RemoveProperty(alice, im.ID, KeyTags))
	assert.Equal(t, []string{}, s.Get(im.ID).Tags())
	assert.ErrorIs(t, s.RemoveProperty(alice, im.ID, "os_distro"), ErrNotPermitted, "other properties stay protected")

	// Concurrent additions of different tags: none is lost.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { assert.NoError(t, s.AddTag(alice, im.ID, fmt.Sprint("c", i))) })
	}
	wg.Wait()
	assert.Len(t, s.Get(im.ID).Tags(), 20)
}

// TestOSHidden: a core property, false by default, true or false, set by
// the owner or root, never removed.
func TestOSHidden(t *testing.T) {
	s := newStore(t)
	im := queued(t, s, alice, "a")
	v, has := im.Property(KeyOSHidden)
	assert.True(t, has)
	assert.Equal(t, "false", v)
	assert.False(t, im.Hidden())
	assert.Equal(t, 1, countOf(im.Keys(), KeyOSHidden))

	assert.ErrorIs(t, s.SetProperty(alice, im.ID, KeyOSHidden, "yes", SetAny), ErrInvalid)
	assert.ErrorIs(t, s.SetProperty(bob, im.ID, KeyOSHidden, "true", SetAny), ErrPermission)
	unchanged(t, s, im)
	require.NoError(t, s.SetProperty(alice, im.ID, KeyOSHidden, "true", SetAny))
	im = s.Get(im.ID)
	assert.True(t, im.Hidden())
	v, _ = im.Property(KeyOSHidden)
	assert.Equal(t, "true", v)
	assert.Equal(t, 1, countOf(im.Keys(), KeyOSHidden), "listed once, as a core key")
	assert.ErrorIs(t, s.RemoveProperty(alice, im.ID, KeyOSHidden), ErrNotPermitted)
	// Still listed and found: hiding is a listing choice of the API.
	assert.NotNil(t, s.LookupFor(alice, "a"))
	assert.Len(t, s.ListFor(alice), 1)
	require.NoError(t, s.SetProperty(Root, im.ID, KeyOSHidden, "false", SetAny))
	_, inExtra := s.Get(im.ID).Extra[KeyOSHidden]
	assert.False(t, inExtra, "false is kept as absent")
}

func countOf(l []string, s string) int {
	n := 0
	for _, x := range l {
		if x == s {
			n++
		}
	}
	return n
}

// TestTagIndex: the index holds one entry per tag, so the tag views list
// by tag; by-property does not show the tags key; it survives a reopen
// and agrees with the records (CheckIndex), as the in-memory index of a
// shared catalog does (buildMemIndex and apply).
func TestTagIndex(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := queued(t, s, alice, "a")
	b := queued(t, s, alice, "b")
	c := queued(t, s, bob, "c")
	require.NoError(t, s.SetProperty(alice, a.ID, KeyTags, "x86\nlts", SetAny))
	require.NoError(t, s.SetProperty(alice, b.ID, KeyTags, "x86", SetAny))
	require.NoError(t, s.SetProperty(bob, c.ID, KeyTags, "x86\nsecret", SetAny))
	require.NoError(t, s.SetProperty(alice, b.ID, KeyOSHidden, "true", SetAny))

	names := func(ims []*Image, err error) []string {
		require.NoError(t, err)
		var out []string
		for _, im := range ims {
			out = append(out, im.Name)
		}
		return out
	}
	assert.Equal(t, []string{"a", "b"}, names(s.ViewImages(alice, KeyTags, "x86")))
	assert.Equal(t, []string{"a", "b", "c"}, names(s.ViewImages(Root, KeyTags, "x86")))
	vals, err := s.ViewValues(alice, KeyTags, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"lts", "x86"}, vals, "bob's private tag stays unseen")
	keys, err := s.ViewKeys(Root, nil)
	require.NoError(t, err)
	assert.NotContains(t, keys, KeyTags)
	assert.Contains(t, keys, KeyOSHidden)
	has, err := s.ViewHasKey(Root, KeyTags, nil)
	require.NoError(t, err)
	assert.False(t, has)
	assert.Equal(t, []string{"b"}, names(s.ViewImages(Root, KeyOSHidden, "true")))
	require.NoError(t, s.CheckIndex())

	require.NoError(t, s.RemoveTag(alice, a.ID, "x86"))
	assert.Equal(t, []string{"b"}, names(s.ViewImages(alice, KeyTags, "x86")))
	require.NoError(t, s.Delete(alice, b.ID))
	assert.Empty(t, names(s.ViewImages(alice, KeyTags, "x86")))
	require.NoError(t, s.CheckIndex())
	require.NoError(t, s.Close())

	s = openStore(t, dir)
	defer s.Close()
	require.NoError(t, s.CheckIndex())
	assert.Equal(t, []string{"a"}, names(s.ViewImages(Root, KeyTags, "lts")))

	// The in-memory index: built in one pass and by applies, the same.
	ims := s.List()
	bulk, byApply := buildMemIndex(ims), newMemIndex()
	var want []string
	for _, im := range ims {
		byApply.apply(nil, im)
		for e := range indexEntries(im) {
			want = append(want, entry(e.Key, e.Value, im.ID))
		}
	}
	slices.Sort(want)
	for _, m := range []*memIndex{bulk, byApply} {
		var got []string
		it := m.iter(prefixProp, endProp)
		for it.First(); it.Valid(); it.Next() {
			got = append(got, string(it.Key()))
		}
		it.Close()
		assert.Equal(t, want, got)
	}
	assert.Contains(t, want, entry(KeyTags, "secret", c.ID))
}

// TestSharedTags: on a shared catalog (etcd: the property index is in
// memory on each host), host A's tag changes reach host B's tag views
// and records, and B's AddTag on the record it learnt keeps A's tags.
func TestSharedTags(t *testing.T) {
	cat := newSharedCatalog(t)
	a, _ := cat.open("a", "")
	b, _ := cat.open("b", "")
	im, err := a.Create(alice, "one")
	require.NoError(t, err)
	require.NoError(t, a.AddTag(alice, im.ID, "x86"))
	require.NoError(t, a.SetProperty(alice, im.ID, KeyOSHidden, "true", SetAny))
	within(t, "A's tag on B", func() bool { g := b.Get(im.ID); return g != nil && g.HasTag("x86") && g.Hidden() })
	got, err := b.ViewImages(alice, KeyTags, "x86")
	require.NoError(t, err)
	assert.Equal(t, []string{"one"}, names(got))
	require.NoError(t, b.AddTag(alice, im.ID, "lts"))
	within(t, "B's tag on A", func() bool { return a.Get(im.ID).HasTag("lts") })
	assert.Equal(t, []string{"lts", "x86"}, a.Get(im.ID).Tags())
	require.NoError(t, a.RemoveTag(alice, im.ID, "x86"))
	within(t, "A's removal on B", func() bool { return !b.Get(im.ID).HasTag("x86") })
	got, err = b.ViewImages(alice, KeyTags, "x86")
	require.NoError(t, err)
	assert.Empty(t, got)
	vals, err := b.ViewValues(alice, KeyTags, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"lts"}, vals)
}
