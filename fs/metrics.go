package fs

import (
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what a mount does, for a Prometheus endpoint: requests,
// errors and latencies per FUSE operation (Options.Metrics wraps the
// mount's fuse.RawFileSystem), bytes read and written through the daemon,
// the store's events (it is a store.Observer: pass it as
// store.Options.Events) and the catalog's size by status, counted when
// scraped (SetStore).
//
// Reads of sealed data served by FUSE passthrough go from the kernel to
// the backing file and never reach imagefs: they are not in
// imagefs_fuse_read_bytes_total (the open is counted).
//
// Metrics is a prometheus.Collector: register it with a registry.
type Metrics struct {
	ops      [opCount]atomic.Pointer[opMetrics]
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	readBytes, writtenBytes prometheus.Counter

	created, deleted, seals, killed prometheus.Counter
	sealedBytes                     prometheus.Counter
	sealSeconds                     prometheus.Histogram

	images *prometheus.Desc
	store  atomic.Pointer[store.Store]
}

// opMetrics are the series of one operation, resolved once so that a
// request costs two atomic adds and a histogram observation.
type opMetrics struct {
	requests, errors prometheus.Counter
	latency          prometheus.Observer
}

// NewMetrics returns metrics with every counter at zero.
func NewMetrics() *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "imagefs", Name: name, Help: help})
	}
	return &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "imagefs", Subsystem: "fuse", Name: "requests_total",
			Help: "FUSE requests served, by operation.",
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "imagefs", Subsystem: "fuse", Name: "request_errors_total",
			Help: "FUSE requests answered with an error (ENOENT of a lookup included), by operation.",
		}, []string{"op"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "imagefs", Subsystem: "fuse", Name: "request_duration_seconds",
			Help:    "Time imagefs took to answer a FUSE request, by operation.",
			Buckets: []float64{10e-6, 30e-6, 100e-6, 300e-6, 1e-3, 3e-3, 10e-3, 30e-3, 0.1, 0.3, 1, 3, 10},
		}, []string{"op"}),
		readBytes:    counter("fuse_read_bytes_total", "Bytes returned by FUSE reads that reached imagefs (not passthrough reads)."),
		writtenBytes: counter("fuse_written_bytes_total", "Bytes accepted by FUSE writes (uploads and property files)."),
		created:      counter("images_created_total", "Images created."),
		deleted:      counter("images_deleted_total", "Images deleted."),
		seals:        counter("seals_total", "Uploads sealed: the image became active."),
		sealedBytes:  counter("sealed_bytes_total", "Bytes of data sealed."),
		killed:       counter("uploads_killed_total", "Uploads refused at close or interrupted by a stop: the image became killed."),
		sealSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "imagefs", Name: "seal_duration_seconds",
			Help:    "Time to seal an upload: check, hash what was not hashed in order, sync, commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		images: prometheus.NewDesc("imagefs_images", "Images in the catalog, by status.", []string{"status"}, nil),
	}
}

// SetStore sets the store whose catalog imagefs_images counts.
func (m *Metrics) SetStore(st *store.Store) { m.store.Store(st) }

// Observe counts a store event; Metrics is a store.Observer.
func (m *Metrics) Observe(e store.Event) {
	switch e.Kind {
	case store.EventCreated:
		m.created.Inc()
	case store.EventDeleted:
		m.deleted.Inc()
	case store.EventSealed:
		m.seals.Inc()
		m.sealedBytes.Add(float64(e.Size))
		m.sealSeconds.Observe(e.Duration.Seconds())
	case store.EventKilled:
		m.killed.Inc()
	}
}

// statuses are the values of imagefs_images{status}, always all listed.
var statuses = []store.Status{store.StatusQueued, store.StatusSaving, store.StatusActive, store.StatusKilled, store.StatusDeactivated}

func (m *Metrics) plain() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.errors, m.latency, m.readBytes, m.writtenBytes,
		m.created, m.deleted, m.seals, m.sealedBytes, m.killed, m.sealSeconds}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.plain() {
		c.Describe(ch)
	}
	ch <- m.images
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.plain() {
		c.Collect(ch)
	}
	st := m.store.Load()
	if st == nil {
		return
	}
	n := map[store.Status]int{}
	for _, im := range st.List() {
		n[im.Status]++
	}
	for _, s := range statuses {
		ch <- prometheus.MustNewConstMetric(m.images, prometheus.GaugeValue, float64(n[s]), string(s))
	}
	for s, v := range n {
		if !containsStatus(s) {
			ch <- prometheus.MustNewConstMetric(m.images, prometheus.GaugeValue, float64(v), string(s))
		}
	}
}

func containsStatus(s store.Status) bool {
	for _, t := range statuses {
		if t == s {
			return true
		}
	}
	return false
}

