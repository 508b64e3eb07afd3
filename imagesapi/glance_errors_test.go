package imagesapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
)

// errMessage is the message of a JSON error body (webob's, without its
// "<br /><br />" tail).
func errMessage(t *testing.T, b []byte) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("error body is not JSON: %s", b)
	}
	msg, _ := m["message"].(string)
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(msg), "<br /><br />"))
}

// TestGlanceRequestErrors: the status codes and messages of Glance's
// deserializers (glance/common/wsgi.py JSONRequestDeserializer,
// glance/api/v2/images.py RequestDeserializer, image_data.py) for the
// common mistakes of a request, and nothing changed by a refused one.
func TestGlanceRequestErrors(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", map[string]any{"name": "g", "os_distro": "superos"})
	img := "/v2/images/" + id
	before := e.st.Get(id)
	const patchTypes = "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch"
	for _, c := range []struct {
		method, path, ctype, body string
		code                      int
		msg                       string
	}{
		// Create: the body is JSON whatever the Content-Type says (Glance
		// does not look at it).
		{"POST", "/v2/images", "text/plain", `name=x`, 400, "Malformed JSON in request body."},
		{"POST", "/v2/images", "application/json", ``, 400, "Body expected in request."},
		{"POST", "/v2/images", "application/json", `"x"`, 400, "Unexpected body type. Expected list/dict."},
		{"POST", "/v2/images", "application/json", `[]`, 400, "Provided object does not match schema 'image': [] is not of type 'object'"},
		// PATCH: valid JSON of the wrong shape is not "Malformed JSON".
		{"PATCH", img, patchV21, `{}`, 400, "Request body must be a JSON array of operation objects."},
		{"PATCH", img, patchV21, `{"op":"add"}`, 400, "Request body must be a JSON array of operation objects."},
		{"PATCH", img, patchV21, `[1]`, 400, "Operations must be JSON objects."},
		{"PATCH", img, patchV21, `[{`, 400, "Malformed JSON in request body."},
		{"PATCH", img, patchV21, `5`, 400, "Unexpected body type. Expected list/dict."},
		{"PATCH", img, patchV21, ``, 400, "Body expected in request."},
		{"PATCH", img, patchV21, `[{"path":"/a","value":"x"}]`, 400, "Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace."},
		{"PATCH", img, patchV21, `[{"op":"move","path":"/a","from":"/b"}]`, 400, "Invalid operation: `move`. It must be one of the following: add, remove, replace."},
		{"PATCH", img, patchV21, `[{"op":"add","value":"x"}]`, 400, "Unable to find 'path' in JSON Schema change"},
		{"PATCH", img, patchV21, `[{"op":"add","path":"/a"}]`, 400, `Operation "add" requires a member named "value".`},
		{"PATCH", img, "application/json", `[]`, 415, "Image PATCH expects Content-Type one of: " + patchTypes},
		// v2.0 (JSON-Patch draft 4): {OP: PATH}; add of a property that is
		// there is 409, not a replace.
		{"PATCH", img, patchV20, `[{"value":"x"}]`, 400, `Operation objects must contain exactly one member named "add", "remove", or "replace".`},
		{"PATCH", img, patchV20, `[{"add":"/a","remove":"/b","value":"x"}]`, 400, `Operation objects must contain only one member named "add", "remove", or "replace".`},
		{"PATCH", img, patchV20, `[{"add":"/os_distro","value":"x"}]`, 409, "Property os_distro already present."},
		{"PATCH", img, patchV20, `[{"add":"/name","value":"x"}]`, 409, "Property name already present."},
		// Upload: the media type first, as Glance's deserializer.
		{"PUT", img + "/file", "text/plain", `x`, 415, "Invalid content type text/plain"},
		{"PUT", img + "/file", "", `x`, 415, "Invalid content type None"},
		{"PUT", "/v2/images/6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e/file", "application/json", `x`, 415, "Invalid content type application/json"},
		// List parameters.
		{"GET", "/v2/images?limit=abc", "", ``, 400, "limit param must be an integer"},
		{"GET", "/v2/images?limit=-1", "", ``, 400, "limit param must be positive"},
		{"GET", "/v2/images?sort_key=nope", "", ``, 400, "Invalid sort key: nope. It must be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at."},
		{"GET", "/v2/images?sort_key=visibility", "", ``, 400, "Invalid sort key: visibility. It must be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at."},
		{"GET", "/v2/images?sort_dir=up", "", ``, 400, "Invalid sort direction: up"},
		{"GET", "/v2/images?sort=name:asc&sort_key=size", "", ``, 400, "Old and new sorting syntax cannot be combined"},
		{"GET", "/v2/images?sort_key=name&sort_key=size&sort_key=id&sort_dir=asc&sort_dir=desc", "", ``, 400, "Number of sort dirs does not match the number of sort keys"},
		{"GET", "/v2/images?marker=6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e", "", ``, 400, "No image found with ID 6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e"},
		{"GET", "/v2/images?visibility=nope", "", ``, 400, "Invalid visibility value: nope"},
		{"GET", "/v2/images?member_status=x", "", ``, 400, "Invalid status: x"},
		{"GET", "/v2/images?changes-since=2026-01-01T00:00:00Z", "", ``, 400, `The "changes-since" filter is no longer available on v2.`},
		// The body is checked before the image is looked up (Glance's
		// deserializer runs before its controller).
		{"PATCH", "/v2/images/6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e", patchV21, `{}`, 400, "Request body must be a JSON array of operation objects."},
		{"PATCH", "/v2/images/6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e", patchV21, `[{"op":"replace","path":"/status","value":"active"}]`, 403, "Attribute 'status' is read-only."},
		{"PATCH", "/v2/images/6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e", patchV21, `[{"op":"add","path":"/x","value":"y"}]`, 404, "No image found with ID 6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e"},
	} {
		code, hdr, b := e.do("alice", c.method, c.path, c.ctype, []byte(c.body))
		if code != c.code {
			t.Errorf("%s %s (%s) %s: %d, want %d: %s", c.method, c.path, c.ctype, c.body, code, c.code, b)
			continue
		}
		if got := errMessage(t, b); got != c.msg {
			t.Errorf("%s %s (%s) %s: message %q, want %q", c.method, c.path, c.ctype, c.body, got, c.msg)
		}
		if code == 415 && c.method == "PATCH" && hdr.Get("Accept-Patch") != patchTypes {
			t.Errorf("PATCH 415: Accept-Patch %q, want %q", hdr.Get("Accept-Patch"), patchTypes)
		}
	}
	if after := e.st.Get(id); after.UpdatedAt != before.UpdatedAt || after.Status != store.StatusQueued || len(after.Extra) != len(before.Extra) {
		t.Fatalf("refused requests changed the image: %+v -> %+v", before, after)
	}
	if n := len(e.st.List()); n != 1 {
		t.Fatalf("refused creates left images: %d images", n)
	}

	// A create whose Content-Type is not JSON is still a create (Glance
	// does not check it): 201.
	code, _, b := e.do("alice", "POST", "/v2/images", "text/plain", []byte(`{"name":"plain"}`))
	if code != 201 || e.st.Lookup("plain") == nil {
		t.Fatalf("create as text/plain: %d, want 201 as Glance: %s", code, b)
	}
	// v2.0 add of a new property and v2.1 add over one that is there
	// (draft 10: add replaces) are applied.
	if code, _, b := e.do("alice", "PATCH", img, patchV20, []byte(`[{"add":"/hw_disk_bus","value":"scsi"},{"replace":"/os_distro","value":"hyperos"}]`)); code != 200 {
		t.Fatalf("v2.0 patch: %d: %s", code, b)
	}
	if code, _, b := e.do("alice", "PATCH", img, patchV21, []byte(`[{"op":"add","path":"/hw_disk_bus","value":"virtio"}]`)); code != 200 {
		t.Fatalf("v2.1 add over a property: %d: %s", code, b)
	}
	if im := e.st.Get(id); im.Extra["hw_disk_bus"] != "virtio" || im.Extra["os_distro"] != "hyperos" {
		t.Fatalf("after the patches: %v", im.Extra)
	}
	// A marker the caller may not see: 403, as Glance's image_get.
	code, _, b = e.do("bob", "GET", "/v2/images?marker="+id, "", nil)
	if code != 403 || errMessage(t, b) != "Forbidding request, image "+id+" not visible" {
		t.Fatalf("bob's list after alice's private image: %d %s, want 403", code, b)
	}
}

