package fs

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/store"
	"golang.org/x/sys/unix"
)

// gatedData is the real local data backend with a gate on Put: once armed,
// Put says it was entered and waits until the test releases it. It is the
// seal's hand-over of the data, between the checks and the commit.
type gatedData struct {
	store.DataBackend
	mu       sync.Mutex
	armed    bool
	id       string        // the id Put was entered for
	entered  chan struct{} // closed when an armed Put is entered
	released chan struct{} // closed by release
	once     sync.Once
}

func newGatedData(t *testing.T) *gatedData {
	d, err := store.NewLocalData(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &gatedData{DataBackend: d, entered: make(chan struct{}), released: make(chan struct{})}
}

func (g *gatedData) arm() { g.mu.Lock(); g.armed = true; g.mu.Unlock() }

func (g *gatedData) release() { g.once.Do(func() { close(g.released) }) }

func (g *gatedData) Put(id, path string) error {
	g.mu.Lock()
	armed := g.armed
	if armed {
		g.armed = false
		g.id = id
	}
	g.mu.Unlock()
	if armed {
		close(g.entered)
		<-g.released
	}
	return g.DataBackend.Put(id, path)
}

// probeDeadline is how long a request may take while the seal is held
// in Put before the test says it waits for the seal. The requests below
// touch nothing the seal writes; they take microseconds when they do not
// wait.
const probeDeadline = 5 * time.Second

// TestRequestsAnsweredDuringSeal shows, by ordering and not by timing,
// that requests about images are answered while a seal is in progress
// (issue 14, "Done when"): image a's writer closes image.vhd, the seal
// reaches the data hand-over (Put, held by the test), and while it is
// held there GETATTR, LOOKUP, READDIR and a property read of another
// image b, and GETATTR of a's own image.vhd, must return. Each is asserted
// to return before the writer's close(2) does. A request that has not
// returned probeDeadline after Put was entered fails the test; the gate
// is then released so that nothing hangs.
func TestRequestsAnsweredDuringSeal(t *testing.T) {
	gate := newGatedData(t)
	m := newTestMount(t, mountConfig{store: store.Options{Data: gate}})
	defer gate.release()

	idB := m.upload("b", fixedVHD(t, 64<<10))
	idA := m.mkdir("a")
	w, err := os.OpenFile(m.path("images", "a", "image.vhd"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	noErr(t, "open images/a/image.vhd", err)
	_, err = w.Write(fixedVHD(t, 1<<20))
	noErr(t, "write images/a/image.vhd", err)

	gate.arm()
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case <-gate.entered:
	case err := <-closed:
		t.Fatalf("close(images/a/image.vhd) returned (%v) without the seal reaching Put", err)
	case <-time.After(30 * time.Second):
		m.abort()
		t.Fatal("the seal of images/a/image.vhd did not reach Put within 30 s of close(2)")
	}
	if gate.id != idA {
		t.Fatalf("Put was entered for %s, want a's id %s", gate.id, idA)
	}

	forceStat := func(p string) error {
		var sx unix.Statx_t
		return unix.Statx(unix.AT_FDCWD, p, unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &sx)
	}
	probes := []struct {
		what string
		do   func() error
	}{
		// Another image: every kind of request, each reaching the daemon
		// (a forced GETATTR; names and inodes the kernel has not seen).
		{"GETATTR of images/b (statx AT_STATX_FORCE_SYNC)", func() error { return forceStat(m.path("images", "b")) }},
		{"LOOKUP of by-id/<b's id>", func() error { _, err := os.Stat(m.path("by-id", idB)); return err }},
		{"LOOKUP of a missing property images/b/properties/no_such_key", func() error {
			_, err := os.Stat(m.path("images", "b", "properties", "no_such_key"))
			if err == nil || !os.IsNotExist(err) {
				return fmt.Errorf("got %v, want ENOENT", err)
			}
			return nil
		}},
		{"property read of by-id/<b's id>/properties/min_ram", func() error {
			b, err := os.ReadFile(m.path("by-id", idB, "properties", "min_ram"))
			if err == nil && string(b) != "0\n" {
				err = fmt.Errorf("read %q, want \"0\\n\"", b)
			}
			return err
		}},
		{"READDIR of images/", func() error {
			names, err := readdirnames(m.path("images"))
			if err == nil && !strings.Contains(strings.Join(names, "/")+"/", "b/") {
				err = fmt.Errorf("images/ lists %q, without b", names)
			}
			return err
		}},
		// The image being sealed: its own data file.
		{"GETATTR of images/a/image.vhd during its own seal (statx AT_STATX_FORCE_SYNC)", func() error {
			return forceStat(m.path("images", "a", "image.vhd"))
		}},
	}
	var stuck sync.WaitGroup
	for _, p := range probes {
		done := make(chan error, 1)
		stuck.Add(1)
		go func() { defer stuck.Done(); done <- p.do() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s during a's seal: %v", p.what, err)
			}
			select {
			case err := <-closed:
				t.Fatalf("close(images/a/image.vhd) returned (%v) while Put was held: the ordering is not shown", err)
			default: // the answer came before the seal's close returned
			}
		case <-time.After(probeDeadline):
			t.Errorf("%s: no answer %v after the seal of images/a entered Put (Put still held, close(2) not returned): the request waits for the seal",
				p.what, probeDeadline)
		}
	}

	gate.release()
	select {
	case err := <-closed:
		noErr(t, "close(images/a/image.vhd) after Put was released", err)
	case <-time.After(30 * time.Second):
		m.abort()
		t.Fatal("close(images/a/image.vhd) did not return within 30 s of releasing Put")
	}
	answered := make(chan struct{})
	go func() { stuck.Wait(); close(answered) }()
	select {
	case <-answered:
	case <-time.After(30 * time.Second):
		// Not even the end of the seal let them through: abort the
		// connection, or the test binary could not exit.
		m.abort()
		<-answered
		t.Fatal("requests made during the seal still had no answer 30 s after it ended")
	}
	if s := m.prop("a", "status"); s != "active" {
		t.Errorf("images/a: status %q after the seal, want active", s)
	}
}

// readdirnames lists dir (getdents, as ls does).
func readdirnames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
