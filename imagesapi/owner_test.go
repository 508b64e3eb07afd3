package imagesapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/store"
)

// The owner through the API (owner.go): the admin sets any owner at
// create and by a patch (a mapped project becomes its uid, another
// project is kept as given), a member gets Glance's 403s, the owner
// filter finds both kinds.

const randomProject = "5f1d2c8e7a104b3c9d0e1f2a3b4c5d6e" // as Tempest's rand_uuid_hex

func (e *env) owner(who, id string) string {
	e.t.Helper()
	o, _ := e.json(who, "GET", "/v2/images/"+id, nil, 200)["owner"].(string)
	return o
}

func (e *env) patchCode(who, id, ops string) (int, string) {
	e.t.Helper()
	code, _, b := e.do(who, "PATCH", "/v2/images/"+id, patchV21, []byte(ops))
	return code, string(b)
}

func TestOwnerAdminCreate(t *testing.T) {
	e := newEnv(t)
	// Any project id no config maps: kept, shown, uid 0 on the mount.
	id := e.create("admin", vhd(map[string]any{"name": "proj", "owner": randomProject}))
	if got := e.owner("admin", id); got != randomProject {
		t.Fatalf("owner = %q, want %q", got, randomProject)
	}
	if im := e.st.Get(id); im.OwnerProject != randomProject || im.Owner != 0 {
		t.Fatalf("store: owner %d project %q", im.Owner, im.OwnerProject)
	}
	for _, who := range []string{"alice", "bob", randomProject} {
		if code, _, _ := e.do(who, "GET", "/v2/images/"+id, "", nil); code != 404 {
			t.Errorf("%s sees the project's shared image without membership: %d", who, code)
		}
	}
	// A mapped project: its uid, shown as the project.
	a := e.create("admin", vhd(map[string]any{"name": "for-alice", "owner": "alice"}))
	if im := e.st.Get(a); im.Owner != 1000 || im.OwnerProject != "" {
		t.Fatalf("owner alice: uid %d project %q, want uid 1000", im.Owner, im.OwnerProject)
	}
	if got := e.owner("alice", a); got != "alice" {
		t.Fatalf("owner = %q, want alice", got)
	}
	e.json("alice", "PATCH", "/v2/images/"+a, []map[string]any{{"op": "add", "path": "/os_distro", "value": "superos"}}, 200)
	// A uid in decimal, as the API shows an unmapped uid's images.
	u := e.create("admin", vhd(map[string]any{"name": "for-1234", "owner": "1234"}))
	if im := e.st.Get(u); im.Owner != 1234 || im.OwnerProject != "" {
		t.Fatalf("owner 1234: uid %d project %q", im.Owner, im.OwnerProject)
	}
	// No owner: the admin's project (adminproject, unmapped), as Glance;
	// null: root's ("0"); noauth without headers: root's.
	if got := e.owner("admin", e.create("admin", vhd(map[string]any{"name": "mine"}))); got != "adminproject" {
		t.Errorf("the admin's own image: owner %q, want adminproject", got)
	}
	if got := e.owner("admin", e.create("admin", vhd(map[string]any{"name": "null", "owner": nil}))); got != "0" {
		t.Errorf("owner null: %q, want 0", got)
	}
	if got := e.owner("", e.create("", vhd(map[string]any{"name": "noheaders"}))); got != "0" {
		t.Errorf("noauth without headers: owner %q, want 0", got)
	}

	// Refused: wrong type, too long, a control character; nothing made.
	n := len(e.st.List())
	for _, c := range []struct {
		owner any
		want  int
		msg   string
	}{
		{42, 400, "42 is not of type 'null', 'string'"},
		{strings.Repeat("p", 256), 400, "is too long"},
		{"a\tb", 400, "control character"},
	} {
		code, _, b := e.do("admin", "POST", "/v2/images", "application/json", fmt.Appendf(nil, `{"name":"bad","owner":%s}`, jsonString(c.owner)))
		if code != c.want || !strings.Contains(string(b), c.msg) {
			t.Errorf("owner %v: %d %s, want %d %q", c.owner, code, b, c.want, c.msg)
		}
	}
	if len(e.st.List()) != n {
		t.Fatal("a refused create left an image")
	}

	// A member: its own project is fine, another owner is Glance's 403.
	if got := e.owner("alice", e.create("alice", vhd(map[string]any{"name": "own", "owner": "alice"}))); got != "alice" {
		t.Errorf("alice's create with owner alice: %q", got)
	}
	for _, o := range []any{"bob", randomProject, nil} {
		code, _, b := e.do("alice", "POST", "/v2/images", "application/json", fmt.Appendf(nil, `{"name":"not-mine","owner":%s}`, jsonString(o)))
		if code != 403 || !strings.Contains(string(b), "You are not permitted to create images owned by") {
			t.Errorf("alice creates an image owned by %v: %d %s, want 403", o, code, b)
		}
	}
	if e.st.Lookup("not-mine") != nil {
		t.Fatal("a refused create left an image")
	}
}

