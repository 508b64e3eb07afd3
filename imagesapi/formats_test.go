package imagesapi

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
)

// patch sends a JSON-Patch of ops and returns the status and the body.
func (e *env) patch(who, id string, ops ...map[string]any) (int, []byte) {
	e.t.Helper()
	body, _ := json.Marshal(ops)
	code, _, b := e.do(who, "PATCH", "/v2/images/"+id, patchV21, body)
	return code, b
}

// glanceMessage returns the message of an error body (JSON), without
// webob's trailing breaks.
func glanceMessage(b []byte) string {
	var m map[string]string
	json.Unmarshal(b, &m)
	return strings.TrimSuffix(m["message"], "<br /><br />\n\n")
}

// TestRawImage: Tempest's way (disk_format raw, container_format bare,
// random bytes) seals the bytes as they are: active, size and
// virtual_size the byte count, MD5 and SHA-512 of them; the image JSON,
// the store's record and the download agree, and the mount's data file is
// image.raw.
func TestRawImage(t *testing.T) {
	e := newEnv(t)
	m := e.json("alice", "POST", "/v2/images", map[string]any{"name": "r", "disk_format": "raw", "container_format": "bare"}, 201)
	if m["disk_format"] != "raw" || m["container_format"] != "bare" {
		t.Fatalf("create: %v", m)
	}
	id := m["id"].(string)
	data := make([]byte, 3001)
	rand.Read(data)
	if code, b := e.put("alice", id, data); code != 204 {
		t.Fatalf("upload of random bytes to a raw image: %d %s", code, b)
	}
	m = e.json("alice", "GET", "/v2/images/"+id, nil, 200)
	sum, sha := md5.Sum(data), sha512.Sum512(data)
	if m["status"] != "active" || m["size"] != 3001.0 || m["virtual_size"] != 3001.0 || m["disk_format"] != "raw" ||
		m["checksum"] != hex.EncodeToString(sum[:]) || m["os_hash_value"] != hex.EncodeToString(sha[:]) {
		t.Fatalf("after upload: %v", m)
	}
	for k := range m {
		if strings.HasPrefix(k, "vhd_") {
			t.Errorf("a raw image has VHD facts: %s=%v", k, m[k])
		}
	}
	if im := e.st.Get(id); im.DiskFormat != store.DiskFormatRaw || im.DataName() != "image.raw" || im.VirtualSize != 3001 {
		t.Fatalf("store record: %+v", im)
	}
	if code, _, b := e.do("alice", "GET", "/v2/images/"+id+"/file", "", nil); code != 200 || !bytes.Equal(b, data) {
		t.Fatalf("download: %d, %d bytes", code, len(b))
	}
	// The filters and sort keys of Tempest's list tests.
	v := e.create("alice", vhd(map[string]any{"name": "v"}))
	list := func(q string) []string {
		var out []string
		for _, im := range e.json("alice", "GET", "/v2/images"+q, nil, 200)["images"].([]any) {
			out = append(out, im.(map[string]any)["name"].(string))
		}
		return out
	}
	if got := list("?disk_format=raw"); !reflect.DeepEqual(got, []string{"r"}) {
		t.Errorf("?disk_format=raw: %v", got)
	}
	if got := list("?container_format=bare&sort_key=name&sort_dir=asc"); !reflect.DeepEqual(got, []string{"r", "v"}) {
		t.Errorf("?container_format=bare: %v", got)
	}
	if got := list("?sort_key=disk_format&sort_dir=desc"); !reflect.DeepEqual(got, []string{"v", "r"}) {
		t.Errorf("sorted by disk_format desc: %v", got)
	}
	_ = v
}

// TestFormatsNullUntilSet: as Glance, a create without formats shows them
// null, and an upload before both are set is 400 with Glance's message,
// leaving the image queued; a PATCH sets them while queued (and back to
// null), and then the upload seals.
func TestFormatsNullUntilSet(t *testing.T) {
	e := newEnv(t)
	m := e.json("alice", "POST", "/v2/images", map[string]any{"name": "n"}, 201)
	if v, ok := m["disk_format"]; !ok || v != nil {
		t.Fatalf("disk_format %#v, want null", m["disk_format"])
	}
	if v, ok := m["container_format"]; !ok || v != nil {
		t.Fatalf("container_format %#v, want null", m["container_format"])
	}
	id := m["id"].(string)
	data := make([]byte, 512)
	rand.Read(data)
	for _, c := range []struct {
		op   map[string]any
		want string
	}{
		{nil, "Properties disk_format, container_format must be set prior to saving data."},
		{map[string]any{"op": "replace", "path": "/disk_format", "value": "raw"}, "Property container_format must be set prior to saving data."},
		{map[string]any{"op": "replace", "path": "/disk_format", "value": nil}, "Properties disk_format, container_format must be set prior to saving data."},
		{map[string]any{"op": "add", "path": "/container_format", "value": "bare"}, "Property disk_format must be set prior to saving data."},
	} {
		if c.op != nil {
			if code, b := e.patch("alice", id, c.op); code != 200 {
				t.Fatalf("patch %v: %d %s", c.op, code, b)
			}
		}
		code, b := e.put("alice", id, data)
		if code != 400 || glanceMessage(b) != c.want {
			t.Fatalf("upload after %v: %d %q, want 400 %q", c.op, code, glanceMessage(b), c.want)
		}
		if im := e.st.Get(id); im.Status != store.StatusQueued {
			t.Fatalf("after a refused upload: %s", im.Status)
		}
	}
	if code, b := e.patch("alice", id, map[string]any{"op": "replace", "path": "/disk_format", "value": "raw"}); code != 200 {
		t.Fatalf("patch disk_format raw: %d %s", code, b)
	}
	if code, b := e.put("alice", id, data); code != 204 {
		t.Fatalf("upload with both set: %d %s", code, b)
	}
}

