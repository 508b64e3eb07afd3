package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/store"
)

// mountConfig is everything a mount needs, from flags (imagefs mount) or
// from -o option lists (both forms).
type mountConfig struct {
	store, mountpoint string

	allowOther  bool
	debug       bool
	readOnly    bool
	foreground  bool // the mount-helper form: stay in the foreground
	quota       int
	memberQuota int
	cacheNodes  int      // nodes the kernel may keep under image directories
	source      string   // fsname=: the source shown by df (default: STORE)
	mountOpts   []string // passed on to mount(2): noexec

	logFormat   string // text or json
	logFile     string // append logs here instead of stderr
	metricsAddr string // serve Prometheus metrics here (loopback only)
	cpuProfile  string

	// Shared mode (shared.go): the etcd catalog URL, the shared data
	// directory, the config file and this host's name, as given; shared
	// is what resolveShared makes of them (nil outside shared mode).
	catalog, data, configFile, hostID string
	shared                            *sharedConfig
	// The Swift data store's (shared_swift.go), as given: cache
	// directory, cache size, delete delay, segment size (hidden).
	cacheDir, cacheSize, deleteDelay, segmentSize string

	api apiConfig // the Images API (api.go)

	// readyFD is the daemon child's end of the pipe to the mount helper
	// that started it (hidden flag --ready-fd); 0 in the foreground.
	readyFD int
}

func defaultMountConfig() *mountConfig {
	return &mountConfig{quota: store.DefaultPropertyQuota, memberQuota: store.DefaultMemberQuota, cacheNodes: fs.DefaultCacheNodes, logFormat: "text"}
}

// optionsHelp documents the -o options (mount --help, imagefs --help).
const optionsHelp = `Mount options (-o OPT[,OPT...], as in /etc/fstab; later options win):
  allow_other           let other users use the mount (= --allow-other)
  ro, rw                read-only (every change fails with EROFS), read-write
  debug                 log every FUSE request and reply (= --debug)
  property_quota=N      allow at most N properties per image
  member_quota=N        allow at most N members per image
  cache_nodes=N         let the kernel keep about N files and directories
                        of images (= --cache-nodes)
  foreground            mount helper: stay in the foreground, log to stderr
  log_format=FORMAT     text or json (= --log-format)
  log_file=PATH         append logs to PATH (= --log-file; a relative PATH is
                        taken from the working directory, in both forms)
  metrics_addr=ADDR     serve Prometheus metrics at http://ADDR/metrics
  fsname=NAME           the source shown by df and /proc/mounts (default STORE)
  noexec                forbid executing files from the mount
  catalog=URL           shared mode: the etcd catalog (= --catalog; below)
  data=DIR              shared mode: the sealed data of every host (= --data)
  config=FILE           shared mode: etcd credentials and settings; the API's
                        [keystone] and [api] (= --config)
  host_id=NAME          shared mode: this host's name (= --host-id)
  cache_dir=DIR         data=swift://: this host's cache (= --cache-dir)
  cache_size=SIZE       data=swift://: the cache's budget (= --cache-size)
  delete_delay=DUR      data=swift://: objects of a deleted image go after
                        DUR (= --delete-delay)
` + apiOptionsHelp + `  Accepted and ignored, for fstab and mount(8): defaults, auto, noauto,
  user, nouser, users, owner, group, nofail, _netdev, comment=..., x-*,
  suid, nosuid, dev, nodev, exec, atime, noatime, relatime, strictatime,
  lazytime, diratime, sync, async, dirsync, default_permissions, setuid=...,
  drop_privileges. imagefs always mounts nosuid,nodev.
`

// ignoredOptions are accepted and have no effect: generic mount(8) and
// fstab options, those mount.fuse3 handles itself, and flags imagefs
// always sets.
var ignoredOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true,
	"users": true, "owner": true, "group": true, "nofail": true, "_netdev": true,
	"suid": true, "nosuid": true, "dev": true, "nodev": true, "exec": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true,
	"strictatime": true, "nostrictatime": true, "lazytime": true, "nolazytime": true,
	"diratime": true, "nodiratime": true, "iversion": true, "noiversion": true,
	"sync": true, "async": true, "dirsync": true, "silent": true, "loud": true,
	"mand": true, "nomand": true, "default_permissions": true, "drop_privileges": true,
}

// ignoredPrefixes are option prefixes accepted and ignored: userspace
// options of mount(8) and systemd, and mount.fuse3's own.
var ignoredPrefixes = []string{"x-", "comment=", "setuid=", "helper="}

