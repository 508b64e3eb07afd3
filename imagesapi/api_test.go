package imagesapi

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
)

func TestMain(m *testing.M) {
	if os.Getenv("IMAGEFS_TEST_LOG") == "" {
		slog.SetDefault(slog.New(slog.DiscardHandler))
	}
	code := m.Run()
	testutil.StopServices() // the test Keystone (keystone_test.go)
	os.Exit(code)
}

// env is a real store in a temporary directory served over loopback.
type env struct {
	t   *testing.T
	st  *store.Store
	dir string
	url string
}

// Projects of the tests: alice (uid 1000), bob (uid 2000).
func newEnv(t *testing.T) *env { return newEnvCap(t, 0) }

// newEnvCap is newEnv with an image size cap (0: the default).
func newEnvCap(t *testing.T, sizeCap int64) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(st, Options{Auth: AuthNoAuth, Projects: map[string]uint32{"alice": 1000, "bob": 2000}, ImageSizeCap: sizeCap})
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

// who is a request's identity: "" (no header: admin, as Glance's noauth),
// "admin", or a project.
func (e *env) do(who, method, path, ctype string, body []byte, hdr ...string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	switch who {
	case "":
	case "admin":
		req.Header.Set("X-Tenant-Id", "adminproject")
		req.Header.Set("X-Roles", "admin,member")
	default:
		req.Header.Set("X-Tenant-Id", who)
		req.Header.Set("X-Roles", "member,reader")
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func (e *env) json(who, method, path string, v any, want int) map[string]any {
	e.t.Helper()
	var body []byte
	if v != nil {
		body, _ = json.Marshal(v)
	}
	ctype := "application/json"
	if method == http.MethodPatch {
		ctype = patchV21
	}
	code, _, b := e.do(who, method, path, ctype, body)
	if code != want {
		e.t.Fatalf("%s %s as %q: status %d, want %d: %s", method, path, who, code, want, b)
	}
	var m map[string]any
	if len(b) > 0 && json.Unmarshal(b, &m) != nil {
		e.t.Fatalf("%s %s: not a JSON object: %s", method, path, b)
	}
	return m
}

func (e *env) create(who string, v map[string]any) string {
	e.t.Helper()
	return e.json(who, "POST", "/v2/images", v, 201)["id"].(string)
}

// vhd returns the attributes m of a create with disk_format vhd and
// container_format bare: as in Glance, an image takes data only once
// both are set.
func vhd(m map[string]any) map[string]any {
	m["disk_format"], m["container_format"] = "vhd", "bare"
	return m
}

func (e *env) put(who, id string, data []byte) (int, []byte) {
	e.t.Helper()
	code, _, b := e.do(who, "PUT", "/v2/images/"+id+"/file", "application/octet-stream", data)
	return code, b
}

func TestVersionsHealthAndUnknown(t *testing.T) {
	e := newEnv(t)
	code, _, b := e.do("", "GET", "/", "", nil)
	if code != 300 || !strings.Contains(string(b), `"CURRENT"`) || !strings.Contains(string(b), e.url+"/v2/") {
		t.Fatalf("GET /: %d %s", code, b)
	}
	var v struct {
		Versions []struct{ ID, Status string }
	}
	json.Unmarshal(b, &v)
	if len(v.Versions) == 0 || v.Versions[0].ID != "v2.15" || v.Versions[0].Status != "CURRENT" {
		t.Fatalf("versions: %+v", v)
	}
	if code, _, _ := e.do("", "GET", "/versions", "", nil); code != 200 {
		t.Fatalf("GET /versions: %d", code)
	}
	if code, _, b := e.do("", "GET", "/healthcheck", "", nil); code != 200 || string(b) != "OK" {
		t.Fatalf("healthcheck: %d %q", code, b)
	}
	code, _, b = e.do("", "GET", "/v2/nothing", "", nil)
	var er map[string]string
	if code != 404 || json.Unmarshal(b, &er) != nil || er["code"] != "404 Not Found" || er["title"] != "Not Found" {
		t.Fatalf("unknown path: %d %s", code, b)
	}
	// Without Accept: webob's HTML page; text/plain: its plain text.
	code, hdr, b := e.do("", "GET", "/v2/images/nope", "", nil, "Accept", "")
	if code != 404 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(string(b), "<h1>404 Not Found</h1>") || !strings.Contains(string(b), "No image found with ID nope") {
		t.Fatalf("404 without Accept: %d %s %s", code, hdr.Get("Content-Type"), b)
	}
	code, hdr, b = e.do("", "GET", "/v2/images/nope", "", nil, "Accept", "text/plain")
	if code != 404 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") || !strings.HasPrefix(string(b), "404 Not Found\n\nNo image found with ID nope") {
		t.Fatalf("404 as text/plain: %d %s %q", code, hdr.Get("Content-Type"), b)
	}
	if code, _, _ := e.do("", "PUT", "/v2/images", "application/json", []byte("{}")); code != 405 {
		t.Fatalf("PUT /v2/images: %d, want 405", code)
	}
	for _, p := range []string{"/v2/schemas/image", "/v2/schemas/images"} {
		m := e.json("", "GET", p, nil, 200)
		if m["name"] == nil || m["properties"] == nil {
			t.Fatalf("%s: %v", p, m)
		}
	}
}

func TestCreateShowTypes(t *testing.T) {
	e := newEnv(t)
	m := e.json("alice", "POST", "/v2/images", map[string]any{
		"name": "superos-1", "disk_format": "vhd", "container_format": "bare",
		"min_ram": 512, "min_disk": 4, "os_distro": "superos", "protected": false,
	}, 201)
	id := m["id"].(string)
	checks := map[string]any{
		"name": "superos-1", "status": "queued", "visibility": "shared", "protected": false,
		"min_ram": 512.0, "min_disk": 4.0, "os_distro": "superos", "owner": "alice",
		"disk_format": "vhd", "container_format": "bare", "size": nil, "virtual_size": nil,
		"checksum": nil, "os_hash_value": nil, "self": "/v2/images/" + id,
		"file": "/v2/images/" + id + "/file", "schema": "/v2/schemas/image", "os_hidden": false,
	}
	for k, want := range checks {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s: %#v, want %#v", k, got, want)
		}
	}
	if tags, ok := m["tags"].([]any); !ok || len(tags) != 0 {
		t.Errorf("tags: %#v, want []", m["tags"])
	}
	if _, err := time.Parse("2006-01-02T15:04:05Z", m["created_at"].(string)); err != nil {
		t.Errorf("created_at %v: %v", m["created_at"], err)
	}
	// The store has the same image, owned by alice's uid.
	im := e.st.Lookup("superos-1")
	if im == nil || im.ID != id || im.Owner != 1000 || im.MinRAM != 512 || im.Extra["os_distro"] != "superos" {
		t.Fatalf("store record: %+v", im)
	}
	if got := e.json("alice", "GET", "/v2/images/"+id, nil, 200); got["name"] != "superos-1" {
		t.Fatalf("show: %v", got)
	}
	// An id chosen by the client; the same id again is 409.
	const fixed = "6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e"
	if got := e.json("alice", "POST", "/v2/images", map[string]any{"id": fixed, "name": "fixed"}, 201); got["id"] != fixed {
		t.Fatalf("create with id: %v", got)
	}
	e.json("alice", "POST", "/v2/images", map[string]any{"id": fixed, "name": "fixed2"}, 409)
	// No name: the id names the directory.
	n := e.json("alice", "POST", "/v2/images", map[string]any{}, 201)
	if n["name"] != n["id"] {
		t.Fatalf("unnamed image: %v", n)
	}
}

