package integration

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitProp waits up to 30 s for images/<name>/properties/<key> to read
// want (one of wants), and returns what it read.
func (m *fsMount) waitProp(name, key string, wants ...string) string {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := m.prop(name, key)
		for _, w := range wants {
			if got == w {
				return got
			}
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("images/%s/properties/%s = %q, want one of %q", name, key, got, wants)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// TestAPIGlanceDirectImport drives the glance CLI's interoperable import
// (glance-direct) against the API and checks each step on the mount:
// image-create-via-import in one go; then image-stage (the image is
// uploading, its image.vhd unreadable and absent from by-id/) and
// image-import.
func TestAPIGlanceDirectImport(t *testing.T) {
	requireTools(t, "glance")
	a := mountWithAPI(t)
	if out := a.glanceOK("import-info"); !strings.Contains(out, `"value": ["glance-`) {
		t.Fatalf("glance import-info does not list glance-direct:\n%s", out)
	}
	vhd := makeVHD(t, 8*mib, "dynamic")
	// --file: the CLI refuses it without a terminal on stdin ("You cannot
	// use both --file and stdin"), so it runs under script(1)'s pty.
	requireTools(t, "script")
	home := filepath.Join(t.TempDir(), "home")
	os.MkdirAll(home, 0o700)
	r := execCmd("script", "-qec", fmt.Sprintf("HOME=%s glance --os-auth-token noauth --os-image-url %s image-create-via-import --name imported --disk-format vhd --container-format bare --import-method glance-direct --file %s", home, a.url, vhd.Path), "/dev/null")
	if r.err != nil {
		t.Fatalf("glance image-create-via-import: %s", r)
	}
	out := r.stdout
	id := uuidRE.FindString(out)
	if id == "" || a.prop("imported", "id") != id {
		t.Fatalf("image-create-via-import: no id of images/imported in:\n%s", out)
	}
	a.waitProp("imported", "status", "active")
	for key, want := range map[string]string{"checksum": vhd.MD5, "os_hash_value": vhd.SHA512, "size": fmt.Sprint(vhd.Size),
		"virtual_size": fmt.Sprint(vhd.VirtualSize), "vhd_disk_type": "dynamic"} {
		if got := a.prop("imported", key); got != want {
			t.Errorf("images/imported/properties/%s = %q, want %q", key, got, want)
		}
	}
	cmp(t, vhd.Path, a.byID(id, "image.vhd"))
	if _, err := os.Stat(a.propFile("imported", "imagefs_stage_host")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("imagefs_stage_host of an imported image: %v", err)
	}
	if tasks := a.prop("imported", "imagefs_import_tasks"); !strings.Contains(tasks, `"status":"success"`) || !strings.Contains(tasks, `"glance-direct"`) {
		t.Errorf("properties/imagefs_import_tasks = %s", tasks)
	}

	// Step by step: the staged image on the mount.
	raw := filepath.Join(t.TempDir(), "disk.raw")
	data := bytes.Repeat([]byte("imagefs "), 512<<10) // 4 MiB
	if err := os.WriteFile(raw, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sid := a.mkimage("staged")
	if err := os.WriteFile(a.propFile("staged", "disk_format"), []byte("raw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.glanceOK("image-stage", "--file", raw, sid)
	if got := a.prop("staged", "status"); got != "uploading" {
		t.Fatalf("status after image-stage: %q, want uploading", got)
	}
	if _, err := os.ReadFile(a.images("staged", "image.raw")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("read of a staged image's images/staged/image.raw: %v, want EACCES", err)
	}
	if _, err := os.Stat(a.byID(sid, "image.raw")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("by-id/%s/image.raw of a staged image: %v, want ENOENT", sid, err)
	}
	if got := a.prop("staged", "imagefs_stage_host"); got == "" {
		t.Errorf("imagefs_stage_host of a staged image is empty")
	}
	// A cp into it is refused while it is staged.
	if r := execCmd("cp", raw, a.images("staged", "image.raw")); r.err == nil {
		t.Errorf("cp into a staged image succeeded")
	}
	a.glanceOK("image-import", "--import-method", "glance-direct", sid)
	a.waitProp("staged", "status", "active")
	sum := md5.Sum(data)
	if got := a.prop("staged", "checksum"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("checksum %s, want %x", got, sum)
	}
	cmp(t, raw, a.byID(sid, "image.raw"))
	if left, _ := filepath.Glob(filepath.Join(a.Store, "staging", "*")); len(left) != 0 {
		t.Errorf("staging files left: %v", left)
	}
}

// stageAsync PUTs size bytes of b's repeated content to .../stage of id,
// sending them slowly when slow is set; the request runs until it ends or
// the daemon dies. It returns at once.
func stageAsync(url, id string, data []byte, slow bool) {
	go func() {
		var body io.Reader = bytes.NewReader(data)
		if slow {
			pr, pw := io.Pipe()
			go func() {
				for off := 0; off < len(data); off += 64 << 10 {
					if _, err := pw.Write(data[off:min(off+64<<10, len(data))]); err != nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				pw.Close()
			}()
			body = pr
		}
		req, _ := http.NewRequest("PUT", url+"/v2/images/"+id+"/stage", body)
		req.Header.Set("Content-Type", "application/octet-stream")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
}

// apiDo sends one request to the mount's API and returns its status.
func apiDo(t *testing.T, method, url, ctype, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAPIImportSIGKILL kills the daemon (SIGKILL) while an image is
// uploading (its stage arriving, or staged) or importing, and checks the
// image on the next mount: queued without staged data (a staging file
// does not outlive its daemon), or active with the imported bytes (the
// seal had committed, or fsck at mount completed it); never uploading or
// importing, never active without its seal; and it can be imported again.
func TestAPIImportSIGKILL(t *testing.T) {
	a := mountWithAPI(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4<<20) // 64 MiB
	sum := md5.Sum(data)
	wantSum := hex.EncodeToString(sum[:])
	for i, when := range []string{"mid-stage", "staged", "importing", "importing", "importing"} {
		name := fmt.Sprintf("k%d", i)
		id := a.mkimage(name)
		if err := os.WriteFile(a.propFile(name, "disk_format"), []byte("raw\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		switch when {
		case "mid-stage":
			stageAsync(a.url, id, data, true)
			a.waitProp(name, "status", "uploading")
			time.Sleep(200 * time.Millisecond) // some bytes staged
		default:
			if code := apiDoBody(t, "PUT", a.url+"/v2/images/"+id+"/stage", "application/octet-stream", data); code != 204 {
				t.Fatalf("stage: %d", code)
			}
			if when == "importing" {
				if code := apiDo(t, "POST", a.url+"/v2/images/"+id+"/import", "application/json", `{"method": {"name": "glance-direct"}}`); code != 202 {
					t.Fatalf("import: %d", code)
				}
				time.Sleep([]time.Duration{0, 30 * time.Millisecond, time.Second}[i-2]) // before, during, after the seal
			}
		}
		a.crash()
		a.start()
		st := a.prop(name, "status")
		t.Logf("killed %s: status %s after the remount", when, st)
		switch st {
		case "queued":
			if _, err := os.Stat(a.propFile(name, "imagefs_stage_host")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: queued with imagefs_stage_host: %v", when, err)
			}
		case "active":
			if when != "importing" || a.prop(name, "checksum") != wantSum {
				t.Errorf("%s: active with checksum %s, want %s", when, a.prop(name, "checksum"), wantSum)
			}
			cmpBytes(t, data, a.byID(id, "image.raw"))
		default:
			t.Fatalf("%s: status %q after SIGKILL and remount, want queued or active", when, st)
		}
		if left, _ := filepath.Glob(filepath.Join(a.Store, "staging", "*")); len(left) != 0 {
			t.Errorf("%s: staging files left after the remount: %v", when, left)
		}
		if st == "queued" {
			// Stage and import again.
			if code := apiDoBody(t, "PUT", a.url+"/v2/images/"+id+"/stage", "application/octet-stream", data); code != 204 {
				t.Fatalf("%s: stage after the remount: %d", when, code)
			}
			if code := apiDo(t, "POST", a.url+"/v2/images/"+id+"/import", "application/json", `{"method": {"name": "glance-direct"}}`); code != 202 {
				t.Fatalf("%s: import after the remount: %d", when, code)
			}
			a.waitProp(name, "status", "active")
			if got := a.prop(name, "checksum"); got != wantSum {
				t.Errorf("%s: re-imported checksum %s", when, got)
			}
		}
	}
}

func apiDoBody(t *testing.T, method, url, ctype string, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// cmpBytes compares the file path with want.
func cmpBytes(t *testing.T, want []byte, path string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read %s: %v", path, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes differ from the %d imported", path, len(got), len(want))
	}
}
