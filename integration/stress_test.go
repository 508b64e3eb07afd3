package integration

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var stressTime = flag.Duration("stress-time", 15*time.Second, "TestStress: how long the workers run")

// TestStress runs, for -stress-time, parallel uploads to different
// images, readers of sealed images by id during those uploads, renames
// and deletes racing lookups, and property writes racing each other, all
// through the mount. It checks that nothing deadlocks (the workers stop
// in time), no reader ever sees another image's bits, no property write
// that returned is lost, names stay unique, and the store checks clean
// afterwards. Run it under go test -race too (the daemon is then built
// with -race).
func TestStress(t *testing.T) {
	m := mount(t)
	requireTools(t, "cp")
	fixtures := []vhdFixture{makeVHD(t, 3*mib, "fixed"), makeVHD(t, 5*mib, "dynamic"), makeVHD(t, 8*mib, "fixed")}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, stress-time %s", seed, *stressTime)

	var (
		failures atomic.Int64
		counts   sync.Map // op -> *atomic.Int64
		sealed   sync.Map // id -> md5 of its sealed data
	)
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 20 {
			t.Errorf(format, args...)
		}
	}
	count := func(op string) {
		v, _ := counts.LoadOrStore(op, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	// expect fails the test unless err is nil or one of the errnos a
	// racing operation may meet.
	expect := func(what string, err error, ok ...syscall.Errno) {
		if err == nil {
			return
		}
		for _, e := range ok {
			if errors.Is(err, e) {
				return
			}
		}
		fail("%s: %v", what, err)
	}

	// Images that stay: "stable-N" are sealed at the start and read by
	// id all along; "prop" takes property writes; "mover-a/b/c" change
	// names all the time.
	for i, fx := range fixtures {
		name := fmt.Sprintf("stable-%d", i)
		id := m.mkimage(name)
		run(t, "cp", fx.Path, m.dataFile(name))
		sealed.Store(id, fx.MD5)
	}
	propID := m.mkimage("prop")
	for _, n := range []string{"mover-a", "mover-b", "mover-c"} {
		m.mkimage(n)
	}

	deadline := time.Now().Add(*stressTime)
	var wg sync.WaitGroup
	worker := func(name string, n int, fn func(r *rand.Rand, w int)) {
		for w := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, uint64(len(name)*100+w)))
				for time.Now().Before(deadline) && failures.Load() == 0 {
					fn(r, w)
					count(name)
				}
			}()
		}
	}

	// Parallel uploads, each worker to images of its own.
	var upSeq atomic.Int64 // random names repeat: a stress run met 313812 twice in 25 draws
	worker("upload", 3, func(r *rand.Rand, w int) {
		name := fmt.Sprintf("up-%d-%d-%d", w, upSeq.Add(1), r.IntN(1000000))
		if err := os.Mkdir(m.images(name), 0o755); err != nil {
			fail("mkdir %s: %v", name, err)
			return
		}
		id := strings.TrimSpace(readOptional(m.propFile(name, "id")))
		fx := fixtures[r.IntN(len(fixtures))]
		if err := runCtx("cp", fx.Path, m.dataFile(name)); err != nil {
			fail("cp to %s: %v", name, err)
			return
		}
		if got := strings.TrimSpace(readOptional(m.byID(id, "properties", "checksum"))); got != fx.MD5 {
			fail("%s sealed with checksum %q, want %s", name, got, fx.MD5)
			return
		}
		sealed.Store(id, fx.MD5)
		if r.IntN(2) == 0 { // delete it again while readers may read it
			expect("rmdir "+name, syscall.Rmdir(m.images(name)))
			sealed.Delete(id)
		}
	})
	// Readers by id: the sealed bits or ENOENT, never another image's.
	worker("read", 3, func(r *rand.Rand, w int) {
		var ids []string
		sealed.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return len(ids) < 50 })
		if len(ids) == 0 {
			return
		}
		id := ids[r.IntN(len(ids))]
		want, _ := sealed.Load(id)
		got, err := md5File(m.byID(id, "image.vhd"))
		if errors.Is(err, os.ErrNotExist) {
			return // deleted meanwhile
		}
		if err != nil {
			fail("read by-id/%s/image.vhd: %v", id, err)
		} else if got != want {
			if _, still := sealed.Load(id); still {
				fail("by-id/%s/image.vhd hashes to %s, sealed as %s: another image's bits", id, got, want)
			}
		}
	})
	// Renames racing lookups: rotate the movers' names.
	worker("rename", 1, func(r *rand.Rand, w int) {
		names := []string{"mover-a", "mover-b", "mover-c", "mover-tmp"}
		from, to := names[r.IntN(4)], names[r.IntN(4)]
		if from == to {
			return
		}
		expect(fmt.Sprintf("mv %s %s", from, to), syscall.Rename(m.images(from), m.images(to)), syscall.ENOENT, syscall.EEXIST)
	})
	worker("lookup", 2, func(r *rand.Rand, w int) {
		name := []string{"mover-a", "mover-b", "mover-c", "mover-tmp", "stable-0", "gone"}[r.IntN(6)]
		b, err := os.ReadFile(m.propFile(name, "name"))
		expect("read properties/name of "+name, err, syscall.ENOENT)
		if err == nil && string(b) != name+"\n" {
			// The directory was looked up, then renamed: its name is
			// the new one, which must be one of the movers'.
			if !strings.HasPrefix(string(b), "mover-") {
				fail("images/%s/properties/name = %q", name, b)
			}
		}
		_, err = os.ReadDir(m.images())
		expect("ls images/", err)
		_, err = os.ReadDir(m.view("status", "active"))
		expect("ls by-property/status/active", err)
	})
	// Deletes racing lookups: make and remove images under reused names.
	worker("churn", 1, func(r *rand.Rand, w int) {
		name := fmt.Sprintf("churn-%d", r.IntN(3))
		expect("mkdir "+name, os.Mkdir(m.images(name), 0o755), syscall.EEXIST)
		writeErr := os.WriteFile(m.propFile(name, "k"), []byte("v\n"), 0o644)
		expect("write property of "+name, writeErr, syscall.ENOENT)
		expect("rmdir "+name, syscall.Rmdir(m.images(name)), syscall.ENOENT)
	})
	// Property writes racing each other: one shared key, and a key per
	// writer whose last written value must survive.
	var lastMu sync.Mutex
	last := map[string]string{}
	worker("property", 4, func(r *rand.Rand, w int) {
		own := fmt.Sprintf("w%d", w)
		v := fmt.Sprintf("%d-%d", w, r.IntN(1000000))
		var err error
		if r.IntN(2) == 0 {
			err = os.WriteFile(m.byID(propID, "properties", own), []byte(v+"\n"), 0o644)
		} else {
			err = unix.Setxattr(m.byID(propID), "user."+own, []byte(v), 0)
		}
		if err != nil {
			fail("set %s: %v", own, err)
			return
		}
		lastMu.Lock()
		last[own] = v
		lastMu.Unlock()
		expect("setxattr shared", unix.Setxattr(m.byID(propID), "user.shared", []byte(v), 0))
	})

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(*stressTime + 90*time.Second):
		m.cmd.Process.Signal(syscall.SIGQUIT) // the daemon's goroutines go to its log
		t.Fatalf("workers still running 90 s after -stress-time: deadlock?")
	}
	var summary []string
	counts.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%s %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("operations: %s", strings.Join(summary, ", "))

	for key, v := range last {
		if got := readOptional(m.byID(propID, "properties", key)); got != v+"\n" {
			t.Errorf("properties/%s = %q, last write was %q: a lost update", key, got, v)
		}
	}
	if got := readOptional(m.byID(propID, "properties", "shared")); !strings.Contains(got, "-") {
		t.Errorf("properties/shared = %q", got)
	}
	ents, err := os.ReadDir(m.images())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		id := m.prop(e.Name(), "id")
		if seen[id] {
			t.Errorf("image %s listed twice", id)
		}
		seen[id] = true
	}
	sealed.Range(func(k, v any) bool {
		if got, err := md5File(m.byID(k.(string), "image.vhd")); err != nil || got != v {
			t.Errorf("by-id/%s/image.vhd after the run: %s %v, want %s", k, got, err, v)
		}
		return true
	})
	m.stop()
	if rep := fsckJSON(t, m.Store, "--verify-data"); rep.code != 0 || len(rep.Problems) != 0 {
		t.Errorf("fsck --verify-data after the stress run: exit %d, %v", rep.code, rep.Problems)
	}
}
