package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/internal/metrics"
	"github.com/imagefs/imagefs/store"
	"github.com/imagefs/imagefs/store/swiftdata"
	"github.com/spf13/pflag"
)

const mountHelp = `Usage: imagefs mount [OPTIONS] [-o MOUNTOPTS] STORE MOUNTPOINT

Serve the image store STORE (a directory, created if missing) at MOUNTPOINT
(an existing directory) in the foreground until the filesystem is unmounted
(imagefs umount MOUNTPOINT, which waits until imagefs has exited; umount
MOUNTPOINT; fusermount3 -u MOUNTPOINT) or imagefs receives SIGINT or
SIGTERM, then unmount cleanly and close the catalog. A signal while the
mount is busy (a process has a file or its working directory under it) is
logged and changes nothing; the next SIGINT or SIGTERM tries again.
Relative paths are taken from the working directory.

As root imagefs mounts directly; as another user it uses fusermount3.
df -T shows the mount as type fuse.imagefs with STORE as its source.

Logs go to stderr (or --log-file), one line per event: image created,
upload started, sealed (with checksum), refused and killed (with reason),
deleted, property changed (with uid), mount and unmount. --debug adds
go-fuse's trace of every FUSE request at level DEBUG.

With --metrics-addr, imagefs serves Prometheus metrics at
http://ADDR/metrics: requests, errors and latency per FUSE operation, bytes
read and written, seals, killed uploads and images by status.

When $NOTIFY_SOCKET is set (a systemd Type=notify service), imagefs tells
systemd READY=1 once the mount is ready.

Options:
`

const mountExamples = `
Examples:
  imagefs mount /var/lib/imagefs /mnt/images
  imagefs mount -o ro,allow_other /var/lib/imagefs /mnt/images
  imagefs mount --log-format json --metrics-addr 127.0.0.1:9477 /var/lib/imagefs /mnt/images
  imagefs mount --catalog etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 \
      --data /srv/images --config /etc/imagefs/etcd.conf /var/lib/imagefs /mnt/images
  mkdir /mnt/images/images/superos-2024.1
  cp superos.vhd /mnt/images/images/superos-2024.1/image.vhd
  cat /mnt/images/images/superos-2024.1/properties/status

  To mount from /etc/fstab or with mount(8), see imagefs --help.

Exit status:
  0  served, then unmounted cleanly
  1  the mount failed (the reason is on stderr)
  2  usage error
`

func init() {
	register("mount", "serve a store at a mountpoint (foreground)", runMount)
}

