// Package swiftdata is a store.DataBackend that keeps sealed image data in
// OpenStack Swift and serves it from a verified cache on every host.
//
// Objects: image ID is the static large object (SLO) manifest CONTAINER/ID;
// its segments are CONTAINER_segments/ID/00000000, 00000001, ... of
// Config.SegmentSize bytes (the last one shorter). A seal (Put) uploads
// the segments straight from the staging file (no segment is buffered in
// memory), each checked against the ETag Swift returns, then the manifest;
// the data is in Swift only when the manifest is.
//
// Cache: CACHE/ID.vhd (mode 0400) are complete copies, each verified when
// it came in: the sealing host's staging file (moved in by Put), or a
// download whose size, MD5 and SHA-512 matched the catalog's record (Open's
// want). One download at a time per image; other openers wait for it. A
// download that does not match is moved to CACHE/quarantine/ and the open
// fails (store.ErrDataStore, EIO at the filesystem), with a log line and a
// counter; so does one Swift refuses because the first segment does not
// match the manifest (409 Conflict), with nothing to quarantine. A later
// segment that does not match cuts the download short in Swift: a failed
// download (counted as such), indistinguishable from a broken connection. Past Config.CacheSize, the least recently opened copies that no
// file of this process has open are removed.
//
// Remove is delayed (Config.DeleteDelay): the copy leaves the cache at
// its last close (at once when no file has it open; evict.go), the
// objects after the delay, so that hosts still downloading the image
// finish; the pending deletions are kept in CACHE/deletes/ (with the
// time of their Remove) and resumed by the next New, due its own delay
// after their Remove. Every other host drops its copy the same way when
// the store tells it the catalog deleted the image (Evict,
// store.DataCache).
//
// Every Swift call is bounded: Config.Timeout to connect and get an
// answer, and as the longest pause of a transfer.
package swiftdata

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imagefs/imagefs/store"
	"github.com/ncw/swift/v2"
)

// Defaults of Config.
const (
	DefaultSegmentSize = 64 << 20
	DefaultTimeout     = 10 * time.Second
	DefaultDeleteDelay = 10 * time.Minute
	// MaxSegments is Swift's default cap on an SLO manifest's segments.
	MaxSegments = 1000
)

// Config configures a Backend.
type Config struct {
	// Conn is the Swift account (credentials and auth URL set; see
	// swift.Connection.ApplyEnvironment). New sets its timeouts and
	// retries; it authenticates at the first call.
	Conn *swift.Connection
	// Container holds the manifests; Container+"_segments" the segments.
	// Both are created when missing.
	Container string
	// SegmentSize is the size of a segment in bytes (default 64 MiB; an
	// image may have at most 1000 segments).
	SegmentSize int64
	// CacheDir is this host's cache directory (created 0700).
	CacheDir string
	// CacheSize is the cache's byte budget; 0: unlimited. Copies that are
	// open are never removed, so the cache may exceed it.
	CacheSize int64
	// DeleteDelay is how long after Remove the objects are deleted
	// (default 10 min; negative: at once); for the deletions a previous
	// Backend left pending too, counted from their Remove.
	DeleteDelay time.Duration
	// Timeout bounds every Swift call: to connect and get an answer, and
	// the longest pause of a transfer (default 10 s).
	Timeout time.Duration
	// Host names this host in log lines.
	Host   string
	Logger *slog.Logger
}

// Stats are a Backend's counters since New.
type Stats struct {
	Fetches        int64 // downloads into the cache that completed verified
	FetchBytes     int64
	FetchFailures  int64 // downloads that failed (Swift error or mismatch)
	VerifyFailures int64 // downloads that did not match the record (quarantined)
	CacheHits      int64 // opens served by a copy already in the cache
	Uploads        int64 // seals whose segments and manifest are in Swift
	UploadBytes    int64
	UploadFailures int64
	Streamed       int64 // segments sent while their upload was still written
	Evictions      int64
	Deletes        int64 // images whose objects were deleted
	DeletesPending int64
	CacheBytes     int64
	CacheEntries   int64
}

