package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/imagefs/imagefs/store/kv"
)

var (
	mdAdmin = MetadefCaller{Project: "adminproject", Admin: true}
	mdAlice = MetadefCaller{Project: "alice"}
	mdBob   = MetadefCaller{Project: "bob"}
)

func tagNames(els []MetadefElement) []string {
	var out []string
	for _, e := range els {
		out = append(out, e.Name)
	}
	return out
}

// The rules on the embedded catalog: admins change, visibility, protected,
// unique names, renames, and what a reopen finds.
func TestMetadefsRules(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	require.NoError(t, err)

	desc := "d"
	ns, err := s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "OS::Test", Description: &desc, Visibility: MetadefPublic,
		ResourceTypes: []MetadefAssociation{{Name: "OS::Glance::Image", Prefix: "hw_"}}},
		map[MetadefKind][]MetadefElement{MetadefTags: {{Name: "a"}}, MetadefProperties: {{Name: "p", Body: json.RawMessage(`{"type":"string","title":"P"}`)}}})
	require.NoError(t, err)
	assert.Equal(t, "adminproject", ns.Owner, "the owner defaults to the caller's project")
	assert.False(t, ns.CreatedAt.IsZero())

	_, err = s.CreateMetadefNamespace(mdAlice, MetadefNamespace{Namespace: "mine"}, nil)
	assert.ErrorIs(t, err, ErrPermission, "a non-admin creates nothing")
	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "OS::Test"}, nil)
	assert.ErrorIs(t, err, ErrExists)
	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "a/b"}, nil)
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "dup", Visibility: MetadefPrivate},
		map[MetadefKind][]MetadefElement{MetadefTags: {{Name: "x"}, {Name: "X"}}})
	assert.ErrorIs(t, err, ErrExists, "tag names ignore case")
	_, _, err = s.MetadefNamespace(mdAdmin, "dup")
	assert.ErrorIs(t, err, ErrNotFound, "a refused create leaves nothing")

	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "alices", Owner: "alice"}, nil)
	require.NoError(t, err)
	vis := func(c MetadefCaller) []string {
		l, err := s.MetadefNamespaces(c, MetadefFilter{})
		require.NoError(t, err)
		var out []string
		for _, ns := range l {
			out = append(out, ns.Namespace)
		}
		return out
	}
	assert.Equal(t, []string{"OS::Test", "alices"}, vis(mdAlice))
	assert.Equal(t, []string{"OS::Test"}, vis(mdBob), "private namespaces of other projects are not listed")
	_, _, err = s.MetadefNamespace(mdBob, "alices")
	assert.ErrorIs(t, err, ErrNotFound, "nor shown")
	_, err = s.MetadefElements(mdBob, "alices", MetadefObjects)
	assert.ErrorIs(t, err, ErrNotFound)
	l, err := s.MetadefNamespaces(mdAdmin, MetadefFilter{ResourceTypes: []string{"OS::Glance::Image"}})
	require.NoError(t, err)
	assert.Len(t, l, 1)

	// Elements: unique names, rename, delete.
	_, err = s.CreateMetadefElements(mdAdmin, "OS::Test", MetadefObjects, []MetadefElement{{Name: "o", Body: json.RawMessage(`{"description":"x"}`)}}, false)
	require.NoError(t, err)
	_, err = s.CreateMetadefElements(mdAdmin, "OS::Test", MetadefObjects, []MetadefElement{{Name: "o"}}, false)
	assert.ErrorIs(t, err, ErrExists)
	_, err = s.CreateMetadefElements(mdAlice, "OS::Test", MetadefObjects, []MetadefElement{{Name: "o2"}}, false)
	assert.ErrorIs(t, err, ErrPermission)
	_, err = s.CreateMetadefElements(mdAdmin, "OS::Test", MetadefObjects, []MetadefElement{{Name: "o2", Body: json.RawMessage(`[1]`)}}, false)
	assert.ErrorIs(t, err, ErrInvalid, "a definition is a JSON object")
	e, err := s.UpdateMetadefElement(mdAdmin, "OS::Test", MetadefObjects, "o", MetadefElement{Name: "o-renamed"})
	require.NoError(t, err)
	assert.Equal(t, "o-renamed", e.Name)
	_, err = s.MetadefElement(mdAlice, "OS::Test", MetadefObjects, "o")
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = s.CreateMetadefElements(mdAdmin, "OS::Test", MetadefTags, []MetadefElement{{Name: "b"}}, false)
	require.NoError(t, err)
	_, err = s.UpdateMetadefElement(mdAdmin, "OS::Test", MetadefTags, "b", MetadefElement{Name: "A"})
	assert.ErrorIs(t, err, ErrExists, "a rename onto another tag's name (any case)")

	// Protected: the namespace and its contents stay; its fields change.
	_, err = s.UpdateMetadefNamespace(mdAdmin, "OS::Test", MetadefNamespaceUpdate{Namespace: "OS::Test", Visibility: MetadefPublic, Protected: true})
	require.NoError(t, err)
	assert.ErrorIs(t, s.DeleteMetadefNamespace(mdAdmin, "OS::Test"), ErrNotPermitted)
	assert.ErrorIs(t, s.DeleteMetadefElement(mdAdmin, "OS::Test", MetadefTags, "a"), ErrNotPermitted)
	assert.ErrorIs(t, s.DeleteMetadefElements(mdAdmin, "OS::Test", MetadefTags), ErrNotPermitted)
	assert.ErrorIs(t, s.DissociateMetadefResourceType(mdAdmin, "OS::Test", "OS::Glance::Image"), ErrNotPermitted)
	assert.ErrorIs(t, s.DeleteMetadefElement(mdAdmin, "OS::Test", MetadefTags, "nope"), ErrNotFound, "a missing element is 404 first, as Glance")

	// A rename takes the contents along and frees the old name.
	_, err = s.UpdateMetadefNamespace(mdAdmin, "alices", MetadefNamespaceUpdate{Namespace: "OS::Test"})
	assert.ErrorIs(t, err, ErrExists)
	_, err = s.UpdateMetadefNamespace(mdAlice, "alices", MetadefNamespaceUpdate{Namespace: "alices"})
	assert.ErrorIs(t, err, ErrPermission)
	up, err := s.UpdateMetadefNamespace(mdAdmin, "OS::Test", MetadefNamespaceUpdate{Namespace: "OS::Renamed"})
	require.NoError(t, err)
	assert.Equal(t, MetadefPrivate, up.Visibility, "a PUT without visibility makes it private, as Glance")
	assert.False(t, up.Protected)
	assert.Nil(t, up.Description, "every field is replaced")
	assert.Equal(t, ns.CreatedAt, up.CreatedAt)
	assert.Len(t, up.ResourceTypes, 1, "associations stay")

	// What a reopen finds: the same.
	require.NoError(t, s.Close())
	s, err = Open(dir, Options{})
	require.NoError(t, err)
	defer s.Close()
	got, content, err := s.MetadefNamespace(mdAdmin, "OS::Renamed")
	require.NoError(t, err)
	assert.Equal(t, "hw_", got.ResourceTypes[0].Prefix)
	assert.Equal(t, []string{"a", "b"}, tagNames(content[MetadefTags]))
	assert.Equal(t, []string{"o-renamed"}, tagNames(content[MetadefObjects]))
	assert.JSONEq(t, `{"type":"string","title":"P"}`, string(content[MetadefProperties][0].Body))
	_, _, err = s.MetadefNamespace(mdAdmin, "OS::Test")
	assert.ErrorIs(t, err, ErrNotFound)

	// Tags replaced, then everything deleted with the namespace.
	out, err := s.CreateMetadefElements(mdAdmin, "OS::Renamed", MetadefTags, []MetadefElement{{Name: "z"}}, true)
	require.NoError(t, err)
	assert.Equal(t, []string{"z"}, tagNames(out))
	require.NoError(t, s.DeleteMetadefNamespace(mdAdmin, "OS::Renamed"))
	_, err = s.MetadefElements(mdAdmin, "OS::Renamed", MetadefTags)
	assert.ErrorIs(t, err, ErrNotFound)
	// A namespace made again under the name starts empty.
	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "OS::Renamed"}, nil)
	require.NoError(t, err)
	els, err := s.MetadefElements(mdAdmin, "OS::Renamed", MetadefTags)
	require.NoError(t, err)
	assert.Empty(t, els)
}