// applyOptions applies a comma-separated -o list to c. The host list of
// catalog= may continue past commas: an item without '=' that holds a ':'
// (HOST:PORT, no option has one) right after catalog= or such an item
// belongs to it.
func (c *mountConfig) applyOptions(list string) error {
	inCatalog := false
	for _, opt := range strings.Split(list, ",") {
		opt = strings.TrimSpace(opt)
		if inCatalog && !strings.Contains(opt, "=") && strings.Contains(opt, ":") {
			c.catalog += "," + opt
			continue
		}
		if err := c.applyOption(opt); err != nil {
			return err
		}
		inCatalog = strings.HasPrefix(opt, "catalog=")
	}
	return nil
}

// secretOptions are refused as -o options without quoting their value:
// credentials go in the config file, never on a command line.
var secretOptions = map[string]bool{
	"password": true, "username": true, "user_name": true, "passwd": true, "key": true,
	"cert": true, "ca": true, "token": true, "secret": true,
	"st_key": true, "os_password": true, "os_application_credential_secret": true,
}

func (c *mountConfig) applyOption(opt string) error {
	key, val, hasVal := strings.Cut(opt, "=")
	key = strings.ReplaceAll(key, "-", "_")
	needVal := func() error {
		if !hasVal || val == "" {
			return fmt.Errorf("mount option %s needs a value (%s=...)", key, key)
		}
		return nil
	}
	switch {
	case opt == "":
		return nil
	case ignoredOptions[opt]:
		return nil
	}
	for _, p := range ignoredPrefixes {
		if strings.HasPrefix(opt, p) {
			return nil
		}
	}
	switch key {
	case "allow_other":
		c.allowOther = true
	case "ro":
		c.readOnly = true
	case "rw":
		c.readOnly = false
	case "debug":
		c.debug = true
	case "foreground":
		c.foreground = true
	case "noexec":
		c.mountOpts = append(c.mountOpts, "noexec")
	case "property_quota", "cache_nodes", "member_quota":
		if err := needVal(); err != nil {
			return err
		}
		n, err := strconv.Atoi(val)
		if err != nil || n <= 0 {
			return fmt.Errorf("mount option %s=%s: want a positive number", key, val)
		}
		switch key {
		case "property_quota":
			c.quota = n
		case "member_quota":
			c.memberQuota = n
		default:
			c.cacheNodes = n
		}
	case "log_format":
		if err := needVal(); err != nil {
			return err
		}
		c.logFormat = val
	case "log_file":
		if err := needVal(); err != nil {
			return err
		}
		c.logFile = val
	case "metrics_addr":
		if err := needVal(); err != nil {
			return err
		}
		c.metricsAddr = val
	case "fsname":
		if err := needVal(); err != nil {
			return err
		}
		c.source = val
	case "cache_dir", "cache_size", "delete_delay", "swift_segment_size":
		if err := needVal(); err != nil {
			return err
		}
		switch key {
		case "cache_dir":
			c.cacheDir = val
		case "cache_size":
			c.cacheSize = val
		case "delete_delay":
			c.deleteDelay = val
		default:
			c.segmentSize = val
		}
	case "catalog", "data", "config", "host_id":
		if err := needVal(); err != nil {
			return err
		}
		switch key {
		case "catalog":
			c.catalog = val
		case "data":
			c.data = val
		case "config":
			c.configFile = val
		default:
			c.hostID = val
		}
	case "allow_root":
		return fmt.Errorf("mount option allow_root is not supported (it is libfuse's); use allow_other")
	default:
		if ok, err := c.applyAPIOption(key, val, hasVal); ok {
			return err
		}
		if secretOptions[key] {
			return fmt.Errorf("mount option %s= is refused: credentials go in the config file (config=FILE, mode 0600), never on a command line", key)
		}
		if hasVal {
			// The value is not quoted: it may be a secret mistyped.
			return fmt.Errorf("unknown mount option %q (see imagefs mount --help)", key+"=...")
		}
		return fmt.Errorf("unknown mount option %q (see imagefs mount --help)", opt)
	}
	return nil
}

// check validates values that flags and options share.
func (c *mountConfig) check() error {
	switch c.logFormat {
	case "text", "json":
	default:
		return fmt.Errorf("log format %q: want text or json", c.logFormat)
	}
	if c.quota <= 0 {
		return fmt.Errorf("property quota %d: want a positive number", c.quota)
	}
	if c.memberQuota <= 0 {
		return fmt.Errorf("member quota %d: want a positive number", c.memberQuota)
	}
	if err := c.checkAPI(); err != nil {
		return err
	}
	return c.checkShared()
}