// Backend is the Swift DataBackend. Its methods are safe for concurrent
// use.
type Backend struct {
	cfg      Config
	conn     *swift.Connection
	segments string
	log      *slog.Logger

	containersOnce sync.Mutex
	containersOK   bool

	mu       sync.Mutex
	entries  map[string]*entry // cached copies by id
	fetching map[string]*fetch // downloads in flight by id
	bytes    int64
	timers   map[string]*time.Timer // pending deletions
	streams  map[string]*stream     // uploads being sent, by staging path
	doomed   map[string]string      // copies of deleted images, gone at their last close: why
	pins     map[string]int         // Opens in progress by id (evict.go)
	aborts   sync.WaitGroup         // deletions of aborted streams' segments
	closed   bool

	reapStop chan struct{} // stops the reaper (evict.go)
	closes   *os.File      // inotify: closes in the cache directory; nil: polled

	st struct {
		fetches, fetchBytes, fetchFailures, verifyFailures, hits atomic.Int64
		uploads, uploadBytes, uploadFailures, evictions, deletes atomic.Int64
		streamed                                                 atomic.Int64
	}
}

type entry struct {
	size    int64
	lastUse time.Time
}

type fetch struct {
	done chan struct{}
	err  error
}

// New returns a Backend on cfg. It makes the cache directory, takes the
// copies already there, removes unfinished downloads, and schedules the
// pending deletions. It does not reach Swift (a host serves its cached
// images while Swift is down).
func New(cfg Config) (*Backend, error) {
	if cfg.Conn == nil {
		return nil, errors.New("swiftdata: no Swift connection")
	}
	if cfg.Container == "" || strings.ContainsAny(cfg.Container, "/?#") {
		return nil, fmt.Errorf("swiftdata: container %q: want a name without / ? #", cfg.Container)
	}
	if cfg.CacheDir == "" {
		return nil, errors.New("swiftdata: no cache directory")
	}
	if cfg.SegmentSize <= 0 {
		cfg.SegmentSize = DefaultSegmentSize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.DeleteDelay == 0 {
		cfg.DeleteDelay = DefaultDeleteDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := cfg.Conn
	c.ConnectTimeout = cfg.Timeout
	c.Timeout = cfg.Timeout
	c.Retries = 1
	b := &Backend{
		cfg: cfg, conn: c, segments: cfg.Container + "_segments",
		log:      cfg.Logger.With("data", "swift://"+cfg.Container, "host", cfg.Host),
		entries:  map[string]*entry{},
		fetching: map[string]*fetch{},
		timers:   map[string]*time.Timer{},
		streams:  map[string]*stream{},
		doomed:   map[string]string{},
		pins:     map[string]int{},
	}
	for _, d := range []string{cfg.CacheDir, b.quarantineDir(), b.deletesDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("swiftdata: cache directory: %w", err)
		}
	}
	ents, err := os.ReadDir(cfg.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("swiftdata: cache directory: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			os.Remove(filepath.Join(cfg.CacheDir, name)) // a download cut short
			continue
		}
		id, ok := strings.CutSuffix(name, ".vhd")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		b.entries[id] = &entry{size: fi.Size(), lastUse: fi.ModTime()}
		b.bytes += fi.Size()
	}
	dels, _ := os.ReadDir(b.deletesDir())
	for _, e := range dels {
		raw, err := os.ReadFile(filepath.Join(b.deletesDir(), e.Name()))
		if err != nil {
			continue
		}
		b.schedule(e.Name(), time.Until(b.dueOf(string(raw))))
	}
	b.startReaper()
	return b, nil
}

// Check authenticates and creates the containers if missing (bounded
// like every call); the error says why Swift cannot be used now.
func (b *Backend) Check() error { return b.ensureContainers() }

// Close stops the pending deletions' timers (they stay recorded in the
// cache directory for the next New) and the reaper of deleted images'
// copies (those still held stay in the cache, and the next mount's store
// evicts them: store.DataCache), and waits (3 timeouts at most) for the
// segments of aborted streams (uploads dropped at unmount) to be
// deleted.
func (b *Backend) Close() error {
	done := make(chan struct{})
	go func() { b.aborts.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * b.cfg.Timeout):
		b.log.Warn("segments of dropped uploads may be left in Swift (it did not answer in time)")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.stopReaper()
	}
	b.closed = true
	for id, t := range b.timers {
		t.Stop()
		delete(b.timers, id)
	}
	return nil
}

