// Package metrics counts what a mount does, for the Prometheus endpoint of
// imagefs mount --metrics-addr (README, "Logs and metrics", lists every
// metric). Package fs serves through Metrics.Wrap (fs.Options.Metrics); the
// store reports its events to Metrics.Observe (store.Options.Events).
//
// The timing wrappers of fuse.RawFileSystem's requests are generated
// (wrap_gen.go); the few that count more than a request are written by
// hand in wrap.go.
package metrics

import (
	"sync/atomic"

	"github.com/imagefs/imagefs/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what a mount does, for a Prometheus endpoint: requests,
// errors and latencies per FUSE operation (as fs.Options.Metrics it wraps
// the mount's fuse.RawFileSystem), bytes read and written through the
// daemon, the store's events (it is a store.Observer: pass it as
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

// New returns metrics with every counter at zero.
func New() *Metrics {
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