// Resource types: the standard ones first, a new one recorded by its
// first association and kept after the namespace goes.
func TestMetadefsResourceTypes(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	require.NoError(t, err)
	defer s.Close()
	rts, err := s.MetadefResourceTypes()
	require.NoError(t, err)
	require.Len(t, rts, len(StandardResourceTypes))
	assert.Equal(t, "OS::Glance::Image", rts[0].Name)

	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "n"}, nil)
	require.NoError(t, err)
	a, err := s.AssociateMetadefResourceType(mdAdmin, "n", MetadefAssociation{Name: "OS::Custom::X", PropertiesTarget: "image"})
	require.NoError(t, err)
	assert.False(t, a.CreatedAt.IsZero())
	_, err = s.AssociateMetadefResourceType(mdAdmin, "n", MetadefAssociation{Name: "OS::Custom::X"})
	assert.ErrorIs(t, err, ErrExists)
	assert.ErrorIs(t, s.DissociateMetadefResourceType(mdAdmin, "n", "OS::Nova::Flavor"), ErrNotFound)
	require.NoError(t, s.DissociateMetadefResourceType(mdAdmin, "n", "OS::Custom::X"))
	require.NoError(t, s.DeleteMetadefNamespace(mdAdmin, "n"))
	rts, err = s.MetadefResourceTypes()
	require.NoError(t, err)
	require.Len(t, rts, len(StandardResourceTypes)+1)
	assert.Equal(t, "OS::Custom::X", rts[len(rts)-1].Name)
	assert.False(t, rts[len(rts)-1].CreatedAt.IsZero())
}

