package imagesapi

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
)

// The metadefs API as Tempest calls it (tempest/api/image/v2/
// test_images_metadefs_schema.py and admin/test_images_metadefs_*.py,
// through tempest/lib/services/image/v2/namespace*_client.py and
// resource_types_client.py), with Glance's status codes, on a real
// store.

const mdNS = "/v2/metadefs/namespaces"

// names returns the values of key in the list of objects l.
func names(l any, key string) []string {
	var out []string
	for _, x := range l.([]any) {
		out = append(out, x.(map[string]any)[key].(string))
	}
	return out
}

// mdCreateNS creates a namespace as Tempest's base.create_namespace does
// (public, not protected, display_name its name).
func (e *env) mdCreateNS(name string, extra map[string]any) map[string]any {
	e.t.Helper()
	body := map[string]any{"namespace": name, "visibility": "public", "description": "Tempest", "protected": false, "display_name": name}
	for k, v := range extra {
		body[k] = v
	}
	return e.json("admin", "POST", mdNS, body, 201)
}

// code is the status of a request with a JSON body (nil: none).
func (e *env) code(who, method, path string, v any) int {
	e.t.Helper()
	var body []byte
	if v != nil {
		body, _ = json.Marshal(v)
	}
	c, _, _ := e.do(who, method, path, "application/json", body)
	return c
}

func TestMetadefSchemas(t *testing.T) {
	e := newEnv(t)
	want := map[string]string{
		"namespace": "namespace", "namespaces": "namespaces",
		"resource_type": "resource_type_association", "resource_types": "resource_type_associations",
		"object": "object", "objects": "objects", "property": "property", "properties": "properties",
		"tag": "tag", "tags": "tags",
	}
	for p, name := range want {
		m := e.json("alice", "GET", "/v2/schemas/metadefs/"+p, nil, 200)
		if m["name"] != name || m["properties"] == nil {
			t.Errorf("schema %s: name %v, want %s", p, m["name"], name)
		}
	}
	// Glance 25.1's own: the property schema requires type and title
	// (and name), the namespace schema refuses additional properties.
	m := e.json("", "GET", "/v2/schemas/metadefs/property", nil, 200)
	if fmt.Sprint(m["required"]) != "[type title name]" {
		t.Errorf("property schema required: %v", m["required"])
	}
	if m := e.json("", "GET", "/v2/schemas/metadefs/namespace", nil, 200); m["additionalProperties"] != false {
		t.Errorf("namespace schema additionalProperties: %v", m["additionalProperties"])
	}
}

// test_basic_metadata_definition_namespaces.
func TestMetadefNamespacesTempest(t *testing.T) {
	e := newEnv(t)
	rts := e.json("admin", "GET", "/v2/metadefs/resource_types", nil, 200)["resource_types"]
	rtNames := names(rts, "name")
	for _, std := range []string{"OS::Glance::Image", "OS::Cinder::Volume", "OS::Nova::Flavor", "OS::Nova::Server"} {
		if !slices.Contains(rtNames, std) {
			t.Fatalf("resource types %v lack %s", rtNames, std)
		}
	}
	rt := rtNames[0]
	ns := "namespace-tempest-1"
	body := e.json("admin", "POST", mdNS, map[string]any{
		"namespace": ns, "visibility": "public", "description": "Tempest", "display_name": ns,
		"resource_type_associations": []map[string]any{{"name": rt}}, "protected": true,
	}, 201)
	if body["namespace"] != ns || body["protected"] != true || body["owner"] != "adminproject" || body["self"] != mdNS+"/"+ns || body["schema"] != "/v2/schemas/metadefs/namespace" {
		t.Fatalf("create: %v", body)
	}
	if got := names(e.json("admin", "GET", mdNS, nil, 200)["namespaces"], "namespace"); !slices.Contains(got, ns) {
		t.Fatalf("list: %v lacks %s", got, ns)
	}
	body = e.json("admin", "GET", mdNS+"/"+ns, nil, 200)
	if body["namespace"] != ns || body["visibility"] != "public" || fmt.Sprint(names(body["resource_type_associations"], "name")) != "["+rt+"]" {
		t.Fatalf("show: %v", body)
	}
	// Protected: 403 to delete.
	if c := e.code("admin", "DELETE", mdNS+"/"+ns, nil); c != 403 {
		t.Fatalf("delete of a protected namespace: %d, want 403", c)
	}
	body = e.json("admin", "PUT", mdNS+"/"+ns, map[string]any{
		"namespace": ns, "description": "Tempest", "visibility": "private", "display_name": ns, "protected": false,
	}, 200)
	if body["visibility"] != "private" || body["protected"] != false {
		t.Fatalf("update: %v", body)
	}
	e.json("admin", "DELETE", mdNS+"/"+ns, nil, 204)
	if c := e.code("admin", "GET", mdNS+"/"+ns, nil); c != 404 {
		t.Fatalf("show after delete: %d, want 404", c)
	}
}

