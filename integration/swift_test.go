package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/ncw/swift/v2"
	"golang.org/x/sys/unix"
)

// The Swift data store's tests (issue 16): hosts of one shared catalog
// (sharedClusterArgs) with --data swift://CONTAINER on the test Swift of
// scripts/swift.sh (testutil.SwiftAuth), 1 MiB segments so that small
// fixtures span several, and a 2 s delete delay. Credentials reach the
// daemons through their environment (ST_AUTH, ST_USER, ST_KEY), as for
// the swift CLI.

// swiftEnv is the Swift side of a test's hosts.
type swiftEnv struct {
	sw        testutil.Swift
	container string
}

// swiftCluster starts n hosts on a fresh catalog and a fresh container of
// the Swift sw (the test Swift when sw is nil), each with a metrics
// endpoint.
func swiftCluster(t *testing.T, n int, sw *testutil.Swift, extra ...string) ([]*fsMount, swiftEnv) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if sw == nil {
		s := testutil.SwiftAuth(t)
		sw = &s
	}
	for _, kv := range sw.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	se := swiftEnv{sw: *sw, container: "it-" + randHex(6)}
	t.Cleanup(func() { // after the hosts (cleanups run last first)
		se.drop(se.container, se.container+"_segments") // best effort
	})
	args := append([]string{"--data", "swift://" + se.container, "--swift-segment-size", "1M",
		"--delete-delay", "2s", "--metrics-addr", "127.0.0.1:0"}, extra...)
	hosts, _ := sharedClusterArgs(t, n, args...)
	return hosts, se
}

// cli runs the swift CLI on the test's account.
func (se swiftEnv) cli(args ...string) result {
	return execCmd("swift", append([]string{"-A", se.sw.AuthURL, "-U", se.sw.User, "-K", se.sw.Key}, args...)...)
}

// client returns a connection to the test's account (the swift CLI
// takes seconds to start on a busy machine: the checks that poll use
// this).
func (se swiftEnv) client() *swift.Connection {
	return &swift.Connection{AuthUrl: se.sw.AuthURL, UserName: se.sw.User, ApiKey: se.sw.Key,
		Timeout: 10 * time.Second, ConnectTimeout: 10 * time.Second}
}

// drop deletes the containers and their objects, as far as Swift lets
// it (best effort: errors are ignored).
func (se swiftEnv) drop(containers ...string) {
	c, ctx := se.client(), context.Background()
	for _, ct := range containers {
		names, _ := c.ObjectNamesAll(ctx, ct, nil)
		for _, n := range names {
			c.ObjectDelete(ctx, ct, n)
		}
		c.ContainerDelete(ctx, ct)
	}
}

// objects lists the container (suffix "" for manifests, "_segments" for
// segments) under prefix.
func (se swiftEnv) objects(t testing.TB, suffix, prefix string) []string {
	t.Helper()
	names, err := se.client().ObjectNamesAll(context.Background(), se.container+suffix, &swift.ObjectsOpts{Prefix: prefix})
	if errors.Is(err, swift.ContainerNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("swift list %s%s: %v", se.container, suffix, err)
	}
	return names
}

// manifest returns the headers of the manifest of image id in Swift, nil
// when it is not there (a HEAD: the container's listing may lag behind
// its objects).
func (se swiftEnv) manifest(t testing.TB, id string) swift.Headers {
	t.Helper()
	_, h, err := se.client().Object(context.Background(), se.container, id)
	if errors.Is(err, swift.ObjectNotFound) || errors.Is(err, swift.ContainerNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("swift stat %s %s: %v", se.container, id, err)
	}
	return h
}

// metric returns one sample of the metrics of host m's current daemon
// (0 when absent).
func metric(t *testing.T, m *fsMount, series string) float64 {
	t.Helper()
	all := metricsAddrRE.FindAllStringSubmatch(string(readFile(m.log)), -1)
	if all == nil {
		t.Fatalf("%s: no metrics address in the log", m.Mnt)
	}
	return scrape(t, all[len(all)-1][1])[series]
}

// upload makes image name on m and copies fx into it with cp; it returns
// the image's id once it is active.
func swiftUpload(t *testing.T, m *fsMount, name string, fx vhdFixture) string {
	t.Helper()
	id := m.mkimage(name)
	run(t, "cp", fx.Path, m.dataFile(name))
	m.checkSealed(t, name, fx)
	return id
}

// waitByID waits until m shows image id's data.
func waitByID(t *testing.T, m *fsMount, id string) {
	t.Helper()
	eventually(t, 5*time.Second, "by-id/"+id+"/image.vhd visible", func() bool { return exists(m.byID(id, "image.vhd")) })
}

// sampleFixture is the shared sample VHD file (read where it is, never
// copied) as a fixture.
func sampleFixture(t *testing.T, file string) vhdFixture {
	t.Helper()
	p := filepath.Join(sampleDir(t), file)
	return vhdFixture{Path: p, Subformat: "dynamic", Size: fileSize(t, p),
		VirtualSize: qemuVirtualSize(t, p), MD5: md5sum(t, p), SHA512: sha512sum(t, p)}
}

// cacheFile returns the path of image id's copy in host m's cache.
func cacheFile(m *fsMount, id string) string {
	return filepath.Join(m.Store, "swift-cache", id+".vhd")
}