// TestFormatsFixedOnceData: disk_format and container_format change only
// while the image holds no data: 403 with Glance's message on an active
// image, and nothing changes.
func TestFormatsFixedOnceData(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", vhd(map[string]any{"name": "a"}))
	if code, b := e.put("alice", id, testutil.FixedVHD(t, 1<<20)); code != 204 {
		t.Fatalf("upload: %d %s", code, b)
	}
	before := e.st.Get(id)
	for _, c := range []struct{ key, value string }{{"disk_format", "raw"}, {"disk_format", "vhd"}, {"container_format", "bare"}} {
		code, b := e.patch("alice", id, map[string]any{"op": "replace", "path": "/" + c.key, "value": c.value})
		if want := fmt.Sprintf("Attribute %s can be only replaced for a queued image.", c.key); code != 403 || glanceMessage(b) != want {
			t.Errorf("replace %s=%s of an active image: %d %q, want 403 %q", c.key, c.value, code, glanceMessage(b), want)
		}
	}
	if code, _ := e.patch("alice", id, map[string]any{"op": "remove", "path": "/disk_format"}); code != 403 {
		t.Errorf("remove disk_format: %d, want 403", code)
	}
	if after := e.st.Get(id); after.DiskFormat != "vhd" || after.UpdatedAt != before.UpdatedAt {
		t.Fatalf("changed: %+v", after)
	}
}

// TestFormatsRefused: formats imagefs does not store are 400 in Glance's
// words for a value outside the schema's enum, at create (no image made)
// and at patch; the schema lists what is stored.
func TestFormatsRefused(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		body, want string
	}{
		{`{"name": "a", "disk_format": "wrong"}`, "Provided object does not match schema 'image': 'wrong' is not one of [None, 'vhd', 'raw']"},
		{`{"name": "a", "disk_format": "qcow2"}`, "Provided object does not match schema 'image': 'qcow2' is not one of [None, 'vhd', 'raw'] (imagefs stores vhd and raw disks"},
		{`{"name": "a", "disk_format": 7}`, "Provided object does not match schema 'image': 7 is not one of [None, 'vhd', 'raw']"},
		{`{"name": "a", "container_format": "wrong"}`, "Provided object does not match schema 'image': 'wrong' is not one of [None, 'bare']"},
		{`{"name": "a", "container_format": "ovf", "disk_format": "vhd"}`, "Provided object does not match schema 'image': 'ovf' is not one of [None, 'bare'] (imagefs stores bare disks only"},
	} {
		code, _, b := e.do("alice", "POST", "/v2/images", "application/json", []byte(c.body))
		if code != 400 || !strings.HasPrefix(glanceMessage(b), c.want) {
			t.Errorf("create %s: %d %q, want 400 %q", c.body, code, glanceMessage(b), c.want)
		}
	}
	if n := len(e.st.List()); n != 0 {
		t.Fatalf("%d images after refused creates", n)
	}
	id := e.create("alice", map[string]any{"name": "q"})
	if code, b := e.patch("alice", id, map[string]any{"op": "replace", "path": "/disk_format", "value": "vmdk"}); code != 400 || !strings.Contains(glanceMessage(b), "'vmdk' is not one of [None, 'vhd', 'raw']") {
		t.Errorf("patch disk_format vmdk: %d %s", code, b)
	}
	sch := e.json("alice", "GET", "/v2/schemas/image", nil, 200)["properties"].(map[string]any)
	for key, want := range map[string][]any{"disk_format": {nil, "vhd", "raw"}, "container_format": {nil, "bare"}} {
		if got := sch[key].(map[string]any)["enum"]; !reflect.DeepEqual(got, want) {
			t.Errorf("schema %s enum %v, want %v", key, got, want)
		}
	}
}

// TestFormatRefusals: the data is checked as its disk_format says: a
// qcow2 file declared raw, or random bytes declared vhd, are refused
// (400, killed with the reason); the vhd refusal says how to keep raw
// data.
func TestFormatRefusals(t *testing.T) {
	e := newEnv(t)
	qcow := append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 4096)...)
	junk := make([]byte, 4096)
	rand.Read(junk)
	for _, c := range []struct {
		format string
		data   []byte
		want   string
	}{
		{"raw", qcow, "not a raw disk: this is a qcow2 image"},
		{"vhd", junk, "echo raw > properties/disk_format"},
	} {
		id := e.create("alice", map[string]any{"name": c.format, "disk_format": c.format, "container_format": "bare"})
		code, b := e.put("alice", id, c.data)
		if code != 400 || !strings.Contains(glanceMessage(b), c.want) {
			t.Errorf("%s: %d %q, want 400 with %q", c.format, code, glanceMessage(b), c.want)
		}
		if im := e.st.Get(id); im.Status != store.StatusKilled || !strings.Contains(im.Extra[store.KeyKillReason], c.want) {
			t.Errorf("%s: %s %q", c.format, im.Status, im.Extra[store.KeyKillReason])
		}
	}
}
