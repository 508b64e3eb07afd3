package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/etcdkv"
	"github.com/imagefs/imagefs/store/kv/pebblekv"
)

// The shared section of the performance suite (TestBenchSuite, -bench-only
// shared; issue 15): the catalog in a 3-member etcd cluster of
// scripts/etcd.sh of the suite's own (benchEtcd), two daemons on this
// machine as hosts A and B, each figure set against single-host imagefs
// measured in the same run:
//
//   - the rates of mkdir and of a property write on host A, against a
//     single-host mount (both catalogs fresh);
//   - seal on A to active on B, p50 and p99 over -bench-shared-seals images;
//   - ls -l and grep -l over the list section's catalog (10,000 images) on
//     host B, against single-host imagefs on the same catalog;
//   - mount start with the scale section's catalog (100,000 images) in
//     etcd, and the daemon's RSS after it, against single-host: a host's
//     first mount (no snapshot: the catalog is listed) and a mount from
//     the snapshot its last clean unmount wrote (STORE/catalog-snapshot).
//
// The catalogs in etcd are copies of the suite's Pebble catalogs
// (benchTrees), key for key (img/, name/, del/, seq/ino: the keys both
// modes share), kept between runs (in the cluster's data, next to the
// Pebble catalogs) under /imagefs-bench/<name>/ and marked complete under
// /imagefs-bench/complete/<name> with the digest of what was copied.
var benchSharedSeals = flag.Int("bench-shared-seals", 200, "TestBenchSuite: images sealed on host A and awaited on host B in the shared section")

// benchEtcdRoot is the prefix of the suite's namespaces in etcd.
const benchEtcdRoot = "/imagefs-bench/"

func benchShared(t *testing.T, tab *benchTable) {
	requireTools(t, "mkdir", "ls", "grep", "sh")
	eps := benchEtcd(t)

	// Fresh catalogs: host A against a single-host mount, then B too.
	cat := freshSharedCatalog(t, eps)
	a := benchSharedRates(t, tab, cat)
	benchSharedSeal(t, tab, cat, a)

	benchSharedList(t, tab, eps)
	benchSharedScale(t, tab, eps)
}

// benchEtcdPort is the first client port of the suite's cluster (clients
// on 25790-25792, peers on 25800-25802): not the test cluster's (23790),
// nor that of the fault tests' private one.
const benchEtcdPort = 25790

