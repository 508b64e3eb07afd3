package imagesapi

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/store"
)

// tagsOf is the tags of an image JSON.
func tagsOf(t *testing.T, m map[string]any) []string {
	t.Helper()
	l, ok := m["tags"].([]any)
	if !ok {
		t.Fatalf("tags is %#v, not a list", m["tags"])
	}
	out := []string{}
	for _, v := range l {
		out = append(out, v.(string))
	}
	return out
}

// TestTags: Glance's tag calls (glance/api/v2/image_tags.py) and the tags
// of create, patch and show, with their status codes and messages, over
// the store's set; a refused call changes nothing.
func TestTags(t *testing.T) {
	e := newEnv(t)
	m := e.json("alice", "POST", "/v2/images", map[string]any{"name": "t", "tags": []string{"b", "a", "b"}}, 201)
	id := m["id"].(string)
	img := "/v2/images/" + id
	if got := tagsOf(t, m); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("create: tags %v, want [a b]", got)
	}
	if got := e.st.Get(id).Tags(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("store: tags %v", got)
	}
	tagPath := func(tag string) string { return img + "/tags/" + url.PathEscape(tag) }
	status := func(who, method, path string) (int, string) {
		t.Helper()
		code, _, b := e.do(who, method, path, "", nil)
		if code == 204 {
			if len(b) != 0 {
				t.Errorf("%s %s: 204 with a body %q", method, path, b)
			}
			return code, ""
		}
		return code, errMessage(t, b)
	}
	// PUT adds (twice is no error), DELETE removes.
	for range 2 {
		if code, msg := status("alice", "PUT", tagPath("c d")); code != 204 {
			t.Fatalf("PUT tag: %d %s", code, msg)
		}
	}
	if code, msg := status("alice", "PUT", tagPath("x/y")); code != 204 {
		t.Fatalf("PUT a tag with a slash: %d %s", code, msg)
	}
	if got := tagsOf(t, e.json("alice", "GET", img, nil, 200)); !slices.Equal(got, []string{"a", "b", "c d", "x/y"}) {
		t.Fatalf("after PUT: %v", got)
	}
	if code, msg := status("alice", "DELETE", tagPath("x/y")); code != 204 {
		t.Fatalf("DELETE tag: %d %s", code, msg)
	}
	long255 := strings.Repeat("é", 255) // 255 characters, 510 bytes
	if code, msg := status("alice", "PUT", tagPath(long255)); code != 204 {
		t.Fatalf("PUT a 255-character tag: %d %s", code, msg)
	}
	if code, msg := status("alice", "DELETE", tagPath(long255)); code != 204 {
		t.Fatalf("DELETE a 255-character tag: %d %s", code, msg)
	}

	before := e.st.Get(id)
	other := e.create("bob", map[string]any{"name": "bobs"})
	missing := "6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e"
	long := strings.Repeat("x", 256)
	for _, c := range []struct {
		who, method, path string
		code              int
		msg               string
	}{
		{"alice", "PUT", tagPath(long), 400, "Provided object does not match schema 'image': '" + long + "' is too long"},
		{"alice", "PUT", tagPath("bad\ttag"), 400, "Could not update image: invalid: tags: tag \"bad\\ttag\" contains the control character '\\t' (a tags value is one tag per line)"},
		{"alice", "DELETE", tagPath("nope"), 404, "The resource could not be found."},
		{"alice", "PUT", "/v2/images/" + missing + "/tags/x", 404, "Image " + missing + " not found."},
		{"alice", "DELETE", "/v2/images/" + missing + "/tags/x", 404, "Image " + missing + " not found."},
		{"alice", "PUT", "/v2/images/" + other + "/tags/x", 404, "Image " + other + " not found."}, // bob's, shared with nobody
		{"stranger", "PUT", tagPath("x"), 404, "Image " + id + " not found."},
		{"alice", "GET", tagPath("a"), 405, "The method specified is not allowed for this resource."},
	} {
		code, msg := status(c.who, c.method, c.path)
		if code != c.code || msg != c.msg {
			t.Errorf("%s %.60s as %s: %d %q, want %d %q", c.method, c.path, c.who, code, msg, c.code, c.msg)
		}
	}
	if e.st.Get(id) != before {
		t.Fatal("a refused tag call changed the image")
	}
	// Another project that sees the image (public) may not change it.
	e.json("admin", "PATCH", img, []map[string]any{{"op": "replace", "path": "/visibility", "value": "public"}}, 200)
	before = e.st.Get(id)
	for method, verb := range map[string]string{"PUT": "update", "DELETE": "delete"} {
		code, msg := status("bob", method, tagPath("a"))
		if want := "Not allowed to " + verb + " tags for image " + id + "."; code != 403 || msg != want {
			t.Errorf("%s as bob: %d %q, want 403 %q", method, code, msg, want)
		}
	}
	if e.st.Get(id) != before {
		t.Fatal("bob's tag call changed the image")
	}

	// JSON-Patch: add and replace /tags set the whole list; remove is
	// refused, as is a path into the list.
	m = e.json("alice", "PATCH", img, []map[string]any{{"op": "replace", "path": "/tags", "value": []string{"z", "y"}}}, 200)
	if got := tagsOf(t, m); !slices.Equal(got, []string{"y", "z"}) {
		t.Fatalf("replace /tags: %v", got)
	}
	m = e.json("alice", "PATCH", img, []map[string]any{{"op": "add", "path": "/tags", "value": []string{}}}, 200)
	if got := tagsOf(t, m); len(got) != 0 {
		t.Fatalf("add /tags []: %v", got)
	}
	m = e.json("alice", "PATCH", img, []map[string]any{{"op": "replace", "path": "/tags", "value": []string{"k"}}}, 200)
	if got := tagsOf(t, m); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("replace /tags on an image without tags: %v", got)
	}
	before = e.st.Get(id)
	many := make([]string, store.DefaultTagQuota+1)
	for i := range many {
		many[i] = fmt.Sprintf("t%03d", i)
	}
	manyJSON, _ := json.Marshal(many)
	for _, c := range []struct {
		body string
		code int
		msg  string
	}{
		{`[{"op":"remove","path":"/tags"}]`, 403, "Property tags may not be removed."},
		{`[{"op":"add","path":"/tags/-","value":"x"}]`, 400, "Invalid JSON pointer for this resource: '/tags/-'"},
		{`[{"op":"replace","path":"/tags","value":"x"}]`, 400, "Provided object does not match schema 'image': 'x' is not of type 'array'"},
		{`[{"op":"replace","path":"/tags","value":[1]}]`, 400, "Provided object does not match schema 'image': 1 is not of type 'string'"},
		{`[{"op":"replace","path":"/tags","value":["` + long + `"]}]`, 400, "Provided object does not match schema 'image': '" + long + "' is too long"},
		{`[{"op":"replace","path":"/tags","value":` + string(manyJSON) + `}]`, 413, "The limit has been exceeded on the number of allowed image tags. Attempted: 129, Maximum: 128"},
		{`[{"op":"replace","path":"/tags","value":["a"]},{"op":"replace","path":"/min_ram","value":-1}]`, 400, ""},
	} {
		code, _, b := e.do("alice", "PATCH", img, patchV21, []byte(c.body))
		if code != c.code || c.msg != "" && errMessage(t, b) != c.msg {
			t.Errorf("PATCH %.80s: %d %s, want %d %q", c.body, code, b, c.code, c.msg)
		}
	}
	if e.st.Get(id) != before {
		t.Fatal("a refused patch changed the image")
	}
	// Create past the quota: 413, no image.
	code, _, b := e.do("alice", "POST", "/v2/images", "application/json", []byte(`{"name":"toomany","tags":`+string(manyJSON)+`}`))
	if code != 413 || errMessage(t, b) != "The limit has been exceeded on the number of allowed image tags. Attempted: 129, Maximum: 128" {
		t.Fatalf("create with 129 tags: %d %s", code, b)
	}
	if e.st.Lookup("toomany") != nil {
		t.Fatal("a refused create left an image")
	}
	// PUT past the quota.
	e.json("alice", "PATCH", img, []map[string]any{{"op": "replace", "path": "/tags", "value": many[:128]}}, 200)
	code, msg := status("alice", "PUT", tagPath("one-more"))
	if want := "Image tag limit exceeded for image " + id + ": The limit has been exceeded on the number of allowed image tags. Attempted: 129, Maximum: 128:"; code != 413 || msg != want {
		t.Fatalf("PUT past the quota: %d %q, want 413 %q", code, msg, want)
	}
}