// Stats returns the counters.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	cb, ce, dp := b.bytes, int64(len(b.entries)), int64(len(b.timers))
	b.mu.Unlock()
	return Stats{
		Fetches: b.st.fetches.Load(), FetchBytes: b.st.fetchBytes.Load(),
		FetchFailures: b.st.fetchFailures.Load(), VerifyFailures: b.st.verifyFailures.Load(),
		CacheHits: b.st.hits.Load(), Uploads: b.st.uploads.Load(), UploadBytes: b.st.uploadBytes.Load(),
		UploadFailures: b.st.uploadFailures.Load(), Streamed: b.st.streamed.Load(), Evictions: b.st.evictions.Load(),
		Deletes: b.st.deletes.Load(), DeletesPending: dp, CacheBytes: cb, CacheEntries: ce,
	}
}

func (b *Backend) cachePath(id string) string { return filepath.Join(b.cfg.CacheDir, id+".vhd") }
func (b *Backend) quarantineDir() string      { return filepath.Join(b.cfg.CacheDir, "quarantine") }
func (b *Backend) deletesDir() string         { return filepath.Join(b.cfg.CacheDir, "deletes") }

// segName is the name of segment i under prefix (ID/UPLOAD) in the
// segments container.
func segName(prefix string, i int) string { return fmt.Sprintf("%s/%08d", prefix, i) }

// uploadPrefix is the segments' prefix of the upload of image id staged
// at path by this host: ID/ and a name of that staging file's own, so that
// two uploads of one image (a scratch file renamed onto image.vhd while
// image.vhd is written) never share a segment, then "@HOST" (Config.Host,
// when it has a host id's characters only), so that fsck tells the
// segments of a host that is gone (orphans) from an upload in progress.
func (b *Backend) uploadPrefix(id, path string) string {
	p := uploadPrefix(id, path)
	if h := b.cfg.Host; h != "" && strings.Trim(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == "" {
		p += "@" + h
	}
	return p
}

// uploadPrefix is Backend.uploadPrefix without the host.
func uploadPrefix(id, path string) string {
	base := strings.TrimPrefix(filepath.Base(path), id)
	base = strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, strings.Trim(base, "."))
	if base == "" {
		base = strconv.FormatInt(time.Now().UnixNano(), 10)
	}
	return id + "/" + base
}

// failure wraps err as a store.ErrDataStore with what failed; err's text
// only (a network error must not reach the filesystem as its errno).
func failure(what string, err error) error {
	return fmt.Errorf("%w: %s: %v", store.ErrDataStore, what, err)
}

// call returns a context bounded for one call that moves no data.
func (b *Backend) call() (context.Context, context.CancelFunc) {
	// Connect and answer are bounded by the connection's timeouts; this
	// covers authentication and retries too.
	return context.WithTimeout(context.Background(), 3*b.cfg.Timeout)
}

// ensureContainers creates the two containers once (PUT is idempotent).
func (b *Backend) ensureContainers() error {
	b.containersOnce.Lock()
	defer b.containersOnce.Unlock()
	if b.containersOK {
		return nil
	}
	ctx, cancel := b.call()
	defer cancel()
	for _, c := range []string{b.cfg.Container, b.segments} {
		if err := b.conn.ContainerCreate(ctx, c, nil); err != nil {
			return failure("create container "+c, err)
		}
	}
	b.containersOK = true
	return nil
}

// sloSegment is one entry of an SLO manifest.
type sloSegment struct {
	Path string `json:"path"`
	Etag string `json:"etag"`
	Size int64  `json:"size_bytes"`
}