// mountFlags returns the flag set of imagefs mount, filling c.
func mountFlags(c *mountConfig, opts *[]string) *pflag.FlagSet {
	fl := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	fl.SortFlags = false
	fl.BoolVar(&c.allowOther, "allow-other", false, "let other users use the mount (non-root mounters need user_allow_other in /etc/fuse.conf)")
	fl.BoolVar(&c.readOnly, "read-only", false, "mount read-only: every change fails with EROFS")
	fl.IntVar(&c.quota, "property-quota", c.quota, "allow at most `N` properties per image")
	fl.IntVar(&c.memberQuota, "member-quota", c.memberQuota, "allow at most `N` members per image (Glance's image_member_quota)")
	fl.IntVar(&c.cacheNodes, "cache-nodes", c.cacheNodes, "let the kernel keep about `N` files and directories of images (about 800 bytes of daemon memory each); beyond that the least recently used images are dropped")
	fl.StringArrayVarP(opts, "options", "o", nil, "comma-separated mount options `OPTS` (see below)")
	fl.StringVar(&c.logFormat, "log-format", c.logFormat, "write log lines in `FORMAT`: text or json")
	fl.StringVar(&c.logFile, "log-file", "", "append logs to `FILE` instead of stderr")
	fl.StringVar(&c.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://`ADDR`/metrics (loopback only, e.g. 127.0.0.1:9477)")
	fl.StringVar(&c.catalog, "catalog", "", "shared mode: keep the catalog in the etcd cluster at `URL` etcd://HOST:PORT[,HOST:PORT...] (etcd+tls:// for TLS); needs --data")
	fl.StringVar(&c.data, "data", "", "shared mode: where sealed image data is kept, `DIR` (a directory every host mounts) or swift://CONTAINER (OpenStack Swift; see below)")
	fl.StringVar(&c.configFile, "config", "", "shared mode: read etcd credentials and settings from `FILE`; with --api-listen: the API's [keystone] and [api] (Keystone, TLS) (see below)")
	fl.StringVar(&c.hostID, "host-id", "", "shared mode: this host's `NAME` in the catalog (default the hostname)")
	fl.StringVar(&c.cacheDir, "cache-dir", "", "--data swift://: this host's cache of verified images, `DIR` (default STORE/swift-cache)")
	fl.StringVar(&c.cacheSize, "cache-size", "", "--data swift://: evict least recently opened closed images past `SIZE` bytes (K, M, G, T suffixes; default no limit)")
	fl.StringVar(&c.deleteDelay, "delete-delay", "", "--data swift://: remove a deleted image's objects from Swift after `DURATION` (default 10m)")
	fl.StringVar(&c.segmentSize, "swift-segment-size", "", "--data swift://: segment size (tests)")
	fl.MarkHidden("swift-segment-size")
	apiFlags(fl, c)
	fl.BoolVar(&c.debug, "debug", false, "log every FUSE request and reply (level DEBUG)")
	fl.StringVar(&c.cpuProfile, "cpuprofile", "", "write a Go CPU profile to `FILE` until unmount (for performance work)")
	fl.IntVar(&c.readyFD, "ready-fd", 0, "the mount helper's pipe (internal)")
	fl.MarkHidden("ready-fd")
	return fl
}

func runMount(args []string) int {
	c := defaultMountConfig()
	var opts []string
	fl := mountFlags(c, &opts)
	help := fl.BoolP("help", "h", false, "show this help and exit")
	printHelp := func(w *os.File) {
		fmt.Fprint(w, mountHelp)
		printFlags(w, fl)
		fmt.Fprint(w, "\n"+optionsHelp)
		fmt.Fprint(w, "\n"+sharedHelp)
		fmt.Fprint(w, "\n"+apiConfigHelp)
		fmt.Fprint(w, "\n"+swiftHelp)
		fmt.Fprint(w, mountExamples)
	}
	fl.Usage = func() {}
	if err := fl.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs mount: %v\nTry 'imagefs mount --help'.\n", err)
		return 2
	}
	if *help {
		printHelp(os.Stdout)
		return 0
	}
	for _, o := range opts {
		if err := c.applyOptions(o); err != nil {
			fmt.Fprintf(os.Stderr, "imagefs mount: %v\n", err)
			return 2
		}
	}
	if err := c.check(); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs mount: %v\n", err)
		return 2
	}
	if fl.NArg() != 2 {
		fmt.Fprintf(os.Stderr, "imagefs mount: want STORE and MOUNTPOINT, got %d arguments\nTry 'imagefs mount --help'.\n", fl.NArg())
		return 2
	}
	c.store, c.mountpoint = fl.Arg(0), fl.Arg(1)
	if c.readyFD != 0 {
		return serveDaemon(c)
	}
	return serve(c, func(err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "imagefs mount: %v\n", err)
			return
		}
		sdNotify("READY=1")
	})
}

