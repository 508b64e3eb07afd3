package imagesapi

import (
	"strings"
	"testing"
)

// TestInfoEndpoints: /v2/info/import lists glance-direct (import.go),
// /v2/info/stores is Glance's 404 without multiple stores.
func TestInfoEndpoints(t *testing.T) {
	e := newEnv(t)
	m := e.json("alice", "GET", "/v2/info/import", nil, 200)
	im, _ := m["import-methods"].(map[string]any)
	if v, ok := im["value"].([]any); !ok || len(v) != 1 || v[0] != "glance-direct" || im["type"] != "array" {
		t.Fatalf("info/import: %v", m)
	}
	code, _, body := e.do("alice", "GET", "/v2/info/stores", "", nil)
	if code != 404 || !strings.Contains(string(body), "Multi backend is not supported") {
		t.Fatalf("info/stores: %d %s", code, body)
	}
}

// TestCreateReservedBeforeSchema: as Glance, a read-only or reserved
// attribute is 403 even when another attribute's value is wrong (400),
// and nothing is created.
func TestCreateReservedBeforeSchema(t *testing.T) {
	e := newEnv(t)
	for _, body := range []map[string]any{
		{"name": "x", "disk_format": "qcow9", "os_glance_foo": "bar"},
		{"name": "x", "container_format": "nope", "checksum": "abc"},
		{"name": "x", "min_ram": "many", "deleted": true},
	} {
		e.json("alice", "POST", "/v2/images", body, 403)
	}
	if n := len(e.st.List()); n != 0 {
		t.Fatalf("%d images after refused creates", n)
	}
}