// TestGlanceDataStatusCodes: Glance's codes for image data in the wrong
// status: a download of a queued image is 204, an upload to a
// deactivated (or active) image 409 with Glance's transition message,
// and the image keeps its data and status.
func TestGlanceDataStatusCodes(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", vhd(map[string]any{"name": "d"}))
	if code, _, b := e.do("alice", "GET", "/v2/images/"+id+"/file", "", nil); code != 204 || len(b) != 0 {
		t.Fatalf("download of a queued image: %d %q, want 204 and no body", code, b)
	}
	if code, b := e.put("alice", id, testutil.FixedVHD(t, 1<<20)); code != 204 {
		t.Fatalf("upload: %d %s", code, b)
	}
	sealed := e.st.Get(id)
	for _, status := range []string{"active", "deactivated"} {
		if status == "deactivated" {
			if code, _, b := e.do("admin", "POST", "/v2/images/"+id+"/actions/deactivate", "", nil); code != 204 {
				t.Fatalf("deactivate: %d %s", code, b)
			}
		}
		code, b := e.put("alice", id, testutil.FixedVHD(t, 2<<20))
		if code != 409 || errMessage(t, b) != "Image status transition from "+status+" to saving is not allowed" {
			t.Fatalf("upload to a %s image: %d %s, want 409", status, code, b)
		}
		if im := e.st.Get(id); string(im.Status) != status || im.Size != sealed.Size || im.Checksum != sealed.Checksum {
			t.Fatalf("refused upload to a %s image changed it: %+v", status, im)
		}
	}
}
