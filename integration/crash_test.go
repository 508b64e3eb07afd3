package integration

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Crash safety (issue #7): the daemon is killed with SIGKILL at a random
// moment while other processes upload, seal, write properties, rename and
// delete; after umount -l and a new mount the store must be consistent.

var (
	crashIterations = flag.Int("crash-iterations", 20, "TestCrashLoop: how many times to kill the daemon")
	crashSeed       = flag.Uint64("crash-seed", 0, "TestCrashLoop: RNG seed (0: from the clock; the seed is printed)")
)

// repairable are the problems an unclean stop may leave and every mount
// (or fsck --repair) repairs.
var repairable = []string{"interrupted-upload", "staging-leftover", "uncommitted-seal", "orphan-data", "deleted-data"}

// crashState is what the test knows must hold across crashes.
type crashState struct {
	mu sync.Mutex
	// sealed: ids the test saw active with a checksum; an image never
	// changes its bits and stays unless deleted.
	sealed map[string]string
	// live: ids the test saw exist (mkdir returned, or listed).
	live map[string]bool
	// deleting: ids an rmdir was tried on (it may or may not have happened).
	deleting map[string]bool
	// props: id -> key -> the values the property may have after a crash:
	// the last one whose write returned success (propAbsent before the
	// first), and one in flight. The test never writes an empty value: a
	// key present with one is a torn create.
	props map[string]map[string][]string
	// names is held by a worker from reading images/<name>/properties/id
	// to its rmdir, and around every rename, so that the id recorded in
	// deleting is the one removed.
	names sync.Mutex
}

func (s *crashState) sawSealed(t testing.TB, id, sum string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.sealed[id]; ok && old != sum {
		t.Errorf("image %s was sealed with checksum %s, now %s", id, old, sum)
	}
	s.sealed[id] = sum
	s.live[id] = true
}

// crashFixtures are the uploads, made once with qemu-img, and one file that
// is not a VHD.
type crashFixtures struct {
	vhds    []vhdFixture
	garbage string
}

func TestCrashLoop(t *testing.T) {
	m := mount(t)
	requireTools(t, "qemu-img", "cp", "dd", "mv")
	fx := crashFixtures{
		vhds: []vhdFixture{
			makeVHD(t, 4*mib, "fixed"),
			makeVHD(t, 6*mib, "dynamic"),
			makeVHD(t, 12*mib, "fixed"),
		},
		garbage: filepath.Join(t.TempDir(), "garbage.bin"),
	}
	if err := os.WriteFile(fx.garbage, make([]byte, 3*mib), 0o644); err != nil {
		t.Fatal(err)
	}
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("crash loop: %d iterations, seed %d (rerun with -crash-seed %d)", *crashIterations, seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("crash loop seed %d: rerun with go test -run TestCrashLoop -crash-seed %d", seed, seed)
		}
	})
	r := rand.New(rand.NewPCG(seed, 7))
	st := &crashState{sealed: map[string]string{}, live: map[string]bool{}, deleting: map[string]bool{}, props: map[string]map[string][]string{}}
	stats := crashStats{fsck: map[string]int{}}
	start := time.Now()
	iterations := 0
	for i := 0; i < *crashIterations && !t.Failed(); i++ {
		crashIteration(t, m, fx, st, r, i, &stats)
		iterations++
	}
	// A clean stop, then fsck finds nothing at all.
	m.stop()
	rep := fsckJSON(t, m.Store, "--verify-data")
	if rep.code != 0 || len(rep.Problems) != 0 {
		t.Errorf("imagefs fsck --verify-data after a clean stop: exit %d, problems %v", rep.code, rep.Problems)
	}
	t.Logf("%d iterations in %s: %d ops (%d uploads sealed, %d refused or failed, %d property writes), %d verified reads during the runs, %d images checked after restarts, %d active at the end; fsck after SIGKILL found %v; %d torn or lost properties",
		iterations, time.Since(start).Round(time.Millisecond), stats.ops.Load(), stats.sealed.Load(), stats.failedUploads.Load(), stats.propWrites.Load(), stats.reads.Load(), stats.checked, len(st.sealed), stats.fsck, stats.tornProps)
	if stats.sealed.Load() == 0 {
		t.Errorf("no upload was ever sealed: the loop tested nothing")
	}
}

type crashStats struct {
	ops, sealed, failedUploads, reads atomic.Int64
	propWrites                        atomic.Int64
	checked                           int            // images checked after restarts
	fsck                              map[string]int // problems fsck found after SIGKILL, by kind
	// tornProps: properties found with a value no write gave them (an
	// empty value of a key being created, above all); each is a failure.
	tornProps int
}