// benchEtcd starts the suite's own 3-member etcd cluster (scripts/etcd.sh,
// data in IMAGEFS_BENCH_DIR/etcd, where its catalogs are kept like the
// Pebble ones) and stops it after the test; it returns the client
// endpoints. Its own, so that the test cluster's users (other test
// processes: their load, their restarts of the cluster, their explicit
// compactions) do not reach the figures.
func benchEtcd(t *testing.T) []string {
	t.Helper()
	root := os.Getenv("IMAGEFS_BENCH_DIR")
	if root == "" {
		root = t.TempDir()
	}
	script := filepath.Join(testutil.ModuleRoot(t), "scripts", "etcd.sh")
	env := append(os.Environ(), "IMAGEFS_ETCD_DIR="+filepath.Join(root, "etcd"), fmt.Sprintf("IMAGEFS_ETCD_PORT=%d", benchEtcdPort))
	etcdSh := func(args ...string) error {
		cmd := exec.Command(script, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("scripts/etcd.sh %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := etcdSh("start"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the daemons' cleanups (registered later)
		if err := etcdSh("stop"); err != nil {
			t.Error(err)
		}
	})
	var eps []string
	for i := range 3 {
		eps = append(eps, fmt.Sprintf("127.0.0.1:%d", benchEtcdPort+i))
	}
	return eps
}

// sharedCatalog is one catalog in etcd (a namespace) with its shared data
// directory and config file.
type sharedCatalog struct {
	eps    []string
	ns     string
	data   string // --data DIR of every host
	config string // --config FILE: [etcd] namespace
}

// newSharedCatalog writes the config file of namespace ns.
func newSharedCatalog(t *testing.T, eps []string, ns string) *sharedCatalog {
	t.Helper()
	dir := t.TempDir()
	c := &sharedCatalog{eps: eps, ns: ns, data: filepath.Join(dir, "data"), config: filepath.Join(dir, "etcd.conf")}
	if err := os.Mkdir(c.data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.config, []byte("[etcd]\nnamespace = "+ns+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// freshSharedCatalog is a new, empty namespace, removed after the test.
func freshSharedCatalog(t *testing.T, eps []string) *sharedCatalog {
	t.Helper()
	ns := fmt.Sprintf("%srun-%d/", benchEtcdRoot, time.Now().UnixNano())
	t.Cleanup(func() { // after the daemons' cleanups (registered later)
		b := openBenchEtcd(t, eps, ns)
		defer b.Close()
		if _, err := b.Commit(context.Background(), &kv.Batch{Ops: []kv.Op{{Kind: kv.DeleteRange}}}); err != nil {
			t.Errorf("remove namespace %s: %v", ns, err)
		}
	})
	return newSharedCatalog(t, eps, ns)
}

// args are the arguments of imagefs mount for host (before STORE).
func (c *sharedCatalog) args(host string) []string {
	return append([]string{"--catalog", "etcd://" + strings.Join(c.eps, ","), "--data", c.data,
		"--config", c.config, "--host-id", host}, strings.Fields(*benchArgs)...)
}

// startShared mounts host on the catalog, with a local STORE of its own.
func startShared(t *testing.T, c *sharedCatalog, host string) *fsMount {
	t.Helper()
	dir := t.TempDir()
	m := &fsMount{t: t, Store: filepath.Join(dir, "store"), Mnt: filepath.Join(dir, "mnt"),
		log: filepath.Join(dir, "imagefs.log"), Args: c.args(host)}
	if err := os.Mkdir(m.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("imagefs daemon log of host %s (%s):\n%s", host, m.log, readFile(m.log))
		}
	})
	m.start()
	return m
}

func openBenchEtcd(t testing.TB, eps []string, ns string) *etcdkv.Backend {
	t.Helper()
	b, err := etcdkv.Open(context.Background(), etcdkv.Config{Endpoints: eps, Namespace: ns,
		RequestTimeout: 60 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("etcd: %v", err)
	}
	return b
}

// ---------------------------------------------------------------------------
// Rates of changes.

// benchSharedRates: mkdir of images, then a property write to each, on
// host A of the shared catalog and on a single-host mount, interleaved.
// It returns host A, still mounted.
func benchSharedRates(t *testing.T, tab *benchTable, c *sharedCatalog) *fsMount {
	const n = 200
	single := startOn(t, filepath.Join(t.TempDir(), "store")) // a fresh store, single-host whatever the harness's defaults
	a := startShared(t, c, "bench-a")
	mounts := map[string]*fsMount{"single": single, "shared": a}
	creates, sets := map[string][]float64{}, map[string][]float64{}
	for r := range *benchRuns {
		order := []string{"single", "shared"}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, k := range order {
			m := mounts[k]
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("rate-%d-%03d", r, i)
			}
			start := time.Now()
			for _, name := range names {
				if err := os.Mkdir(m.images(name), 0o755); err != nil {
					t.Fatalf("%s: mkdir: %v", k, err)
				}
			}
			creates[k] = append(creates[k], n/time.Since(start).Seconds())
			start = time.Now()
			for _, name := range names {
				if err := os.WriteFile(m.propFile(name, "os_distro"), []byte("superos\n"), 0o644); err != nil {
					t.Fatalf("%s: write property: %v", k, err)
				}
			}
			sets[k] = append(sets[k], n/time.Since(start).Seconds())
			if got := m.prop(names[n-1], "os_distro"); got != "superos" {
				t.Fatalf("%s: os_distro = %q", k, got)
			}
		}
	}
	tab.add(figure{name: fmt.Sprintf("image creation (mkdir images/NAME, %d in a row) on the shared catalog", n), unit: "ops/s", higher: true,
		value: median(creates["shared"]), refName: "single-host", ref: median(creates["single"]), info: true,
		note: "host A alone; interleaved with the single-host mount"})
	tab.add(figure{name: fmt.Sprintf("property write (echo superos > images/NAME/properties/os_distro, %d in a row) on the shared catalog", n), unit: "ops/s", higher: true,
		value: median(sets["shared"]), refName: "single-host", ref: median(sets["single"]), info: true,
		note: "host A alone; interleaved with the single-host mount"})
	single.stop()
	return a
}

// ---------------------------------------------------------------------------
// Seal on host A to active on host B.

// benchSharedSeal uploads small VHDs on host A (mkdir, then one writer,
// whose close returns once the image is sealed) and measures, for each,
// the time from the close on A until host B reads the image's status as
// active (by-id/ID/properties/status, read every millisecond). B has seen
// the image (queued or saving) before A writes it.
func benchSharedSeal(t *testing.T, tab *benchTable, c *sharedCatalog, a *fsMount) {
	n := *benchSharedSeals
	b := startShared(t, c, "bench-b")
	src := benchVHD(t, t.TempDir(), 1<<20)
	status := func(m *fsMount, id string) string {
		v, err := os.ReadFile(m.byID(id, "properties", "status"))
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(v), "\n")
	}
	await := func(what string, ok func() bool) time.Time {
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("host B: %s not seen within 30 s", what)
			}
			time.Sleep(time.Millisecond)
		}
		return time.Now()
	}
	var lat, closes []float64
	for i := range n {
		name := fmt.Sprintf("seal-%03d", i)
		id := a.mkimage(name)
		await("image "+id, func() bool { return status(b, id) != "" })
		_, cl := benchWriter(t, src, a.dataFile(name))
		sealed := time.Now()
		if got := a.prop(name, "status"); got != "active" {
			t.Fatalf("host A: %s is %s after the close", name, got)
		}
		seen := await("image "+id+" active", func() bool { return status(b, id) == "active" })
		lat = append(lat, seen.Sub(sealed).Seconds())
		closes = append(closes, cl.Seconds())
	}
	note := fmt.Sprintf("1 MiB VHD written on A; from the return of A's close (sealed) until B reads status active; close on A: median %s",
		fmtValue(median(closes), "s"))
	tab.add(figure{name: fmt.Sprintf("seal on host A to active on host B, p50 of %d images", n), unit: "s",
		value: percentile(lat, 50), target: 0.050, strict: true, note: note})
	tab.add(figure{name: fmt.Sprintf("the same, p99 of %d images", n), unit: "s",
		value: percentile(lat, 99), target: 1, strict: true, note: fmt.Sprintf("max %s", fmtValue(slices.Max(lat), "s"))})
}