func TestCreateRefusedChangesNothing(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		who  string
		body string
		want int
	}{
		{"alice", `{"name": "a", "disk_format": "qcow2"}`, 400},
		{"alice", `{"name": "a", "container_format": "ovf"}`, 400},
		{"alice", `{"name": "a", "status": "active"}`, 403},
		{"alice", `{"name": "a", "checksum": "x"}`, 403},
		{"alice", `{"name": "a", "os_glance_foo": "x"}`, 403},
		{"alice", `{"name": "a", "vhd_type": "x"}`, 403},
		{"alice", `{"name": "a", "min_ram": "big"}`, 400},
		{"alice", `{"name": "a", "min_ram": -1}`, 400},
		{"alice", `{"name": "a", "protected": "yes"}`, 400},
		{"alice", `{"name": "a", "visibility": "everyone"}`, 400},
		{"alice", `{"name": "a", "visibility": "public"}`, 403}, // only admin publicizes
		{"alice", `{"name": "a", "os_distro": 7}`, 400},
		{"alice", `{"name": "a/b"}`, 400},
		{"alice", `{"name": "a", "id": "not-a-uuid"}`, 400},
		{"alice", `{"name": "a",`, 400},
		{"alice", `[1, 2]`, 400},
		{"stranger", `{"name": "a"}`, 403}, // unmapped project
		{"alice", `{"name": "a", "big": "` + strings.Repeat("x", MaxBodyBytes) + `"}`, 413},
	}
	for _, c := range cases {
		code, _, b := e.do(c.who, "POST", "/v2/images", "application/json", []byte(c.body))
		if code != c.want {
			t.Errorf("create %.60s as %s: %d, want %d: %s", c.body, c.who, code, c.want, b)
		}
		if n := len(e.st.List()); n != 0 {
			t.Fatalf("after refused create %.60s: %d images in the store", c.body, n)
		}
	}
	// Admin may publicize.
	if m := e.json("admin", "POST", "/v2/images", map[string]any{"name": "pub", "visibility": "public"}, 201); m["visibility"] != "public" {
		t.Fatalf("admin public create: %v", m)
	}
	// A name taken is 409.
	e.json("alice", "POST", "/v2/images", map[string]any{"name": "pub"}, 409)
}

