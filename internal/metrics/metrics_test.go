package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// stubFS answers every request: GETATTR OK, LOOKUP ENOENT, READ with its
// buffer, WRITE with all of its data.
type stubFS struct{ fuse.RawFileSystem }

func (stubFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	return fuse.OK
}

func (stubFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.ENOENT
}

func (stubFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	return fuse.ReadResultData(buf), fuse.OK
}

func (stubFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n := 0
	for _, d := range data {
		n += len(d)
	}
	return uint32(n), fuse.OK
}

func TestMetricsCountRequests(t *testing.T) {
	m := New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	w := m.Wrap(stubFS{})
	w.GetAttr(nil, &fuse.GetAttrIn{}, &fuse.AttrOut{})
	w.GetAttr(nil, &fuse.GetAttrIn{}, &fuse.AttrOut{})
	w.Lookup(nil, &fuse.InHeader{}, "x", &fuse.EntryOut{})
	w.Read(nil, &fuse.ReadIn{}, make([]byte, 4096))
	w.Writev(nil, &fuse.WriteIn{}, [][]byte{make([]byte, 100), make([]byte, 23)})
	m.Observe(store.Event{Kind: store.EventSealed, Size: 1 << 20, Duration: time.Millisecond})
	m.Observe(store.Event{Kind: store.EventKilled, Reason: "not a VHD"})

	if got := testutil.ToFloat64(m.requests.WithLabelValues("getattr")); got != 2 {
		t.Errorf("getattr requests = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("lookup")); got != 1 {
		t.Errorf("lookup errors = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("getattr")); got != 0 {
		t.Errorf("getattr errors = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.readBytes); got != 4096 {
		t.Errorf("read bytes = %v, want 4096", got)
	}
	if got := testutil.ToFloat64(m.writtenBytes); got != 123 {
		t.Errorf("written bytes = %v, want 123", got)
	}
	if got := testutil.ToFloat64(m.seals); got != 1 {
		t.Errorf("seals = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.killed); got != 1 {
		t.Errorf("killed = %v, want 1", got)
	}
	// Only operations that happened are listed.
	n, err := testutil.GatherAndCount(reg, "imagefs_fuse_requests_total")
	if err != nil || n != 4 {
		t.Errorf("imagefs_fuse_requests_total has %d series (%v), want 4 (getattr, lookup, read, write)", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP imagefs_fuse_requests_total FUSE requests served, by operation.
# TYPE imagefs_fuse_requests_total counter
imagefs_fuse_requests_total{op="getattr"} 2
imagefs_fuse_requests_total{op="lookup"} 1
imagefs_fuse_requests_total{op="read"} 1
imagefs_fuse_requests_total{op="write"} 1
`), "imagefs_fuse_requests_total"); err != nil {
		t.Error(err)
	}
}

// The hot path allocates nothing once an operation's series exist.
func TestMetricsNoAllocation(t *testing.T) {
	m := New()
	w := m.Wrap(stubFS{})
	in, out := &fuse.GetAttrIn{}, &fuse.AttrOut{}
	rin, buf := &fuse.ReadIn{}, make([]byte, 512)
	win, data := &fuse.WriteIn{}, [][]byte{make([]byte, 512)}
	w.GetAttr(nil, in, out)
	w.Read(nil, rin, buf)
	w.Writev(nil, win, data)
	if n := testing.AllocsPerRun(1000, func() {
		w.GetAttr(nil, in, out)
		w.Writev(nil, win, data)
	}); n != 0 {
		t.Errorf("%v allocations per request, want 0", n)
	}
}

func BenchmarkMetricsGetAttr(b *testing.B) {
	m := New()
	w := m.Wrap(stubFS{})
	in, out := &fuse.GetAttrIn{}, &fuse.AttrOut{}
	b.ReportAllocs()
	for b.Loop() {
		w.GetAttr(nil, in, out)
	}
}