// percentile is the p-th percentile of xs (nearest rank).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// ---------------------------------------------------------------------------
// Listing on host B.

// benchSharedList: the list section's two commands over its catalog
// (benchTrees, 10,000 images) copied into etcd, on host B against
// single-host imagefs on the Pebble catalog, interleaved.
func benchSharedList(t *testing.T, tab *benchTable, eps []string) {
	n := *benchListN
	storeDir, _ := benchTrees(t, n)
	c := benchEtcdCatalog(t, eps, storeDir, fmt.Sprintf("list-%d", n))
	single := startOn(t, storeDir)
	b := startShared(t, c, "bench-b")
	roots := map[string]string{"single": single.Mnt, "shared": b.Mnt}

	lsl := func(root string) time.Duration {
		return timeCmd(t, "sh", "-c", `ls -l "$1" >/dev/null`, "sh", filepath.Join(root, "images"))
	}
	grep := func(root string) time.Duration {
		start := time.Now()
		r := execCmd("sh", "-c", `ulimit -s unlimited && cd "$1" && grep -l -x superos images/*/properties/os_distro | wc -l`, "sh", root)
		if r.err != nil || strings.TrimSpace(r.stdout) != "10" {
			t.Fatalf("grep -l in %s: %s", root, r)
		}
		return time.Since(start)
	}
	for _, cmd := range []struct {
		name string
		fn   func(string) time.Duration
	}{
		{fmt.Sprintf("`ls -l images/` with %d images on host B of the shared catalog", n), lsl},
		{fmt.Sprintf("`grep -l -x superos images/*/properties/os_distro`, %d images, on host B", n), grep},
	} {
		cmd.fn(roots["single"]) // warm both daemons
		cmd.fn(roots["shared"])
		res := map[string][]float64{}
		for r := range *benchRuns {
			expire()
			order := []string{"single", "shared"}
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, k := range order {
				res[k] = append(res[k], cmd.fn(roots[k]).Seconds())
			}
		}
		tab.add(figure{name: cmd.name, unit: "s", value: median(res["shared"]),
			refName: "single-host", ref: median(res["single"]), target: 1.2,
			note: "the same catalog in Pebble and in etcd; run again after 1.1 s, interleaved"})
	}
	single.stop()
	b.stop()
}

// ---------------------------------------------------------------------------
// Mount start with 100,000 images in etcd, and RSS.