// crashIteration runs workers against the mount, kills the daemon at a
// random moment, cleans up the dead mount, optionally runs fsck, mounts
// again and checks the invariants.
func crashIteration(t *testing.T, m *fsMount, fx crashFixtures, st *crashState, r *rand.Rand, iter int, stats *crashStats) {
	t.Helper()
	if m.cmd == nil {
		m.start()
	}
	var dead atomic.Bool
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		wr := rand.New(rand.NewPCG(r.Uint64(), uint64(w)))
		go func() {
			defer wg.Done()
			for !dead.Load() {
				crashOp(t, m, fx, st, wr, w, &dead, stats)
			}
		}()
	}
	time.Sleep(time.Duration(50+r.IntN(1200)) * time.Millisecond)
	dead.Store(true)
	m.crash()
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(60 * time.Second):
		t.Fatalf("iteration %d: workers still busy 60 s after the daemon was killed", iter)
	}

	// The store, unmounted: fsck reports only what an unclean stop
	// leaves, and --repair repairs it all.
	switch iter % 3 {
	case 0:
		rep := fsckJSON(t, m.Store, "--verify-data")
		for _, p := range rep.Problems {
			stats.fsck[p.Kind]++
			if !slices.Contains(repairable, p.Kind) || p.Repaired {
				t.Errorf("iteration %d: fsck after SIGKILL: unexpected problem %+v", iter, p)
			}
		}
		if (rep.code != 0) != (len(rep.Problems) > 0) || len(rep.Problems) > 0 && rep.code != 3 {
			t.Errorf("iteration %d: fsck exit %d with problems %v", iter, rep.code, rep.Problems)
		}
	case 1:
		rep := fsckJSON(t, m.Store, "--repair", "--verify-data")
		for _, p := range rep.Problems {
			stats.fsck[p.Kind]++
		}
		if rep.code != 0 {
			t.Errorf("iteration %d: fsck --repair --verify-data after SIGKILL: exit %d, problems %v", iter, rep.code, rep.Problems)
		}
	}
	m.start()
	stats.checked += checkCrashInvariants(t, m, st, iter, stats)
}

// crashOp does one random operation as another process would. Errors are
// expected (the daemon may be dead, other workers change the same
// images); what matters is checked after the restart.
func crashOp(t *testing.T, m *fsMount, fx crashFixtures, st *crashState, r *rand.Rand, w int, dead *atomic.Bool, stats *crashStats) {
	stats.ops.Add(1)
	name := fmt.Sprintf("img%d", r.IntN(10))
	dir := m.images(name)
	idOf := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "properties", "id"))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	switch op := r.IntN(100); {
	case op < 12: // mkdir
		if os.Mkdir(dir, 0o755) == nil {
			if id := idOf(); id != "" {
				st.mu.Lock()
				st.live[id] = true
				st.mu.Unlock()
			}
		}
	case op < 45: // upload with cp, dd or a scratch file and mv
		id := idOf()
		if id == "" {
			return
		}
		src, valid := fx.garbage, false
		if r.IntN(5) > 0 {
			v := fx.vhds[r.IntN(len(fx.vhds))]
			src, valid = v.Path, true
		}
		dst := filepath.Join(dir, "image.vhd")
		var err error
		switch r.IntN(3) {
		case 0:
			err = runCtx("cp", src, dst)
		case 1:
			err = runCtx("dd", "if="+src, "of="+dst, "bs=256k", "status=none")
		case 2:
			tmp := filepath.Join(dir, fmt.Sprintf(".tmp-%d", w))
			if err = runCtx("cp", src, tmp); err == nil {
				err = os.Rename(tmp, dst)
			}
		}
		if err != nil || !valid {
			stats.failedUploads.Add(1)
			return
		}
		// The writer's close returned: if the image is active now, it
		// must stay so with this checksum.
		if b, err := os.ReadFile(filepath.Join(m.byID(id), "properties", "status")); err == nil && string(b) == "active\n" {
			if sum, err := os.ReadFile(filepath.Join(m.byID(id), "properties", "checksum")); err == nil && !dead.Load() {
				stats.sealed.Add(1)
				st.sawSealed(t, id, strings.TrimSpace(string(sum)))
			}
		}
	case op < 65: // a property write (file or xattr) on this worker's own key
		id := idOf()
		if id == "" {
			return
		}
		key := fmt.Sprintf("crash_w%d", w)
		val := fmt.Sprintf("v%d-%s", r.IntN(1000), strings.Repeat("x", r.IntN(300)))
		st.mu.Lock()
		if st.props[id] == nil {
			st.props[id] = map[string][]string{}
		}
		prev := st.props[id][key]
		committed := propAbsent
		if len(prev) > 0 {
			committed = prev[0]
		}
		st.props[id][key] = []string{committed, val} // either, until this write returns
		st.mu.Unlock()
		stats.propWrites.Add(1)
		var err error
		if r.IntN(2) == 0 {
			err = os.WriteFile(filepath.Join(m.byID(id), "properties", key), []byte(val+"\n"), 0o644)
		} else {
			err = unix.Setxattr(filepath.Join(m.byID(id), "image.vhd"), "user."+key, []byte(val), 0)
		}
		st.mu.Lock()
		if err == nil && !dead.Load() {
			st.props[id][key] = []string{val}
		}
		st.mu.Unlock()
	case op < 75: // mv images/a images/b
		st.names.Lock()
		os.Rename(dir, m.images(fmt.Sprintf("img%d", r.IntN(10))))
		st.names.Unlock()
	case op < 79: // rmdir
		st.names.Lock()
		if id := idOf(); id != "" {
			st.mu.Lock()
			st.deleting[id] = true
			st.mu.Unlock()
			syscall.Rmdir(dir)
		}
		st.names.Unlock()
	case op < 83: // rm image.vhd of an upload
		os.Remove(filepath.Join(dir, "image.vhd"))
	default: // a hypervisor reads by-id/<id>/image.vhd
		id := idOf()
		if id == "" {
			return
		}
		sum, err := os.ReadFile(filepath.Join(m.byID(id), "properties", "checksum"))
		status, err2 := os.ReadFile(filepath.Join(m.byID(id), "properties", "status"))
		if err != nil || err2 != nil || string(status) != "active\n" {
			return
		}
		got, err := md5File(filepath.Join(m.byID(id), "image.vhd"))
		if err != nil || dead.Load() {
			return
		}
		stats.reads.Add(1)
		if got != strings.TrimSpace(string(sum)) {
			t.Errorf("read of by-id/%s/image.vhd hashes to %s, checksum %s: not that image's bits", id, got, sum)
		}
	}
}