// Limits: elements per kind, bytes per namespace; a refused change
// changes nothing.
func TestMetadefsLimits(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "n"}, nil)
	require.NoError(t, err)
	tags := make([]MetadefElement, MaxMetadefElements+1)
	for i := range tags {
		tags[i].Name = fmt.Sprintf("t%d", i)
	}
	_, err = s.CreateMetadefElements(mdAdmin, "n", MetadefTags, tags, false)
	assert.ErrorIs(t, err, ErrQuota)
	_, err = s.CreateMetadefElements(mdAdmin, "n", MetadefTags, tags[:MaxMetadefElements], false)
	require.NoError(t, err)
	_, err = s.CreateMetadefElements(mdAdmin, "n", MetadefTags, []MetadefElement{{Name: "one-more"}}, false)
	assert.ErrorIs(t, err, ErrQuota)

	big := json.RawMessage(`{"description":"` + strings.Repeat("x", 400<<10) + `"}`)
	_, err = s.CreateMetadefElements(mdAdmin, "n", MetadefObjects, []MetadefElement{{Name: "a", Body: big}, {Name: "b", Body: big}}, false)
	require.NoError(t, err)
	_, err = s.CreateMetadefElements(mdAdmin, "n", MetadefObjects, []MetadefElement{{Name: "c", Body: big}}, false)
	assert.ErrorIs(t, err, ErrQuota)
	objs, err := s.MetadefElements(mdAdmin, "n", MetadefObjects)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, tagNames(objs))
	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: strings.Repeat("n", MaxMetadefNameBytes+1)}, nil)
	assert.ErrorIs(t, err, ErrInvalid)
}

// Concurrent changes of one namespace on the embedded catalog: none is
// lost (each reads and commits under metadefMu).
func TestMetadefsConcurrent(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "n"}, nil)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.CreateMetadefElements(mdAdmin, "n", MetadefObjects, []MetadefElement{{Name: fmt.Sprintf("o%02d", i)}}, false)
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	objs, err := s.MetadefElements(mdAdmin, "n", MetadefObjects)
	require.NoError(t, err)
	names := tagNames(objs)
	slices.Sort(names)
	assert.Len(t, names, 20)
	assert.Equal(t, "o00", names[0])
}