// Put uploads the staging file at path as image id's segments and
// manifest, then moves it into the cache as the first verified copy
// (removed instead when the cache is on another filesystem). A failure
// removes the segments uploaded so far (best effort), leaves the staging
// file, and wraps store.ErrDataStore.
func (b *Backend) Put(id, path string) (err error) {
	start := time.Now()
	defer func() {
		if err != nil {
			b.st.uploadFailures.Add(1)
			b.log.Error("upload to Swift failed", "id", id, "err", err)
		}
	}()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	nseg := int((size + b.cfg.SegmentSize - 1) / b.cfg.SegmentSize)
	if nseg == 0 {
		nseg = 1
	}
	if nseg > MaxSegments {
		return fmt.Errorf("%w: image %s: %d bytes make %d segments of %d bytes, more than Swift's %d", store.ErrDataStore, id, size, nseg, b.cfg.SegmentSize, MaxSegments)
	}
	prefix := b.uploadPrefix(id, path)
	// Segments sent while the writer wrote (Stream) are kept.
	manifest, streamed := b.takeStream(path)
	if streamed != "" {
		prefix = streamed
	}
	nStreamed := len(manifest)
	defer func() {
		if err != nil {
			b.deleteSegments(prefix)
		}
	}()
	if err := b.ensureContainers(); err != nil {
		return err
	}
	for i := len(manifest); i < nseg; i++ {
		off := int64(i) * b.cfg.SegmentSize
		n := min(b.cfg.SegmentSize, size-off)
		// checkHash: the MD5 computed while sending must be the ETag
		// Swift answers. No deadline on the whole transfer: the
		// connection's timeout bounds each pause.
		seg, perr := b.putSegment(prefix, i, io.NewSectionReader(f, off, n))
		if perr != nil {
			return failure(fmt.Sprintf("upload segment %d of image %s", i, id), perr)
		}
		manifest = append(manifest, seg)
	}
	body, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	if err := b.putManifest(id, body); err != nil {
		// It may have reached Swift all the same (an answer lost):
		// no manifest may point at the segments removed below.
		ctx, cancel := b.call()
		b.conn.ObjectDelete(ctx, b.cfg.Container, id)
		cancel()
		return err
	}
	b.st.uploads.Add(1)
	b.st.uploadBytes.Add(size)
	b.log.Info("image uploaded to Swift", "id", id, "size", size, "segments", nseg,
		"segments_streamed", nStreamed, "upload_ms", time.Since(start).Milliseconds())

	// The staging file is verified (the store hashed it): the first copy.
	if err := os.Chmod(path, 0o400); err == nil {
		if err := os.Rename(path, b.cachePath(id)); err == nil {
			syncDir(b.cfg.CacheDir)
			b.added(id, size)
			return nil
		}
	}
	os.Remove(path)
	return nil
}

// putSegment PUTs segment i of id from r. A token Swift no longer takes
// (401: its tempauth memcached or Keystone restarted) is renewed and the
// segment sent again, once: the library cannot rewind a body it hashes.
func (b *Backend) putSegment(prefix string, i int, r *io.SectionReader) (sloSegment, error) {
	name := segName(prefix, i)
	for attempt := 0; ; attempt++ {
		// checkHash: the MD5 computed while sending must be the ETag
		// Swift answers. No deadline on the whole transfer: the
		// connection's timeout bounds each pause.
		h, err := b.conn.ObjectPut(context.Background(), b.segments, name,
			r, true, "", "application/octet-stream",
			swift.Headers{"Content-Length": strconv.FormatInt(r.Size(), 10)})
		if err == nil {
			return sloSegment{Path: "/" + b.segments + "/" + name, Etag: h["Etag"], Size: r.Size()}, nil
		}
		if attempt > 0 || !errors.Is(err, swift.AuthorizationFailed) {
			return sloSegment{}, err
		}
		b.conn.UnAuthenticate()
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return sloSegment{}, err
		}
	}
}

// putManifest PUTs the SLO manifest of id.
func (b *Backend) putManifest(id string, body []byte) error {
	ctx, cancel := b.call()
	defer cancel()
	if !b.conn.Authenticated() {
		if err := b.conn.Authenticate(ctx); err != nil {
			return failure("authenticate", err)
		}
	}
	_, _, err := b.conn.Call(ctx, b.conn.StorageUrl, swift.RequestOpts{
		Container: b.cfg.Container, ObjectName: id, Operation: "PUT",
		Parameters: url.Values{"multipart-manifest": {"put"}},
		Headers: swift.Headers{"Content-Type": "application/octet-stream",
			"Content-Length": strconv.Itoa(len(body))},
		Body: bytes.NewReader(body), NoResponse: true,
		OnReAuth: func() (string, error) { return b.conn.StorageUrl, nil },
	})
	if err != nil {
		return failure("upload the manifest of image "+id, err)
	}
	return nil
}