func TestUploadSealDownload(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", map[string]any{"name": "disk", "disk_format": "vhd", "container_format": "bare"})
	data := testutil.FixedVHD(t, 3<<20)
	if code, b := e.put("alice", id, data); code != 204 {
		t.Fatalf("upload: %d %s", code, b)
	}
	m := e.json("alice", "GET", "/v2/images/"+id, nil, 200)
	sum := md5.Sum(data)
	sha := sha512.Sum512(data)
	if m["status"] != "active" || m["checksum"] != hex.EncodeToString(sum[:]) ||
		m["os_hash_algo"] != "sha512" || m["os_hash_value"] != hex.EncodeToString(sha[:]) ||
		m["size"] != float64(len(data)) || m["virtual_size"] != float64(3<<20) {
		t.Fatalf("after upload: %v", m)
	}
	// The mount's record: the same seal.
	im := e.st.Get(id)
	if im.Status != store.StatusActive || im.Checksum != m["checksum"] {
		t.Fatalf("store: %+v", im)
	}
	code, hdr, b := e.do("alice", "GET", "/v2/images/"+id+"/file", "", nil)
	if code != 200 || !bytes.Equal(b, data) || hdr.Get("Content-MD5") != m["checksum"] || hdr.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("download: %d, %d bytes, md5 header %q", code, len(b), hdr.Get("Content-MD5"))
	}
	code, hdr, b = e.do("alice", "GET", "/v2/images/"+id+"/file", "", nil, "Range", "bytes=100-199")
	if code != 206 || !bytes.Equal(b, data[100:200]) || hdr.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(data)) {
		t.Fatalf("range: %d %q", code, hdr.Get("Content-Range"))
	}
	if code, _, _ := e.do("alice", "GET", "/v2/images/"+id+"/file", "", nil, "Range", fmt.Sprintf("bytes=%d-", len(data)+10)); code != 416 {
		t.Fatalf("unsatisfiable range: %d, want 416", code)
	}
	// Sealed data never changes.
	if code, b := e.put("alice", id, data); code != 409 {
		t.Fatalf("second upload: %d %s, want 409", code, b)
	}
	// Wrong content type.
	if code, _, _ := e.do("alice", "PUT", "/v2/images/"+id+"/file", "application/json", data); code != 415 {
		t.Fatalf("upload as json: %d, want 415", code)
	}
	// Queued image: no data, 204.
	q := e.create("alice", map[string]any{"name": "empty"})
	if code, _, b := e.do("alice", "GET", "/v2/images/"+q+"/file", "", nil); code != 204 || len(b) != 0 {
		t.Fatalf("data of a queued image: %d", code)
	}
	// Somebody else's image: 404 (not visible), for data too.
	if code, _, _ := e.do("bob", "GET", "/v2/images/"+id+"/file", "", nil); code != 404 {
		t.Fatalf("bob reads alice's shared image without membership: %d", code)
	}
	if code, _ := e.put("bob", q, data); code != 404 {
		t.Fatalf("bob uploads to alice's image: %d", code)
	}
}