// Images uploaded on host-a with cp, rsync and dd (two dynamic VHDs of
// the shared samples, and a fixed one of 4 segments) are in Swift as
// segments and a manifest; host-b and host-c read each by id: the same
// bytes, exactly one download per host and image (the fetch count and
// bytes), and the second read downloads nothing and goes through
// passthrough (no READ reaches the daemon). host-a downloads nothing: its
// staging files are its cached copies.
func TestSwiftUploadReadByID(t *testing.T) {
	requireTools(t, "rsync", "dd")
	hosts, se := swiftCluster(t, 3, nil)
	a := hosts[0]
	uploads := []struct {
		tool string
		fx   vhdFixture
	}{
		{"cp", sampleFixture(t, "qemu.vhd")},
		{"rsync", sampleFixture(t, "xapi.vhd")}, // a temporary file renamed onto image.vhd
		{"dd", makeVHD(t, 3*mib+300*1024, "fixed")},
	}
	ids := map[string]vhdFixture{}
	var total int64
	for _, u := range uploads {
		name := u.tool
		id := a.mkimage(name)
		switch u.tool {
		case "cp":
			run(t, "cp", u.fx.Path, a.dataFile(name))
		case "rsync":
			run(t, "rsync", u.fx.Path, a.dataFile(name))
		case "dd":
			run(t, "dd", "if="+u.fx.Path, "of="+a.dataFile(name), "bs=256k", "status=none")
		}
		a.checkSealed(t, name, u.fx)
		ids[id] = u.fx
		total += u.fx.Size
		segs := se.objects(t, "_segments", id+"/")
		if want := int((u.fx.Size + mib - 1) / mib); len(segs) != want {
			t.Errorf("%s: %d segments in Swift (%v), want %d of 1 MiB for %d bytes", name, len(segs), segs, want, u.fx.Size)
		}
		if h := se.manifest(t, id); h["X-Static-Large-Object"] != "True" {
			t.Errorf("%s: no static large object manifest %s in Swift (headers %v)", name, id, h)
		}
	}
	for _, m := range hosts[1:] {
		host := filepath.Base(filepath.Dir(m.Store))
		for id, fx := range ids {
			waitByID(t, m, id)
			cmp(t, fx.Path, m.byID(id, "image.vhd"))
		}
		if got := metric(t, m, "imagefs_data_fetches_total"); got != float64(len(ids)) {
			t.Errorf("%s: imagefs_data_fetches_total = %v after reading %d images, want %d", host, got, len(ids), len(ids))
		}
		if got := metric(t, m, "imagefs_data_fetch_bytes_total"); got != float64(total) {
			t.Errorf("%s: imagefs_data_fetch_bytes_total = %v, want %d (each image once)", host, got, total)
		}
		reads := metric(t, m, `imagefs_fuse_requests_total{op="read"}`)
		for id, fx := range ids {
			cmp(t, fx.Path, m.byID(id, "image.vhd"))
			if got := md5sum(t, m.byID(id, "image.vhd")); got != fx.MD5 {
				t.Errorf("%s: md5sum %s = %s, want %s", host, id, got, fx.MD5)
			}
		}
		if got := metric(t, m, "imagefs_data_fetches_total"); got != float64(len(ids)) {
			t.Errorf("%s: imagefs_data_fetches_total = %v after reading again, want still %d", host, got, len(ids))
		}
		if m.passthroughActive() {
			if got := metric(t, m, `imagefs_fuse_requests_total{op="read"}`); got != reads {
				t.Errorf("%s: %v READ requests reached the daemon reading cached images, want 0 (passthrough)", host, got-reads)
			}
		} else {
			t.Logf("passthrough unavailable here: reads go through the daemon")
		}
	}
	if got := metric(t, a, "imagefs_data_fetches_total"); got != 0 {
		t.Errorf("host-a (the sealing host): %v downloads, want 0", got)
	}
	if got := metric(t, a, "imagefs_data_uploads_total"); got != float64(len(ids)) {
		t.Errorf("host-a: imagefs_data_uploads_total = %v, want %d", got, len(ids))
	}
	for id, fx := range ids {
		cmp(t, fx.Path, a.byID(id, "image.vhd"))
	}
	// The cache outlives the daemon: host-b mounted again reads without
	// a download.
	b := hosts[1]
	b.remount()
	for id, fx := range ids {
		cmp(t, fx.Path, b.byID(id, "image.vhd"))
	}
	if got := metric(t, b, "imagefs_data_fetches_total"); got != 0 {
		t.Errorf("host-b remounted: %v downloads of images in its cache, want 0", got)
	}
	if got := metric(t, b, "imagefs_data_cache_images"); got != float64(len(ids)) {
		t.Errorf("host-b remounted: imagefs_data_cache_images = %v, want %d", got, len(ids))
	}
	for _, m := range hosts {
		if bytes.Contains(readFile(m.log), []byte("key="+se.sw.Key)) || bytes.Contains(readFile(m.log), []byte("ST_KEY")) {
			t.Errorf("%s: the log names the Swift key", m.Mnt)
		}
	}
}

