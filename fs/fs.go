// Package fs is the FUSE face of an imagefs store: the node tree of
// docs/layout.md, built on go-fuse's fs API. It stays thin: a handler
// turns a kernel request into a store call and maps the store's error to
// an errno (errno.go); the rules live in store/. (Rmdir and Rename in
// images/ first resolve the name to an image id, a second call; what fs
// keeps for itself is about the kernel: see docs/design.md.)
//
// Inode numbers are the store's stable numbers (Image.Ino), so image.vhd
// under images/<name>/ and by-id/<id>/ is one inode and numbers survive a
// remount. Sealed data is served by FUSE passthrough where the kernel
// allows it (reads never reach this process), else from the data file with
// the kernel page cache kept across opens (FOPEN_KEEP_CACHE): sealed bytes
// never change. The entries and attributes of image directories and
// property files, and the pages of property files, are kept until the
// image's record changes: every change drops them from the kernel before
// the request that made it replies (invalidate.go), so a value set
// through an xattr is read at once through the file and the other way
// round.
package fs

import (
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imagefs/imagefs/store"
	"golang.org/x/sys/unix"
)

// Inode numbers of the fixed directories.
const (
	inoRoot       = 1
	inoImages     = 2
	inoByID       = 3
	inoByProperty = 4
	inoByTag      = 5
)

// cacheTimeout is how long the kernel may cache entries and attributes of
// the fixed directories and data files. Changes made through the mount
// update the kernel's caches themselves. Image directories and property
// files are cached untilChanged (invalidate.go).
const cacheTimeout = time.Second

// uncached is the timeout of entries and attributes the kernel must not
// cache (scratch files, views, data being uploaded). The
// mount sets no default timeouts (go-fuse would put its default in place
// of a zero), so zero means zero and every node that may be cached says so
// with cacheTimeout or untilChanged.
const uncached = time.Duration(0)

// Options configure a mount.
type Options struct {
	AllowOther bool   // let other users use the mount (needs user_allow_other for non-root)
	Debug      bool   // log every FUSE request and reply
	Source     string // shown as the mount's source in df and /proc/mounts
	ReadOnly   bool
	// Logger receives go-fuse's messages (and with Debug its request
	// trace, at level debug); nil means slog.Default().
	Logger *slog.Logger
	// Metrics, when set, counts and times every request (package
	// internal/metrics).
	Metrics Metrics
	// MountOptions are more options for mount(2), such as "noexec".
	MountOptions []string
	// CacheNodes is about how many files and directories of images the
	// kernel may keep before the least recently used images are dropped
	// (reaper.go); 0 means DefaultCacheNodes.
	CacheNodes int
}

// Metrics instruments a mount: Mount gives it the store (SetStore, for
// gauges counted when scraped) and serves the requests through the
// RawFileSystem Wrap returns. *metrics.Metrics of internal/metrics is one.
type Metrics interface {
	SetStore(st *store.Store)
	Wrap(raw fuse.RawFileSystem) fuse.RawFileSystem
}

// DefaultCacheNodes is Options.CacheNodes by default: about 32 MB of
// daemon memory, enough for grep over one property of 10,000 images to
// stay cached between runs.
const DefaultCacheNodes = 40_000

// FS is a mounted store.
type FS struct {
	st       *store.Store
	server   *fuse.Server
	rootNode *rootNode
	started  time.Time // times of the fixed directories
	// allowOther: other users use the mount; image entries are not cached.
	allowOther bool
	// usage says which images the kernel still uses (reaper.go).
	usage usage
	// cacheNodes is Options.CacheNodes (reaper.go).
	cacheNodes int
	// pageGates order invalidate against the page stores of opens
	// (notify.go).
	pageGates [64]pageGate
	// entries sends the kernel's entry notifications (notify.go); later
	// those of dropEntryLater, which may wait for a directory lock the
	// kernel holds for the request being served, so that they never hold
	// up the others (a view's entry after an rm in properties/).
	entries, later *entryNotifier
	// pathGetattrs holds the cancel channels of the GETATTR requests in
	// flight that came without a file handle (bypath.go).
	pathGetattrs sync.Map
	// backings are the passthrough backing files of sealed data
	// (passthrough.go).
	backings backings
	// ghosts are images deleted by an unlink of image.vhd, refused the
	// deletes refused that way (delete.go).
	ghosts  ghosts
	refused refusals
	// mntID is the mount's id (statx STATX_MNT_ID, mnt_id: in
	// /proc/PID/fdinfo), 0 when unknown (data.go, holdsFile). Set after
	// the server has started serving: atomic.
	mntID atomic.Uint64
}