// test_create_update_delete_meta_namespace_objects,
// test_list_meta_namespace_objects, test_show_meta_namespace_objects.
func TestMetadefObjectsTempest(t *testing.T) {
	e := newEnv(t)
	ns := "test-ns-objects"
	e.mdCreateNS(ns, nil)
	obj := e.json("admin", "POST", mdNS+"/"+ns+"/objects", map[string]any{"name": "MetadataNamespaceObjectsTest-object-1"}, 201)
	if obj["name"] != "MetadataNamespaceObjectsTest-object-1" || obj["self"] != mdNS+"/"+ns+"/objects/MetadataNamespaceObjectsTest-object-1" || obj["schema"] != "/v2/schemas/metadefs/object" || obj["created_at"] == nil {
		t.Fatalf("create: %v", obj)
	}
	if got := e.json("admin", "GET", mdNS+"/"+ns+"/objects/"+obj["name"].(string), nil, 200); got["name"] != obj["name"] {
		t.Fatalf("show: %v", got)
	}
	list := e.json("admin", "GET", mdNS+"/"+ns+"/objects", nil, 200)
	if !slices.Contains(names(list["objects"], "name"), obj["name"].(string)) || list["schema"] != "v2/schemas/metadefs/objects" {
		t.Fatalf("list: %v", list)
	}
	up := e.json("admin", "PUT", mdNS+"/"+ns+"/objects/"+obj["name"].(string), map[string]any{"name": "update-object-1"}, 200)
	if up["name"] != "update-object-1" {
		t.Fatalf("update: %v", up)
	}
	e.json("admin", "DELETE", mdNS+"/"+ns+"/objects/update-object-1", nil, 204)
	if got := names(e.json("admin", "GET", mdNS+"/"+ns+"/objects", nil, 200)["objects"], "name"); len(got) != 0 {
		t.Fatalf("after delete: %v", got)
	}
	// The cleanup of the create: 404 now (Tempest ignores it).
	if c := e.code("admin", "DELETE", mdNS+"/"+ns+"/objects/MetadataNamespaceObjectsTest-object-1", nil); c != 404 {
		t.Fatalf("delete of a renamed object: %d, want 404", c)
	}
	e.json("admin", "DELETE", mdNS+"/"+ns, nil, 204)
}