// deleteSegments deletes the segments under prefix (an image's ID, or an
// upload's ID/UPLOAD); errors are logged and the first returned.
func (b *Backend) deleteSegments(prefix string) error {
	ctx, cancel := b.call()
	defer cancel()
	names, err := b.conn.ObjectNamesAll(ctx, b.segments, &swift.ObjectsOpts{Prefix: prefix + "/"})
	if errors.Is(err, swift.ContainerNotFound) {
		return nil
	}
	if err != nil {
		b.log.Warn("listing segments to delete failed", "prefix", prefix, "err", err)
		return err
	}
	var first error
	for _, name := range names {
		if derr := b.conn.ObjectDelete(ctx, b.segments, name); derr != nil && !errors.Is(derr, swift.ObjectNotFound) {
			b.log.Warn("deleting a segment failed", "segment", name, "err", derr)
			if first == nil {
				first = derr
			}
		}
	}
	return first
}

// Open returns a verified copy of image id from the cache, downloading it
// first when this host has none. want must give the size and at least one
// hash (else only a cached copy is served). A copy whose size is not
// want.Size is dropped and fetched again. A copy Remove or Evict doomed
// is still served (the caller found the record before the delete): it
// goes at its last close. Errors wrap store.ErrDataStore.
func (b *Backend) Open(id string, want store.Expect) (*os.File, error) {
	b.pin(id)
	defer b.unpin(id)
	fetched := false // by this call: its open of the copy is no cache hit
	for {
		b.mu.Lock()
		if b.entries[id] != nil {
			f, err := os.Open(b.cachePath(id))
			if err == nil {
				if fi, serr := f.Stat(); serr == nil && (want.Size <= 0 || fi.Size() == want.Size) {
					b.entries[id].lastUse = time.Now()
					b.mu.Unlock()
					if !fetched {
						b.st.hits.Add(1)
					}
					return f, nil
				}
				f.Close()
				b.log.Warn("cached copy has the wrong size; fetched again", "id", id, "want_size", want.Size)
			}
			b.dropLocked(id)
		}
		if fe := b.fetching[id]; fe != nil {
			b.mu.Unlock()
			<-fe.done
			if fe.err != nil {
				return nil, fe.err
			}
			continue // served from the cache now
		}
		if want.Size <= 0 || want.MD5 == "" && want.SHA512 == "" {
			b.mu.Unlock()
			return nil, fmt.Errorf("%w: image %s is not in this host's cache and the catalog records no size and hash to verify a download against", store.ErrDataStore, id)
		}
		fe := &fetch{done: make(chan struct{})}
		b.fetching[id] = fe
		b.mu.Unlock()

		fe.err = b.download(id, want)
		b.mu.Lock()
		delete(b.fetching, id)
		b.mu.Unlock()
		close(fe.done)
		if fe.err != nil {
			b.st.fetchFailures.Add(1)
			return nil, fe.err
		}
		fetched = true
	}
}

// download fetches image id into the cache, verified against want.
func (b *Backend) download(id string, want store.Expect) (err error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obj, _, err := b.conn.ObjectOpen(ctx, b.cfg.Container, id, false, nil)
	if se := (*swift.Error)(nil); errors.As(err, &se) && se.StatusCode == 409 {
		// Swift's SLO answers 409 Conflict when the first segment does
		// not match the manifest (swapped, changed or gone): the data
		// is not the image's. Nothing came, so nothing is quarantined.
		return b.refused(id, "Swift refused the download: its first segment does not match the manifest (409 Conflict; a segment swapped, changed or deleted)")
	}
	if err != nil {
		b.log.Error("download from Swift failed", "id", id, "err", err)
		return failure("download image "+id, err)
	}
	defer obj.Close()
	tmp, err := os.CreateTemp(b.cfg.CacheDir, ".tmp-"+id+"-*")
	if err != nil {
		return err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	md, sh := md5.New(), sha512.New()
	// One byte more than expected reveals a longer object.
	n, err := io.CopyBuffer(io.MultiWriter(tmp, md, sh), io.LimitReader(obj, want.Size+1), make([]byte, 1<<20))
	if err != nil {
		b.log.Error("download from Swift failed", "id", id, "bytes", n, "err", err)
		return failure("download image "+id, err)
	}
	if bad := mismatch(want, n, md, sh); bad != "" {
		return b.quarantine(id, tmp, bad)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o400); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), b.cachePath(id)); err != nil {
		return err
	}
	tmp = nil
	syncDir(b.cfg.CacheDir)
	b.st.fetches.Add(1)
	b.st.fetchBytes.Add(n)
	b.log.Info("image fetched from Swift into the cache", "id", id, "size", n,
		"fetch_ms", time.Since(start).Milliseconds())
	b.added(id, n)
	return nil
}

