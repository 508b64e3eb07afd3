package integration

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// apiMount is a mount serving the Images API (noauth) on a free loopback
// port, and the openstack CLI pointed at it.
type apiMount struct {
	*fsMount
	url string
}

func mountWithAPI(t *testing.T) *apiMount {
	t.Helper()
	requireTools(t, "openstack", "qemu-img")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	m := mount(t)
	m.Args = append(m.Args, "--api-listen", addr, "--api-project", "demo=1000")
	m.remount()
	return &apiMount{fsMount: m, url: "http://" + addr}
}

// osc runs the openstack CLI against the mount's API (noauth: the
// admin, as Glance's noauth) with a private HOME.
func (a *apiMount) osc(args ...string) result {
	home := filepath.Join(a.t.TempDir(), "home")
	os.MkdirAll(home, 0o700)
	cmd := exec.Command("openstack", append([]string{"--os-auth-type", "none", "--os-endpoint", a.url}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.Stdin = nil
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), err: err}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	return r
}

func (a *apiMount) oscOK(args ...string) string {
	a.t.Helper()
	r := a.osc(args...)
	if r.err != nil {
		a.t.Fatalf("openstack %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// TestAPIOpenstackCLI drives the real openstack CLI against the API and
// checks every step on the mount, both ways.
func TestAPIOpenstackCLI(t *testing.T) {
	a := mountWithAPI(t)
	vhd := makeVHD(t, 8*mib, "fixed")

	// openstack image create --file: the mount shows the same image.
	id := strings.TrimSpace(a.oscOK("image", "create", "--file", vhd.Path, "--disk-format", "vhd",
		"--container-format", "bare", "--property", "os_distro=superos", "-f", "value", "-c", "id", "superos-api"))
	if got := a.prop("superos-api", "id"); got != id {
		t.Fatalf("images/superos-api has id %s, the CLI created %s", got, id)
	}
	for key, want := range map[string]string{"status": "active", "checksum": vhd.MD5, "os_hash_value": vhd.SHA512,
		"os_hash_algo": "sha512", "os_distro": "superos", "disk_format": "vhd"} {
		if got := a.prop("superos-api", key); got != want {
			t.Errorf("images/superos-api/properties/%s = %q, want %q", key, got, want)
		}
	}
	cmp(t, vhd.Path, a.dataFile("superos-api"))
	cmp(t, vhd.Path, a.byID(id, "image.vhd"))
	if got := readProp(t, a.byID(id, "properties", "os_distro")); got != "superos" {
		t.Fatalf("by-id os_distro = %q", got)
	}

	// The reverse: an image uploaded with cp, its property set with echo.
	other := makeVHD(t, 4*mib, "dynamic")
	a.mkimage("fromcp")
	run(t, "cp", other.Path, a.dataFile("fromcp"))
	sh(t, `echo hyperos > "$1"`, a.propFile("fromcp", "os_distro"))
	var shown struct {
		ID, Status, Checksum string
		Properties           map[string]any
	}
	if err := json.Unmarshal([]byte(a.oscOK("image", "show", "-f", "json", "fromcp")), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.ID != a.prop("fromcp", "id") || shown.Status != "active" || shown.Checksum != other.MD5 || shown.Properties["os_distro"] != "hyperos" {
		t.Fatalf("image show fromcp: %+v", shown)
	}

	// image list --property filters.
	list := func(prop string) []string {
		out := strings.Fields(a.oscOK("image", "list", "--property", prop, "-f", "value", "-c", "Name"))
		slices.Sort(out)
		return out
	}
	if got := list("os_distro=superos"); !slices.Equal(got, []string{"superos-api"}) {
		t.Fatalf("list os_distro=superos: %v", got)
	}
	if got := list("os_distro=hyperos"); !slices.Equal(got, []string{"fromcp"}) {
		t.Fatalf("list os_distro=hyperos: %v", got)
	}

	// image set / unset.
	a.oscOK("image", "set", "--property", "hw_disk_bus=scsi", "--min-ram", "1024", "superos-api")
	if a.prop("superos-api", "hw_disk_bus") != "scsi" || a.prop("superos-api", "min_ram") != "1024" {
		t.Fatal("image set not seen on the mount")
	}
	a.oscOK("image", "unset", "--property", "hw_disk_bus", "superos-api")
	if _, err := os.Stat(a.propFile("superos-api", "hw_disk_bus")); !os.IsNotExist(err) {
		t.Fatalf("image unset: the property file is still there (%v)", err)
	}

	// image save: the bytes of the mount's file.
	saved := filepath.Join(t.TempDir(), "saved.vhd")
	a.oscOK("image", "save", "--file", saved, "fromcp")
	cmp(t, other.Path, saved)

	// A file that is not a VHD: refused with the reason, never active.
	junk := filepath.Join(t.TempDir(), "junk.vhd")
	os.WriteFile(junk, []byte(strings.Repeat("not a vhd ", 10000)), 0o644)
	r := a.osc("image", "create", "--file", junk, "--disk-format", "vhd", "--container-format", "bare", "junk")
	if r.err == nil || !strings.Contains(r.stderr, "not an acceptable VHD") {
		t.Fatalf("create from junk: %s", r)
	}
	if st, err := os.ReadFile(a.propFile("junk", "status")); err == nil && strings.TrimSpace(string(st)) == "active" {
		t.Fatal("the junk image is active")
	}
	// Formats other than vhd are refused, nothing created.
	if r := a.osc("image", "create", "--disk-format", "qcow2", "--container-format", "bare", "q"); r.err == nil {
		t.Fatalf("qcow2 create: %s", r)
	}
	if _, err := os.Stat(a.images("q")); !os.IsNotExist(err) {
		t.Fatalf("images/q after a refused create: %v", err)
	}

	// image delete: gone from both trees.
	a.oscOK("image", "delete", "superos-api", "fromcp")
	for _, p := range []string{a.images("superos-api"), a.images("fromcp"), a.byID(id)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after image delete: %v", p, err)
		}
	}

	// A project's image is its uid's on the mount, and its owner through
	// the API; another project does not see it.
	req, _ := http.NewRequest("POST", a.url+"/v2/images", strings.NewReader(`{"name": "demo-img", "visibility": "private", "os_distro": "demo"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Tenant-Id", "demo")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created map[string]any
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != 201 || created["owner"] != "demo" {
		t.Fatalf("create as project demo: %d %v", resp.StatusCode, created)
	}
	if uid := strings.TrimSpace(run(t, "stat", "-c", "%u", a.images("demo-img"))); uid != "1000" || a.prop("demo-img", "owner") != "1000" || a.prop("demo-img", "visibility") != "private" {
		t.Fatalf("images/demo-img: owner uid %s, owner property %s", uid, a.prop("demo-img", "owner"))
	}
	req, _ = http.NewRequest("GET", a.url+"/v2/images/"+created["id"].(string), nil)
	req.Header.Set("X-Tenant-Id", "other")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Fatalf("another project reads demo's private image: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The API stops with the mount.
	a.stop()
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(a.url, "http://"), time.Second); err == nil {
		c.Close()
		t.Fatal("the API still answers after the unmount")
	}
}

// TestAPINoauthRefusesNonLoopback: noauth trusts headers, so the mount
// refuses to listen elsewhere than on loopback (usage error, nothing mounted).
func TestAPINoauthRefusesNonLoopback(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "mnt"), 0o755)
	r := execCmd(binary, "mount", "--api-listen", "0.0.0.0:19293", filepath.Join(dir, "store"), filepath.Join(dir, "mnt"))
	if r.code != 2 || !strings.Contains(r.stderr, "loopback") {
		t.Fatalf("mount --api-listen 0.0.0.0: %s", r)
	}
	if isMounted(filepath.Join(dir, "mnt")) {
		t.Fatal("mounted")
	}
	if _, err := os.Stat(filepath.Join(dir, "store")); !os.IsNotExist(err) {
		t.Fatalf("a store was created: %v", err)
	}
}