// test_basic_meta_def_namespace_property.
func TestMetadefPropertiesTempest(t *testing.T) {
	e := newEnv(t)
	rt := names(e.json("admin", "GET", "/v2/metadefs/resource_types", nil, 200)["resource_types"], "name")[0]
	enum := []string{"xen", "qemu", "kvm", "lxc", "uml", "vmware", "hyperv"}
	ns := "test-ns-props"
	e.mdCreateNS(ns, nil)
	if a := e.json("admin", "POST", mdNS+"/"+ns+"/resource_types", map[string]any{"name": rt}, 201); a["name"] != rt {
		t.Fatalf("associate: %v", a)
	}
	p := e.json("admin", "POST", mdNS+"/"+ns+"/properties", map[string]any{"title": "property-1", "name": rt, "type": "string", "enum": enum}, 201)
	if p["title"] != "property-1" || p["name"] != rt || p["type"] != "string" || len(p["enum"].([]any)) != 7 {
		t.Fatalf("create: %v", p)
	}
	path := mdNS + "/" + ns + "/properties/" + url.PathEscape(rt)
	if got := e.json("admin", "GET", path, nil, 200); got["name"] != rt || got["title"] != "property-1" {
		t.Fatalf("show: %v", got)
	}
	up := e.json("admin", "PUT", path, map[string]any{"title": "update-property-1", "type": "string", "enum": enum, "name": rt}, 200)
	if up["title"] != "update-property-1" {
		t.Fatalf("update: %v", up)
	}
	list := e.json("admin", "GET", mdNS+"/"+ns+"/properties", nil, 200)["properties"].(map[string]any)
	if d, ok := list[rt].(map[string]any); !ok || d["title"] != "update-property-1" {
		t.Fatalf("list: %v", list)
	}
	e.json("admin", "DELETE", path, nil, 204)
	if list := e.json("admin", "GET", mdNS+"/"+ns+"/properties", nil, 200)["properties"].(map[string]any); len(list) != 0 {
		t.Fatalf("after delete: %v", list)
	}
	e.json("admin", "DELETE", mdNS+"/"+ns, nil, 204)
}

// test_create_list_delete_namespace_tags, test_create_update_delete_tag.
func TestMetadefTagsTempest(t *testing.T) {
	e := newEnv(t)
	ns := "test-ns-tags"
	e.mdCreateNS(ns, nil)
	tags := map[string]any{"tags": []map[string]any{{"name": "sample-tag1"}, {"name": "sample-tag2"}, {"name": "sample-tag3"}}}
	created := e.json("admin", "POST", mdNS+"/"+ns+"/tags", tags, 201)
	if fmt.Sprint(names(created["tags"], "name")) != "[sample-tag1 sample-tag2 sample-tag3]" {
		t.Fatalf("create tags: %v", created)
	}
	got := names(e.json("admin", "GET", mdNS+"/"+ns+"/tags", nil, 200)["tags"], "name")
	slices.Sort(got)
	if fmt.Sprint(got) != "[sample-tag1 sample-tag2 sample-tag3]" {
		t.Fatalf("list: %v", got)
	}
	e.json("admin", "DELETE", mdNS+"/"+ns+"/tags", nil, 204)
	if got := e.json("admin", "GET", mdNS+"/"+ns+"/tags", nil, 200)["tags"].([]any); len(got) != 0 {
		t.Fatalf("after delete all: %v", got)
	}
	// Tempest's create_namespace_tag posts no body.
	e.json("admin", "POST", mdNS+"/"+ns+"/tags", tags, 201)
	code, _, b := e.do("admin", "POST", mdNS+"/"+ns+"/tags/tag_name-1", "application/json", nil)
	if code != 201 {
		t.Fatalf("create tag: %d %s", code, b)
	}
	if got := e.json("admin", "GET", mdNS+"/"+ns+"/tags/tag_name-1", nil, 200); got["name"] != "tag_name-1" || got["created_at"] == nil {
		t.Fatalf("show tag: %v", got)
	}
	if got := e.json("admin", "PUT", mdNS+"/"+ns+"/tags/tag_name-1", map[string]any{"name": "update-tag-1"}, 200); got["name"] != "update-tag-1" {
		t.Fatalf("update tag: %v", got)
	}
	e.json("admin", "DELETE", mdNS+"/"+ns+"/tags/update-tag-1", nil, 204)
	got = names(e.json("admin", "GET", mdNS+"/"+ns+"/tags", nil, 200)["tags"], "name")
	if slices.Contains(got, "update-tag-1") || len(got) != 3 {
		t.Fatalf("after delete: %v", got)
	}
	// A list replaces the tags; with X-Openstack-Append it adds to them.
	body, _ := json.Marshal(map[string]any{"tags": []map[string]any{{"name": "four"}}})
	if c, _, b := e.do("admin", "POST", mdNS+"/"+ns+"/tags", "application/json", body, "X-Openstack-Append", "true"); c != 201 {
		t.Fatalf("append: %d %s", c, b)
	}
	if got := names(e.json("admin", "GET", mdNS+"/"+ns+"/tags", nil, 200)["tags"], "name"); len(got) != 4 {
		t.Fatalf("after append: %v", got)
	}
	e.json("admin", "POST", mdNS+"/"+ns+"/tags", map[string]any{"tags": []map[string]any{{"name": "only"}}}, 201)
	if got := names(e.json("admin", "GET", mdNS+"/"+ns+"/tags", nil, 200)["tags"], "name"); fmt.Sprint(got) != "[only]" {
		t.Fatalf("after replace: %v", got)
	}
	// Names are case-insensitive: 409.
	if c := e.code("admin", "POST", mdNS+"/"+ns+"/tags/ONLY", nil); c != 409 {
		t.Fatalf("tag ONLY next to only: %d, want 409", c)
	}
	e.json("admin", "DELETE", mdNS+"/"+ns, nil, 204)
}