func jsonString(v any) string {
	switch s := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

func TestOwnerAdminPatch(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", vhd(map[string]any{"name": "a", "visibility": "private"}))

	// A member, even the owner, does not change the owner.
	for _, op := range []string{"replace", "add"} {
		if code, b := e.patchCode("alice", id, `[{"op":"`+op+`","path":"/owner","value":"bob"}]`); code != 403 || !strings.Contains(b, "Owner can't be updated by non admin.") {
			t.Errorf("alice %s /owner: %d %s, want 403", op, code, b)
		}
	}
	if code, b := e.patchCode("admin", id, `[{"op":"remove","path":"/owner"}]`); code != 403 || !strings.Contains(b, "Property owner may not be removed.") {
		t.Errorf("remove /owner: %d %s, want 403", code, b)
	}
	// All or nothing: the owner's op with a refused one changes nothing.
	before := e.st.Get(id)
	if code, b := e.patchCode("admin", id, `[{"op":"replace","path":"/owner","value":"`+randomProject+`"},{"op":"replace","path":"/min_ram","value":-1}]`); code != 400 {
		t.Errorf("owner and a bad min_ram: %d %s, want 400", code, b)
	}
	if e.st.Get(id) != before {
		t.Fatal("a refused patch changed the image")
	}

	// The admin: to an unmapped project, then to bob's (mapped) uid.
	e.json("admin", "PATCH", "/v2/images/"+id, []map[string]any{{"op": "replace", "path": "/owner", "value": randomProject}, {"op": "add", "path": "/os_distro", "value": "superos"}}, 200)
	if got := e.owner("admin", id); got != randomProject {
		t.Fatalf("owner after the admin's patch: %q", got)
	}
	if im := e.st.Get(id); im.Owner != 0 || im.Extra["os_distro"] != "superos" {
		t.Fatalf("store after the patch: uid %d, os_distro %q", im.Owner, im.Extra["os_distro"])
	}
	if code, _, _ := e.do("alice", "GET", "/v2/images/"+id, "", nil); code != 404 {
		t.Errorf("alice sees her former private image: %d", code)
	}
	e.json("admin", "PATCH", "/v2/images/"+id, []map[string]any{{"op": "replace", "path": "/owner", "value": "bob"}}, 200)
	if im := e.st.Get(id); im.Owner != 2000 || im.OwnerProject != "" {
		t.Fatalf("owner bob: uid %d project %q", im.Owner, im.OwnerProject)
	}
	if got := e.owner("bob", id); got != "bob" {
		t.Fatalf("bob's view of the owner: %q", got)
	}
	e.json("bob", "PATCH", "/v2/images/"+id, []map[string]any{{"op": "add", "path": "/x", "value": "y"}}, 200)
	if code, b := e.patchCode("admin", id, `[{"op":"replace","path":"/owner","value":"1234"}]`); code != 200 || e.st.Get(id).Owner != 1234 {
		t.Errorf("owner 1234: %d %s", code, b)
	}
	if code, b := e.patchCode("admin", id, `[{"op":"replace","path":"/owner","value":7}]`); code != 400 {
		t.Errorf("owner 7: %d %s, want 400", code, b)
	}
}

func TestOwnerFilter(t *testing.T) {
	e := newEnv(t)
	p := e.create("admin", vhd(map[string]any{"name": "p", "owner": randomProject, "visibility": "public"}))
	a := e.create("admin", vhd(map[string]any{"name": "a", "owner": "alice", "visibility": "public"}))
	b := e.create("admin", vhd(map[string]any{"name": "b", "owner": "bob", "visibility": "public"}))
	ids := func(who, query string) []string {
		t.Helper()
		var out []string
		for _, im := range e.json(who, "GET", "/v2/images"+query, nil, http.StatusOK)["images"].([]any) {
			out = append(out, im.(map[string]any)["id"].(string))
		}
		slices.Sort(out)
		return out
	}
	sorted := func(s ...string) []string { slices.Sort(s); return s }
	for q, want := range map[string][]string{
		"?owner=" + randomProject:               {p},
		"?owner=alice":                          {a},
		"?owner=bob":                            {b},
		"?owner=2000":                           {b},
		"?owner=in:" + randomProject + ",alice": sorted(p, a),
		"?owner=someoneelse":                    nil,
	} {
		for _, who := range []string{"admin", "bob"} {
			if got := ids(who, q); !slices.Equal(got, want) {
				t.Errorf("%s lists %s: %v, want %v", who, q, got, want)
			}
		}
	}
	if im := e.st.Get(p); im.OwnerProject != randomProject {
		t.Fatalf("store: %q", im.OwnerProject)
	}
	// The store's view of the same filter (by-property/owner/...).
	ims, err := e.st.ViewImages(store.Root, store.KeyOwner, randomProject)
	if err != nil || len(ims) != 1 || ims[0].ID != p {
		t.Fatalf("by-property/owner/%s: %v %v", randomProject, ims, err)
	}
}