// Two hosts on the shared catalog (the real etcd cluster): what one
// creates the other sees at once; concurrent changes of one namespace
// from both are all kept (a conflict is retried on the fresh record);
// of two creates of one name exactly one wins.
func TestMetadefsShared(t *testing.T) {
	a, b, _, _, _ := twoHosts(t)
	_, err := a.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "shared", Visibility: MetadefPublic}, nil)
	require.NoError(t, err)
	got, _, err := b.MetadefNamespace(mdBob, "shared")
	require.NoError(t, err)
	assert.Equal(t, "adminproject", got.Owner)

	var wg sync.WaitGroup
	for i := range 10 {
		for j, s := range []*Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.CreateMetadefElements(mdAdmin, "shared", MetadefTags, []MetadefElement{{Name: fmt.Sprintf("h%d-%d", j, i)}}, false)
				assert.NoError(t, err)
			}()
		}
	}
	wg.Wait()
	tags, err := a.MetadefElements(mdAdmin, "shared", MetadefTags)
	require.NoError(t, err)
	assert.Len(t, tags, 20, "every host's tags kept: %v", tagNames(tags))

	var wins, exists int
	var mu sync.Mutex
	for _, s := range []*Store{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "race"}, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrExists):
				exists++
			default:
				t.Errorf("create race: %v", err)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, wins)
	assert.Equal(t, 3, exists)

	// A rename on one host: the other finds the new name only.
	_, err = b.UpdateMetadefNamespace(mdAdmin, "shared", MetadefNamespaceUpdate{Namespace: "shared2", Visibility: MetadefPublic})
	require.NoError(t, err)
	_, _, err = a.MetadefNamespace(mdAdmin, "shared")
	assert.ErrorIs(t, err, ErrNotFound)
	tags, err = a.MetadefElements(mdAdmin, "shared2", MetadefTags)
	require.NoError(t, err)
	assert.Len(t, tags, 20)
	require.NoError(t, a.DeleteMetadefNamespace(mdAdmin, "shared2"))
	_, _, err = b.MetadefNamespace(mdAdmin, "shared2")
	assert.ErrorIs(t, err, ErrNotFound)
}

// imagefs migrate carries the metadata definitions: a namespace with its
// elements and an introduced resource type are written once (a re-run
// skips them), a dry run writes nothing, and a namespace the
// destination holds differently is a conflict left as it is there.
func TestMetadefsMigrate(t *testing.T) {
	src := t.TempDir()
	s, err := Open(src, Options{})
	require.NoError(t, err)
	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "OS::Mig", Visibility: MetadefPublic,
		ResourceTypes: []MetadefAssociation{{Name: "OS::Custom::Mig"}}},
		map[MetadefKind][]MetadefElement{MetadefTags: {{Name: "t"}}})
	require.NoError(t, err)
	_, err = s.CreateMetadefNamespace(mdAdmin, MetadefNamespace{Namespace: "clash"}, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	d := newMigrateDst(t)
	// The destination holds "clash" already, as another store made it.
	_, err = d.kv.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: prefixMetadefNS + "clash", Value: []byte(`{"namespace":"clash","visibility":"public"}`)}}})
	require.NoError(t, err)

	r, err := Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{DryRun: true})
	require.NoError(t, err)
	assert.Equal(t, 2, r.Metadefs, "OS::Mig and OS::Custom::Mig would be written")
	assert.Len(t, d.keys(t, "metadefs/"), 1, "a dry run writes nothing")

	r, err = Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, r.Metadefs)
	assert.Equal(t, []string{"clash"}, r.MetadefConflicts)
	assert.False(t, r.OK())
	assert.JSONEq(t, `{"namespace":"clash","visibility":"public"}`, string(d.keys(t, prefixMetadefNS+"clash")[prefixMetadefNS+"clash"].Value), "left as it was")
	before := d.keys(t, "metadefs/")

	r, err = Migrate(context.Background(), src, d.kv, d.data, MigrateOptions{})
	require.NoError(t, err)
	assert.Equal(t, 0, r.Metadefs)
	assert.Equal(t, 2, r.MetadefsSkipped)
	assert.Equal(t, before, d.keys(t, "metadefs/"), "a re-run changes nothing")

	// A host of the shared catalog serves them.
	host, _ := openHost(t, d.ns, "host-a", d.dir)
	ns, content, err := host.MetadefNamespace(mdBob, "OS::Mig")
	require.NoError(t, err)
	assert.Equal(t, "OS::Custom::Mig", ns.ResourceTypes[0].Name)
	assert.Equal(t, []string{"t"}, tagNames(content[MetadefTags]))
	rts, err := host.MetadefResourceTypes()
	require.NoError(t, err)
	assert.Equal(t, "OS::Custom::Mig", rts[len(rts)-1].Name)
}