func benchSharedScale(t *testing.T, tab *benchTable, eps []string) {
	n := *benchScaleN
	storeDir, _ := benchTrees(t, n)
	c := benchEtcdCatalog(t, eps, storeDir, fmt.Sprintf("scale-%d", n))
	local := filepath.Join(t.TempDir(), "store") // host B's own STORE, kept across its starts
	// start mounts host B: "list" without its snapshot (removed first: a
	// host's first mount, or one after a crash whose snapshot's revision
	// was compacted), "snapshot" from the snapshot its last clean unmount
	// wrote; the daemon's log must say which it did.
	snap := filepath.Join(local, "catalog-snapshot")
	const fromSnap = "catalog loaded from this host's snapshot"
	start := func(k string, keep bool) (time.Duration, *fsMount) {
		switch k {
		case "single":
			return startTimed(t, storeDir, nil, keep)
		case "list":
			if err := os.Remove(snap); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		case "snapshot":
			if _, err := os.Stat(snap); err != nil {
				t.Fatalf("no snapshot after a clean unmount: %v", err)
			}
		}
		d, m := startTimed(t, local, c.args("bench-b"), keep)
		if got := bytes.Contains(readFile(m.log), []byte(fromSnap)); got != (k == "snapshot") {
			t.Fatalf("mount %s: loaded from the snapshot %v\n%s", k, got, readFile(m.log))
		}
		return d, m
	}
	kinds := []string{"single", "list", "snapshot"}
	starts := map[string][]float64{}
	for r := range *benchRuns {
		order := slices.Clone(kinds)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, k := range order {
			d, _ := start(k, false)
			starts[k] = append(starts[k], d.Seconds())
		}
	}
	single := median(starts["single"])
	for _, k := range []string{"list", "snapshot"} {
		name := fmt.Sprintf("mount start with %d images in etcd, the host's first (no snapshot: the catalog listed)", n)
		if k == "snapshot" {
			name = fmt.Sprintf("mount start with %d images in etcd, again (from the host's snapshot, caught up by watching)", n)
		}
		v := median(starts[k])
		tab.add(figure{name: name, unit: "s", value: v, target: 5, strict: true,
			note: fmt.Sprintf("exec to mounted and serving; single-host on the same catalog in Pebble %s (%.1f x), interleaved", fmtValue(single, "s"), v/single)})
	}

	rss := map[string]float64{}
	for _, k := range []string{"single", "list", "snapshot"} {
		_, m := start(k, true)
		rss[k] = idleRSS(t, m.cmd.Process.Pid)
		m.stop()
	}
	for _, k := range []string{"list", "snapshot"} {
		name := fmt.Sprintf("daemon RSS after the host's first mount start with %d images in etcd (the catalog listed)", n)
		if k == "snapshot" {
			name = fmt.Sprintf("daemon RSS after mount start with %d images in etcd from the host's snapshot", n)
		}
		tab.add(figure{name: name, unit: "MiB",
			value: rss[k], refName: "single-host", ref: rss["single"], target: 1.5, strict: true,
			note: "idle for 7 s after mounting, default GOGC"})
	}
}