// serve mounts c.store at c.mountpoint and serves until unmounted. It
// calls ready exactly once: with nil once the mount is ready, or with the
// error that stopped it before that. It returns the exit status.
func serve(c *mountConfig, ready func(error)) int {
	logged := false // logs go elsewhere than stderr: log failures too
	fail := func(err error) int {
		if logged {
			slog.Error("mount failed", "store", c.store, "mountpoint", c.mountpoint, "err", err)
		}
		ready(err)
		return 1
	}
	var err error
	if c.store, err = filepath.Abs(c.store); err != nil {
		ready(err)
		return 1
	}
	if c.mountpoint, err = filepath.Abs(c.mountpoint); err != nil {
		ready(err)
		return 1
	}
	w, closeLog, err := logOutput(c)
	if err != nil {
		ready(err)
		return 1
	}
	defer closeLog()
	logged = w != os.Stderr
	lg := newLogger(w, c.logFormat, c.debug)
	installLogger(lg)

	// A SIGTERM while mounting unmounts once the mount is up.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if err := checkMountpoint(c.mountpoint); err != nil {
		return fail(err)
	}
	if err := c.resolveShared(); err != nil {
		return fail(err)
	}
	// fs.Options.Metrics is an interface: it stays nil without a
	// metrics address.
	var fsMetrics fs.Metrics
	var events store.Observer
	var ms *metricsServer
	swiftStats := &swiftCollector{}
	if c.metricsAddr != "" {
		ln, err := listenMetrics(c.metricsAddr)
		if err != nil {
			return fail(err)
		}
		defer ln.Close()
		m := metrics.New()
		fsMetrics, events = m, m
		ms = startMetrics(ln, m, swiftStats)
		defer ms.stop()
	}
	apiLn, err := listenAPI(c)
	if err != nil {
		return fail(err)
	}
	if apiLn != nil {
		defer apiLn.Close()
	}
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	opts := store.Options{PropertyQuota: c.quota, MemberQuota: c.memberQuota, Events: events, Logger: slog.Default()}
	if c.shared != nil {
		slog.Info("shared catalog", "catalog", c.shared)
		ctx, cancel := context.WithTimeout(context.Background(), c.shared.DialTimeout+c.shared.RequestTimeout)
		be, err := openCatalog(ctx, c.shared, lg)
		cancel()
		if err != nil {
			return fail(err)
		}
		var data store.DataBackend
		if ss := c.shared.Swift; ss != nil {
			slog.Info("data in Swift", "data", ss.String())
			sd, err := openSwiftData(ss, c.shared.Host, slog.Default())
			if err != nil {
				be.Close()
				return fail(err)
			}
			defer sd.Close() // after the store's (deferred later)
			swiftStats.b.Store(sd)
			data = sd
		} else if data, err = store.NewLocalData(c.shared.Data); err != nil {
			be.Close()
			return fail(fmt.Errorf("data directory %s: %w", c.shared.Data, err))
		}
		opts.Catalog, opts.Host, opts.Data = be, c.shared.Host, data
		opts.CatalogTimeout = c.shared.RequestTimeout // the store's deadline of each catalog call
	}
	st, err := store.Open(c.store, opts)
	if err != nil {
		if opts.Catalog != nil {
			opts.Catalog.Close() // the store closes it once open
		}
		return fail(fmt.Errorf("open store: %w", err))
	}
	defer st.Close()
	if sd, ok := opts.Data.(*swiftdata.Backend); ok {
		// Once the catalog took this container (store.Open checked the
		// data store's identity), its containers are made; the mount
		// does not wait for Swift.
		go func() {
			if err := sd.Check(); err != nil {
				slog.Warn("Swift does not answer: cached images are served, but opening an uncached image fails (EIO) and a seal kills its image until it does", "err", err)
			}
		}()
	}
	fsys, err := mountFS(st, c, fs.Options{
		AllowOther: c.allowOther, Debug: c.debug, ReadOnly: c.readOnly,
		Source: c.source, Logger: lg, Metrics: fsMetrics, MountOptions: c.mountOpts,
		CacheNodes: c.cacheNodes,
	})
	if err != nil {
		return fail(fmt.Errorf("mount %s: %w", c.mountpoint, err))
	}
	if apiLn != nil {
		api, err := startAPI(apiLn, st, c, lg)
		if err != nil {
			fsys.Unmount()
			return fail(err)
		}
		defer api.stop() // before the store closes (deferred earlier)
	}
	slog.Info("mounted", "store", c.store, "mountpoint", c.mountpoint,
		"read_only", c.readOnly, "allow_other", c.allowOther, "pid", os.Getpid())
	ready(nil)

	// Every SIGINT or SIGTERM tries to unmount: one that fails (the
	// mount is busy) is logged, and the next signal tries again.
	go func() {
		for sig := range sigs {
			slog.Info("unmounting", "signal", sig.String())
			sdNotify("STOPPING=1")
			if err := fsys.Unmount(); err != nil {
				slog.Error("unmount failed; is the mount busy? Stop its users and send SIGTERM again (or umount -l)", "mountpoint", c.mountpoint, "signal", sig.String(), "err", err)
				continue
			}
			return
		}
	}()
	fsys.Wait()
	slog.Info("unmounted", "mountpoint", c.mountpoint)
	return 0
}

// checkMountpoint fails unless mnt is a directory, before anything is
// created: a mistyped mountpoint must not leave a new store behind.
func checkMountpoint(mnt string) error {
	fi, err := os.Stat(mnt)
	if err == nil {
		// The kernel may answer stat of a dead FUSE mount from its cache
		// for a second; statfs always asks the daemon.
		var st syscall.Statfs_t
		if serr := syscall.Statfs(mnt, &st); errors.Is(serr, syscall.ENOTCONN) {
			err = serr
		}
	}
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("mountpoint %s: %w (a dead FUSE mount: fusermount3 -u %s or umount -l %s first)", mnt, syscall.ENOTCONN, mnt, mnt)
	case err != nil:
		return fmt.Errorf("mountpoint: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("mountpoint %s: not a directory", mnt)
	}
	return nil
}
