package imagesapi

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
)

// newMembersEnv is newEnv with three mapped projects: alice (uid 1000),
// bob (2000), carol (3000); others are unmapped.
func newMembersEnv(t *testing.T, quota int) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{MemberQuota: quota})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(st, Options{Auth: AuthNoAuth, Projects: map[string]uint32{"alice": 1000, "bob": 2000, "carol": 3000}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config = NewHTTPServer(h)
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &env{t: t, st: st, dir: dir, url: srv.URL}
}

// memberLines is im's members as "ID STATUS" lines (the mount's
// properties/members without the times).
func memberLines(im *store.Image) string {
	var lines []string
	for _, m := range im.Members() {
		lines = append(lines, m.ID+" "+string(m.Status))
	}
	return strings.Join(lines, "\n")
}

// ids lists the ids of who's image list with query.
func (e *env) ids(who, query string) []string {
	e.t.Helper()
	var out []string
	for _, im := range e.json(who, "GET", "/v2/images"+query, nil, 200)["images"].([]any) {
		out = append(out, im.(map[string]any)["id"].(string))
	}
	return out
}

// memberCode is the status of a request with a JSON body (nil: none).
func (e *env) memberCode(who, method, path string, v any) (int, string) {
	e.t.Helper()
	var body []byte
	if v != nil {
		body, _ = json.Marshal(v)
	}
	code, _, b := e.do(who, method, path, "application/json", body)
	return code, string(b)
}

// TestMembersShareAcceptReject follows Tempest's test_images_member*:
// share, accept, list, reject, remove, and the refusals Glance answers.
func TestMembersShareAcceptReject(t *testing.T) {
	e := newMembersEnv(t, 0)
	id := e.create("alice", map[string]any{"name": "shared-one"}) // Glance's default visibility: shared
	e.put("alice", id, testutil.FixedVHD(t, 1<<20))
	members := "/v2/images/" + id + "/members"

	m := e.json("alice", "POST", members, map[string]any{"member": "bob"}, 200)
	for k, want := range map[string]any{"member_id": "bob", "image_id": id, "status": "pending", "schema": "/v2/schemas/member"} {
		if m[k] != want {
			t.Errorf("created member %s = %v, want %v", k, m[k], want)
		}
	}
	if m["created_at"] == nil || m["created_at"] != m["updated_at"] {
		t.Errorf("created member times: %v %v", m["created_at"], m["updated_at"])
	}
	// The mount's view: bob's uid, pending.
	if got := memberLines(e.st.Get(id)); got != "2000 pending" {
		t.Fatalf("members property = %q, want the uid of bob, pending", got)
	}
	if slices.Contains(e.ids("bob", ""), id) {
		t.Fatal("a pending member lists the image")
	}
	if got := e.ids("bob", "?member_status=pending&visibility=shared"); !slices.Equal(got, []string{id}) {
		t.Fatalf("member_status=pending&visibility=shared: %v, want [%s]", got, id)
	}
	e.json("bob", "GET", "/v2/images/"+id, nil, 200) // by id, whatever its status

	// 409 for an existing member; the owner does not accept (403);
	// an invalid status is 400; carol (no member) gets 404.
	if code, b := e.memberCode("alice", "POST", members, map[string]any{"member": "bob"}); code != 409 || !strings.Contains(b, "Member bob is duplicated for image "+id) {
		t.Fatalf("add again: %d %s", code, b)
	}
	if code, b := e.memberCode("alice", "PUT", members+"/bob", map[string]any{"status": "accepted"}); code != 403 || !strings.Contains(b, "Not allowed to update members for image") {
		t.Fatalf("the owner accepts: %d %s", code, b)
	}
	if code, b := e.memberCode("bob", "PUT", members+"/bob", map[string]any{"status": "notavalidstatus"}); code != 400 || !strings.Contains(b, `Status must be \"pending\", \"accepted\" or \"rejected\".`) {
		t.Fatalf("invalid status: %d %s", code, b)
	}
	if code, _ := e.memberCode("carol", "PUT", members+"/bob", map[string]any{"status": "accepted"}); code != 404 {
		t.Fatalf("carol sets bob's status: %d, want 404", code)
	}
	if code, _ := e.memberCode("bob", "POST", members, map[string]any{"member": "carol"}); code != 403 {
		t.Fatalf("a member adds a member: %d, want 403", code)
	}
	if memberLines(e.st.Get(id)) != "2000 pending" {
		t.Fatal("a refused request changed the members")
	}

	// bob accepts: listed; the owner sees it accepted.
	m = e.json("bob", "PUT", members+"/bob", map[string]any{"status": "accepted"}, 200)
	if m["status"] != "accepted" || m["member_id"] != "bob" {
		t.Fatalf("accept: %v", m)
	}
	if !slices.Contains(e.ids("bob", ""), id) {
		t.Fatal("an accepted member does not list the image")
	}
	list := e.json("alice", "GET", members, nil, 200)
	if list["schema"] != "/v2/schemas/members" || len(list["members"].([]any)) != 1 || list["members"].([]any)[0].(map[string]any)["status"] != "accepted" {
		t.Fatalf("the owner's list: %v", list)
	}
	if got := e.json("alice", "GET", members+"/bob", nil, 200)["status"]; got != "accepted" {
		t.Fatalf("show: %v", got)
	}
	if memberLines(e.st.Get(id)) != "2000 accepted" {
		t.Fatalf("the mount's view: %q", memberLines(e.st.Get(id)))
	}
	// The image JSON does not carry the members property (Glance has none).
	if _, ok := e.json("alice", "GET", "/v2/images/"+id, nil, 200)["members"]; ok {
		t.Error("the image JSON has members")
	}

	// A member sees its own membership only; another project id, unmapped.
	e.json("alice", "POST", members, map[string]any{"member": "0f3c9a2e5b7d4e1f8a6b5c4d3e2f1a0b"}, 200)
	if got := e.json("bob", "GET", members, nil, 200)["members"].([]any); len(got) != 1 || got[0].(map[string]any)["member_id"] != "bob" {
		t.Fatalf("bob's list: %v", got)
	}
	if code, _ := e.memberCode("bob", "GET", members+"/0f3c9a2e5b7d4e1f8a6b5c4d3e2f1a0b", nil); code != 404 {
		t.Fatalf("bob shows another member: %d, want 404", code)
	}
	if got := e.json("", "GET", members, nil, 200)["members"].([]any); len(got) != 2 {
		t.Fatalf("the admin's list: %v", got)
	}

	// Reject: by id, not listed, listed with member_status=rejected / all.
	e.json("bob", "PUT", members+"/bob", map[string]any{"status": "rejected"}, 200)
	if slices.Contains(e.ids("bob", ""), id) {
		t.Fatal("a rejected member lists the image")
	}
	for _, q := range []string{"?member_status=rejected", "?member_status=all"} {
		if !slices.Contains(e.ids("bob", q), id) {
			t.Errorf("%s does not list it", q)
		}
	}
	if slices.Contains(e.ids("bob", "?member_status=accepted"), id) {
		t.Error("member_status=accepted lists it")
	}
	if code, _ := e.memberCode("bob", "GET", "/v2/images?member_status=maybe", nil); code != 400 {
		t.Errorf("member_status=maybe: %d", code)
	}

	// A member does not remove itself; the owner does.
	if code, b := e.memberCode("bob", "DELETE", members+"/bob", nil); code != 403 || !strings.Contains(b, "Not allowed to delete members for image") {
		t.Fatalf("a member removes itself: %d %s", code, b)
	}
	if code, _ := e.memberCode("alice", "DELETE", members+"/carol", nil); code != 404 {
		t.Fatalf("remove a non-member: %d, want 404", code)
	}
	if code, _ := e.memberCode("alice", "DELETE", members+"/bob", nil); code != 204 {
		t.Fatalf("remove: %d", code)
	}
	if code, _ := e.memberCode("bob", "GET", "/v2/images/"+id, nil); code != 404 {
		t.Fatalf("a removed member sees the image: %d", code)
	}
}

// TestMembersRefusals: Glance's answers for the mistakes around members.
func TestMembersRefusals(t *testing.T) {
	e := newMembersEnv(t, 2)
	priv := e.create("alice", map[string]any{"name": "priv", "visibility": "private"})
	shared := e.create("alice", map[string]any{"name": "shared"})
	pm := "/v2/images/" + priv + "/members"
	sm := "/v2/images/" + shared + "/members"
	for _, c := range []struct {
		who, method, path string
		body              any
		code              int
		msg               string
	}{
		{"alice", "POST", pm, map[string]any{"member": "bob"}, 403, "Not allowed to create members for image " + priv},
		{"alice", "GET", pm, nil, 403, "Only shared images have members."},
		{"alice", "GET", pm + "/bob", nil, 404, "Only shared images have members."},
		{"bob", "POST", pm, map[string]any{"member": "bob"}, 404, "Image " + priv + " not found."},
		{"alice", "POST", "/v2/images/00000000-0000-4000-8000-000000000000/members", map[string]any{"member": "bob"}, 404, "not found"},
		{"alice", "POST", sm, map[string]any{}, 400, "Member to be added not specified"},
		{"alice", "POST", sm, map[string]any{"member": ""}, 400, "Member can't be empty"},
		{"alice", "POST", sm, []any{"bob"}, 400, `Expected a member in the form: {\"member\": \"image_id\"}`},
		{"alice", "POST", sm, nil, 400, "Body expected in request."},
		{"alice", "PUT", sm + "/bob", map[string]any{}, 400, "Status not specified"},
		{"alice", "GET", sm + "/bob", nil, 404, "bob not found in the member list of the image " + shared},
		{"stranger", "POST", sm, map[string]any{"member": "bob"}, 404, "not found"}, // unmapped: public images only
	} {
		code, b := e.memberCode(c.who, c.method, c.path, c.body)
		if code != c.code || !strings.Contains(b, c.msg) {
			t.Errorf("%s %s %v as %s: %d %s, want %d %q", c.method, c.path, c.body, c.who, code, b, c.code, c.msg)
		}
	}
	// image_member_quota: 413 past it (2 here).
	e.json("alice", "POST", sm, map[string]any{"member": "bob"}, 200)
	e.json("alice", "POST", sm, map[string]any{"member": "carol"}, 200)
	if code, b := e.memberCode("alice", "POST", sm, map[string]any{"member": "dave"}); code != 413 || !strings.Contains(b, "Image member limit exceeded for image "+shared) {
		t.Fatalf("past the quota: %d %s", code, b)
	}
	// The members attribute is the members API's: reserved in an image.
	if code, _ := e.memberCode("alice", "POST", "/v2/images", map[string]any{"name": "x", "members": "2000"}); code != 403 {
		t.Errorf("create with members: %d, want 403", code)
	}
	// The admin sets a member's status and removes members of others' images.
	e.json("admin", "PUT", sm+"/carol", map[string]any{"status": "accepted"}, 200)
	if code, _ := e.memberCode("admin", "DELETE", sm+"/carol", nil); code != 204 {
		t.Fatalf("admin removes: %d", code)
	}
	// Schemas.
	if got := e.json("", "GET", "/v2/schemas/member", nil, 200)["name"]; got != "member" {
		t.Errorf("member schema name %v", got)
	}
	if got := e.json("", "GET", "/v2/schemas/members", nil, 200)["name"]; got != "members" {
		t.Errorf("members schema name %v", got)
	}
}

// TestMembersProjectMappedLater: a project added as a member before it
// is mapped to a uid is stored as given; once mapped, a caller of that
// project is that member (the store matches Caller.Project).
func TestMembersProjectMappedLater(t *testing.T) {
	e := newMembersEnv(t, 0)
	id := e.create("alice", map[string]any{"name": "s"})
	e.json("alice", "POST", "/v2/images/"+id+"/members", map[string]any{"member": "dave"}, 200)
	if got := memberLines(e.st.Get(id)); got != "dave pending" {
		t.Fatalf("members property = %q", got)
	}
	if code, _ := e.memberCode("dave", "GET", "/v2/images/"+id, nil); code != 404 {
		t.Fatalf("an unmapped project sees a shared image: %d", code)
	}
	// The same store served with dave mapped.
	h, err := New(e.st, Options{Auth: AuthNoAuth, Projects: map[string]uint32{"alice": 1000, "dave": 4000}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	e2 := &env{t: t, st: e.st, dir: e.dir, url: srv.URL}
	e2.json("dave", "GET", "/v2/images/"+id, nil, 200)
	m := e2.json("dave", "PUT", "/v2/images/"+id+"/members/dave", map[string]any{"status": "accepted"}, 200)
	if m["member_id"] != "dave" || m["status"] != "accepted" {
		t.Fatalf("accept: %v", m)
	}
	if !slices.Contains(e2.ids("dave", ""), id) {
		t.Fatal("not listed after accepting")
	}
}