// runCtx runs a command, killing it after 30 s.
func runCtx(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = os.TempDir()
	return cmd.Run()
}

func md5File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// propAbsent stands for "the key does not exist" among the values a
// property may have after a crash (crashState.props).
const propAbsent = "\x00absent"

// checkCrashInvariants checks the store through a fresh mount after a
// crash.
// It returns how many images it checked.
func checkCrashInvariants(t *testing.T, m *fsMount, st *crashState, iter int, stats *crashStats) int {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Errorf("after crash %d: "+format, append([]any{iter}, args...)...)
	}
	ents, err := os.ReadDir(m.images())
	if err != nil {
		t.Fatalf("after crash %d: ls images/: %v", iter, err)
	}
	ids := map[string]string{} // id -> name
	statuses := map[string][]string{}
	for _, e := range ents {
		name := e.Name()
		id := m.prop(name, "id")
		if other, dup := ids[id]; dup {
			fail("images/%s and images/%s are both image %s", name, other, id)
		}
		ids[id] = name
		if got := m.prop(name, "name"); got != name {
			fail("images/%s has name %q", name, got)
		}
		status := m.prop(name, "status")
		statuses[status] = append(statuses[status], name)
		switch status {
		case "queued", "killed":
		case "active":
			sum := m.prop(name, "checksum")
			data := m.byID(id, "image.vhd")
			got, err := md5File(data)
			if err != nil {
				fail("read by-id/%s/image.vhd: %v", id, err)
				continue
			}
			if got != sum {
				fail("by-id/%s/image.vhd hashes to %s, checksum says %s", id, got, sum)
			}
			if sha := sha512sum(t, data); sha != m.prop(name, "os_hash_value") {
				fail("by-id/%s/image.vhd sha512 %s, os_hash_value %s", id, sha, m.prop(name, "os_hash_value"))
			}
			if size := strconv.FormatInt(fileSize(t, data), 10); size != m.prop(name, "size") {
				fail("by-id/%s/image.vhd is %s bytes, size says %s", id, size, m.prop(name, "size"))
			}
			st.sawSealed(t, id, sum)
		default:
			fail("images/%s is %s after a restart (want queued, killed or active)", name, status)
		}
		if status == "killed" && strings.TrimSpace(m.prop(name, "imagefs_kill_reason")) == "" {
			fail("images/%s is killed without a reason", name)
		}
	}
	// by-id/ lists the same images.
	byID, err := os.ReadDir(filepath.Join(m.Mnt, "by-id"))
	if err != nil {
		t.Fatal(err)
	}
	if len(byID) != len(ids) {
		fail("by-id/ has %d entries, images/ %d", len(byID), len(ids))
	}
	for _, e := range byID {
		if _, ok := ids[e.Name()]; !ok {
			fail("by-id/%s is not under images/", e.Name())
		}
	}
	// The status views agree with the records.
	for status, names := range statuses {
		got, err := os.ReadDir(filepath.Join(m.Mnt, "by-property", "status", status))
		if err != nil {
			fail("ls by-property/status/%s: %v", status, err)
			continue
		}
		var gotNames []string
		for _, e := range got {
			gotNames = append(gotNames, e.Name())
		}
		slices.Sort(names)
		if !slices.Equal(gotNames, names) {
			fail("by-property/status/%s = %v, images with that status %v", status, gotNames, names)
		}
	}
	// Data files and the catalog agree; nothing is left in staging.
	data, _ := filepath.Glob(filepath.Join(m.Store, "data", "*.vhd"))
	var dataIDs []string
	for _, p := range data {
		dataIDs = append(dataIDs, strings.TrimSuffix(filepath.Base(p), ".vhd"))
	}
	activeIDs := []string{}
	for _, name := range statuses["active"] {
		activeIDs = append(activeIDs, m.prop(name, "id"))
	}
	slices.Sort(dataIDs)
	slices.Sort(activeIDs)
	if !slices.Equal(dataIDs, activeIDs) {
		fail("STORE/data holds %v, the active images are %v", dataIDs, activeIDs)
	}
	if left, _ := os.ReadDir(filepath.Join(m.Store, "staging")); len(left) != 0 {
		fail("STORE/staging not reclaimed: %d files", len(left))
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	// Nothing the test saw vanished unless it tried to delete it; sealed
	// images are still active with the same bits.
	for id := range st.live {
		if _, ok := ids[id]; !ok && !st.deleting[id] {
			fail("image %s vanished without an rmdir", id)
		}
	}
	for id, sum := range st.sealed {
		name, ok := ids[id]
		if !ok {
			if !st.deleting[id] {
				fail("sealed image %s vanished without an rmdir", id)
			}
			delete(st.sealed, id)
			continue
		}
		if status := m.prop(name, "status"); status != "active" {
			fail("sealed image %s (%s) is now %s", id, name, status)
		} else if got := m.prop(name, "checksum"); got != sum {
			fail("sealed image %s had checksum %s, now %s", id, sum, got)
		}
	}
	// A property write that returned is durable; one in flight at the
	// crash either happened or did not.
	for id, keys := range st.props {
		name, ok := ids[id]
		if !ok {
			continue
		}
		for key, allowed := range keys {
			got, err := os.ReadFile(m.propFile(name, key))
			v := strings.TrimSuffix(string(got), "\n")
			if errors.Is(err, os.ErrNotExist) {
				v = propAbsent
			} else if err != nil {
				fail("read %s/%s: %v", name, key, err)
				continue
			}
			if !slices.Contains(allowed, v) {
				fail("images/%s/properties/%s = %.40q, want one of %.80q (a write that returned was lost, an unknown value appeared, or a new key was torn: present with no value)", name, key, v, allowed)
				stats.tornProps++
			}
			keys[key] = []string{v}
		}
	}
	for id := range st.deleting {
		if _, ok := ids[id]; !ok {
			delete(st.live, id)
			delete(st.props, id)
		}
	}
	clear(st.deleting)
	for id := range ids {
		st.live[id] = true
	}
	return len(ids)
}