// mismatch says how the downloaded n bytes with hashes md and sh differ
// from want ("" when they match).
func mismatch(want store.Expect, n int64, md, sh hash.Hash) string {
	if n != want.Size {
		return fmt.Sprintf("size %d, catalog %d", n, want.Size)
	}
	if got := hex.EncodeToString(md.Sum(nil)); want.MD5 != "" && !strings.EqualFold(got, want.MD5) {
		return fmt.Sprintf("md5 %s, catalog checksum %s", got, want.MD5)
	}
	if got := hex.EncodeToString(sh.Sum(nil)); want.SHA512 != "" && !strings.EqualFold(got, want.SHA512) {
		return fmt.Sprintf("sha512 %s, catalog os_hash_value %s", got, want.SHA512)
	}
	return ""
}

// quarantine moves a download that does not match the record aside and
// returns the error of the open.
func (b *Backend) quarantine(id string, tmp *os.File, bad string) error {
	b.st.verifyFailures.Add(1)
	dst := filepath.Join(b.quarantineDir(), fmt.Sprintf("%s.%d.vhd", id, time.Now().UnixNano()))
	tmp.Chmod(0o400)
	if err := os.Rename(tmp.Name(), dst); err != nil {
		dst = "(removed: " + err.Error() + ")"
	}
	b.log.Error("image data from Swift does not match the catalog; download quarantined, open refused",
		"id", id, "mismatch", bad, "quarantined", dst)
	return fmt.Errorf("%w: image %s: the data in Swift does not match the catalog (%s); quarantined in %s", store.ErrDataStore, id, bad, dst)
}

// refused counts and logs a download Swift refused because the image's
// objects do not match each other (a verification failure, as a
// quarantined download) and returns the error of the open.
func (b *Backend) refused(id, bad string) error {
	b.st.verifyFailures.Add(1)
	b.log.Error("image data from Swift does not match the catalog; open refused",
		"id", id, "mismatch", bad)
	return fmt.Errorf("%w: image %s: the data in Swift does not match the catalog (%s)", store.ErrDataStore, id, bad)
}

// added records a new copy and evicts past the budget.
func (b *Backend) added(id string, size int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old := b.entries[id]; old != nil {
		b.bytes -= old.size
	}
	b.entries[id] = &entry{size: size, lastUse: time.Now()}
	b.bytes += size
	b.evictLocked(id)
}

// dropLocked forgets and removes the copy of id (a file open elsewhere
// keeps reading it). Must hold b.mu.
func (b *Backend) dropLocked(id string) {
	if e := b.entries[id]; e != nil {
		b.bytes -= e.size
		delete(b.entries, id)
	}
	delete(b.doomed, id)
	os.Remove(b.cachePath(id))
}

// evictLocked removes the least recently opened copies that no file of
// this process has open, other than keep, until the cache fits its
// budget. Must hold b.mu.
func (b *Backend) evictLocked(keep string) {
	if b.cfg.CacheSize <= 0 || b.bytes <= b.cfg.CacheSize {
		return
	}
	open := openFiles()
	ids := make([]string, 0, len(b.entries))
	for id := range b.entries {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(x, y string) int { return b.entries[x].lastUse.Compare(b.entries[y].lastUse) })
	for _, id := range ids {
		if b.bytes <= b.cfg.CacheSize {
			return
		}
		if id == keep || open[b.cachePath(id)] {
			continue
		}
		size := b.entries[id].size
		b.dropLocked(id)
		b.st.evictions.Add(1)
		b.log.Info("cached copy evicted", "id", id, "size", size, "cache_bytes", b.bytes, "cache_size", b.cfg.CacheSize)
	}
}

// openFiles returns the paths of the files this process has open.
func openFiles() map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if p, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			m[p] = true
		}
	}
	return m
}

// Blocks returns st_blocks of the cached copy of id; an image this host
// has not cached is an error (the caller counts its size instead).
func (b *Backend) Blocks(id string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(b.cachePath(id), &st); err != nil {
		return 0, fmt.Errorf("image %s: no copy in this host's cache: %w", id, err)
	}
	return st.Blocks, nil
}