// fixedDirAttr fills the attributes of a fixed directory.
func (f *FS) fixedDirAttr(a *fuse.Attr, mode uint32) {
	a.Mode = syscall.S_IFDIR | mode
	a.Nlink = 2
	a.SetTimes(&f.started, &f.started, &f.started)
}

// Mount serves st at mountpoint and returns once the mount is ready. As
// root it mounts directly (mount(2)); otherwise it uses fusermount3. Call
// Wait to serve until unmounted, Unmount to stop.
func Mount(st *store.Store, mountpoint string, o Options) (*FS, error) {
	f := &FS{st: st, started: time.Now(), allowOther: o.AllowOther, cacheNodes: o.CacheNodes, entries: newEntryNotifier(), later: newEntryNotifier()}
	if f.cacheNodes <= 0 {
		f.cacheNodes = DefaultCacheNodes
	}
	root := &rootNode{fsys: f}
	f.rootNode = root
	zero := time.Duration(0)
	mopts := []string{"default_permissions"}
	if o.ReadOnly {
		mopts = append(mopts, "ro")
	}
	mopts = append(mopts, o.MountOptions...)
	lg := o.Logger
	if lg == nil {
		lg = slog.Default()
	}
	fuseLevel := slog.LevelWarn // go-fuse logs only problems without Debug
	if o.Debug {
		fuseLevel = slog.LevelDebug
	}
	fuseLog := slog.NewLogLogger(lg.With("component", "fuse").Handler(), fuseLevel)
	src := o.Source
	if src == "" {
		src = st.Dir()
	}
	opts := &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:  o.AllowOther,
			Debug:       o.Debug,
			FsName:      src,
			Name:        "imagefs",
			DirectMount: true,
			MaxWrite:    1 << 20,
			Options:     mopts,
			// ATOMIC_O_TRUNC: open(O_TRUNC) reaches Open with the flag
			// and the file handle. Without it the kernel opens without
			// O_TRUNC and then sends a SETATTR size 0 with no handle,
			// which sets a property to "" at once (refused for typed
			// keys: `echo 1024 > properties/min_ram` failed with EINVAL)
			// and leaves the old value's tail after a shorter new one.
			ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2 | fuse.CAP_ATOMIC_O_TRUNC,
			Logger:            fuseLog,
			// The only symlinks are the views' links, whose target (the
			// image's id) never changes: ls -l reads each once.
			EnableSymlinkCaching: true,
		},
		Logger:          fuseLog,
		NegativeTimeout: &zero,
		RootStableAttr:  &gofs.StableAttr{Ino: inoRoot},
	}
	raw := gofs.NewNodeFS(root, opts)
	raw = &passthroughRaw{RawFileSystem: raw, b: &f.backings}
	raw = &byPathRaw{RawFileSystem: raw, f: f}
	if o.Metrics != nil {
		o.Metrics.SetStore(st)
		raw = o.Metrics.Wrap(raw)
	}
	server, err := fuse.NewServer(raw, mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	f.backings.setServer(server)
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		// As gofs.Mount: the serve loop ends by itself.
		return nil, err
	}
	f.server = server
	var stx unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, mountpoint, 0, unix.STATX_MNT_ID, &stx) == nil && stx.Mask&unix.STATX_MNT_ID != 0 {
		f.mntID.Store(stx.Mnt_id)
	}
	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()
	go f.reapLoop(done)
	go f.entries.run(done)
	go f.later.run(done)
	st.OnChange(func(c store.Change) { f.invalidate(c); f.invalidateViews(c); f.invalidateTagViews(c) })
	go func() { <-done; st.OnChange(nil) }()
	if server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		lg.Warn("kernel does not offer FUSE passthrough; sealed data is read through imagefs")
	} else if os.Geteuid() != 0 {
		lg.Warn("FUSE passthrough needs CAP_SYS_ADMIN; sealed data is read through imagefs")
	}
	return f, nil
}

// Wait serves requests until the filesystem is unmounted.
func (f *FS) Wait() { f.server.Wait() }

// Unmount unmounts the filesystem; Wait then returns.
func (f *FS) Unmount() error { return f.server.Unmount() }