// A writer that writes in order has each complete segment sent while it
// is still writing: before its close, Swift holds the segments its bytes
// completed, and the close sends only the rest and the manifest. A writer
// that goes back over written bytes (pwrite at 0) voids the segments
// sent: they are deleted, and the seal sends all. host-b reads both.
func TestSwiftSegmentsStreamedDuringUpload(t *testing.T) {
	hosts, se := swiftCluster(t, 2, nil)
	a, b := hosts[0], hosts[1]
	for _, back := range []bool{false, true} {
		fx := makeVHD(t, 4*mib+200*1024, "fixed")
		data, err := os.ReadFile(fx.Path)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("streamed-%v", back)
		id := a.mkimage(name)
		before := metric(t, a, "imagefs_data_streamed_segments_total")
		f, err := os.OpenFile(a.dataFile(name), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); off += 128 << 10 {
			if _, err := f.Write(data[off:min(off+128<<10, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		full := len(data) / mib
		eventually(t, 20*time.Second, name+": complete segments in Swift before the close", func() bool {
			return metric(t, a, "imagefs_data_streamed_segments_total")-before == float64(full) &&
				len(se.objects(t, "_segments", id+"/")) == full
		})
		if back {
			if _, err := f.WriteAt(data[:512], 0); err != nil { // same bytes, out of order
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, name+": the voided segments deleted", func() bool {
				return len(se.objects(t, "_segments", id+"/")) == 0
			})
		}
		if err := f.Close(); err != nil {
			t.Fatalf("%s: close: %v", name, err)
		}
		a.checkSealed(t, name, fx)
		want := full + 1
		if got := se.objects(t, "_segments", id+"/"); len(got) != want {
			t.Errorf("%s: %d segments after the seal (%v), want %d", name, len(got), got, want)
		}
		streamed := full
		if back {
			streamed = 0
		}
		if !strings.Contains(string(readFile(a.log)), fmt.Sprintf("id=%s size=%d segments=%d segments_streamed=%d", id, fx.Size, want, streamed)) {
			t.Errorf("%s: no log line of the upload with segments_streamed=%d", name, streamed)
		}
		waitByID(t, b, id)
		cmp(t, fx.Path, b.byID(id, "image.vhd"))
	}
}

// swiftFsck runs imagefs fsck ARGS on the catalog and container of m's
// cluster, as host (its STORE store, which must not be mounted), with a
// delete delay of delay ("" for the hosts' 2 s).
func swiftFsck(t *testing.T, m *fsMount, store, host, delay string, args ...string) result {
	t.Helper()
	get := func(flag string) string {
		if i := lastIndex(m.Args, flag); i >= 0 && i+1 < len(m.Args) {
			return m.Args[i+1]
		}
		t.Fatalf("%s: no %s in %v", m.Mnt, flag, m.Args)
		return ""
	}
	if delay == "" {
		delay = get("--delete-delay")
	}
	all := append([]string{"fsck"}, args...)
	all = append(all, "--catalog", get("--catalog"), "--data", get("--data"), "--config", get("--config"),
		"--host-id", host, "--delete-delay", delay, store)
	start := time.Now()
	r := execCmd(binary, all...)
	t.Logf("imagefs fsck %s as %s (%v): %s", strings.Join(args, " "), host, time.Since(start).Round(time.Millisecond), r)
	return r
}

// host-a killed (SIGKILL) in the middle of an upload whose segments were
// being sent: the image ends killed on host-b (the upload's lease
// expires), with a reason naming host-a. Then, twice:
//
//   - host-a comes back: its next mount deletes the segments it had sent;
//   - host-a stays down: fsck --repair, run on host-b's STORE (host-b
//     unmounted, as fsck of a shared catalog is run), removes them
//     (orphan-segments: their upload's host is gone); before the crash,
//     the same fsck --repair left the segments of host-a's upload in
//     progress alone.
func TestSwiftCrashMidUpload(t *testing.T) {
	hosts, se := swiftCluster(t, 2, nil)
	a, b := hosts[0], hosts[1]
	for _, comesBack := range []bool{true, false} {
		name := fmt.Sprintf("cut-%v", comesBack)
		fx := makeVHD(t, 4*mib, "fixed")
		data, err := os.ReadFile(fx.Path)
		if err != nil {
			t.Fatal(err)
		}
		id := a.mkimage(name)
		f, err := os.OpenFile(a.dataFile(name), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data[:3*mib+100]); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, name+": 3 segments in Swift during the upload", func() bool {
			return len(se.objects(t, "_segments", id+"/")) == 3
		})
		if !comesBack {
			// An upload in progress on a live host is not an orphan.
			b.stop()
			if r := swiftFsck(t, b, b.Store, "host-b", "", "--repair"); r.code != 0 || strings.Contains(r.stdout, "orphan") {
				t.Errorf("%s: fsck --repair with host-a's upload in progress: want exit 0 and no orphans: %s", name, r)
			}
			if got := se.objects(t, "_segments", id+"/"); len(got) != 3 {
				t.Errorf("%s: fsck --repair during host-a's upload left %d segments %v, want its 3", name, len(got), got)
			}
			b.start()
		}
		a.crash()
		f.Close() // on a dead mount: its error does not matter
		eventually(t, 4*sharedLeaseTTL+5*time.Second, name+": host-b: the image killed", func() bool {
			return strings.TrimSpace(readOptional(b.propFile(name, "status"))) == "killed"
		})
		if reason := readOptional(b.propFile(name, "imagefs_kill_reason")); !strings.Contains(reason, "host-a") {
			t.Errorf("%s: host-b: kill reason %q does not name host-a", name, reason)
		}
		if comesBack {
			a.start()
			eventually(t, 20*time.Second, name+": host-a remounted: the segments it sent deleted", func() bool {
				return len(se.objects(t, "_segments", id+"/")) == 0
			})
		} else {
			if got := se.objects(t, "_segments", id+"/"); len(got) != 3 {
				t.Fatalf("%s: segments of the cut upload before fsck: %v, want 3", name, got)
			}
			b.stop()
			r := swiftFsck(t, b, b.Store, "host-b", "")
			if r.code != 3 || !strings.Contains(r.stdout, "orphan-segments: "+id+": 3 segments") || !strings.Contains(r.stdout, "sent by host host-a") {
				t.Errorf("%s: fsck after host-a's crash: want exit 3 and orphan-segments of %s sent by host-a: %s", name, id, r)
			}
			// The repair it suggests is this run's, options included.
			if !strings.Contains(r.stdout, "--host-id host-b --delete-delay ") {
				t.Errorf("%s: fsck's suggested repair leaves out this run's --host-id or --delete-delay: %s", name, r.stdout)
			}
			if r := swiftFsck(t, b, b.Store, "host-b", "", "--repair"); r.code != 0 {
				t.Errorf("%s: fsck --repair: want exit 0: %s", name, r)
			}
			if got := se.objects(t, "_segments", id+"/"); len(got) != 0 {
				t.Errorf("%s: segments of the cut upload after fsck --repair: %v, want none", name, got)
			}
			if r := swiftFsck(t, b, b.Store, "host-b", ""); r.code != 0 {
				t.Errorf("%s: fsck after the repair: want exit 0: %s", name, r)
			}
			b.start()
			a.start()
		}
		if got := se.objects(t, "", id); len(got) != 0 {
			t.Errorf("%s: a manifest of the cut upload: %v", name, got)
		}
		if st := strings.TrimSpace(readOptional(b.propFile(name, "status"))); st != "killed" {
			t.Errorf("%s: host-b: status %q, want killed", name, st)
		}
	}
}

// Ten readers on host-b open an image it has not cached at once: one
// download, and all ten read the right bytes.
func TestSwiftConcurrentFirstReaders(t *testing.T) {
	hosts, _ := swiftCluster(t, 2, nil)
	a, b := hosts[0], hosts[1]
	fx := makeVHD(t, 5*mib, "fixed")
	id := swiftUpload(t, a, "ten", fx)
	waitByID(t, b, id)
	want, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := os.ReadFile(b.byID(id, "image.vhd"))
			if err == nil && !bytes.Equal(got, want) {
				err = fmt.Errorf("%d bytes differ from the upload", len(got))
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("reader %d: %v", i, err)
		}
	}
	if got := metric(t, b, "imagefs_data_fetches_total"); got != 1 {
		t.Errorf("host-b: imagefs_data_fetches_total = %v after ten concurrent first readers, want 1", got)
	}
}

// Past --cache-size (5 MiB here, images of 2 MiB) the least recently
// opened closed copy is evicted; a copy held open is not, and still
// reads; an evicted image is downloaded again at its next open.
func TestSwiftCacheEviction(t *testing.T) {
	hosts, _ := swiftCluster(t, 2, nil, "--cache-size", "5M")
	a, b := hosts[0], hosts[1]
	var ids []string
	var fxs []vhdFixture
	for i := range 3 {
		fx := makeVHD(t, 2*mib, "fixed")
		ids = append(ids, swiftUpload(t, a, fmt.Sprintf("img%d", i), fx))
		fxs = append(fxs, fx)
	}
	if got := metric(t, a, "imagefs_data_evictions_total"); got != 1 {
		t.Errorf("host-a: %v evictions after sealing 3 images of 2 MiB with a 5 MiB cache, want 1", got)
	}
	for _, id := range ids {
		waitByID(t, b, id)
	}
	held, err := os.Open(b.byID(ids[0], "image.vhd"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	time.Sleep(10 * time.Millisecond) // img0 opened before img1: older
	for _, i := range []int{1, 2} {
		cmp(t, fxs[i].Path, b.byID(ids[i], "image.vhd"))
	}
	if got := metric(t, b, "imagefs_data_evictions_total"); got != 1 {
		t.Errorf("host-b: %v evictions, want 1 (img1: img0 is open)", got)
	}
	cache := filepath.Join(b.Store, "swift-cache")
	for i, want := range []bool{true, false, true} {
		if _, err := os.Stat(filepath.Join(cache, ids[i]+".vhd")); (err == nil) != want {
			t.Errorf("host-b: img%d in the cache: %v, want %v", i, err == nil, want)
		}
	}
	got, err := io.ReadAll(held)
	want, _ := os.ReadFile(fxs[0].Path)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("host-b: the image held open across the eviction reads %d bytes (%v), not the upload", len(got), err)
	}
	before := metric(t, b, "imagefs_data_fetches_total")
	cmp(t, fxs[1].Path, b.byID(ids[1], "image.vhd"))
	if got := metric(t, b, "imagefs_data_fetches_total"); got != before+1 {
		t.Errorf("host-b: reading the evicted image made %v downloads, want 1", got-before)
	}
}

// imagefs prefetch on host-b downloads the active images whose
// properties match, and those named by id, before anyone opens them: the
// reads after it download nothing; an image that matches nothing stays
// out of the cache.
func TestSwiftPrefetch(t *testing.T) {
	hosts, _ := swiftCluster(t, 2, nil)
	a, b := hosts[0], hosts[1]
	fxs := map[string]vhdFixture{}
	ids := map[string]string{}
	for _, name := range []string{"web1", "web2", "db", "other"} {
		fx := makeVHD(t, 2*mib, "fixed")
		fxs[name] = fx
		ids[name] = swiftUpload(t, a, name, fx)
	}
	for _, name := range []string{"web1", "web2"} {
		writeProp(t, a, name, "role", "web")
	}
	eventually(t, 5*time.Second, "host-b: role=web on web1 and web2", func() bool {
		return strings.TrimSpace(readOptional(b.propFile("web1", "role"))) == "web" && strings.TrimSpace(readOptional(b.propFile("web2", "role"))) == "web"
	})
	r := execCmd(binary, "prefetch", b.Mnt, "--property", "role=web", ids["db"])
	if r.err != nil {
		t.Fatalf("imagefs prefetch: %s", r)
	}
	for _, name := range []string{"web1", "web2", "db"} {
		if !strings.Contains(r.stdout, "cached "+ids[name]) {
			t.Errorf("prefetch output names no %s: %q", name, r.stdout)
		}
	}
	if got := metric(t, b, "imagefs_data_fetches_total"); got != 3 {
		t.Errorf("host-b: %v downloads after the prefetch, want 3", got)
	}
	for _, name := range []string{"web1", "web2", "db"} {
		if _, err := os.Stat(filepath.Join(b.Store, "swift-cache", ids[name]+".vhd")); err != nil {
			t.Errorf("host-b: %s not in the cache after the prefetch: %v", name, err)
		}
		cmp(t, fxs[name].Path, b.byID(ids[name], "image.vhd"))
	}
	if _, err := os.Stat(filepath.Join(b.Store, "swift-cache", ids["other"]+".vhd")); err == nil {
		t.Errorf("host-b: an image the prefetch did not name is in the cache")
	}
	if got := metric(t, b, "imagefs_data_fetches_total"); got != 3 {
		t.Errorf("host-b: %v downloads after reading the prefetched images, want still 3", got)
	}
	if r := execCmd(binary, "prefetch", b.Mnt, "no-such-id"); r.code != 1 || !strings.Contains(r.stderr, "no-such-id") {
		t.Errorf("imagefs prefetch of an unknown id: %s, want exit 1 naming it", r)
	}
}

// objectFile returns the path of the object server's data file of
// CONTAINER/NAME in the Swift at dir (its metadata, in the file's
// user.swift.metadata xattr, names the object).
func objectFile(t *testing.T, dir, account, container, name string) string {
	t.Helper()
	want := []byte("/" + account + "/" + container + "/" + name)
	var found string
	filepath.WalkDir(filepath.Join(dir, "srv", "node"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".data") {
			return nil
		}
		buf := make([]byte, 64<<10)
		n, err := unix.Getxattr(p, "user.swift.metadata", buf)
		if err == nil && bytes.Contains(buf[:n], want) {
			// The name is followed by a pickle opcode, not more name.
			i := bytes.Index(buf[:n], want) + len(want)
			if i < n && (buf[i] < '0' || buf[i] > '9') && buf[i] != '/' {
				found = p
				return fs.SkipAll
			}
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no object data file of %s/%s under %s", container, name, dir)
	}
	return found
}

// flipByte inverts the byte at off of file p.
func flipByte(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// A corrupted or swapped object is never served. One byte flipped in a
// segment's file on the object server's disk: Swift's proxy checks each
// segment's MD5 against the manifest and cuts the download short after
// the bad segment; an object swapped for another of the same size (a
// plain PUT over the manifest) passes Swift's checks and only imagefs's
// MD5 and SHA-512 against the catalog catch it. Either way host-c, which
// has no copy, refuses the image (EIO) and logs it naming the image and
// the host, with a metric; the swapped download is quarantined. host-a
// (sealing) and host-b (cached before) keep serving their verified
// copies. fsck --verify-data (run before host-c's reads) reports both
// images (checksum-mismatch): it reads each segment on its own, so a
// byte flipped on the object server's disk hashes wrong.
func TestSwiftCorruptObjectRefused(t *testing.T) {
	hosts, se := swiftCluster(t, 3, nil)
	a, b, c := hosts[0], hosts[1], hosts[2]
	flipped, swapped := makeVHD(t, 3*mib, "dynamic"), makeVHD(t, 2*mib, "fixed")
	idF := swiftUpload(t, a, "flipped", flipped)
	idS := swiftUpload(t, a, "swapped", swapped)
	for _, id := range []string{idF, idS} {
		waitByID(t, b, id)
		waitByID(t, c, id)
	}
	cmp(t, flipped.Path, b.byID(idF, "image.vhd"))
	cmp(t, swapped.Path, b.byID(idS, "image.vhd"))

	segs := se.objects(t, "_segments", idF+"/")
	if len(segs) < 2 {
		t.Fatalf("segments of %s: %v, want 2 or more", idF, segs)
	}
	seg := objectFile(t, se.sw.Dir, "AUTH_test", se.container+"_segments", segs[1])
	flipByte(t, seg, 12345)
	t.Logf("flipped byte 12345 of %s", seg)
	other := makeVHD(t, 2*mib, "fixed") // same size, other bytes
	if other.Size != swapped.Size {
		t.Fatalf("fixture sizes %d and %d differ", other.Size, swapped.Size)
	}
	if r := se.cli("upload", "--object-name", idS, se.container, other.Path); r.err != nil {
		t.Fatalf("swift upload over the manifest: %s", r)
	}

	// fsck --verify-data, from a host that mounts nothing (its own
	// STORE), streams the objects from Swift and finds both.
	admin := filepath.Join(t.TempDir(), "admin-store")
	if err := os.Mkdir(admin, 0o700); err != nil {
		t.Fatal(err)
	}
	r := swiftFsck(t, a, admin, "host-admin", "", "--verify-data")
	for _, id := range []string{idF, idS} {
		if !strings.Contains(r.stdout, "checksum-mismatch: "+id+": data hashes to md5") {
			t.Errorf("fsck --verify-data: no checksum-mismatch of %s: %s", id, r)
		}
	}
	if r.code != 1 || !strings.Contains(r.stdout, "2 sealed, 2 verified") {
		t.Errorf("fsck --verify-data: want exit 1 and 2 images verified: %s", r)
	}
	if _, err := os.Stat(filepath.Join(admin, "swift-cache", idF+".vhd")); err == nil {
		t.Errorf("fsck --verify-data cached %s: want it streamed past the cache", idF)
	}

	for _, id := range []string{idF, idS} {
		if _, err := os.ReadFile(c.byID(id, "image.vhd")); !errors.Is(err, syscall.EIO) {
			t.Errorf("host-c: read of the corrupted image %s: %v, want EIO", id, err)
		}
		if _, err := os.Stat(filepath.Join(c.Store, "swift-cache", id+".vhd")); err == nil {
			t.Errorf("host-c: the corrupted download of %s is in its cache", id)
		}
	}
	log := string(readFile(c.log))
	for _, want := range []string{
		`msg="download from Swift failed" data=swift://` + se.container + ` host=host-c id=` + idF,
		`msg="image data from Swift does not match the catalog; download quarantined, open refused" data=swift://` + se.container + ` host=host-c id=` + idS,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("host-c: no log line %s", want)
		}
	}
	if got := metric(t, c, "imagefs_data_verify_failures_total"); got != 1 {
		t.Errorf("host-c: imagefs_data_verify_failures_total = %v, want 1 (the swapped object)", got)
	}
	if got := metric(t, c, "imagefs_data_fetch_failures_total"); got != 2 {
		t.Errorf("host-c: imagefs_data_fetch_failures_total = %v, want 2", got)
	}
	q, _ := os.ReadDir(filepath.Join(c.Store, "swift-cache", "quarantine"))
	if len(q) != 1 || !strings.HasPrefix(q[0].Name(), idS) {
		t.Errorf("host-c: swift-cache/quarantine holds %v, want the swapped download of %s", q, idS)
	}
	// The hosts with verified copies serve them.
	for _, m := range []*fsMount{a, b} {
		cmp(t, flipped.Path, m.byID(idF, "image.vhd"))
		cmp(t, swapped.Path, m.byID(idS, "image.vhd"))
	}
}

// Delete on host-a while host-b reads: the image goes at once on every
// host; host-b's reader, which had it open, reads its bytes to the end;
// the objects stay for the delete delay (2 s) and are gone after it; no
// host keeps the image in its cache: host-a's (the deleting host's) and
// host-c's copies go at once (nobody has them open), host-b's at its
// reader's close. host-c down during the delete of a second image: its
// next mount evicts the copy of the image the catalog no longer has.
func TestSwiftDeleteDelayed(t *testing.T) {
	hosts, se := swiftCluster(t, 3, nil)
	a, b, c := hosts[0], hosts[1], hosts[2]
	fx := makeVHD(t, 2*mib+300*1024, "fixed")
	id := swiftUpload(t, a, "doomed", fx)
	fx2 := makeVHD(t, 1*mib, "fixed")
	id2 := swiftUpload(t, a, "while-down", fx2)
	for _, m := range []*fsMount{b, c} {
		for _, img := range []struct {
			id string
			fx vhdFixture
		}{{id, fx}, {id2, fx2}} {
			waitByID(t, m, img.id)
			cmp(t, img.fx.Path, m.byID(img.id, "image.vhd"))
		}
	}
	for _, m := range hosts {
		if _, err := os.Stat(cacheFile(m, id)); err != nil {
			t.Fatalf("%s: no copy in the cache before the delete: %v", m.Mnt, err)
		}
	}
	want, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := os.Open(b.byID(id, "image.vhd"))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	head := make([]byte, mib)
	if _, err := io.ReadFull(reader, head); err != nil {
		t.Fatal(err)
	}

	run(t, "rm", "-rf", a.images("doomed"))
	for _, m := range []*fsMount{b, c} {
		eventually(t, 5*time.Second, m.Mnt+": by-id/<id> gone", func() bool { return !exists(m.byID(id)) })
	}
	if _, err := os.Stat(cacheFile(a, id)); err == nil {
		t.Errorf("host-a: the deleted image's copy is still in its cache")
	}
	eventually(t, 5*time.Second, "host-c: the deleted image's copy gone from its cache", func() bool {
		_, err := os.Stat(cacheFile(c, id))
		return os.IsNotExist(err)
	})
	if se.manifest(t, id) == nil {
		t.Errorf("the manifest went at once; want it kept for the delete delay")
	}
	if _, err := os.Stat(cacheFile(b, id)); err != nil {
		t.Errorf("host-b: the copy its reader has open left the cache before the reader's close: %v", err)
	}
	rest, err := io.ReadAll(reader)
	if got := append(head, rest...); err != nil || !bytes.Equal(got, want) {
		t.Errorf("host-b: the reader that had the image open across its delete read %d bytes (%v), not the image", len(got), err)
	}
	reader.Close()
	eventually(t, 5*time.Second, "host-b: the deleted image's copy gone from its cache after the reader's close", func() bool {
		_, err := os.Stat(cacheFile(b, id))
		return os.IsNotExist(err)
	})
	eventually(t, 20*time.Second, "objects gone from Swift after the 2 s delay", func() bool {
		return se.manifest(t, id) == nil && len(se.objects(t, "_segments", id+"/")) == 0
	})
	if got := metric(t, a, "imagefs_data_deletes_total"); got != 1 {
		t.Errorf("host-a: imagefs_data_deletes_total = %v, want 1", got)
	}
	for _, m := range []*fsMount{b, c} {
		if got := metric(t, m, "imagefs_data_cache_images"); got != 1 {
			t.Errorf("%s: imagefs_data_cache_images = %v after the delete, want 1 (while-down)", m.Mnt, got)
		}
	}

	// host-c down during the delete. Its catalog snapshot removed, it
	// lists the catalog at its next mount: no delete event reaches it,
	// only the mount's check of its cache against the catalog.
	c.stop()
	run(t, "rm", "-rf", a.images("while-down"))
	eventually(t, 5*time.Second, "host-b: while-down gone", func() bool { return !exists(b.byID(id2)) })
	if err := os.Remove(filepath.Join(c.Store, "catalog-snapshot")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cacheFile(c, id2)); err != nil {
		t.Fatalf("host-c (down): its copy of while-down: %v", err)
	}
	c.start()
	if _, err := os.Stat(cacheFile(c, id2)); !os.IsNotExist(err) {
		t.Errorf("host-c remounted: the copy of an image deleted while it was down is still in its cache (%v)", err)
	}
	for _, m := range hosts {
		if files := vhdFiles(filepath.Join(m.Store, "swift-cache")); len(files) != 0 {
			t.Errorf("%s: copies of deleted images left in the cache: %v", m.Mnt, files)
		}
	}
}

// privateSwift starts a Swift of this test's own (scripts/swift.sh on
// other ports, data in a temporary directory), stopped and wiped after
// the test: a test that stops Swift must not stop the one other test
// processes use.
func privateSwift(t *testing.T) (testutil.Swift, func(args ...string)) {
	t.Helper()
	testutil.SwiftAuth(t) // installs the packages; fails or skips as the others do
	port := testutil.SwiftPort() + 10
	sw := testutil.Swift{AuthURL: fmt.Sprintf("http://127.0.0.1:%d/auth/v1.0", port), User: "test:tester",
		Key: "testing", Dir: filepath.Join(t.TempDir(), "swift")}
	script := func(args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(filepath.Dir(etcdScriptPath()), "swift.sh"), args...)
		cmd.Env = append(os.Environ(), "IMAGEFS_SWIFT_DIR="+sw.Dir, "IMAGEFS_SWIFT_PORT="+strconv.Itoa(port))
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("swift.sh %s (private): %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("swift.sh %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	}
	t.Cleanup(func() { script("stop", "--wipe") })
	script("start")
	return sw, script
}

// Swift stopped: cached images are read; opening an image this host has
// not cached fails with EIO within the bounded wait; a seal ends killed
// with the reason. Swift started again: a new upload works and is read on
// the other host.
func TestSwiftStopped(t *testing.T) {
	sw, script := privateSwift(t)
	t.Setenv("GOSWIFT_TIMEOUT", "2s")
	hosts, _ := swiftCluster(t, 2, &sw)
	a, b := hosts[0], hosts[1]
	cached, uncached := makeVHD(t, 2*mib, "fixed"), makeVHD(t, 2*mib, "dynamic")
	idC := swiftUpload(t, a, "cached", cached)
	idU := swiftUpload(t, a, "uncached", uncached)
	waitByID(t, b, idC)
	waitByID(t, b, idU)
	cmp(t, cached.Path, b.byID(idC, "image.vhd"))

	script("stop")
	cmp(t, cached.Path, b.byID(idC, "image.vhd"))
	cmp(t, uncached.Path, a.byID(idU, "image.vhd")) // the sealing host's copy
	start := time.Now()
	op := opTimed(30*time.Second, "read", b.byID(idU, "image.vhd"))
	took := time.Since(start)
	if op.Hung || op.Res.Errno != syscall.EIO {
		t.Errorf("host-b: open of an uncached image with Swift stopped: %s, want EIO", op)
	}
	if took > 15*time.Second {
		t.Errorf("host-b: the failing open took %v; want it bounded by the 2 s timeout", took)
	}
	t.Logf("uncached open with Swift stopped: %s", op)

	fx := makeVHD(t, 2*mib, "fixed")
	a.mkimage("outage")
	if r := execCmd("cp", fx.Path, a.dataFile("outage")); r.err == nil {
		t.Errorf("cp into host-a with Swift stopped succeeded")
	}
	reason := a.checkKilled(t, "outage")
	if !strings.Contains(reason, "data store") {
		t.Errorf("kill reason %q does not say the data store failed", reason)
	}

	script("start")
	idN := swiftUpload(t, a, "after", fx)
	waitByID(t, b, idN)
	cmp(t, fx.Path, b.byID(idN, "image.vhd"))
}

// withoutSwiftFlags returns args without the Swift data store's flags
// (for a mount with a directory as --data).
func withoutSwiftFlags(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--swift-segment-size", "--delete-delay", "--cache-dir", "--cache-size":
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// A catalog is served by one data store. A catalog whose data is in a
// shared directory (an image sealed) refuses a host mounting it with
// --data swift://CONTAINER, naming both, before anything is written to
// Swift; a catalog whose data is in Swift refuses a host mounting it
// with a directory or with another container. The right store still
// mounts.
func TestSwiftWrongDataRefused(t *testing.T) {
	sw := testutil.SwiftAuth(t)
	for _, kv := range sw.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	// A directory catalog, mounted with Swift.
	hosts, env := sharedClusterArgs(t, 2)
	a, b := hosts[0], hosts[1]
	fx := makeVHD(t, 1*mib, "fixed")
	a.mkimage("dir")
	run(t, "cp", fx.Path, a.dataFile("dir"))
	a.checkSealed(t, "dir", fx)
	b.stop()
	se := swiftEnv{sw: sw, container: "it-" + randHex(6)}
	t.Cleanup(func() {
		se.drop(se.container, se.container+"_segments")
	})
	r := mountRefused(t, b.Store, b.Mnt, withData(b.Args, "swift://"+se.container)...)
	t.Logf("host-b mount of a directory catalog with swift://%s: %s", se.container, r)
	if r.code != 1 || !strings.Contains(r.stderr, "not this catalog's data directory") ||
		!strings.Contains(r.stderr, env.Data) || !strings.Contains(r.stderr, "swift://"+se.container) {
		t.Errorf("host-b mount of a directory catalog with --data swift://%s: want exit 1 naming both stores: %s", se.container, r)
	}
	if objs := se.objects(t, "", ""); len(objs) != 0 {
		t.Errorf("objects %v written to Swift by a refused mount", objs)
	}
	b.start()
	cmp(t, fx.Path, b.images("dir", "image.vhd"))

	// A Swift catalog, mounted with a directory or another container.
	shosts, sse := swiftCluster(t, 2, &sw)
	sa, sb := shosts[0], shosts[1]
	swiftUpload(t, sa, "in-swift", fx)
	sb.stop()
	other := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ data, want string }{
		{other, other},
		{"swift://" + sse.container + "-other", "swift://" + sse.container + "-other"},
	} {
		args := withData(sb.Args, c.data)
		if !strings.HasPrefix(c.data, "swift://") {
			args = withoutSwiftFlags(args)
		}
		r := mountRefused(t, sb.Store, sb.Mnt, args...)
		t.Logf("host-b mount of a Swift catalog with %s: %s", c.data, r)
		if r.code != 1 || !strings.Contains(r.stderr, "not this catalog's data directory") ||
			!strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "swift://"+sse.container+" ") {
			t.Errorf("host-b mount of a Swift catalog with --data %s: want exit 1 naming both stores: %s", c.data, r)
		}
	}
	if files := vhdFiles(other); len(files) != 0 {
		t.Errorf("%s: data files %v written by a refused mount", other, files)
	}
	sse.drop(sse.container+"-other", sse.container+"-other_segments")
	sb.start()
	cmp(t, fx.Path, sb.images("in-swift", "image.vhd"))
}

// A first segment swapped for another object of its size (the same
// bytes count, other data): Swift refuses the download (409 Conflict).
// host-b, which has no copy, refuses the image (EIO) and logs a
// verification failure naming the image and the host, counted in
// imagefs_data_verify_failures_total; host-a keeps its verified copy.
// fsck reports the segment (checksum-mismatch).
func TestSwiftSwappedSegmentRefused(t *testing.T) {
	hosts, se := swiftCluster(t, 2, nil)
	a, b := hosts[0], hosts[1]
	fx := makeVHD(t, 2*mib, "fixed")
	id := swiftUpload(t, a, "swapped-seg", fx)
	waitByID(t, b, id)
	segs := se.objects(t, "_segments", id+"/")
	if len(segs) < 2 {
		t.Fatalf("segments of %s: %v, want 2 or more", id, segs)
	}
	other := filepath.Join(t.TempDir(), "other")
	data := make([]byte, mib)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(other, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := se.cli("upload", "--object-name", segs[0], se.container+"_segments", other); r.err != nil {
		t.Fatalf("swift upload over segment %s: %s", segs[0], r)
	}
	if _, err := os.ReadFile(b.byID(id, "image.vhd")); !errors.Is(err, syscall.EIO) {
		t.Errorf("host-b: read of the image with a swapped segment: %v, want EIO", err)
	}
	want := `msg="image data from Swift does not match the catalog; open refused" data=swift://` + se.container + ` host=host-b id=` + id
	if log := string(readFile(b.log)); !strings.Contains(log, want) {
		t.Errorf("host-b: no log line %s", want)
	}
	if got := metric(t, b, "imagefs_data_verify_failures_total"); got != 1 {
		t.Errorf("host-b: imagefs_data_verify_failures_total = %v, want 1", got)
	}
	cmp(t, fx.Path, a.byID(id, "image.vhd"))

	// fsck (without --verify-data: from Swift's listing) finds the
	// segment whose MD5 is not the one its manifest records.
	admin := filepath.Join(t.TempDir(), "admin-store")
	if err := os.Mkdir(admin, 0o700); err != nil {
		t.Fatal(err)
	}
	r := swiftFsck(t, a, admin, "host-admin", "")
	if r.code != 1 || !strings.Contains(r.stdout, "checksum-mismatch: "+id+": segment "+segs[0]+" has md5 ") {
		t.Errorf("fsck: want exit 1 and the swapped segment of %s (checksum-mismatch): %s", id, r)
	}
}

// lastIndex returns the index of the last s in args (-1: none): a later
// flag wins over an earlier one.
func lastIndex(args []string, s string) int {
	for i := len(args) - 1; i >= 0; i-- {
		if args[i] == s {
			return i
		}
	}
	return -1
}

// fsck of a Swift data store, from a host that mounts nothing (its own
// STORE), while host-a stays mounted: an active image whose manifest was
// deleted is missing-data (--repair leaves the image and its segments to
// the operator); an object of no image is orphan-data; segments of no
// image, and segments of a sealed image that its manifest does not name,
// are orphan-segments; --repair removes the orphans and nothing else. A
// deleted image's objects (host-a's delete delay is an hour here) are
// left alone until the delete delay after the delete, then removed as
// deleted-data. Of an image that is not sealed (queued), an object is
// orphan-data, and segments are orphans only when the host that sent
// them is gone: those of live host-a (a scratch file's upload, say) stay,
// and those that name no host (an older version's) stay for 10 minutes.
func TestSwiftFsckMissingAndOrphans(t *testing.T) {
	hosts, se := swiftCluster(t, 1, nil, "--delete-delay", "1h")
	a := hosts[0]
	fxGone, fxKept, fxDoomed := makeVHD(t, 2*mib, "fixed"), makeVHD(t, 2*mib, "dynamic"), makeVHD(t, 2*mib, "fixed")
	idGone := swiftUpload(t, a, "gone", fxGone)
	idKept := swiftUpload(t, a, "kept", fxKept)
	idDoomed := swiftUpload(t, a, "doomed", fxDoomed)
	idQueued := a.mkimage("queued")
	segsGone := se.objects(t, "_segments", idGone+"/")
	segsKept := se.objects(t, "_segments", idKept+"/")
	segsDoomed := se.objects(t, "_segments", idDoomed+"/")
	sc, ctx := se.client(), context.Background()
	if err := sc.ObjectDelete(ctx, se.container, idGone); err != nil { // the manifest only
		t.Fatalf("delete the manifest: %v", err)
	}
	const orphan = "0000-no-such-image"
	for _, o := range [][2]string{
		{se.container, orphan},
		{se.container + "_segments", orphan + "/1_1@host-a/00000000"},
		{se.container + "_segments", idKept + "/2_2@host-a/00000000"},
		{se.container, idQueued},
		{se.container + "_segments", idQueued + "/3_3/00000000"},
		{se.container + "_segments", idQueued + "/4_4@host-gone/00000000"},
		{se.container + "_segments", idQueued + "/5_5@host-a/00000000"},
	} {
		if err := sc.ObjectPutBytes(ctx, o[0], o[1], []byte("not an image"), ""); err != nil {
			t.Fatalf("put %s/%s: %v", o[0], o[1], err)
		}
	}
	run(t, "rm", "-rf", a.images("doomed"))
	deleted := time.Now()

	admin := filepath.Join(t.TempDir(), "admin-store")
	if err := os.Mkdir(admin, 0o700); err != nil {
		t.Fatal(err)
	}
	r := swiftFsck(t, a, admin, "host-admin", "1h")
	for _, want := range []string{
		"missing-data: " + idGone + ": its object is missing from swift://" + se.container,
		"orphan-data: " + orphan + ": object in swift://" + se.container + " of no image (--repair fixes this)",
		"orphan-segments: " + orphan + ": 1 segments",
		"orphan-segments: " + idKept + ": 1 segments (12 bytes) " + idKept + "/2_2@host-a/",
		"orphan-data: " + idQueued + ": object in swift://" + se.container + " of a queued image",
		"orphan-segments: " + idQueued + ": 1 segments (12 bytes) " + idQueued + "/4_4@host-gone/ in swift://" + se.container + " sent by host host-gone,",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("fsck: no line %q", want)
		}
	}
	for _, id := range []string{idDoomed, "orphan-segments: " + idGone, idQueued + "/3_3/", idQueued + "/5_5@host-a/"} {
		if strings.Contains(r.stdout, id) {
			t.Errorf("fsck reports %s", id)
		}
	}
	if r.code != 1 {
		t.Errorf("fsck: exit %d, want 1 (missing-data needs the operator)", r.code)
	}

	r = swiftFsck(t, a, admin, "host-admin", "1h", "--repair")
	if r.code != 1 || strings.Count(r.stdout, "(repaired)") != 5 {
		t.Errorf("fsck --repair: want exit 1 and 5 problems repaired: %s", r)
	}
	for _, o := range []string{orphan, idQueued} {
		if got := se.objects(t, "", o); len(got) != 0 {
			t.Errorf("the orphan object %s after fsck --repair: %v", o, got)
		}
	}
	for prefix, want := range map[string][]string{
		orphan + "/": nil, idGone + "/": segsGone, idKept + "/": segsKept, idDoomed + "/": segsDoomed,
		idQueued + "/": {idQueued + "/3_3/00000000", idQueued + "/5_5@host-a/00000000"},
	} {
		if got := se.objects(t, "_segments", prefix); !slices.Equal(got, want) {
			t.Errorf("segments %s after fsck --repair: %v, want %v", prefix, got, want)
		}
	}
	if got := se.objects(t, "", idDoomed); len(got) != 1 {
		t.Errorf("the deleted image's manifest, in its delete delay, after fsck --repair: %v, want kept", got)
	}
	cmp(t, fxKept.Path, a.images("kept", "image.vhd"))

	// Past the delete delay (1 s for this fsck), the deleted image's
	// objects are host-a's removal that did not happen.
	time.Sleep(time.Until(deleted.Add(1500 * time.Millisecond)))
	r = swiftFsck(t, a, admin, "host-admin", "1s", "--repair")
	if !strings.Contains(r.stdout, "deleted-data: "+idDoomed+": objects in swift://"+se.container+" of an image deleted at ") ||
		!strings.Contains(r.stdout, "by host-a, still there past the delete delay 1s (its host did not remove them) (repaired)") {
		t.Errorf("fsck --repair past the delete delay: no deleted-data of %s repaired: %s", idDoomed, r)
	}
	if got, segs := se.objects(t, "", idDoomed), se.objects(t, "_segments", idDoomed+"/"); len(got)+len(segs) != 0 {
		t.Errorf("the deleted image's objects after fsck --repair past the delay: %v %v", got, segs)
	}
}

// A seal cut off after its manifest reached Swift and before its record
// committed (here: host-a killed mid-upload, and the manifest put by
// hand): host-a's next mount kills the image (the data cannot be sealed
// from there: its staging file is gone), and fsck --repair removes the
// manifest of the killed image (orphan-data).
func TestSwiftUncommittedSealKilled(t *testing.T) {
	hosts, se := swiftCluster(t, 1, nil)
	a := hosts[0]
	fx := makeVHD(t, 2*mib, "fixed")
	data, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	id := a.mkimage("cut")
	f, err := os.OpenFile(a.dataFile("cut"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:mib+100]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a segment in Swift during the upload", func() bool {
		return len(se.objects(t, "_segments", id+"/")) == 1
	})
	a.crash()
	f.Close()
	if err := se.client().ObjectPutBytes(context.Background(), se.container, id, data, ""); err != nil {
		t.Fatal(err)
	}
	a.start()
	if st := strings.TrimSpace(readOptional(a.propFile("cut", "status"))); st != "killed" {
		t.Errorf("host-a remounted: status %q, want killed", st)
	}
	a.stop()
	r := swiftFsck(t, a, a.Store, "host-a", "", "--repair")
	if r.code != 0 || !strings.Contains(r.stdout, "orphan-data: "+id+": object in swift://"+se.container+" of a killed image") {
		t.Errorf("fsck --repair: want exit 0 and the killed image's object removed (orphan-data): %s", r)
	}
	if got := se.objects(t, "", id); len(got) != 0 {
		t.Errorf("the killed image's object after fsck --repair: %v", got)
	}
}