// test_basic_meta_def_resource_type_association.
func TestMetadefResourceTypesTempest(t *testing.T) {
	e := newEnv(t)
	rt := names(e.json("admin", "GET", "/v2/metadefs/resource_types", nil, 200)["resource_types"], "name")[0]
	ns := "test-ns-rt"
	e.mdCreateNS(ns, nil)
	if a := e.json("admin", "POST", mdNS+"/"+ns+"/resource_types", map[string]any{"name": rt}, 201); a["name"] != rt || a["created_at"] == nil {
		t.Fatalf("associate: %v", a)
	}
	if got := names(e.json("admin", "GET", mdNS+"/"+ns+"/resource_types", nil, 200)["resource_type_associations"], "name"); !slices.Contains(got, rt) {
		t.Fatalf("list: %v", got)
	}
	if c := e.code("admin", "POST", mdNS+"/"+ns+"/resource_types", map[string]any{"name": rt}); c != 409 {
		t.Fatalf("associate twice: %d, want 409", c)
	}
	e.json("admin", "DELETE", mdNS+"/"+ns+"/resource_types/"+url.PathEscape(rt), nil, 204)
	if got := names(e.json("admin", "GET", mdNS+"/"+ns+"/resource_types", nil, 200)["resource_type_associations"], "name"); slices.Contains(got, rt) {
		t.Fatalf("after delete: %v", got)
	}
	if c := e.code("admin", "DELETE", mdNS+"/"+ns+"/resource_types/"+url.PathEscape(rt), nil); c != 404 {
		t.Fatalf("delete again: %d, want 404", c)
	}
	// A new resource type is listed once associated, and stays.
	e.json("admin", "POST", mdNS+"/"+ns+"/resource_types", map[string]any{"name": "OS::Custom::Thing", "prefix": "thing_"}, 201)
	e.json("admin", "DELETE", mdNS+"/"+ns, nil, 204)
	rts := e.json("alice", "GET", "/v2/metadefs/resource_types", nil, 200)["resource_types"]
	if !slices.Contains(names(rts, "name"), "OS::Custom::Thing") {
		t.Fatalf("resource types: %v", rts)
	}
}

