package integration

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// randomFile writes n random bytes to a new file (what Tempest uploads)
// and returns its path.
func randomFile(t *testing.T, name string, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// entries lists a directory's names, sorted.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// apiImage is GET /v2/images/ID of the mount's API, as the admin.
func (a *apiMount) apiImage(id string) map[string]any {
	a.t.Helper()
	resp, err := http.Get(a.url + "/v2/images/" + id)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
		a.t.Fatalf("GET image %s: %d %v", id, resp.StatusCode, err)
	}
	return m
}

// qemuInfo is qemu-img info --output json of path (format probed).
func qemuInfo(t *testing.T, path string) (format string, vsize int64) {
	t.Helper()
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "--output", "json", path)), &info); err != nil {
		t.Fatal(err)
	}
	return info.Format, info.VirtualSize
}

// TestRawImageOnMount: disk_format raw on a real mount, both ways.
// echo raw > properties/disk_format renames the data file to image.raw;
// cp of random bytes into the directory seals them as they are (qemu-img
// sees a raw disk of that size under images/ and by-id/), the API shows
// the same image as raw; disk_format is then fixed (EPERM). The reverse:
// openstack image create --disk-format raw shows image.raw on the mount.
func TestRawImageOnMount(t *testing.T) {
	a := mountWithAPI(t)

	id := a.mkimage("r")
	if got := entries(t, a.images("r")); !slices.Equal(got, []string{"image.vhd", "properties"}) {
		t.Fatalf("a new image lists %v", got)
	}
	os.Stat(a.images("r", "image.vhd")) // the kernel now caches the entry
	sh(t, `echo raw > "$1"`, a.propFile("r", "disk_format"))
	if got := entries(t, a.images("r")); !slices.Equal(got, []string{"image.raw", "properties"}) {
		t.Fatalf("after echo raw > disk_format: %v", got)
	}
	if _, err := os.Stat(a.images("r", "image.vhd")); !os.IsNotExist(err) {
		t.Fatalf("image.vhd of a raw image: %v", err)
	}

	src := randomFile(t, "disk.bin", 4*mib)
	run(t, "cp", src, a.images("r")+"/")
	if st := a.prop("r", "status"); st != "active" {
		t.Fatalf("status %s after cp (%s)", st, readFileOr(a.propFile("r", "imagefs_kill_reason")))
	}
	if got := entries(t, a.images("r")); !slices.Equal(got, []string{"image.raw", "properties"}) {
		t.Fatalf("a sealed raw image lists %v", got)
	}
	if got := entries(t, a.byID(id)); !slices.Equal(got, []string{"image.raw", "properties"}) {
		t.Fatalf("by-id/%s lists %v", id, got)
	}
	cmp(t, src, a.images("r", "image.raw"))
	cmp(t, src, a.byID(id, "image.raw"))
	for _, p := range []string{a.images("r", "image.raw"), a.byID(id, "image.raw")} {
		if f, vs := qemuInfo(t, p); f != "raw" || vs != 4*mib {
			t.Errorf("qemu-img info %s: format %s, virtual size %d", p, f, vs)
		}
	}
	md5 := md5sum(t, src)
	for key, want := range map[string]string{"disk_format": "raw", "container_format": "bare", "size": strconv.Itoa(4 * mib),
		"virtual_size": strconv.Itoa(4 * mib), "checksum": md5, "os_hash_value": sha512sum(t, src)} {
		if got := a.prop("r", key); got != want {
			t.Errorf("properties/%s = %q, want %q", key, got, want)
		}
	}
	if m := a.apiImage(id); m["disk_format"] != "raw" || m["container_format"] != "bare" || m["status"] != "active" ||
		m["checksum"] != md5 || m["size"] != float64(4*mib) || m["virtual_size"] != float64(4*mib) {
		t.Fatalf("the API shows %v", m)
	}
	// Fixed once the data is in: EPERM at the shell's open, root included.
	if r := shErr(`echo vhd > "$1"`, a.propFile("r", "disk_format")); r.err == nil || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("echo vhd > disk_format of an active image: %s", r)
	}
	if mode := strings.TrimSpace(run(t, "stat", "-c", "%a", a.propFile("r", "disk_format"))); mode != "444" {
		t.Errorf("disk_format of an active image has mode %s, want 444", mode)
	}

	// The reverse: Tempest's kind of image through the openstack CLI.
	odd := randomFile(t, "odd.bin", 3001)
	apiID := strings.TrimSpace(a.oscOK("image", "create", "--file", odd, "--disk-format", "raw",
		"--container-format", "bare", "-f", "value", "-c", "id", "fromapi"))
	if got := entries(t, a.images("fromapi")); !slices.Equal(got, []string{"image.raw", "properties"}) {
		t.Fatalf("images/fromapi lists %v", got)
	}
	cmp(t, odd, a.byID(apiID, "image.raw"))
	if a.prop("fromapi", "status") != "active" || a.prop("fromapi", "virtual_size") != "3001" || a.prop("fromapi", "disk_format") != "raw" {
		t.Fatalf("images/fromapi: status %s, virtual_size %s", a.prop("fromapi", "status"), a.prop("fromapi", "virtual_size"))
	}
	if got := strings.Fields(a.oscOK("image", "list", "--property", "disk_format=raw", "-f", "value", "-c", "Name")); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"fromapi", "r"}) {
		t.Errorf("image list disk_format=raw: %v", got)
	}

	// Created through the API without formats (Glance's null): no data
	// file and no format files; cp is refused (EINVAL at the create)
	// until echo sets both, creating their files.
	resp, err := http.Post(a.url+"/v2/images", "application/json", strings.NewReader(`{"name": "noformat"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := entries(t, a.images("noformat")); !slices.Equal(got, []string{"properties"}) {
		t.Fatalf("images/noformat lists %v", got)
	}
	if _, err := os.Stat(a.propFile("noformat", "disk_format")); !os.IsNotExist(err) {
		t.Fatalf("properties/disk_format of an image without one: %v", err)
	}
	if r := execCmd("cp", odd, a.images("noformat")+"/"); r.err == nil || !strings.Contains(r.stderr, "Invalid argument") {
		t.Fatalf("cp into an image without formats: %s", r)
	}
	sh(t, `echo raw > "$1/disk_format" && echo bare > "$1/container_format"`, a.images("noformat", "properties"))
	run(t, "cp", odd, a.images("noformat")+"/")
	if a.prop("noformat", "status") != "active" {
		t.Fatalf("noformat after echo and cp: %s", a.prop("noformat", "status"))
	}
	cmp(t, odd, a.images("noformat", "image.raw"))

	// rm -rf and find -delete of an image without formats (no data file:
	// they reach properties/ first) delete the whole image, custom
	// properties included, and fail nowhere (they failed with EPERM on
	// each system property after removing the custom ones).
	for i, del := range [][]string{{"rm", "-rf"}, {"find", "", "-delete"}} {
		name := "noformat-del" + strconv.Itoa(i)
		resp, err := http.Post(a.url+"/v2/images", "application/json", strings.NewReader(`{"name": "`+name+`", "hw_disk_bus": "scsi"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if a.prop(name, "hw_disk_bus") != "scsi" {
			t.Fatalf("%s: hw_disk_bus %q", name, a.prop(name, "hw_disk_bus"))
		}
		args := slices.Clone(del)
		if args[0] == "find" {
			args[1] = a.images(name)
		} else {
			args = append(args, a.images(name))
		}
		if r := execCmd(args[0], args[1:]...); r.err != nil {
			t.Errorf("%v of an image without formats: %s", del, r)
		}
		if _, err := os.Stat(a.images(name)); !os.IsNotExist(err) {
			t.Errorf("%v: images/%s still there: %v", del, name, err)
		}
	}
}

// TestRawUploadRules: raw bytes copied into an image still vhd (the
// default) are inspected as a VHD and refused (cp fails, EINVAL at close;
// the reason says to set disk_format raw first); after that (killed: no
// data) disk_format may change and the same cp seals; the other
// format's data file name is EINVAL; rsync (a temporary file renamed onto
// image.raw) uploads a raw image; a disk_format imagefs does not store is
// EINVAL at the write (dash's echo words any failed write "I/O error").
func TestRawUploadRules(t *testing.T) {
	a := mountWithAPI(t)
	requireTools(t, "rsync")
	src := randomFile(t, "x.raw", 2*mib)

	a.mkimage("v")
	r := execCmd("cp", src, a.images("v")+"/")
	if r.err == nil || !strings.Contains(r.stderr, "Invalid argument") {
		t.Fatalf("cp x.raw into a vhd image: %s", r)
	}
	if st, why := a.prop("v", "status"), a.prop("v", "imagefs_kill_reason"); st != "killed" || !strings.Contains(why, "echo raw > properties/disk_format") {
		t.Fatalf("after cp x.raw: %s %q", st, why)
	}
	sh(t, `echo raw > "$1"`, a.propFile("v", "disk_format"))
	run(t, "cp", src, a.images("v")+"/")
	if st := a.prop("v", "status"); st != "active" {
		t.Fatalf("cp after echo raw: %s", st)
	}
	cmp(t, src, a.images("v", "image.raw"))

	// The other format's name.
	a.mkimage("w")
	sh(t, `echo raw > "$1"`, a.propFile("w", "disk_format"))
	_, err := os.OpenFile(a.images("w", "image.vhd"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	wantErrno(t, "create image.vhd in a raw image", err, syscall.EINVAL)
	if st := a.prop("w", "status"); st != "queued" {
		t.Fatalf("after the refused create: %s", st)
	}

	// rsync: .image.raw.XXXXXX, then a rename onto image.raw.
	run(t, "rsync", src, a.images("w", "image.raw"))
	if st := a.prop("w", "status"); st != "active" {
		t.Fatalf("rsync into image.raw: %s (%s)", st, readFileOr(a.propFile("w", "imagefs_kill_reason")))
	}
	cmp(t, src, a.images("w", "image.raw"))

	// Formats imagefs does not store: EINVAL at the write, nothing set.
	a.mkimage("q")
	for key, bad := range map[string]string{"disk_format": "qcow2", "container_format": "ovf"} {
		f, err := os.OpenFile(a.propFile("q", key), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Write([]byte(bad + "\n"))
		wantErrno(t, "write "+bad+" into "+key, err, syscall.EINVAL)
		f.Close()
	}
	if a.prop("q", "disk_format") != "vhd" || a.prop("q", "container_format") != "bare" {
		t.Errorf("after refused writes: %s %s", a.prop("q", "disk_format"), a.prop("q", "container_format"))
	}
	// The xattr face: the same rule.
	run(t, "setfattr", "-n", "user.disk_format", "-v", "raw", a.images("q"))
	if got := entries(t, a.images("q")); !slices.Equal(got, []string{"image.raw", "properties"}) {
		t.Errorf("after setfattr user.disk_format=raw: %v", got)
	}
}

// readFileOr returns the content of path, or the error reading it.
func readFileOr(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return string(b)
}

// TestSwiftRawImage: a raw image on the shared catalog with its data in
// Swift. Host a makes it raw and copies random bytes in; host b sees it
// raw (the record through etcd), `imagefs prefetch` of its id caches the
// data (it opens by-id/ID/image.raw), and by-id/ID/image.raw holds the
// same bytes.
func TestSwiftRawImage(t *testing.T) {
	hosts, _ := swiftCluster(t, 2, nil)
	a, b := hosts[0], hosts[1]
	id := a.mkimage("r")
	sh(t, `echo raw > "$1"`, a.propFile("r", "disk_format"))
	src := randomFile(t, "disk.bin", 3*mib+5)
	run(t, "cp", src, a.images("r")+"/")
	if st := a.prop("r", "status"); st != "active" {
		t.Fatalf("status %s after cp", st)
	}
	eventually(t, 5*time.Second, "host-b: r active and raw", func() bool {
		return strings.TrimSpace(readOptional(b.propFile("r", "status"))) == "active" &&
			strings.TrimSpace(readOptional(b.propFile("r", "disk_format"))) == "raw"
	})
	r := execCmd(binary, "prefetch", b.Mnt, id)
	if r.err != nil || !strings.Contains(r.stdout, "cached "+id) {
		t.Fatalf("imagefs prefetch of the raw image: %s", r)
	}
	if _, err := os.Stat(filepath.Join(b.Store, "swift-cache", id+".vhd")); err != nil {
		t.Errorf("host-b: not in the cache after the prefetch: %v", err)
	}
	if got := entries(t, b.byID(id)); !slices.Equal(got, []string{"image.raw", "properties"}) {
		t.Fatalf("host-b: by-id/%s lists %v", id, got)
	}
	cmp(t, src, b.byID(id, "image.raw"))
	if got := metric(t, b, "imagefs_data_fetches_total"); got != 1 {
		t.Errorf("host-b: %v downloads, want 1 (the prefetch's)", got)
	}
}

// TestRestoreRawBackup: a backup of a raw image (cp -a: image.raw and
// properties/) is restored as a raw image: imagefs restore sets
// disk_format raw before the upload, uploads image.raw and checks its
// hashes.
func TestRestoreRawBackup(t *testing.T) {
	m := mount(t)
	m.mkimage("r")
	writeProp(t, m, "r", "disk_format", "raw")
	src := randomFile(t, "disk.bin", mib+1)
	run(t, "cp", src, m.images("r", "image.raw"))
	writeProp(t, m, "r", "os_distro", "superos")
	bk := t.TempDir()
	run(t, "cp", "-a", m.images("r"), bk+"/")
	r := execCmd(binary, "restore", "--name", "r2", filepath.Join(bk, "r"), m.Mnt)
	if r.err != nil {
		t.Fatalf("imagefs restore: %s", r)
	}
	for k, want := range map[string]string{"status": "active", "disk_format": "raw", "os_distro": "superos",
		"checksum": m.prop("r", "checksum"), "virtual_size": strconv.Itoa(mib + 1)} {
		if got := m.prop("r2", k); got != want {
			t.Errorf("restored r2: %s = %q, want %q", k, got, want)
		}
	}
	cmp(t, src, m.images("r2", "image.raw"))
}
