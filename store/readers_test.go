package store

import (
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Readers never wait for a seal's data work, and wait for at most one
// catalog commit in flight (see the package doc, Locks). The first test
// holds a seal inside its data hand-over (a real local backend whose Put
// waits at a gate) and shows that the reads are answered while the seal
// is still held there: by ordering, since the seal cannot return before
// the test opens the gate. The deadline only turns a reader stuck behind
// the seal into a failure instead of a hung test. The second holds a
// commit inside the catalog's WAL fsync (the OS filesystem whose sync of
// the WAL waits at a gate) and shows that a read arriving then answers
// with that commit.

// readerDeadline turns a reader stuck behind a held writer into a failure.
var readerDeadline = 60 * time.Second

// gate holds whoever reaches it until open is called.
type gate struct {
	armed   atomic.Bool
	once    sync.Once
	opened  sync.Once
	entered chan struct{} // closed when the first caller reaches the gate
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) pass() {
	if !g.armed.Load() {
		return
	}
	g.once.Do(func() { close(g.entered) })
	<-g.release
}

func (g *gate) open() { g.opened.Do(func() { g.armed.Store(false); close(g.release) }) }

// gatedData is the local DataBackend whose Put waits at a gate.
type gatedData struct {
	DataBackend
	g *gate
}

func (d gatedData) Put(id, path string) error {
	d.g.pass()
	return d.DataBackend.Put(id, path)
}

// gatedFS is the OS filesystem whose syncs of the catalog's WAL wait at a
// gate.
type gatedFS struct {
	vfs.FS
	g *gate
}

type gatedFile struct {
	vfs.File
	g *gate
}

func (f gatedFile) Sync() error                  { f.g.pass(); return f.File.Sync() }
func (f gatedFile) SyncData() error              { f.g.pass(); return f.File.SyncData() }
func (f gatedFile) SyncTo(n int64) (bool, error) { f.g.pass(); return f.File.SyncTo(n) }
func (fs gatedFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return gatedFile{f, fs.g}, nil
}

func (fs gatedFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs gatedFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

// answeredBefore runs reads and fails unless they all return while
// writerDone has not (the writer is held at a gate the test has not
// opened).
func answeredBefore(t *testing.T, writerDone <-chan error, reads func(t *testing.T)) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		reads(t)
	}()
	select {
	case <-done:
	case err := <-writerDone:
		t.Fatalf("the held writer returned (%v) before the reads", err)
	case <-time.After(readerDeadline):
		t.Fatal("the reads wait for the held writer")
	}
	select {
	case err := <-writerDone:
		t.Fatalf("the held writer returned (%v) while held", err)
	default:
	}
}

// viewReads are the by-property index reads, against a store with image
// "b" whose os_distro is "x".
func viewReads(t *testing.T, s *Store) {
	ims, err := s.ViewImages(Root, "os_distro", "x")
	assert.NoError(t, err)
	assert.Equal(t, []string{"b"}, imageNames(ims))
	keys, err := s.ViewKeys(Root, nil)
	assert.NoError(t, err)
	assert.Contains(t, keys, "os_distro")
	vals, err := s.ViewValues(Root, "os_distro", nil)
	assert.NoError(t, err)
	assert.Equal(t, []string{"x"}, vals)
	has, err := s.ViewHasKey(Root, "os_distro", nil)
	assert.NoError(t, err)
	assert.True(t, has)
	has, err = s.ViewHasValue(alice, "os_distro", "x")
	assert.NoError(t, err)
	assert.True(t, has)
}

func TestReadsDuringSealDataHandOver(t *testing.T) {
	g := newGate()
	dir := t.TempDir()
	local, err := NewLocalData(filepath.Join(dir, "data"))
	require.NoError(t, err)
	s, err := Open(dir, Options{Data: gatedData{local, g}})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	t.Cleanup(g.open) // first: a failed test does not leave the writer held

	a, err := s.Create(alice, "a")
	require.NoError(t, err)
	b, err := s.Create(alice, "b")
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, b.ID, "os_distro", "x", SetAny))
	data := fixedVHD(t, 1<<20)
	u, err := s.OpenWrite(alice, a.ID, true)
	require.NoError(t, err)
	_, err = u.WriteAt(data, 0)
	require.NoError(t, err)

	g.armed.Store(true)
	sealed := make(chan error, 1)
	go func() { sealed <- s.CloseWriter(u) }()
	<-g.entered // the seal of a is in its data hand-over, holding its upload's lock

	answeredBefore(t, sealed, func(t *testing.T) {
		// Another image: record, name, listing, a property, the views.
		assert.Equal(t, "b", s.Get(b.ID).Name)
		assert.Equal(t, b.ID, s.Lookup("b").ID)
		assert.Len(t, s.List(), 2)
		v, ok := s.Get(b.ID).Property("os_distro")
		assert.True(t, ok)
		assert.Equal(t, "x", v)
		viewReads(t, s)
		// The image being sealed: its record and what stat of its
		// image.vhd reads (the upload and its size).
		assert.Equal(t, StatusSaving, s.Get(a.ID).Status)
		assert.True(t, s.DataPresent(a.ID))
		assert.Same(t, u, s.CurrentUpload(a.ID))
		assert.Equal(t, int64(len(data)), u.Size())
		assert.True(t, u.IsImageData())
		assert.False(t, u.Removed())
	})

	g.open()
	require.NoError(t, <-sealed)
	require.NoError(t, s.EndWriter(u))
	assert.Equal(t, StatusActive, s.Get(a.ID).Status)
}

// TestReadsDuringCatalogCommit: a read that arrives while a record change
// is in its commit (held in the WAL fsync) waits for that commit only and
// answers with the change, the records and the index of one moment: fs
// relies on it (a property file's RELEASE commits after close(2) has
// returned, and the next open's LOOKUP must find the key).
func TestReadsDuringCatalogCommit(t *testing.T) {
	g := newGate()
	dir := t.TempDir()
	s, err := Open(dir, Options{catalogFS: gatedFS{vfs.Default, g}})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	t.Cleanup(g.open) // first: a failed test does not leave the writer held

	a, err := s.Create(alice, "a")
	require.NoError(t, err)
	b, err := s.Create(alice, "b")
	require.NoError(t, err)
	require.NoError(t, s.SetProperty(alice, b.ID, "os_distro", "x", SetAny))

	g.armed.Store(true)
	committed := make(chan error, 1)
	go func() { committed <- s.SetProperty(alice, b.ID, "os_distro", "y", SetAny) }()
	<-g.entered // the commit is in its WAL fsync

	type answer struct {
		value string
		view  []*Image
	}
	answers := make(chan answer, 1)
	go func() {
		v, _ := s.Get(b.ID).Property("os_distro")
		ims, err := s.ViewImages(Root, "os_distro", "y")
		assert.NoError(t, err)
		answers <- answer{v, ims}
	}()
	time.Sleep(50 * time.Millisecond) // let the reads start inside the commit (else they check nothing)
	g.open()
	require.NoError(t, <-committed)
	got := <-answers
	assert.Equal(t, "y", got.value, "a read during a commit answers with it")
	assert.Equal(t, []string{"b"}, imageNames(got.view))
	for _, im := range got.view {
		v, _ := im.Property("os_distro")
		assert.Equal(t, "y", v, "a view lists an image only with a record that has the value")
	}
	assert.Equal(t, "a", s.Get(a.ID).Name)
}