// Who may do what, as Glance's default policy and its visibility rule:
// admins change; others read public namespaces and their project's.
func TestMetadefAccess(t *testing.T) {
	e := newEnv(t)
	e.mdCreateNS("pub", nil)
	e.mdCreateNS("priv-alice", map[string]any{"visibility": "private", "owner": "alice"})
	e.mdCreateNS("priv-admin", map[string]any{"visibility": "private"})
	e.json("admin", "POST", mdNS+"/pub/objects", map[string]any{"name": "o"}, 201)

	list := func(who string) []string {
		got := names(e.json(who, "GET", mdNS, nil, 200)["namespaces"], "namespace")
		slices.Sort(got)
		return got
	}
	if got := fmt.Sprint(list("alice")); got != "[priv-alice pub]" {
		t.Errorf("alice lists %s", got)
	}
	if got := fmt.Sprint(list("bob")); got != "[pub]" {
		t.Errorf("bob lists %s", got)
	}
	if got := fmt.Sprint(list("admin")); got != "[priv-admin priv-alice pub]" {
		t.Errorf("admin lists %s", got)
	}
	for _, c := range []struct {
		who, method, path string
		body              any
		want              int
	}{
		{"bob", "GET", mdNS + "/priv-alice", nil, 404},
		{"bob", "GET", mdNS + "/priv-alice/objects", nil, 404},
		{"alice", "GET", mdNS + "/priv-alice", nil, 200},
		{"bob", "GET", mdNS + "/pub/objects/o", nil, 200},
		{"bob", "POST", mdNS, map[string]any{"namespace": "bobs"}, 403},
		{"alice", "PUT", mdNS + "/priv-alice", map[string]any{"namespace": "priv-alice"}, 403},
		{"alice", "DELETE", mdNS + "/priv-alice", nil, 403},
		{"bob", "DELETE", mdNS + "/priv-alice", nil, 404},
		{"bob", "POST", mdNS + "/pub/objects", map[string]any{"name": "x"}, 403},
		{"bob", "PUT", mdNS + "/pub/objects/o", map[string]any{"name": "x"}, 403},
		{"bob", "DELETE", mdNS + "/pub/objects/o", nil, 403},
		{"bob", "POST", mdNS + "/pub/tags/t", nil, 403},
		{"bob", "POST", mdNS + "/pub/resource_types", map[string]any{"name": "OS::Nova::Flavor"}, 403},
		{"bob", "DELETE", mdNS + "/pub/tags", nil, 403},
		{"bob", "GET", "/v2/metadefs/resource_types", nil, 200},
	} {
		if got := e.code(c.who, c.method, c.path, c.body); got != c.want {
			t.Errorf("%s %s as %s: %d, want %d", c.method, c.path, c.who, got, c.want)
		}
	}
	if got := e.json("admin", "GET", mdNS+"/pub/objects/o", nil, 200); got["name"] != "o" {
		t.Errorf("object o after refused changes: %v", got)
	}
}