// Remove drops the cached copy of id at its last close (at once when no
// file has it open; evict.go), marks its manifest deleted (deletedHeader:
// the time and this host, which fsck reads to leave the objects to this
// delete), and deletes its objects after the delete delay; the pending
// deletion is recorded in the cache directory and survives a restart. A
// mark Swift did not take is an error (the deletion is scheduled all the
// same): the store keeps the image's tombstone, which tells fsck the same.
func (b *Backend) Remove(id string) error {
	now := time.Now()
	rec := deletedPrefix + now.UTC().Format(time.RFC3339Nano) + "\n"
	b.mu.Lock()
	b.doomLocked(id, "deleted on this host")
	b.mu.Unlock()
	if err := os.WriteFile(filepath.Join(b.deletesDir(), id), []byte(rec), 0o600); err != nil {
		return err
	}
	b.schedule(id, time.Until(b.dueOf(rec)))
	return b.markDeleted(id, now)
}

// deletedPrefix starts a pending deletion's record, CACHE/deletes/ID:
// "deleted=" and the time of Remove (RFC 3339, UTC). Its objects go
// DeleteDelay after that time, the delay of the Backend that does it:
// a delay changed between mounts applies to the pending deletions too.
// (A record of an older version holds the due time alone.)
const deletedPrefix = "deleted="

// dueOf returns when the pending deletion recorded as rec is due (now
// when rec cannot be read).
func (b *Backend) dueOf(rec string) time.Time {
	rec = strings.TrimSpace(rec)
	at, deleted := strings.CutPrefix(rec, deletedPrefix)
	t, err := time.Parse(time.RFC3339Nano, at)
	switch {
	case err != nil:
		return time.Now()
	case deleted:
		return t.Add(max(b.cfg.DeleteDelay, 0))
	}
	return t
}

// schedule deletes the objects of id after d (again a minute later when
// Swift fails).
func (b *Backend) schedule(id string, d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if t := b.timers[id]; t != nil {
		t.Stop()
	}
	b.timers[id] = time.AfterFunc(max(d, 0), func() {
		if err := b.deleteObjects(id); err != nil {
			b.log.Warn("deleting the objects of a deleted image failed; retried in a minute", "id", id, "err", err)
			b.schedule(id, time.Minute)
			return
		}
		b.mu.Lock()
		delete(b.timers, id)
		b.mu.Unlock()
		os.Remove(filepath.Join(b.deletesDir(), id))
		b.st.deletes.Add(1)
		b.log.Info("objects of a deleted image removed from Swift", "id", id)
	})
}

// deleteObjects deletes the manifest of id, then its segments.
func (b *Backend) deleteObjects(id string) error {
	ctx, cancel := b.call()
	err := b.conn.ObjectDelete(ctx, b.cfg.Container, id)
	cancel()
	if err != nil && !errors.Is(err, swift.ObjectNotFound) && !errors.Is(err, swift.ContainerNotFound) {
		return err
	}
	return b.deleteSegments(id)
}

// List returns the ids that have a manifest in Swift.
func (b *Backend) List() ([]string, error) {
	ctx, cancel := b.call()
	defer cancel()
	names, err := b.conn.ObjectNamesAll(ctx, b.cfg.Container, nil)
	if errors.Is(err, swift.ContainerNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, failure("list container "+b.cfg.Container, err)
	}
	return names, nil
}

// Cached reports whether this host has a verified copy of id.
func (b *Backend) Cached(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.entries[id] != nil
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}

// The identity of the data store (store.DataIdentity): a Swift
// container's is its name, swift://CONTAINER, known without reaching
// Swift. A shared catalog records it in meta/data-dir as it records a
// data directory's identity file, so that it is served by one data store
// only: a host given a directory (or another container) for a catalog
// whose data is in this container is refused at mount, and the other
// way round.

// DataID returns swift://CONTAINER.
func (b *Backend) DataID() (string, error) { return b.DataWhere(), nil }

// MarkDataID records nothing (the identity is the container's name) and
// returns swift://CONTAINER.
func (b *Backend) MarkDataID(string) (string, error) { return b.DataWhere(), nil }

// DataWhere returns swift://CONTAINER.
func (b *Backend) DataWhere() string { return "swift://" + b.cfg.Container }

var (
	_ store.DataBackend  = (*Backend)(nil)
	_ store.DataStreamer = (*Backend)(nil)
	_ store.DataIdentity = (*Backend)(nil)
)