// fsckReport is imagefs fsck --json's output and exit status.
type fsckReport struct {
	code     int
	Images   int `json:"images"`
	Sealed   int `json:"sealed"`
	Verified int `json:"verified"`
	Problems []struct {
		Kind       string `json:"kind"`
		ID         string `json:"id"`
		Detail     string `json:"detail"`
		Repairable bool   `json:"repairable"`
		Repaired   bool   `json:"repaired"`
	} `json:"problems"`
}

// fsckJSON runs imagefs fsck --json [args] store (the store must not be
// mounted) and decodes its report.
func fsckJSON(t testing.TB, store string, args ...string) fsckReport {
	t.Helper()
	r := execCmd(binary, fsckCmd(append(append([]string{"--json"}, args...), store)...)...)
	var rep fsckReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("imagefs fsck --json %v: %v\n%s", args, err, r)
	}
	rep.code = r.code
	if r.code == 2 || r.code > 3 {
		t.Errorf("imagefs fsck %v could not check the store: %s", args, r)
	}
	return rep
}

// TestStaleMountpoint: after the daemon died, the mountpoint is a dead
// FUSE mount (ENOTCONN); imagefs mount on it fails at once with a message
// that says how to clear it, and after umount -l it mounts again. (It
// used to mount on top of the dead mount when its stat(2) of the
// mountpoint was answered from the kernel's cache, and serve there.)
func TestStaleMountpoint(t *testing.T) {
	m := mount(t)
	run(t, "mkdir", m.images("kept"))
	m.kill()
	// stat(2) may still be answered from the kernel's attribute cache for
	// a second; statfs(2) always reaches the (dead) daemon.
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.Mnt, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("statfs of the dead mount: %v, want ENOTCONN", err)
	}
	// Killed after 10 s if it mounts on top and serves instead.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "mount", m.Store, m.Mnt)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "umount -l "+m.Mnt) || !strings.Contains(string(out), "fusermount3 -u "+m.Mnt) {
		t.Errorf("imagefs mount on a stale mountpoint: want exit 1 and a hint to run umount -l / fusermount3 -u, got exit %d (%v): %s", code, err, out)
	}
	for isMounted(m.Mnt) {
		run(t, "umount", "-l", m.Mnt)
	}
	liveMounts.Delete(m.Mnt)
	m.cmd = nil
	m.start()
	if got := m.prop("kept", "status"); got != "queued" {
		t.Errorf("images/kept after the restart: status %q", got)
	}
}