// Glance's answers to the usual mistakes, and protected namespaces'
// contents.
func TestMetadefErrors(t *testing.T) {
	e := newEnv(t)
	e.mdCreateNS("ns1", map[string]any{"protected": true, "objects": []map[string]any{{"name": "obj", "required": []string{"a"},
		"properties": map[string]any{"a": map[string]any{"type": "string", "title": "A"}}}},
		"properties":                 map[string]any{"p": map[string]any{"type": "integer", "title": "P", "minimum": 1}},
		"tags":                       []map[string]any{{"name": "t1"}},
		"resource_type_associations": []map[string]any{{"name": "OS::Glance::Image", "prefix": "hw_"}}})
	show := e.json("alice", "GET", mdNS+"/ns1", nil, 200)
	if show["objects"] == nil || show["properties"].(map[string]any)["p"] == nil || fmt.Sprint(names(show["tags"], "name")) != "[t1]" {
		t.Fatalf("show: %v", show)
	}
	// With a resource type: the properties carry its prefix.
	show = e.json("alice", "GET", mdNS+"/ns1?resource_type=OS::Glance::Image", nil, 200)
	if show["properties"].(map[string]any)["hw_p"] == nil {
		t.Fatalf("show with resource_type: %v", show["properties"])
	}
	if p := e.json("alice", "GET", mdNS+"/ns1/properties/hw_p?resource_type=OS::Glance::Image", nil, 200); p["name"] != "hw_p" || p["title"] != "P" {
		t.Fatalf("property with resource_type: %v", p)
	}
	for _, c := range []struct {
		method, path string
		body         any
		want         int
		msg          string
	}{
		{"POST", mdNS, map[string]any{"namespace": "ns1"}, 409, "already exists"},
		{"POST", mdNS, map[string]any{"display_name": "x"}, 400, "'namespace' is a required property"},
		{"POST", mdNS, map[string]any{"namespace": "x", "visibility": "shared"}, 400, "is not one of ['public', 'private']"},
		{"POST", mdNS, map[string]any{"namespace": "x", "bogus": 1}, 400, "Additional properties are not allowed ('bogus' was unexpected)"},
		{"POST", mdNS, map[string]any{"namespace": "x", "created_at": "now"}, 403, "Attribute 'created_at' is read-only."},
		{"POST", mdNS, map[string]any{"namespace": strings.Repeat("n", 81)}, 400, "is too long"},
		{"POST", mdNS, map[string]any{"namespace": "x", "protected": "yes"}, 400, "is not of type 'boolean'"},
		{"GET", mdNS + "?limit=x", nil, 400, "limit param must be an integer"},
		{"GET", mdNS + "?sort_dir=up", nil, 400, "Invalid sort direction: up"},
		{"GET", mdNS + "?visibility=shared", nil, 400, "Invalid visibility value: shared"},
		{"GET", mdNS + "/nope", nil, 404, "was not found"},
		{"DELETE", mdNS + "/ns1/objects/obj", nil, 403, "is protected"},
		{"DELETE", mdNS + "/ns1/properties/p", nil, 403, "is protected"},
		{"DELETE", mdNS + "/ns1/tags/t1", nil, 403, "is protected"},
		{"DELETE", mdNS + "/ns1/tags", nil, 403, "is protected"},
		{"DELETE", mdNS + "/ns1/resource_types/OS::Glance::Image", nil, 403, "is protected"},
		{"DELETE", mdNS + "/ns1/objects/nope", nil, 404, "was not found"},
		{"POST", mdNS + "/ns1/objects", map[string]any{"name": "obj"}, 409, "already exists"},
		{"POST", mdNS + "/ns1/objects", map[string]any{"description": "no name"}, 400, "'name' is a required property"},
		{"POST", mdNS + "/ns1/objects", map[string]any{"name": "o2", "self": "x"}, 403, "Attribute 'self' is read-only."},
		{"POST", mdNS + "/ns1/properties", map[string]any{"name": "q", "type": "string"}, 400, "'title' is a required property"},
		{"POST", mdNS + "/ns1/properties", map[string]any{"name": "q", "title": "Q", "type": "text"}, 400, "is not one of ['array', 'boolean', 'integer', 'number', 'object', 'string', None]"},
		{"POST", mdNS + "/ns1/properties", map[string]any{"name": "p", "title": "P", "type": "string"}, 409, "already exists"},
		{"PUT", mdNS + "/ns1/properties/nope", map[string]any{"name": "nope", "title": "N", "type": "string"}, 404, "was not found"},
		{"POST", mdNS + "/ns1/tags", map[string]any{"tags": []map[string]any{{"name": "a"}, {"name": "a"}}}, 409, "already exists"},
		{"POST", mdNS + "/ns1/tags/" + strings.Repeat("t", 81), nil, 400, "is too long"},
		{"POST", mdNS + "/nope/tags/t", nil, 404, "was not found"},
		{"POST", mdNS + "/ns1/resource_types", map[string]any{"prefix": "x_"}, 400, "'name' is a required property"},
		{"PATCH", mdNS + "/ns1", map[string]any{}, 405, ""},
	} {
		var body []byte
		if c.body != nil {
			body, _ = json.Marshal(c.body)
		}
		code, _, b := e.do("admin", c.method, c.path, "application/json", body)
		if code != c.want || !strings.Contains(string(b), c.msg) {
			t.Errorf("%s %s %s: %d %s, want %d with %q", c.method, c.path, body, code, b, c.want, c.msg)
		}
	}
	// Nothing refused changed anything: still one of each, tags as they were.
	if got := names(e.json("admin", "GET", mdNS+"/ns1/tags", nil, 200)["tags"], "name"); fmt.Sprint(got) != "[t1]" {
		t.Errorf("tags after refusals: %v", got)
	}
	// A rename onto a taken name is 409; a rename moves the contents.
	e.mdCreateNS("ns2", nil)
	if c := e.code("admin", "PUT", mdNS+"/ns2", map[string]any{"namespace": "ns1"}); c != 409 {
		t.Errorf("rename onto ns1: %d, want 409", c)
	}
	e.json("admin", "PUT", mdNS+"/ns1", map[string]any{"namespace": "ns3", "protected": false}, 200)
	if c := e.code("admin", "GET", mdNS+"/ns1", nil); c != 404 {
		t.Errorf("ns1 after rename: %d", c)
	}
	if o := e.json("admin", "GET", mdNS+"/ns3/objects/obj", nil, 200); fmt.Sprint(o["required"]) != "[a]" {
		t.Errorf("object after rename: %v", o)
	}
	// Not protected any more: its contents may go.
	e.json("admin", "DELETE", mdNS+"/ns3/tags", nil, 204)
	e.json("admin", "DELETE", mdNS+"/ns3", nil, 204)
}