// op returns the series of operation o, creating them at its first use
// (so the endpoint lists only operations that happened).
func (m *Metrics) op(o op) *opMetrics {
	if p := m.ops[o].Load(); p != nil {
		return p
	}
	name := opNames[o]
	p := &opMetrics{
		requests: m.requests.WithLabelValues(name),
		errors:   m.errors.WithLabelValues(name),
		latency:  m.latency.WithLabelValues(name),
	}
	// A racing first use builds the same series (WithLabelValues returns
	// the existing child); either pointer will do.
	m.ops[o].Store(p)
	return p
}

// done records one request of o that started at t and answered st.
func (m *Metrics) done(o op, t time.Time, st fuse.Status) {
	p := m.op(o)
	p.requests.Inc()
	p.latency.Observe(time.Since(t).Seconds())
	if st != fuse.OK {
		p.errors.Inc()
	}
}

// Wrap returns raw with every request counted and timed.
func (m *Metrics) Wrap(raw fuse.RawFileSystem) fuse.RawFileSystem {
	return &metricsFS{RawFileSystem: raw, m: m}
}

type op int

const (
	opLookup op = iota
	opForget
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	opCreate
	opTmpfile
	opOpen
	opRead
	opLseek
	opGetlk
	opSetlk
	opSetlkw
	opRelease
	opWrite
	opCopyFileRange
	opIoctl
	opFlush
	opFsync
	opFallocate
	opOpendir
	opReaddir
	opReaddirplus
	opReleasedir
	opFsyncdir
	opStatfs
	opStatx
	opCount
)

// opNames are the op label values: the FUSE opcode names, lower case.
var opNames = [opCount]string{
	opLookup: "lookup", opForget: "forget", opGetattr: "getattr", opSetattr: "setattr",
	opMknod: "mknod", opMkdir: "mkdir", opUnlink: "unlink", opRmdir: "rmdir",
	opRename: "rename", opLink: "link", opSymlink: "symlink", opReadlink: "readlink",
	opAccess: "access", opGetxattr: "getxattr", opListxattr: "listxattr",
	opSetxattr: "setxattr", opRemovexattr: "removexattr", opCreate: "create",
	opTmpfile: "tmpfile", opOpen: "open", opRead: "read", opLseek: "lseek",
	opGetlk: "getlk", opSetlk: "setlk", opSetlkw: "setlkw", opRelease: "release",
	opWrite: "write", opCopyFileRange: "copy_file_range", opIoctl: "ioctl",
	opFlush: "flush", opFsync: "fsync", opFallocate: "fallocate", opOpendir: "opendir",
	opReaddir: "readdir", opReaddirplus: "readdirplus", opReleasedir: "releasedir",
	opFsyncdir: "fsyncdir", opStatfs: "statfs", opStatx: "statx",
}

// metricsFS counts and times every request of the RawFileSystem it
// wraps. Methods that are not requests (String, SetDebug, Init,
// OnUnmount) pass through the embedded interface.
type metricsFS struct {
	fuse.RawFileSystem
	m *Metrics
}

type cancelCh = <-chan struct{}

func (w *metricsFS) Lookup(c cancelCh, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Lookup(c, h, name, out)
	w.m.done(opLookup, t, st)
	return st
}

func (w *metricsFS) Forget(nodeid, nlookup uint64) {
	t := time.Now()
	w.RawFileSystem.Forget(nodeid, nlookup)
	w.m.done(opForget, t, fuse.OK)
}

func (w *metricsFS) GetAttr(c cancelCh, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.GetAttr(c, in, out)
	w.m.done(opGetattr, t, st)
	return st
}

func (w *metricsFS) SetAttr(c cancelCh, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.SetAttr(c, in, out)
	w.m.done(opSetattr, t, st)
	return st
}

func (w *metricsFS) Mknod(c cancelCh, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Mknod(c, in, name, out)
	w.m.done(opMknod, t, st)
	return st
}

func (w *metricsFS) Mkdir(c cancelCh, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Mkdir(c, in, name, out)
	w.m.done(opMkdir, t, st)
	return st
}

func (w *metricsFS) Unlink(c cancelCh, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Unlink(c, h, name)
	w.m.done(opUnlink, t, st)
	return st
}

func (w *metricsFS) Rmdir(c cancelCh, h *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Rmdir(c, h, name)
	w.m.done(opRmdir, t, st)
	return st
}

func (w *metricsFS) Rename(c cancelCh, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Rename(c, in, oldName, newName)
	w.m.done(opRename, t, st)
	return st
}

func (w *metricsFS) Link(c cancelCh, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Link(c, in, name, out)
	w.m.done(opLink, t, st)
	return st
}

func (w *metricsFS) Symlink(c cancelCh, h *fuse.InHeader, pointedTo, linkName string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Symlink(c, h, pointedTo, linkName, out)
	w.m.done(opSymlink, t, st)
	return st
}

func (w *metricsFS) Readlink(c cancelCh, h *fuse.InHeader) ([]byte, fuse.Status) {
	t := time.Now()
	b, st := w.RawFileSystem.Readlink(c, h)
	w.m.done(opReadlink, t, st)
	return b, st
}

func (w *metricsFS) Access(c cancelCh, in *fuse.AccessIn) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Access(c, in)
	w.m.done(opAccess, t, st)
	return st
}

