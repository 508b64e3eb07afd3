package imagesapi

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
)

func (e *env) stage(who, id string, data []byte) (int, []byte) {
	e.t.Helper()
	code, _, b := e.do(who, "PUT", "/v2/images/"+id+"/stage", "application/octet-stream", data)
	return code, b
}

// importReq posts an import of id with body v; it returns the status,
// the request id of the answer and its body.
func (e *env) importReq(who, id string, v any) (int, string, []byte) {
	e.t.Helper()
	body, _ := json.Marshal(v)
	code, hdr, b := e.do(who, "POST", "/v2/images/"+id+"/import", "application/json", body)
	return code, hdr.Get("X-Openstack-Request-Id"), b
}

var glanceDirect = map[string]any{"method": map[string]any{"name": "glance-direct"}, "all_stores": true}

// waitStatus waits up to 10 s for image id to reach status want.
func (e *env) waitStatus(id string, want store.Status) *store.Image {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		im := e.st.Get(id)
		if im != nil && im.Status == want {
			return im
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("image %s: status %v, want %s", id, im.Status, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// errMessage is the message of a Glance error body (JSON).
func importErrMsg(b []byte) string {
	var m map[string]string
	json.Unmarshal(b, &m)
	return strings.TrimSuffix(m["message"], "<br /><br />\n\n")
}

func (e *env) staged() []string {
	m, _ := filepath.Glob(filepath.Join(e.dir, "staging", "*"))
	return m
}

// TestStageImport: the glance-direct import end to end, as Tempest's
// test_image_glance_direct_import does it, with the checks of each step.
func TestStageImport(t *testing.T) {
	e := newEnv(t)
	code, hdr, b := e.do("alice", "GET", "/v2/info/import", "", nil)
	if code != 200 || !strings.Contains(string(b), `"value":["glance-direct"]`) {
		t.Fatalf("info/import: %d %s", code, b)
	}
	if rid := hdr.Get("X-Openstack-Request-Id"); !strings.HasPrefix(rid, "req-") || len(rid) != 40 {
		t.Fatalf("request id %q, want req-<uuid>", rid)
	}
	if _, hdr, _ := e.do("alice", "GET", "/v2/images/nope", "", nil); hdr.Get("X-Openstack-Request-Id") == "" {
		t.Fatal("a 404 without a request id")
	}
	code, hdr, b = e.do("alice", "POST", "/v2/images", "application/json", []byte(`{"name": "direct", "disk_format": "raw", "container_format": "bare"}`))
	if code != 201 || hdr.Get("OpenStack-image-import-methods") != "glance-direct" {
		t.Fatalf("create: %d %q %s", code, hdr.Get("OpenStack-image-import-methods"), b)
	}
	var created map[string]any
	json.Unmarshal(b, &created)
	id := created["id"].(string)
	data := make([]byte, 3<<20+5)
	rand.Read(data)
	if code, b := e.stage("alice", id, data); code != 204 {
		t.Fatalf("stage: %d %s", code, b)
	}
	m := e.json("alice", "GET", "/v2/images/"+id, nil, 200)
	if m["status"] != "uploading" || m["checksum"] != nil || m[store.KeyStageHost] != nil || m[store.KeyImportTasks] != nil {
		t.Fatalf("after the stage: %v", m)
	}
	if im := e.st.Get(id); im.Status != store.StatusUploading || im.Extra[store.KeyStageHost] == "" {
		t.Fatalf("store after the stage: %+v", im)
	}
	if len(e.staged()) != 1 {
		t.Fatalf("staging: %v, want the staged file", e.staged())
	}
	// Staged data is not data: 204 to read, 409 to upload or stage again.
	if code, _, b := e.do("alice", "GET", "/v2/images/"+id+"/file", "", nil); code != 204 || len(b) != 0 {
		t.Fatalf("download of staged data: %d", code)
	}
	if code, b := e.put("alice", id, data); code != 409 || importErrMsg(b) != "Image status transition from uploading to saving is not allowed" {
		t.Fatalf("upload to an uploading image: %d %s", code, b)
	}
	if code, b := e.stage("alice", id, data); code != 409 || importErrMsg(b) != "Image status transition from uploading to uploading is not allowed" {
		t.Fatalf("second stage: %d %s", code, b)
	}
	// Bad import requests change nothing.
	for _, c := range []struct {
		body any
		msg  string
	}{
		{map[string]any{}, "Import request requires a 'method' field."},
		{map[string]any{"method": map[string]any{}}, "Import request requires a 'name' field."},
		{map[string]any{"method": map[string]any{"name": "web-download", "uri": "http://x/y"}}, "Unknown import method name 'web-download'."},
		{map[string]any{"method": map[string]any{"name": "copy-image"}}, "Unknown import method name 'copy-image'."},
		{map[string]any{"method": map[string]any{"name": "glance-download"}}, "Unknown import method name 'glance-download'."},
		{map[string]any{"method": map[string]any{"name": "glance-direct"}, "all_stores": "yes"}, "'all_stores' must be boolean value only"},
		{map[string]any{"method": map[string]any{"name": "glance-direct"}, "all_stores_must_succeed": 1}, "'all_stores_must_succeed' must be boolean value only"},
		{map[string]any{"method": map[string]any{"name": "glance-direct"}, "all_stores_must_succeed": false}, "All_stores_must_succeed can only be set with enabled_backends None"},
	} {
		if code, _, b := e.importReq("alice", id, c.body); code != 400 || importErrMsg(b) != c.msg {
			t.Fatalf("import %v: %d %s, want 400 %q", c.body, code, b, c.msg)
		}
	}
	if code, _, _ := e.do("alice", "POST", "/v2/images/"+id+"/import", "application/json", []byte("{")); code != 400 {
		t.Fatalf("import with malformed JSON: %d", code)
	}
	if code, _, _ := e.importReq("bob", id, glanceDirect); code != 404 {
		t.Fatalf("bob imports alice's image: %d, want 404", code)
	}
	if st := e.st.Get(id).Status; st != store.StatusUploading {
		t.Fatalf("after refused imports: %s", st)
	}
	code, rid, b := e.importReq("alice", id, map[string]any{"method": map[string]any{"name": "glance-direct"}, "stores": []string{"default"}, "all_stores": true, "all_stores_must_succeed": true})
	if code != 202 || !strings.HasPrefix(rid, "req-") {
		t.Fatalf("import: %d %q %s", code, rid, b)
	}
	im := e.waitStatus(id, store.StatusActive)
	sum := md5.Sum(data)
	if im.Checksum != hex.EncodeToString(sum[:]) || im.Size != int64(len(data)) || im.Extra[store.KeyStageHost] != "" {
		t.Fatalf("imported: %+v", im)
	}
	if code, _, got := e.do("alice", "GET", "/v2/images/"+id+"/file", "", nil); code != 200 || !bytes.Equal(got, data) {
		t.Fatalf("download after the import: %d, %d bytes", code, len(got))
	}
	if len(e.staged()) != 0 {
		t.Fatalf("staging files left: %v", e.staged())
	}
	// The task, as Tempest checks it.
	var tl struct {
		Tasks []map[string]any `json:"tasks"`
	}
	code, _, b = e.do("alice", "GET", "/v2/images/"+id+"/tasks", "", nil)
	if code != 200 || json.Unmarshal(b, &tl) != nil || len(tl.Tasks) != 1 {
		t.Fatalf("tasks: %d %s", code, b)
	}
	task := tl.Tasks[0]
	in, _ := task["input"].(map[string]any)
	req, _ := in["import_req"].(map[string]any)
	method, _ := req["method"].(map[string]any)
	if task["status"] != "success" || task["request_id"] != rid || task["type"] != "api_image_import" ||
		task["owner"] != "alice" || task["image_id"] != id || method["name"] != "glance-direct" ||
		task["result"].(map[string]any)["image_id"] != id || task["expires_at"] == nil || task["message"] != "" {
		t.Fatalf("task: %v", task)
	}
	if _, err := time.Parse(taskTime, task["created_at"].(string)); err != nil {
		t.Fatalf("created_at: %v", err)
	}
	if code, _, _ := e.do("bob", "GET", "/v2/images/"+id+"/tasks", "", nil); code != 404 {
		t.Fatalf("bob lists the tasks of alice's image: %d", code)
	}
	// An active image takes no import, no stage.
	if code, _, b := e.importReq("alice", id, glanceDirect); code != 409 || importErrMsg(b) != "Image with status active cannot be target for import" {
		t.Fatalf("import of an active image: %d %s", code, b)
	}
	if code, b := e.stage("alice", id, data); code != 409 || importErrMsg(b) != "Image status transition from active to uploading is not allowed" {
		t.Fatalf("stage to an active image: %d %s", code, b)
	}
	// A queued image: nothing staged.
	q := e.create("alice", map[string]any{"name": "q", "disk_format": "raw", "container_format": "bare"})
	if code, _, b := e.importReq("alice", q, glanceDirect); code != 409 || importErrMsg(b) != "Image needs to be staged before 'glance-direct' method can be used" {
		t.Fatalf("import of a queued image: %d %s", code, b)
	}
	if code, _, b := e.do("alice", "GET", "/v2/images/"+q+"/tasks", "", nil); code != 200 || string(b) != `{"tasks":[]}` {
		t.Fatalf("tasks of an image never imported: %d %s", code, b)
	}
}

// TestStageRefusals: the status codes of a stage Glance refuses, none of
// which changes the image.
func TestStageRefusals(t *testing.T) {
	e := newEnvCap(t, 1<<20)
	id := e.create("alice", map[string]any{"name": "r", "disk_format": "raw", "container_format": "bare", "visibility": "community"})
	if code, _, b := e.do("alice", "PUT", "/v2/images/"+id+"/stage", "application/json", []byte("x")); code != 415 || importErrMsg(b) != "Invalid content type application/json" {
		t.Fatalf("stage as JSON: %d %s", code, b)
	}
	if code, _ := e.stage("alice", "00000000-0000-0000-0000-000000000000", []byte("x")); code != 404 {
		t.Fatalf("stage of no image: %d", code)
	}
	if code, b := e.stage("bob", id, []byte("x")); code != 403 {
		t.Fatalf("bob stages alice's community image: %d %s", code, b)
	}
	if code, b := e.stage("carol", id, []byte("x")); code != 404 {
		t.Fatalf("an unmapped project stages: %d %s (it sees no community image)", code, b)
	}
	if code, b := e.stage("alice", id, make([]byte, 1<<20+1)); code != 413 {
		t.Fatalf("stage over the cap: %d %s", code, b)
	}
	nf := e.create("alice", map[string]any{"name": "noformats"})
	if code, b := e.stage("alice", nf, []byte("x")); code != 400 || importErrMsg(b) != "Properties disk_format, container_format must be set prior to saving data." {
		t.Fatalf("stage without formats: %d %s", code, b)
	}
	for _, i := range []string{id, nf} {
		if st := e.st.Get(i).Status; st != store.StatusQueued {
			t.Fatalf("after refused stages: %s", st)
		}
	}
	if len(e.staged()) != 0 {
		t.Fatalf("staging files left: %v", e.staged())
	}
	// The staged image: bob may not import it (403), alice may.
	if code, b := e.stage("alice", id, []byte("raw bytes")); code != 204 {
		t.Fatalf("stage: %d %s", code, b)
	}
	if code, _, b := e.importReq("bob", id, glanceDirect); code != 403 {
		t.Fatalf("bob imports alice's staged community image: %d %s", code, b)
	}
	big := map[string]any{"method": map[string]any{"name": "glance-direct"}, "note": strings.Repeat("x", store.MaxImportRequest)}
	if code, _, b := e.importReq("alice", id, big); code != 413 {
		t.Fatalf("import request over %d bytes: %d %s", store.MaxImportRequest, code, b)
	}
	if st := e.st.Get(id).Status; st != store.StatusUploading {
		t.Fatalf("after refused imports: %s", st)
	}
	if code, _, b := e.importReq("alice", id, glanceDirect); code != 202 {
		t.Fatalf("import: %d %s", code, b)
	}
	e.waitStatus(id, store.StatusActive)
}

// TestImportRefused: staged data that is not an acceptable VHD is
// refused by the import's seal: the image is queued again (as Glance
// reverts a failed import), the staged data gone, the task failed with
// the reason; a new stage and import then work.
func TestImportRefused(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", vhd(map[string]any{"name": "bad"}))
	junk := make([]byte, 1<<20)
	rand.Read(junk)
	if code, b := e.stage("alice", id, junk); code != 204 {
		t.Fatalf("stage: %d %s", code, b)
	}
	if code, _, b := e.importReq("alice", id, glanceDirect); code != 202 {
		t.Fatalf("import: %d %s", code, b)
	}
	im := e.waitStatus(id, store.StatusQueued)
	if im.Checksum != "" || im.Extra[store.KeyStageHost] != "" || im.Extra[store.KeyKillReason] != "" {
		t.Fatalf("after a refused import: %+v", im)
	}
	if len(e.staged()) != 0 {
		t.Fatalf("staging files left: %v", e.staged())
	}
	var tl struct {
		Tasks []map[string]any `json:"tasks"`
	}
	_, _, b := e.do("alice", "GET", "/v2/images/"+id+"/tasks", "", nil)
	if json.Unmarshal(b, &tl) != nil || len(tl.Tasks) != 1 || tl.Tasks[0]["status"] != "failure" ||
		!strings.Contains(tl.Tasks[0]["message"].(string), "not a VHD") || tl.Tasks[0]["result"] != nil {
		t.Fatalf("tasks: %s", b)
	}
	good := testutil.FixedVHD(t, 2<<20)
	if code, b := e.stage("alice", id, good); code != 204 {
		t.Fatalf("second stage: %d %s", code, b)
	}
	if code, _, b := e.importReq("alice", id, glanceDirect); code != 202 {
		t.Fatalf("second import: %d %s", code, b)
	}
	im = e.waitStatus(id, store.StatusActive)
	if im.VirtualSize != 2<<20 || im.Extra["vhd_disk_type"] != "fixed" {
		t.Fatalf("imported VHD: %+v", im)
	}
	_, _, b = e.do("alice", "GET", "/v2/images/"+id+"/tasks", "", nil)
	if json.Unmarshal(b, &tl) != nil || len(tl.Tasks) != 2 || tl.Tasks[0]["status"] != "failure" || tl.Tasks[1]["status"] != "success" {
		t.Fatalf("tasks after the second import: %s", b)
	}
}

// TestStageCutOff: a client that sends part of a stage's body and goes
// away leaves the image queued, and no staging file.
func TestStageCutOff(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", map[string]any{"name": "cut", "disk_format": "raw", "container_format": "bare"})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /v2/images/%s/stage HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: alice\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", id, 8<<20)
	conn.Write(make([]byte, 3<<20))
	deadline := time.Now().Add(10 * time.Second)
	for e.st.CurrentUpload(id) == nil || e.st.CurrentUpload(id).Size() < 1<<20 {
		if time.Now().After(deadline) {
			t.Fatal("the stage's bytes did not arrive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := e.st.Get(id).Status; st != store.StatusUploading {
		t.Fatalf("status %s while the stage arrives, want uploading", st)
	}
	// No import while the data arrives.
	if code, _, b := e.importReq("alice", id, glanceDirect); code != 409 {
		t.Fatalf("import during the stage: %d %s", code, b)
	}
	conn.Close()
	im := e.waitStatus(id, store.StatusQueued)
	if im.Extra[store.KeyStageHost] != "" {
		t.Fatalf("after the cut: %+v", im)
	}
	if len(e.staged()) != 0 {
		t.Fatalf("staging files left: %v", e.staged())
	}
	if code, b := e.stage("alice", id, []byte("whole")); code != 204 {
		t.Fatalf("stage after the cut: %d %s", code, b)
	}
}

// TestStagedDiscardAndDelete: staged data is dropped by the mount's rm
// of image.vhd (DiscardUpload: queued again) and by a delete.
func TestStagedDiscardAndDelete(t *testing.T) {
	e := newEnv(t)
	alice := store.Caller{UID: 1000, GID: 1000}
	id := e.create("alice", map[string]any{"name": "d", "disk_format": "raw", "container_format": "bare"})
	if code, b := e.stage("alice", id, []byte("staged")); code != 204 {
		t.Fatalf("stage: %d %s", code, b)
	}
	if _, err := e.st.OpenWrite(alice, id, true); err == nil {
		t.Fatal("a write-open of a staged image's data succeeded")
	}
	if err := e.st.DiscardUpload(alice, id); err != nil {
		t.Fatal(err)
	}
	if st := e.st.Get(id).Status; st != store.StatusQueued || len(e.staged()) != 0 {
		t.Fatalf("after the discard: %s, %v", st, e.staged())
	}
	if code, b := e.stage("alice", id, []byte("staged")); code != 204 {
		t.Fatalf("stage again: %d %s", code, b)
	}
	e.json("alice", "DELETE", "/v2/images/"+id, nil, 204)
	if len(e.staged()) != 0 {
		t.Fatalf("staging files left after the delete: %v", e.staged())
	}
}