// Paging of the namespace list: limit, marker, next, sort.
func TestMetadefNamespacePaging(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.mdCreateNS(fmt.Sprintf("page-%d", i), nil)
	}
	var got []string
	path := mdNS + "?limit=2&sort_key=namespace&sort_dir=asc"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		m := e.json("alice", "GET", path, nil, 200)
		got = append(got, names(m["namespaces"], "namespace")...)
		path, _ = m["next"].(string)
		if m["first"] == nil || m["schema"] != "/v2/schemas/metadefs/namespaces" {
			t.Fatalf("page: %v", m)
		}
	}
	if fmt.Sprint(got) != "[page-0 page-1 page-2 page-3 page-4]" {
		t.Fatalf("pages: %v", got)
	}
	if c := e.code("alice", "GET", mdNS+"?marker=nope", nil); c != 404 {
		t.Fatalf("unknown marker: %d, want 404", c)
	}
	e.json("admin", "POST", mdNS+"/page-3/resource_types", map[string]any{"name": "OS::Nova::Flavor"}, 201)
	if got := names(e.json("alice", "GET", mdNS+"?resource_types=OS::Nova::Flavor,OS::Nova::Server", nil, 200)["namespaces"], "namespace"); fmt.Sprint(got) != "[page-3]" {
		t.Fatalf("resource_types filter: %v", got)
	}
}

// Tempest's own metadefs tests (their test methods and Tempest's clients,
// Keystone replaced by noauth headers: testdata/tempest_metadefs.py)
// against this server; then nothing of theirs is left.
func TestMetadefTempestClients(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import tempest.lib.services.image.v2").Run(); err != nil {
		testutil.SkipOrFail(t, "Tempest is not installed for /usr/bin/python3 (Debian's python3-tempest): %v", err)
	}
	e := newEnv(t)
	out, err := exec.Command("/usr/bin/python3", "testdata/tempest_metadefs.py", e.url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "passed 18 failed 0") {
		t.Fatalf("tempest metadefs tests: %v\n%s", err, out)
	}
	if got := e.json("admin", "GET", mdNS, nil, 200)["namespaces"].([]any); len(got) != 0 {
		t.Fatalf("namespaces left behind: %v", got)
	}
}