func TestUploadRefusedIsKilled(t *testing.T) {
	e := newEnv(t)
	junk := make([]byte, 1<<20)
	rand.Read(junk)
	trunc := testutil.FixedVHD(t, 1<<20)
	for name, data := range map[string][]byte{"random": junk, "truncated": trunc[:len(trunc)-300], "empty": nil} {
		id := e.create("alice", vhd(map[string]any{"name": name}))
		code, b := e.put("alice", id, data)
		var er map[string]string
		if code != 400 || json.Unmarshal(b, &er) != nil || er["code"] != "400 Bad Request" {
			t.Fatalf("%s: %d %s, want 400", name, code, b)
		}
		m := e.json("alice", "GET", "/v2/images/"+id, nil, 200)
		if m["status"] != "killed" || m["imagefs_kill_reason"] == nil {
			t.Fatalf("%s: after a refused upload: %v", name, m)
		}
	}
}

// TestUploadCutOff: a client that sends part of the body and goes away
// leaves the image queued, never active, and no staging file.
func TestUploadCutOff(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", vhd(map[string]any{"name": "cut"}))
	data := testutil.FixedVHD(t, 8<<20)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /v2/images/%s/file HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: alice\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", id, len(data))
	conn.Write(data[:3<<20])
	// Saving while the body arrives.
	deadline := time.Now().Add(10 * time.Second)
	for e.st.Get(id).Status != store.StatusSaving {
		if time.Now().After(deadline) {
			t.Fatalf("status %s, want saving while the body arrives", e.st.Get(id).Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn.Close()
	for e.st.Get(id).Status != store.StatusQueued {
		if st := e.st.Get(id).Status; st == store.StatusActive || time.Now().After(deadline) {
			t.Fatalf("status %s after the client went away, want queued", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	staged, _ := filepath.Glob(filepath.Join(e.dir, "staging", "*"))
	if len(staged) != 0 {
		t.Fatalf("staging files left: %v", staged)
	}
	// A full upload afterwards works.
	if code, b := e.put("alice", id, data); code != 204 {
		t.Fatalf("upload after the cut: %d %s", code, b)
	}
}

func TestPatch(t *testing.T) {
	e := newEnv(t)
	id := e.create("alice", map[string]any{"name": "p", "os_distro": "superos"})
	path := "/v2/images/" + id
	patch := func(who string, ops string, want int) map[string]any {
		t.Helper()
		code, _, b := e.do(who, "PATCH", path, patchV21, []byte(ops))
		if code != want {
			t.Fatalf("patch %s as %s: %d, want %d: %s", ops, who, code, want, b)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		return m
	}
	m := patch("alice", `[{"op":"add","path":"/hw_disk_bus","value":"scsi"},{"op":"replace","path":"/os_distro","value":"hyperos"},{"op":"replace","path":"/min_ram","value":1024},{"op":"replace","path":"/name","value":"p2"}]`, 200)
	if m["hw_disk_bus"] != "scsi" || m["os_distro"] != "hyperos" || m["min_ram"] != 1024.0 || m["name"] != "p2" {
		t.Fatalf("after patch: %v", m)
	}
	if im := e.st.Lookup("p2"); im == nil || im.Extra["hw_disk_bus"] != "scsi" {
		t.Fatalf("store after patch: %+v", im)
	}
	m = patch("alice", `[{"op":"remove","path":"/hw_disk_bus"}]`, 200)
	if _, ok := m["hw_disk_bus"]; ok {
		t.Fatalf("removed property still there: %v", m)
	}
	before := e.st.Get(id)
	for _, c := range []struct {
		ops  string
		want int
	}{
		{`[{"op":"replace","path":"/nope","value":"x"}]`, 409},
		{`[{"op":"remove","path":"/nope"}]`, 409},
		{`[{"op":"replace","path":"/status","value":"active"}]`, 403},
		{`[{"op":"replace","path":"/checksum","value":"x"}]`, 403},
		{`[{"op":"add","path":"/os_glance_x","value":"x"}]`, 403},
		{`[{"op":"remove","path":"/name"}]`, 403},
		{`[{"op":"replace","path":"/disk_format","value":"qcow2"}]`, 400},
		{`[{"op":"move","path":"/a","from":"/b"}]`, 400},
		{`[{"op":"add","path":"/a"}]`, 400},
		{`[{"op":"add","path":"a","value":"x"}]`, 400},
		{`[{"op":"replace","path":"/min_ram","value":"x"}]`, 400},
		{`{"op":"add"}`, 400},
		{`[{"op":"add","path":"/ok","value":"x"},{"op":"replace","path":"/visibility","value":"public"}]`, 403}, // the first op is not applied
	} {
		patch("alice", c.ops, c.want)
	}
	if after := e.st.Get(id); after.UpdatedAt != before.UpdatedAt || len(after.Extra) != len(before.Extra) {
		t.Fatalf("refused patches changed the image: %+v -> %+v", before, after)
	}
	// Not the owner: bob does not see it (404); the admin does.
	patch("bob", `[{"op":"add","path":"/x","value":"y"}]`, 404)
	patch("admin", `[{"op":"add","path":"/x","value":"y"}]`, 200)
	// Wrong media type.
	if code, _, _ := e.do("alice", "PATCH", path, "application/json", []byte(`[]`)); code != 415 {
		t.Fatalf("patch as application/json: %d, want 415", code)
	}
	// Protected: no delete, no property removal.
	patch("alice", `[{"op":"replace","path":"/protected","value":true}]`, 200)
	if code, _, _ := e.do("alice", "DELETE", path, "", nil); code != 403 {
		t.Fatalf("delete protected: %d, want 403", code)
	}
	patch("alice", `[{"op":"remove","path":"/os_distro"}]`, 403)
	patch("alice", `[{"op":"replace","path":"/protected","value":false}]`, 200)
	if code, _, _ := e.do("alice", "DELETE", path, "", nil); code != 204 {
		t.Fatalf("delete: %d, want 204", code)
	}
	if code, _, _ := e.do("alice", "GET", path, "", nil); code != 404 || e.st.Get(id) != nil {
		t.Fatalf("after delete: %d", code)
	}
}

func TestIdentityAndActions(t *testing.T) {
	e := newEnv(t)
	priv := e.create("alice", vhd(map[string]any{"name": "priv", "visibility": "private"}))
	e.put("alice", priv, testutil.FixedVHD(t, 1<<20))
	pub := e.create("admin", vhd(map[string]any{"name": "pub", "visibility": "public"}))
	e.put("admin", pub, testutil.FixedVHD(t, 1<<20))
	names := func(who, query string) []string {
		t.Helper()
		m := e.json(who, "GET", "/v2/images"+query, nil, 200)
		var out []string
		for _, im := range m["images"].([]any) {
			out = append(out, im.(map[string]any)["name"].(string))
		}
		return out
	}
	for who, want := range map[string]string{"alice": "priv,pub", "bob": "pub", "stranger": "pub", "admin": "priv,pub", "": "priv,pub"} {
		if got := strings.Join(names(who, "?sort_key=name&sort_dir=asc"), ","); got != want {
			t.Errorf("%q lists %s, want %s", who, got, want)
		}
	}
	if code, _, _ := e.do("bob", "DELETE", "/v2/images/"+priv, "", nil); code != 404 || e.st.Get(priv) == nil {
		t.Fatalf("bob deletes alice's private image: %d", code)
	}
	if code, _, _ := e.do("alice", "DELETE", "/v2/images/"+pub, "", nil); code != 403 {
		t.Fatalf("alice deletes the admin's public image: %d, want 403", code)
	}
	// Deactivate: the owner or the admin, not another project (bob, who
	// sees the public image); data then forbidden but to the admin.
	if code, _, _ := e.do("bob", "POST", "/v2/images/"+pub+"/actions/deactivate", "", nil); code != 403 {
		t.Fatalf("bob deactivates the admin's public image: %d, want 403", code)
	}
	for i := 0; i < 2; i++ { // the second is a no-op, 204 too
		if code, _, b := e.do("alice", "POST", "/v2/images/"+priv+"/actions/deactivate", "", nil); code != 204 {
			t.Fatalf("alice deactivates her image: %d %s", code, b)
		}
	}
	if code, _, _ := e.do("alice", "POST", "/v2/images/"+priv+"/actions/reactivate", "", nil); code != 204 || e.st.Get(priv).Status != store.StatusActive {
		t.Fatalf("alice reactivates her image: %d", code)
	}
	for i := 0; i < 2; i++ { // the second is a no-op, 204 too
		if code, _, b := e.do("admin", "POST", "/v2/images/"+priv+"/actions/deactivate", "", nil); code != 204 {
			t.Fatalf("admin deactivates: %d %s", code, b)
		}
	}
	if e.st.Get(priv).Status != store.StatusDeactivated {
		t.Fatal("not deactivated in the store")
	}
	if code, _, _ := e.do("alice", "GET", "/v2/images/"+priv+"/file", "", nil); code != 403 {
		t.Fatalf("alice downloads a deactivated image: %d, want 403", code)
	}
	if code, _, _ := e.do("admin", "GET", "/v2/images/"+priv+"/file", "", nil); code != 200 {
		t.Fatalf("admin downloads a deactivated image: %d, want 200", code)
	}
	if code, _, _ := e.do("admin", "POST", "/v2/images/"+priv+"/actions/reactivate", "", nil); code != 204 || e.st.Get(priv).Status != store.StatusActive {
		t.Fatalf("reactivate: %d", code)
	}
	q := e.create("alice", map[string]any{"name": "q"})
	for _, who := range []string{"admin", "alice"} {
		if code, _, _ := e.do(who, "POST", "/v2/images/"+q+"/actions/deactivate", "", nil); code != 400 {
			t.Fatalf("%s deactivates a queued image: %d, want 400", who, code)
		}
	}
}

func TestListFiltersAndPaging(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 7 {
		props := vhd(map[string]any{"name": fmt.Sprintf("img-%d", i), "os_distro": []string{"superos", "hyperos"}[i%2]})
		ids = append(ids, e.create("alice", props))
	}
	e.put("alice", ids[0], testutil.FixedVHD(t, 1<<20))
	names := func(query string) ([]string, map[string]any) {
		t.Helper()
		m := e.json("alice", "GET", "/v2/images"+query, nil, 200)
		var out []string
		for _, im := range m["images"].([]any) {
			out = append(out, im.(map[string]any)["name"].(string))
		}
		return out, m
	}
	for q, want := range map[string]string{
		"?os_distro=superos&sort_key=name&sort_dir=asc":   "img-0,img-2,img-4,img-6",
		"?os_distro=hyperos&sort=name:desc":               "img-5,img-3,img-1",
		"?name=img-3":                                     "img-3",
		"?name=in:img-1,img-2&sort_key=name&sort_dir=asc": "img-1,img-2",
		"?status=active":                                  "img-0",
		"?size_min=1":                                     "img-0",
		"?size_max=10":                                    "",
		"?owner=alice&os_distro=hyperos&sort_key=name&sort_dir=asc": "img-1,img-3,img-5",
		"?owner=bob":                        "",
		"?visibility=public":                "",
		"?os_hidden=true":                   "",
		"?member_status=pending&name=img-4": "img-4", // the owner's own images, whatever member_status says (Glance)
		"?tag=x":                            "",
		"?os_hidden=false&member_status=all&name=img-2": "img-2",
	} {
		if got, _ := names(q); strings.Join(got, ",") != want {
			t.Errorf("%s: %v, want %s", q, got, want)
		}
	}
	// Paging: 3 at a time by name, following next, sees each once.
	var all []string
	next := "/v2/images?limit=3&sort_key=name&sort_dir=asc"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		got, m := names(strings.TrimPrefix(next, "/v2/images"))
		all = append(all, got...)
		next, _ = m["next"].(string)
	}
	if strings.Join(all, ",") != "img-0,img-1,img-2,img-3,img-4,img-5,img-6" {
		t.Fatalf("paged: %v", all)
	}
	// Default order: created_at desc, id desc.
	if got, _ := names(""); len(got) != 7 {
		t.Fatalf("default list: %v", got)
	}
	for _, q := range []string{"?limit=-1", "?sort_key=nope", "?sort_dir=up", "?marker=6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e", "?visibility=nope", "?size_min=x", "?os_hidden=maybe", "?member_status=x"} {
		if code, _, b := e.do("alice", "GET", "/v2/images"+q, "", nil); code != 400 {
			t.Errorf("%s: %d, want 400: %s", q, code, b)
		}
	}
}

func TestCheckListen(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:9292": true, "[::1]:9292": true, "localhost:9292": true, "0.0.0.0:9292": false, "10.1.2.3:9292": false, ":9292": false, "nonsense": false} {
		if err := CheckListen(addr, AuthNoAuth); (err == nil) != ok {
			t.Errorf("CheckListen(%s): %v", addr, err)
		}
	}
}

// TestBounds: headers past MaxHeaderBytes, an upload past the size cap
// (declared or sent chunked): refused, the image stays queued.
func TestBounds(t *testing.T) {
	e := newEnvCap(t, 2<<20)
	code, _, _ := e.do("alice", "GET", "/v2/images", "", nil, "X-Big", strings.Repeat("x", MaxHeaderBytes+8192))
	if code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("huge header: %d, want 431", code)
	}
	id := e.create("alice", vhd(map[string]any{"name": "capped"}))
	data := testutil.FixedVHD(t, 3<<20)
	if code, b := e.put("alice", id, data); code != 413 {
		t.Fatalf("upload over the cap: %d %s", code, b)
	}
	// Chunked: no length declared; the cap stops it mid-body.
	req, _ := http.NewRequest("PUT", e.url+"/v2/images/"+id+"/file", io.MultiReader(bytes.NewReader(data)))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-Tenant-Id", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("chunked upload over the cap: %d", resp.StatusCode)
		}
	}
	if st := e.st.Get(id).Status; st != store.StatusQueued {
		t.Fatalf("status %s after refused uploads, want queued", st)
	}
	// Chunked within the cap: sealed.
	small := testutil.FixedVHD(t, 1<<20)
	req, _ = http.NewRequest("PUT", e.url+"/v2/images/"+id+"/file", io.MultiReader(bytes.NewReader(small)))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-Tenant-Id", "alice")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || e.st.Get(id).Status != store.StatusActive || e.st.Get(id).Size != int64(len(small)) {
		t.Fatalf("chunked upload: %d, %+v", resp.StatusCode, e.st.Get(id))
	}
}
