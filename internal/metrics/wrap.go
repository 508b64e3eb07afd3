package metrics

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// wrap_gen.go holds the op constants, their label values and a wrapper
// for each request method of fuse.RawFileSystem not written here, made by
// internal/wrapgen; TestWrappersGenerated fails when it is stale.

//go:generate go run gen.go

// op is a FUSE operation, the op label of the request series.
type op int

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

// metricsFS counts and times every request of the RawFileSystem it
// wraps. Methods that are not requests (String, SetDebug, Init,
// OnUnmount) pass through the embedded interface.
type metricsFS struct {
	fuse.RawFileSystem
	m *Metrics
}

// The wrappers below count bytes too; wrap_gen.go has the others.

func (w *metricsFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := time.Now()
	res, st := w.RawFileSystem.Read(cancel, in, buf)
	if st == fuse.OK && res != nil {
		w.m.readBytes.Add(float64(res.Size()))
	}
	w.m.done(opRead, t, st)
	return res, st
}

func (w *metricsFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.Write(cancel, in, data)
	w.m.writtenBytes.Add(float64(n))
	w.m.done(opWrite, t, st)
	return n, st
}

// Writev is how go-fuse delivers WRITE; on ENOSYS it calls Write, which
// counts the request instead.
func (w *metricsFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.Writev(cancel, in, data)
	if st == fuse.ENOSYS {
		return n, st
	}
	w.m.writtenBytes.Add(float64(n))
	w.m.done(opWrite, t, st)
	return n, st
}

func (w *metricsFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	t := time.Now()
	n, st := w.RawFileSystem.CopyFileRange(cancel, in)
	w.m.writtenBytes.Add(float64(n))
	w.m.done(opCopyFileRange, t, st)
	return n, st
}