// startTimed starts imagefs mount with args on storeDir and returns the
// time from exec until it has mounted and answers (its "mounted" line is
// logged and its root can be listed). Unless keep, it is stopped before
// startTimed returns; else it is returned running (stopped at the end of
// the test).
func startTimed(t *testing.T, storeDir string, args []string, keep bool) (time.Duration, *fsMount) {
	t.Helper()
	dir := t.TempDir()
	m := &fsMount{t: t, Store: storeDir, Mnt: filepath.Join(dir, "mnt"), log: filepath.Join(dir, "imagefs.log"), Args: args}
	if err := os.Mkdir(m.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(m.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(binary, append(append([]string{"mount"}, args...), m.Store, m.Mnt)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	go func() { m.err = cmd.Wait(); close(m.done) }()
	liveMounts.Store(m.Mnt, true)
	if keep {
		t.Cleanup(m.stop)
	} else {
		defer m.stop()
	}
	for !bytes.Contains(readFile(m.log), []byte("msg=mounted ")) {
		select {
		case <-m.done:
			t.Fatalf("imagefs exited: %v\n%s", m.err, readFile(m.log))
		default:
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("imagefs did not mount within 60 s\n%s", readFile(m.log))
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := os.ReadDir(m.Mnt); err != nil {
		t.Fatal(err)
	}
	return time.Since(start), m
}

// ---------------------------------------------------------------------------
// Copies of the suite's Pebble catalogs in etcd.

// benchEtcdCatalog returns the catalog of the store at storeDir (a
// benchTrees store, not mounted) copied into etcd under
// /imagefs-bench/<name>/: it copies the keys the two modes share (img/,
// name/, del/, seq/ino) unless the copy there is complete, i.e. the marker
// /imagefs-bench/complete/<name> holds the digest of those keys and etcd
// holds as many img/ and name/ keys as the Pebble catalog.
func benchEtcdCatalog(t *testing.T, eps []string, storeDir, name string) *sharedCatalog {
	t.Helper()
	ns := benchEtcdRoot + name + "/"
	markerKey := "complete/" + name
	src, err := pebblekv.Open(filepath.Join(storeDir, "catalog"), pebblekv.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// Read the keys and their digest.
	var pairs []kv.Pair
	counts := map[string]int64{}
	h := sha256.New()
	for _, r := range [][2]string{{"del/", "del0"}, {"img/", "img0"}, {"name/", "name0"}, {"seq/ino", "seq/ino\x00"}} {
		if _, err := src.Scan(context.Background(), r[0], r[1], 0, func(p kv.Pair) error {
			pairs = append(pairs, kv.Pair{Key: p.Key, Value: slices.Clone(p.Value)})
			counts[r[0]]++
			fmt.Fprintf(h, "%d:%s%d:", len(p.Key), p.Key, len(p.Value))
			h.Write(p.Value)
			return nil
		}); err != nil {
			src.Close()
			t.Fatalf("scan %s: %v", storeDir, err)
		}
	}
	src.Close()
	marker := fmt.Sprintf("%d keys, img/ %d, name/ %d, sha256 %x", len(pairs), counts["img/"], counts["name/"], h.Sum(nil))

	root := openBenchEtcd(t, eps, benchEtcdRoot)
	defer root.Close()
	ctx := context.Background()
	if p, err := root.Get(ctx, markerKey); err != nil {
		t.Fatal(err)
	} else if string(p.Value) == marker && etcdCount(t, eps, ns+"img/") == counts["img/"] && etcdCount(t, eps, ns+"name/") == counts["name/"] {
		t.Logf("etcd catalog %s: complete (%s)", ns, marker)
		return newSharedCatalog(t, eps, ns)
	}

	start := time.Now()
	if _, err := root.Commit(ctx, &kv.Batch{Ops: []kv.Op{{Kind: kv.Delete, Key: markerKey}}}); err != nil {
		t.Fatal(err)
	}
	dst := openBenchEtcd(t, eps, ns)
	defer dst.Close()
	if _, err := dst.Commit(ctx, &kv.Batch{Ops: []kv.Op{{Kind: kv.DeleteRange}}}); err != nil {
		t.Fatalf("empty %s: %v", ns, err)
	}
	// Batches of up to 256 keys (well under etcd's 1,024 operations and
	// 1.5 MiB per transaction), 4 in flight.
	const batchKeys, workers = 256, 4
	batches := make(chan []kv.Pair)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ps := range batches {
				b := &kv.Batch{Ops: make([]kv.Op, len(ps))}
				for i, p := range ps {
					b.Ops[i] = kv.Op{Kind: kv.Put, Key: p.Key, Value: p.Value}
				}
				if _, err := dst.Commit(ctx, b); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := 0; i < len(pairs); i += batchKeys {
		batches <- pairs[i:min(i+batchKeys, len(pairs))]
	}
	close(batches)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("copy into %s: %v", ns, firstErr)
	}
	if got := etcdCount(t, eps, ns+"img/"); got != counts["img/"] {
		t.Fatalf("copy into %s: %d img/ keys, want %d", ns, got, counts["img/"])
	}
	if _, err := root.Commit(ctx, &kv.Batch{Ops: []kv.Op{{Kind: kv.Put, Key: markerKey, Value: []byte(marker)}}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd catalog %s: %d keys copied from %s in %v", ns, len(pairs), storeDir, time.Since(start).Round(time.Millisecond))
	return newSharedCatalog(t, eps, ns)
}

// etcdCount returns the number of keys with prefix in etcd (a count-only
// range read, which kv.Backend has not).
func etcdCount(t testing.TB, eps []string, prefix string) int64 {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("etcd count %s: %v", prefix, err)
	}
	return resp.Count
}
