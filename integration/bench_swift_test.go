package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
)

// The Swift section of the performance suite (TestBenchSuite, -bench-only
// swift; issue 16): sealed data in OpenStack Swift. The section starts its
// own 3-member etcd cluster (scripts/etcd.sh) and its own Swift all-in-one
// (scripts/swift.sh) and stops both (data wiped) when it ends, failed or
// not. Two daemons on this machine stand in for hosts A and B, each with
// `--catalog etcd://... --data swift://CONTAINER` (64 MiB segments, the
// default), credentials in their environment (ST_AUTH, ST_USER, ST_KEY).
// Each figure is set against a reference measured in the same run,
// interleaved with it:
//
//   - cp of a VHD (fixed, random data; IMAGEFS_BENCH_SWIFT_MIB, default
//     2048 MiB of disk) into host A until active, against cp of the same
//     file into a single-host mount and against `swift upload --use-slo
//     --segment-size 64M` of it; the target is the larger of the two plus
//     20%. Close to active: a writer's close(2) on host A, which returns
//     once the image is active (its last segments and manifest in Swift).
//   - the first full read (cat) of the image on host B by id, which
//     downloads it into B's cache (MD5 and SHA-512 computed, fsync),
//     against `swift download` of the same object to a file; the next
//     read against cat of B's cached copy itself.
//   - peak RSS (VmHWM, reset before each operation through
//     /proc/PID/clear_refs) of host A's daemon during the upload and of
//     host B's during the download, against the same at 1/8 of the size
//     (256 MiB by default).
//
// Environment: IMAGEFS_BENCH_SWIFT_MIB (the size), IMAGEFS_BENCH_SWIFT_PORT
// (Swift's proxy, default 25880; its servers on the next 4 ports) and
// IMAGEFS_BENCH_SWIFT_ETCD_PORT (the cluster's first client port, default
// 25850; peers on +10), so that a run does not meet another's services.
// Their data is under IMAGEFS_BENCH_DIR/swift-bench (a temporary directory
// without it).

// benchSwiftSegment is the segment size of imagefs (swiftdata's default)
// and of the swift upload reference.
const benchSwiftSegment = 64 << 20

func benchSwiftEnvInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func benchSwift(t *testing.T, tab *benchTable) {
	requireTools(t, "swift", "cat", "cp", "mkdir", "rmdir", "sh")
	sizeMiB := benchSwiftEnvInt(t, "IMAGEFS_BENCH_SWIFT_MIB", 2048)
	smallMiB := max(sizeMiB/8, 1)
	swiftPort := benchSwiftEnvInt(t, "IMAGEFS_BENCH_SWIFT_PORT", 25880)
	etcdPort := benchSwiftEnvInt(t, "IMAGEFS_BENCH_SWIFT_ETCD_PORT", 25850)
	root := os.Getenv("IMAGEFS_BENCH_DIR")
	if root == "" {
		root = t.TempDir()
	}
	root = filepath.Join(root, "swift-bench")

	// The services, stopped (data wiped) when this section returns, by
	// t.Fatal too; the daemons are stopped before them (defers run last
	// first).
	modRoot := testutil.ModuleRoot(t)
	service := func(script string, env []string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(modRoot, "scripts", script), args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("scripts/%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	etcdEnv := []string{"IMAGEFS_ETCD_DIR=" + filepath.Join(root, "etcd"), fmt.Sprintf("IMAGEFS_ETCD_PORT=%d", etcdPort)}
	swiftEnv := []string{"IMAGEFS_SWIFT_DIR=" + filepath.Join(root, "swift"), fmt.Sprintf("IMAGEFS_SWIFT_PORT=%d", swiftPort)}
	defer func() {
		if _, err := service("etcd.sh", etcdEnv, "stop", "--wipe"); err != nil {
			t.Error(err)
		}
	}()
	if _, err := service("etcd.sh", etcdEnv, "start"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := service("swift.sh", swiftEnv, "stop", "--wipe"); err != nil {
			t.Error(err)
		}
	}()
	svcStart := time.Now()
	authURL, err := service("swift.sh", swiftEnv, "start")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Swift ready in %v: %s", time.Since(svcStart).Round(time.Millisecond), strings.TrimSpace(authURL))
	// The account, for the daemons and the swift CLI alike.
	t.Setenv("ST_AUTH", fmt.Sprintf("http://127.0.0.1:%d/auth/v1.0", swiftPort))
	t.Setenv("ST_USER", "test:tester")
	t.Setenv("ST_KEY", "testing")
	var eps []string
	for i := range 3 {
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", etcdPort+i))
	}

	dir := t.TempDir()
	container := "bench-" + randHex(4)
	conf := filepath.Join(dir, "imagefs.conf")
	if err := os.WriteFile(conf, []byte("[etcd]\nnamespace = /imagefs-bench-swift/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stopAll []*fsMount // stopped before the services (defers run last first)
	defer func() {
		for _, m := range stopAll {
			m.stop()
			if t.Failed() {
				t.Logf("imagefs daemon log (%s):\n%s", m.log, readFile(m.log))
			}
		}
	}()
	// host starts a host of the Swift catalog with its own STORE and cache.
	host := func(name string) (*fsMount, string) {
		hd := filepath.Join(dir, name)
		cache := filepath.Join(hd, "cache")
		m := &fsMount{t: t, Store: filepath.Join(hd, "store"), Mnt: filepath.Join(hd, "mnt"), log: filepath.Join(hd, "imagefs.log"),
			Args: append([]string{"--catalog", "etcd://" + strings.Join(eps, ","), "--data", "swift://" + container,
				"--config", conf, "--host-id", name, "--cache-dir", cache, "--delete-delay", "0s"}, strings.Fields(*benchArgs)...)}
		if err := os.MkdirAll(m.Mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		stopAll = append(stopAll, m)
		m.start()
		return m, cache
	}
	a, _ := host("bench-a")
	b, bCache := host("bench-b")
	single := &fsMount{t: t, Store: filepath.Join(dir, "single", "store"), Mnt: filepath.Join(dir, "single", "mnt"),
		log: filepath.Join(dir, "single", "imagefs.log"), Args: strings.Fields(*benchArgs)}
	if err := os.MkdirAll(single.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	stopAll = append(stopAll, single)
	single.start()

	src := benchVHD(t, dir, int64(sizeMiB)<<20)
	smallDir := filepath.Join(dir, "small")
	if err := os.Mkdir(smallDir, 0o755); err != nil {
		t.Fatal(err)
	}
	small := benchVHD(t, smallDir, int64(smallMiB)<<20)
	readAll(t, src)
	want := md5sum(t, src)
	size := fileSize(t, src)
	runs := max(1, (*benchRuns+1)/2)
	sizeName := fmt.Sprintf("%d MiB", sizeMiB)
	seg := strconv.Itoa(benchSwiftSegment)

	// CPU seconds of each upload: the client's (imagefs's daemon and cp,
	// or the swift CLI) and the Swift servers'.
	cpu := map[string][]float64{}
	swiftRun := filepath.Join(root, "swift", "run")
	swiftCPU := func() float64 {
		var sum float64
		for _, s := range []string{"proxy", "object", "container", "account"} {
			if pid, err := os.ReadFile(filepath.Join(swiftRun, s+".pid")); err == nil {
				if n, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil {
					sum += procCPU(n)
				}
			}
		}
		return sum
	}
	// Uploads: cp into host A until active, cp into the single-host
	// mount, swift upload; rotated, so that none always runs first.
	upload := map[string]func(r int) time.Duration{
		"single": func(r int) time.Duration {
			name := fmt.Sprintf("cp-%d", r)
			single.mkimage(name)
			d := timeCmd(t, "cp", src, single.dataFile(name))
			if got := single.prop(name, "status"); got != "active" {
				t.Fatalf("single-host: after cp: status %s", got)
			}
			run(t, "rmdir", single.images(name))
			return d
		},
		"swift": func(r int) time.Duration {
			obj := fmt.Sprintf("swift-upload-%d", r)
			srv0 := swiftCPU()
			d, own := timeCPU(t, "swift", "upload", "--use-slo", "--segment-size", seg, "--object-name", obj, container, src)
			cpu["swift"] = append(cpu["swift"], own)
			cpu["swift servers"] = append(cpu["swift servers"], swiftCPU()-srv0)
			run(t, "swift", "delete", container, obj) // the manifest and its segments
			return d
		},
	}
	var hwmUp []float64
	var ids []string
	upload["imagefs"] = func(r int) time.Duration {
		name := fmt.Sprintf("cp-%d", r)
		id := a.mkimage(name)
		resetHWM(t, a)
		srv0, own0 := swiftCPU(), procCPU(a.cmd.Process.Pid)
		d, cpCPU := timeCPU(t, "cp", src, a.dataFile(name))
		cpu["imagefs"] = append(cpu["imagefs"], procCPU(a.cmd.Process.Pid)-own0+cpCPU)
		cpu["imagefs servers"] = append(cpu["imagefs servers"], swiftCPU()-srv0)
		hwmUp = append(hwmUp, peakRSS(t, a))
		if got := a.prop(name, "status"); got != "active" {
			t.Fatalf("host A: after cp: status %s", got)
		}
		if got := a.prop(name, "checksum"); got != want {
			t.Fatalf("host A: after cp: checksum %s, want %s", got, want)
		}
		ids = append(ids, id)
		return d
	}
	order := []string{"single", "swift", "imagefs"}
	res := map[string][]float64{}
	for r := range runs {
		for _, k := range append(append([]string{}, order[r%3:]...), order[:r%3]...) {
			d := upload[k](r)
			res[k] = append(res[k], d.Seconds())
			t.Logf("upload run %d: %s %v", r, k, d.Round(time.Millisecond))
		}
	}
	streamed := regexp.MustCompile(`segments=(\d+) segments_streamed=(\d+) upload_ms=(\d+)`).FindAllStringSubmatch(string(readFile(a.log)), -1)
	streamNote := ""
	if n := len(streamed); n > 0 {
		l := streamed[n-1]
		streamNote = fmt.Sprintf("; the last: %s of %s segments sent during the copy", l[2], l[1])
	}
	singleT, swiftT := median(res["single"]), median(res["swift"])
	tab.add(figure{name: "cp of a " + sizeName + " VHD into host A (etcd catalog, data in Swift) until active", unit: "s",
		value: median(res["imagefs"]), refName: "the larger of single-host cp and swift upload", ref: max(singleT, swiftT), target: 1.2,
		note: fmt.Sprintf("single-host cp %s, `swift upload --use-slo --segment-size 64M` %s; interleaved%s; CPU seconds: imagefs (daemon and cp) %.1f + Swift's servers %.1f, swift CLI %.1f + Swift's servers %.1f",
			fmtValue(singleT, "s"), fmtValue(swiftT, "s"), streamNote, median(cpu["imagefs"]), median(cpu["imagefs servers"]), median(cpu["swift"]), median(cpu["swift servers"]))})
	tab.add(figure{name: "the same cp", unit: "s", value: median(res["imagefs"]), refName: "swift upload", ref: swiftT, info: true})
	tab.add(figure{name: "the same cp", unit: "s", value: median(res["imagefs"]), refName: "single-host cp", ref: singleT, info: true})

	// Close to active: a writer of 1 MiB writes on host A.
	var writes, closes []float64
	for r := range runs {
		name := fmt.Sprintf("w-%d", r)
		a.mkimage(name)
		w, c := benchWriter(t, src, a.dataFile(name))
		if got := a.prop(name, "status"); got != "active" {
			t.Fatalf("host A: after close: status %s", got)
		}
		writes, closes = append(writes, w.Seconds()), append(closes, c.Seconds())
		run(t, "rmdir", a.images(name))
		t.Logf("writer run %d: writes %v, close %v", r, w.Round(time.Millisecond), c.Round(time.Millisecond))
	}
	tab.add(figure{name: "time from the writer's close to active on host A, in-order upload of " + sizeName, unit: "s",
		value: median(closes), target: 2, strict: true,
		note: fmt.Sprintf("1 MiB writes, %.2f s before the close", median(writes))})

	// Small uploads on host A, for its peak RSS.
	var hwmUpSmall []float64
	var smallIDs []string
	for r := range runs {
		name := fmt.Sprintf("small-%d", r)
		id := a.mkimage(name)
		resetHWM(t, a)
		run(t, "cp", small, a.dataFile(name))
		hwmUpSmall = append(hwmUpSmall, peakRSS(t, a))
		if got := a.prop(name, "status"); got != "active" {
			t.Fatalf("host A: after cp: status %s", got)
		}
		smallIDs = append(smallIDs, id)
	}

	// First reads on host B: each of a fresh image (B has none cached),
	// against swift download of the same object, alternating which goes
	// first.
	for _, id := range append(append([]string{}, ids...), smallIDs...) {
		eventually(t, 30*time.Second, "host B: by-id/"+id, func() bool { return exists(b.byID(id, "image.vhd")) })
	}
	dl := filepath.Join(dir, "download.vhd")
	var firsts, downloads, hwmFetch, hwmFetchSmall []float64
	first := func(id string) (time.Duration, float64) {
		resetHWM(t, b)
		d := timeCmd(t, "sh", "-c", `cat "$1" >/dev/null`, "sh", b.byID(id, "image.vhd"))
		return d, peakRSS(t, b)
	}
	for r, id := range ids {
		steps := []func(){
			func() {
				d, hwm := first(id)
				firsts, hwmFetch = append(firsts, d.Seconds()), append(hwmFetch, hwm)
			},
			func() {
				downloads = append(downloads, timeCmd(t, "swift", "download", container, id, "-o", dl).Seconds())
				if got := fileSize(t, dl); got != size {
					t.Fatalf("swift download: %d bytes, want %d", got, size)
				}
				os.Remove(dl)
			},
		}
		if r%2 == 1 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, s := range steps {
			s()
		}
		t.Logf("first read run %d: imagefs %.2f s, swift download %.2f s", r, firsts[r], downloads[r])
	}
	for _, id := range smallIDs {
		_, hwm := first(id)
		hwmFetchSmall = append(hwmFetchSmall, hwm)
	}
	fetchNote := ""
	if m := regexp.MustCompile(`image fetched from Swift into the cache.* size=(\d+) fetch_ms=(\d+)`).FindStringSubmatch(string(readFile(b.log))); m != nil {
		n, _ := strconv.ParseFloat(m[1], 64)
		ms, _ := strconv.ParseFloat(m[2], 64)
		fetchNote = fmt.Sprintf("; the first download itself %s (%.0f MiB/s)", fmtValue(ms/1000, "s"), n/(1<<20)/(ms/1000))
	}
	tab.add(figure{name: "first full read (cat) of the " + sizeName + " image on host B by id (download, MD5 and SHA-512, fsync, then the read)", unit: "s",
		value: median(firsts), refName: "swift download to a file", ref: median(downloads), target: 1.3,
		note: "interleaved" + fetchNote})

	// The next reads on B: by id against its cached copy.
	id := ids[len(ids)-1]
	cached := filepath.Join(bCache, id+".vhd")
	if got := fileSize(t, cached); got != size {
		t.Fatalf("host B: cached copy %s: %d bytes, want %d", cached, got, size)
	}
	paths := map[string]string{"imagefs": b.byID(id, "image.vhd"), "direct": cached}
	cat := func(p string) time.Duration { return timeCmd(t, "sh", "-c", `cat "$1" >/dev/null`, "sh", p) }
	cat(paths["direct"])
	cat(paths["imagefs"])
	reads := map[string][]float64{}
	mib := float64(size) / (1 << 20)
	for r := range *benchRuns {
		ks := []string{"direct", "imagefs"}
		if r%2 == 1 {
			ks[0], ks[1] = ks[1], ks[0]
		}
		for _, k := range ks {
			reads[k] = append(reads[k], mib/cat(paths[k]).Seconds())
		}
	}
	tab.add(figure{name: "the next reads (cat) of that image on host B by id", unit: "MiB/s", higher: true,
		value: median(reads["imagefs"]), refName: "cat of B's cached copy", ref: median(reads["direct"]), target: 0.95,
		note: "page cache warm; interleaved"})

	// Memory: peak RSS against the same at 1/8 of the size.
	smallName := fmt.Sprintf("%d MiB", smallMiB)
	tab.add(figure{name: "peak RSS (VmHWM) of host A's daemon during the cp of " + sizeName, unit: "MiB",
		value: median(hwmUp), refName: "the same at " + smallName, ref: median(hwmUpSmall), target: 1.1,
		note: fmt.Sprintf("median of %d each; reset before each cp", runs)})
	tab.add(figure{name: "peak RSS (VmHWM) of host B's daemon during the first read of " + sizeName, unit: "MiB",
		value: median(hwmFetch), refName: "the same at " + smallName, ref: median(hwmFetchSmall), target: 1.1,
		note: fmt.Sprintf("median of %d each; reset before each read", runs)})

	// The daemons' own account of each transfer, for the output.
	for _, m := range []*fsMount{a, b} {
		for _, l := range strings.Split(string(readFile(m.log)), "\n") {
			if strings.Contains(l, "image uploaded to Swift") || strings.Contains(l, "image fetched from Swift") {
				t.Logf("%s: %s", filepath.Base(filepath.Dir(m.log)), l)
			}
		}
	}

	// The images go (their objects at once: --delete-delay 0s), then the
	// containers, before the daemons and the services stop.
	for _, name := range append(runNames("cp-", len(ids)), runNames("small-", len(smallIDs))...) {
		run(t, "rmdir", a.images(name))
	}
	eventually(t, 60*time.Second, "the objects of the deleted images removed from Swift", func() bool {
		r := execCmd("swift", "list", container)
		return r.err == nil && strings.TrimSpace(r.stdout) == ""
	})
	for _, c := range []string{container, container + "_segments"} {
		execCmd("swift", "delete", c) // best effort: the data is wiped anyway
	}
}

// timeCPU runs a command (it must succeed) and returns its wall time and
// its CPU time (user and system) in seconds.
func timeCPU(t testing.TB, name string, args ...string) (time.Duration, float64) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	d := time.Since(start)
	return d, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
}

// procCPU returns the CPU time (user and system) of process pid so far
// in seconds (0 when it cannot be read).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces), from field 3 on.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func runNames(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// resetHWM resets the peak RSS (VmHWM) of m's daemon to its RSS now.
func resetHWM(t testing.TB, m *fsMount) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", m.cmd.Process.Pid), []byte("5"), 0o200); err != nil {
		t.Fatalf("reset the peak RSS of %s's daemon: %v", m.Mnt, err)
	}
}

// peakRSS returns VmHWM of m's daemon in MiB.
func peakRSS(t testing.TB, m *fsMount) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", m.cmd.Process.Pid)
	return 0
}