func (w *metricsFS) GetXAttr(c cancelCh, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.GetXAttr(c, h, attr, dest)
	w.m.done(opGetxattr, t, st)
	return n, st
}

func (w *metricsFS) ListXAttr(c cancelCh, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.ListXAttr(c, h, dest)
	w.m.done(opListxattr, t, st)
	return n, st
}

func (w *metricsFS) SetXAttr(c cancelCh, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.SetXAttr(c, in, attr, data)
	w.m.done(opSetxattr, t, st)
	return st
}

func (w *metricsFS) RemoveXAttr(c cancelCh, h *fuse.InHeader, attr string) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.RemoveXAttr(c, h, attr)
	w.m.done(opRemovexattr, t, st)
	return st
}

func (w *metricsFS) Create(c cancelCh, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Create(c, in, name, out)
	w.m.done(opCreate, t, st)
	return st
}

func (w *metricsFS) Tmpfile(c cancelCh, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Tmpfile(c, in, out)
	w.m.done(opTmpfile, t, st)
	return st
}

func (w *metricsFS) Open(c cancelCh, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Open(c, in, out)
	w.m.done(opOpen, t, st)
	return st
}

func (w *metricsFS) Read(c cancelCh, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := time.Now()
	res, st := w.RawFileSystem.Read(c, in, buf)
	if st == fuse.OK && res != nil {
		w.m.readBytes.Add(float64(res.Size()))
	}
	w.m.done(opRead, t, st)
	return res, st
}

func (w *metricsFS) Lseek(c cancelCh, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Lseek(c, in, out)
	w.m.done(opLseek, t, st)
	return st
}

func (w *metricsFS) GetLk(c cancelCh, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.GetLk(c, in, out)
	w.m.done(opGetlk, t, st)
	return st
}

func (w *metricsFS) SetLk(c cancelCh, in *fuse.LkIn) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.SetLk(c, in)
	w.m.done(opSetlk, t, st)
	return st
}

func (w *metricsFS) SetLkw(c cancelCh, in *fuse.LkIn) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.SetLkw(c, in)
	w.m.done(opSetlkw, t, st)
	return st
}

func (w *metricsFS) Release(c cancelCh, in *fuse.ReleaseIn) {
	t := time.Now()
	w.RawFileSystem.Release(c, in)
	w.m.done(opRelease, t, fuse.OK)
}

func (w *metricsFS) Write(c cancelCh, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.Write(c, in, data)
	w.m.writtenBytes.Add(float64(n))
	w.m.done(opWrite, t, st)
	return n, st
}

// Writev is how go-fuse delivers WRITE; on ENOSYS it calls Write, which
// counts the request instead.
func (w *metricsFS) Writev(c cancelCh, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.Writev(c, in, data)
	if st == fuse.ENOSYS {
		return n, st
	}
	w.m.writtenBytes.Add(float64(n))
	w.m.done(opWrite, t, st)
	return n, st
}

func (w *metricsFS) CopyFileRange(c cancelCh, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.CopyFileRange(c, in)
	w.m.writtenBytes.Add(float64(n))
	w.m.done(opCopyFileRange, t, st)
	return n, st
}

func (w *metricsFS) Ioctl(c cancelCh, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Ioctl(c, in, inbuf, out, outbuf)
	w.m.done(opIoctl, t, st)
	return st
}

func (w *metricsFS) Flush(c cancelCh, in *fuse.FlushIn) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Flush(c, in)
	w.m.done(opFlush, t, st)
	return st
}

func (w *metricsFS) Fsync(c cancelCh, in *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Fsync(c, in)
	w.m.done(opFsync, t, st)
	return st
}

func (w *metricsFS) Fallocate(c cancelCh, in *fuse.FallocateIn) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Fallocate(c, in)
	w.m.done(opFallocate, t, st)
	return st
}

func (w *metricsFS) OpenDir(c cancelCh, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.OpenDir(c, in, out)
	w.m.done(opOpendir, t, st)
	return st
}

func (w *metricsFS) ReadDir(c cancelCh, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.ReadDir(c, in, out)
	w.m.done(opReaddir, t, st)
	return st
}

func (w *metricsFS) ReadDirPlus(c cancelCh, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.ReadDirPlus(c, in, out)
	w.m.done(opReaddirplus, t, st)
	return st
}

func (w *metricsFS) ReleaseDir(in *fuse.ReleaseIn) {
	t := time.Now()
	w.RawFileSystem.ReleaseDir(in)
	w.m.done(opReleasedir, t, fuse.OK)
}

func (w *metricsFS) FsyncDir(c cancelCh, in *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.FsyncDir(c, in)
	w.m.done(opFsyncdir, t, st)
	return st
}

func (w *metricsFS) StatFs(c cancelCh, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.StatFs(c, h, out)
	w.m.done(opStatfs, t, st)
	return st
}

func (w *metricsFS) Statx(c cancelCh, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	t := time.Now()
	st := w.RawFileSystem.Statx(c, in, out)
	w.m.done(opStatx, t, st)
	return st
}