// TestFsckCommand: imagefs fsck on a clean store, with --verify-data
// (plain progress lines when stderr is not a terminal, a progress bar when
// it is), on a damaged data file, on a mounted store and on a directory
// that is no store, with the exit statuses its help gives.
func TestFsckCommand(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 6*mib, "dynamic")
	id := m.mkimage("img")
	run(t, "cp", fx.Path, m.dataFile("img"))
	m.mkimage("queued")

	r := execCmd(binary, fsckCmd(m.Store)...)
	if r.code != 2 || !strings.Contains(r.stderr, "mounted") {
		t.Errorf("fsck of a mounted store: want exit 2 saying it is mounted, got %s", r)
	}
	m.stop()

	r = execCmd(binary, fsckCmd("--verify-data", m.Store)...)
	if r.code != 0 || !strings.Contains(r.stdout, "2 images, 1 sealed, 1 verified, 0 problems") {
		t.Errorf("fsck --verify-data of a clean store: %s", r)
	}
	if !strings.Contains(r.stderr, "(100%)") || strings.Contains(r.stderr, "\r") || strings.Contains(r.stderr, "\x1b") {
		t.Errorf("fsck --verify-data without a terminal: want plain progress lines ending at 100%%, got %q", r.stderr)
	}
	if _, err := exec.LookPath("script"); err == nil {
		// script(1) gives fsck a terminal: a progress bar, redrawn in place.
		r = execCmd("script", "-qec", binary+" "+strings.Join(fsckCmd("--verify-data", m.Store), " "), "/dev/null")
		if r.code != 0 || !strings.Contains(r.stdout, "verifying") || !strings.Contains(r.stdout, "\r") {
			t.Errorf("fsck --verify-data on a terminal: want a progress bar, got %q", r.stdout)
		}
	}

	// Bit rot in the data file: found by --verify-data only, not repairable.
	p := m.backing(id)
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("rot"), 3*mib)
	f.Close()
	rep := fsckJSON(t, m.Store)
	// Writable: repairable, and plain fsck says so (exit 3).
	if rep.code != 3 || len(rep.Problems) != 1 || rep.Problems[0].Kind != "data-mode" || !rep.Problems[0].Repairable {
		t.Errorf("fsck of a writable data file: exit %d, %v", rep.code, rep.Problems)
	}
	rep = fsckJSON(t, m.Store, "--repair", "--verify-data")
	var kinds []string
	for _, p := range rep.Problems {
		kinds = append(kinds, p.Kind)
	}
	slices.Sort(kinds)
	if rep.code != 1 || !slices.Equal(kinds, []string{"checksum-mismatch", "data-mode"}) {
		t.Errorf("fsck --repair --verify-data of a damaged file: exit %d, %v", rep.code, rep.Problems)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("data file mode after --repair: %v %v", fi.Mode(), err)
	}

	r = execCmd(binary, "fsck", t.TempDir())
	if r.code != 2 || !strings.Contains(r.stderr, "not an imagefs store") {
		t.Errorf("fsck of a directory that is no store: %s", r)
	}
}