// TestTagFilter: tag= (repeatable) lists the images that have every tag.
func TestTagFilter(t *testing.T) {
	e := newEnv(t)
	e.create("alice", map[string]any{"name": "a", "tags": []string{"x86", "lts"}})
	e.create("alice", map[string]any{"name": "b", "tags": []string{"x86"}})
	e.create("alice", map[string]any{"name": "c"})
	for q, want := range map[string]string{
		"?tag=x86":                "a,b",
		"?tag=x86&tag=lts":        "a",
		"?tag=lts&tag=nope":       "",
		"?tag=+x86+":              "a,b", // stripped, as Glance
		"?tag=x86&name=b":         "b",
		"?tag=":                   "",
		"":                        "a,b,c",
		"?tag=x86&os_hidden=true": "",
	} {
		m := e.json("alice", "GET", "/v2/images"+q+map[bool]string{true: "&", false: "?"}[strings.Contains(q, "?")]+"sort_key=name&sort_dir=asc", nil, 200)
		var got []string
		for _, im := range m["images"].([]any) {
			got = append(got, im.(map[string]any)["name"].(string))
		}
		if strings.Join(got, ",") != want {
			t.Errorf("%s: %v, want %s", q, got, want)
		}
	}
}

// TestOSHiddenAPI: os_hidden in create, patch and the image JSON
// (boolean); the default listing leaves hidden images out, os_hidden=true
// lists only them; a hidden image is still shown by id.
func TestOSHiddenAPI(t *testing.T) {
	e := newEnv(t)
	m := e.json("alice", "POST", "/v2/images", map[string]any{"name": "h", "os_hidden": true}, 201)
	id := m["id"].(string)
	if m["os_hidden"] != true || !e.st.Get(id).Hidden() {
		t.Fatalf("create hidden: %v, store %v", m["os_hidden"], e.st.Get(id).Hidden())
	}
	e.create("alice", map[string]any{"name": "v", "os_hidden": false})
	list := func(q string) string {
		m := e.json("alice", "GET", "/v2/images"+q, nil, 200)
		var got []string
		for _, im := range m["images"].([]any) {
			got = append(got, im.(map[string]any)["name"].(string))
		}
		slices.Sort(got)
		return strings.Join(got, ",")
	}
	for q, want := range map[string]string{"": "v", "?os_hidden=true": "h", "?os_hidden=True": "h", "?os_hidden=false": "v"} {
		if got := list(q); got != want {
			t.Errorf("list %q: %s, want %s", q, got, want)
		}
	}
	if e.json("alice", "GET", "/v2/images/"+id, nil, 200)["os_hidden"] != true {
		t.Fatal("show of a hidden image")
	}
	before := e.st.Get(id)
	for _, c := range []struct {
		who, method, path, ctype, body string
		code                           int
		msg                            string
	}{
		{"alice", "GET", "/v2/images?os_hidden=Maybe", "", "", 400, "Invalid value 'maybe' for 'os_hidden' filter. Valid values are 'true' or 'false'."},
		{"alice", "PATCH", "/v2/images/" + id, patchV21, `[{"op":"replace","path":"/os_hidden","value":"yes"}]`, 400, "Provided object does not match schema 'image': 'yes' is not of type 'boolean'"},
		{"alice", "PATCH", "/v2/images/" + id, patchV21, `[{"op":"remove","path":"/os_hidden"}]`, 403, "Property os_hidden may not be removed."},
		{"alice", "POST", "/v2/images", "application/json", `{"name":"x","os_hidden":1}`, 400, "Provided object does not match schema 'image': 1 is not of type 'boolean'"},
	} {
		code, _, b := e.do(c.who, c.method, c.path, c.ctype, []byte(c.body))
		if code != c.code || errMessage(t, b) != c.msg {
			t.Errorf("%s %s %s: %d %s, want %d %q", c.method, c.path, c.body, code, b, c.code, c.msg)
		}
	}
	if e.st.Get(id) != before {
		t.Fatal("a refused call changed the image")
	}
	m = e.json("alice", "PATCH", "/v2/images/"+id, []map[string]any{{"op": "replace", "path": "/os_hidden", "value": false}}, 200)
	if m["os_hidden"] != false || list("") != "h,v" {
		t.Fatalf("unhidden: %v, list %s", m["os_hidden"], list(""))
	}
}
