package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Shared mode: the catalog in an etcd cluster (--catalog), sealed data in
// a directory every host mounts (--data), credentials and etcd settings in
// a config file (--config), this host's name in the catalog (--host-id).
// Credentials have no flag and no -o option: they are read from the
// config file only, which must then be private to its owner (as ssh
// requires of a private key), and never appear in an error or a log line.

// sharedHelp documents shared mode and its config file (mount --help,
// imagefs --help, and so the man page).
const sharedHelp = `Shared mode (many hosts, one catalog):
  --catalog etcd://HOST:PORT[,HOST:PORT...] keeps the catalog in an etcd
  cluster shared by every host (etcd+tls://... for TLS; PORT defaults to
  2379); --data DIR is the directory of sealed image data that every host
  mounts (NFS, say). Both or neither. STORE stays this host's own directory
  (uploads in progress). Options: catalog=URL (the host list may continue
  past commas: catalog=etcd://a:2379,b:2379,ro), data=DIR, config=FILE,
  host_id=NAME.
  --config FILE (config=FILE) names a file for what must not be on a
  command line; lines "key = value" (the rest of the line, spaces at both
  ends removed; # or ; starts a comment line) under a section [etcd]:
    endpoints = etcd://HOST:PORT,...  the catalog, when --catalog is not given
    username = NAME                   etcd user (with password)
    password = SECRET                 etcd password
    cert = FILE                       TLS client certificate (etcd+tls://)
    key = FILE                        its private key (mode 0600)
    ca = FILE                         CA of the servers (default: system CAs)
    dial_timeout = 5s                 to reach an endpoint
    request_timeout = 5s              for every catalog request; a change
                                      that gets no answer fails (EAGAIN)
    lease_ttl = 10s                   an upload of a host that dies is
                                      killed after about this long
    namespace = /imagefs/             prefix of every imagefs key in etcd
  Relative file names are taken from the config file's directory. A config
  file with a password or a key must be owned by you (or root) and not
  accessible by group or others (chmod 600 FILE), else the mount is
  refused.
`

// Defaults of the config file's settings.
const (
	defaultEtcdPort       = "2379"
	defaultDialTimeout    = 5 * time.Second
	defaultRequestTimeout = 5 * time.Second
	defaultLeaseTTL       = 10 * time.Second
	defaultNamespace      = "/imagefs/"
)

// sharedConfig is the shared mode's settings, from the command line and
// the config file. Its fields are those of etcdkv.Config (see
// shared_etcd.go) plus the data directory and the host's name. It never
// prints its password (String, GoString, LogValue).
type sharedConfig struct {
	// Endpoints are client URLs: http://HOST:PORT, or https://HOST:PORT
	// for etcd+tls://.
	Endpoints []string
	TLS       bool
	Namespace string
	// Username and Password: etcd's authentication (both or neither).
	Username, Password string
	// CertFile and KeyFile: a TLS client certificate (both or neither);
	// CAFile: the CA of the servers (empty: the system's). Absolute.
	CertFile, KeyFile, CAFile string
	DialTimeout               time.Duration
	RequestTimeout            time.Duration
	LeaseTTL                  time.Duration

	Data string // absolute: the shared directory of sealed data, or swift://CONTAINER
	// Swift: the data store's settings (shared_swift.go); nil for a
	// data directory. DataConfig: the config file's [data] keys.
	Swift      *swiftSettings
	DataConfig map[string]string
	Host       string // this host's name in the catalog
	ConfigFile string // absolute, or empty
}

// String describes c without secrets.
func (c *sharedConfig) String() string {
	auth := "none"
	switch {
	case c.Username != "" && c.CertFile != "":
		auth = "password+cert"
	case c.Username != "":
		auth = "password"
	case c.CertFile != "":
		auth = "cert"
	}
	return fmt.Sprintf("catalog %s namespace %s data %s host %s auth %s", strings.Join(c.Endpoints, ","), c.Namespace, c.Data, c.Host, auth)
}

// GoString is String: %#v must not print the password either.
func (c *sharedConfig) GoString() string { return c.String() }

// LogValue is what slog logs of c: no secrets.
func (c *sharedConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoints", strings.Join(c.Endpoints, ",")),
		slog.String("namespace", c.Namespace),
		slog.String("data", c.Data),
		slog.String("host", c.Host),
		slog.Bool("tls", c.TLS),
		slog.Bool("password", c.Password != ""),
		slog.Bool("client_cert", c.CertFile != ""),
	)
}

// isShared reports whether c asks for shared mode.
//
// A config file alone is shared mode, unless the API is served without
// --data: then it is the single host's [keystone] and [api]
// (apiconfig.go; keystone mode, TLS).
func (c *mountConfig) isShared() bool {
	return c.catalog != "" || c.configFile != "" && (c.data != "" || c.api.listen == "")
}

// checkShared is check's part for shared mode: usage errors only (no
// file is read).
func (c *mountConfig) checkShared() error {
	switch {
	case c.catalog != "" && c.data == "":
		return fmt.Errorf("--catalog needs --data DIR (the directory of sealed data every host shares)")
	case c.configFile != "" && c.data == "" && c.isShared():
		return fmt.Errorf("--config is for shared mode, which needs --data DIR (and --catalog, or endpoints in the config file)")
	case c.data != "" && !c.isShared():
		return fmt.Errorf("--data needs --catalog etcd://HOST:PORT[,...] (or a --config file with endpoints)")
	case c.hostID != "" && !c.isShared():
		return fmt.Errorf("--host-id is for shared mode (--catalog)")
	}
	return nil
}

// resolveShared reads the config file and builds c.shared (nil outside
// shared mode); relative paths are made absolute (from the working
// directory). Its errors name files, keys and line numbers, never a
// value of the config file.
func (c *mountConfig) resolveShared() error {
	if c.shared != nil || !c.isShared() {
		return nil
	}
	if err := c.checkShared(); err != nil {
		return err
	}
	sc := &sharedConfig{
		Namespace: defaultNamespace, DialTimeout: defaultDialTimeout,
		RequestTimeout: defaultRequestTimeout, LeaseTTL: defaultLeaseTTL,
	}
	var err error
	if isSwiftData(c.data) {
		sc.Data = c.data
	} else if sc.Data, err = filepath.Abs(c.data); err != nil {
		return fmt.Errorf("data directory: %w", err)
	} else if fi, err := os.Stat(sc.Data); err != nil {
		return fmt.Errorf("data directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("data directory %s: not a directory", sc.Data)
	}
	endpoints := c.catalog
	if c.configFile != "" {
		if sc.ConfigFile, err = filepath.Abs(c.configFile); err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		fileEndpoints, err := readSharedConfig(sc.ConfigFile, sc)
		if err != nil {
			return err
		}
		if endpoints == "" { // the command line wins
			endpoints = fileEndpoints
		}
	}
	if endpoints == "" {
		return fmt.Errorf("no catalog: give --catalog etcd://HOST:PORT[,...] or endpoints in [etcd] of %s", sc.ConfigFile)
	}
	if sc.Endpoints, sc.TLS, err = parseCatalog(endpoints); err != nil {
		return err
	}
	if !sc.TLS && (sc.CertFile != "" || sc.CAFile != "") {
		return fmt.Errorf("config file %s sets cert or ca, but the catalog is etcd:// (plain); use etcd+tls://", sc.ConfigFile)
	}
	if sc.Host, err = hostID(c.hostID); err != nil {
		return err
	}
	if err := c.resolveSwift(sc); err != nil {
		return err
	}
	c.shared = sc
	return nil
}

// hostID returns this host's name in the catalog: id, or the hostname.
func hostID(id string) (string, error) {
	if id == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("host name: %w; give --host-id NAME", err)
		}
		if err := validHostID(h); err != nil {
			return "", fmt.Errorf("the hostname %q cannot name this host in the catalog (%v); give --host-id NAME", h, err)
		}
		return h, nil
	}
	if err := validHostID(id); err != nil {
		return "", fmt.Errorf("--host-id %q: %v", id, err)
	}
	return id, nil
}

// validHostID: 1 to 253 letters, digits, '.', '-' and '_' (a hostname's
// characters; it appears in keys and in kill reasons).
func validHostID(id string) error {
	if id == "" || len(id) > 253 {
		return errors.New("want 1 to 253 characters")
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return errors.New("want letters, digits, '.', '-' and '_' only")
		}
	}
	return nil
}

// parseCatalog parses etcd://HOST[:PORT][,HOST[:PORT]...] (plain) or
// etcd+tls://... (TLS) into client URLs (http:// or https://). Its errors
// never quote a URL that holds credentials.
func parseCatalog(s string) (endpoints []string, useTLS bool, err error) {
	if strings.Contains(s, "@") {
		return nil, false, errors.New("catalog: credentials in the URL are refused (a command line is visible to every user); put username and password in the config file (--config)")
	}
	scheme, rest, ok := strings.Cut(s, "://")
	switch {
	case !ok:
		return nil, false, fmt.Errorf("catalog %q: want etcd://HOST:PORT[,HOST:PORT...] (or etcd+tls://...)", s)
	case scheme == "etcd":
	case scheme == "etcd+tls":
		useTLS = true
	default:
		return nil, false, fmt.Errorf("catalog %q: want etcd:// (plain) or etcd+tls:// (TLS)", s)
	}
	rest = strings.TrimSuffix(rest, "/")
	if strings.ContainsAny(rest, "/?#") {
		return nil, false, fmt.Errorf("catalog %q: want only HOST:PORT[,HOST:PORT...] after %s://", s, scheme)
	}
	web := "http://"
	if useTLS {
		web = "https://"
	}
	for _, hp := range strings.Split(rest, ",") {
		hp = strings.TrimSpace(hp)
		if hp == "" {
			return nil, false, fmt.Errorf("catalog %q: empty HOST:PORT", s)
		}
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			// No port: the default one.
			host, port = strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), defaultEtcdPort
			if strings.ContainsAny(host, "[]") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
				return nil, false, fmt.Errorf("catalog: endpoint %q: want HOST:PORT ([ADDR]:PORT for IPv6)", hp)
			}
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, false, fmt.Errorf("catalog: endpoint %q: port %q: want 1 to 65535", hp, port)
		}
		if host == "" {
			return nil, false, fmt.Errorf("catalog: endpoint %q: no host", hp)
		}
		endpoints = append(endpoints, web+net.JoinHostPort(host, port))
	}
	return endpoints, useTLS, nil
}

// configKeys are the keys of [etcd] in the config file.
var configKeys = map[string]bool{
	"endpoints": true, "username": true, "password": true, "cert": true, "key": true,
	"ca": true, "dial_timeout": true, "request_timeout": true, "lease_ttl": true, "namespace": true,
}

// readSharedConfig reads the config file at path (absolute) into sc and
// returns its endpoints ("" when it has none). The format is parsed here
// (ten keys in one section need no library, and no parser of ours can
// quote a line, which may hold the password, in an error). A file with a
// password or a key is refused unless it is its owner's (or root's) alone,
// and so is a TLS key file others can read.
func readSharedConfig(path string, sc *sharedConfig) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("config file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("config file %s: not a regular file", path)
	}
	vals := map[string]string{}
	dataVals := map[string]string{} // [data] (shared_swift.go)
	section := ""
	sc2 := bufio.NewScanner(f)
	sc2.Buffer(make([]byte, 4096), 64<<10)
	for n := 1; sc2.Scan(); n++ {
		line := strings.TrimSpace(sc2.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			name, ok := strings.CutSuffix(line[1:], "]")
			name = strings.TrimSpace(name)
			if !ok || name != "etcd" && name != "data" && name != "keystone" && name != "api" {
				return "", fmt.Errorf("config file %s line %d: unknown section (want [etcd], [data], [keystone] or [api])", path, n)
			}
			section = name
			continue
		}
		if section == "keystone" || section == "api" {
			continue // the Images API's (apiconfig.go)
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return "", fmt.Errorf("config file %s line %d: want key = value", path, n)
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if section == "data" {
			if err := dataConfigKey(path, n, k, v, dataVals); err != nil {
				return "", err
			}
			continue
		}
		switch {
		case section == "":
			return "", fmt.Errorf("config file %s line %d: a key before [etcd]", path, n)
		case !configKeys[k]:
			if len(k) > 24 || strings.Trim(k, "abcdefghijklmnopqrstuvwxyz_") != "" {
				// Not quoted: it may be a secret on a line of its own.
				return "", fmt.Errorf("config file %s line %d: unknown key", path, n)
			}
			return "", fmt.Errorf("config file %s line %d: unknown key %q in [etcd]", path, n, k)
		case vals[k] != "":
			return "", fmt.Errorf("config file %s line %d: %s given twice", path, n, k)
		case v == "":
			return "", fmt.Errorf("config file %s line %d: %s has no value", path, n, k)
		}
		vals[k] = v
	}
	if err := sc2.Err(); err != nil {
		// bufio.ErrTooLong and read errors; neither quotes the file.
		return "", fmt.Errorf("config file %s: %w", path, err)
	}
	if vals["password"] != "" || vals["key"] != "" || dataSecret(dataVals) {
		if err := privateFile(path, fi, "config file"); err != nil {
			return "", err
		}
	}
	if (vals["username"] == "") != (vals["password"] == "") {
		return "", fmt.Errorf("config file %s: username and password go together", path)
	}
	if (vals["cert"] == "") != (vals["key"] == "") {
		return "", fmt.Errorf("config file %s: cert and key go together", path)
	}
	sc.Username, sc.Password = vals["username"], vals["password"]
	if len(dataVals) > 0 {
		sc.DataConfig = dataVals
	}
	dir := filepath.Dir(path)
	for _, p := range []struct {
		key string
		dst *string
	}{{"cert", &sc.CertFile}, {"key", &sc.KeyFile}, {"ca", &sc.CAFile}} {
		v := vals[p.key]
		if v == "" {
			continue
		}
		if !filepath.IsAbs(v) {
			v = filepath.Join(dir, v)
		}
		fi, err := os.Stat(v)
		if err != nil {
			return "", fmt.Errorf("config file %s: %s: %w", path, p.key, err)
		}
		if p.key == "key" {
			if err := privateFile(v, fi, "TLS key"); err != nil {
				return "", err
			}
		}
		*p.dst = v
	}
	for _, d := range []struct {
		key string
		dst *time.Duration
	}{{"dial_timeout", &sc.DialTimeout}, {"request_timeout", &sc.RequestTimeout}, {"lease_ttl", &sc.LeaseTTL}} {
		v := vals[d.key]
		if v == "" {
			continue
		}
		t, err := time.ParseDuration(v)
		if err != nil || t <= 0 {
			return "", fmt.Errorf("config file %s: %s = %q: want a positive duration (5s, 500ms)", path, d.key, v)
		}
		*d.dst = t
	}
	if d := sc.LeaseTTL; d < 2*time.Second || d%time.Second != 0 {
		return "", fmt.Errorf("config file %s: lease_ttl = %v: want whole seconds, at least 2s (an etcd lease)", path, d)
	}
	if v := vals["namespace"]; v != "" {
		if !strings.HasPrefix(v, "/") || !strings.HasSuffix(v, "/") || strings.ContainsAny(v, "\x00 \t") {
			return "", fmt.Errorf("config file %s: namespace = %q: want a key prefix that starts and ends with / (/imagefs/)", path, v)
		}
		sc.Namespace = v
	}
	return vals["endpoints"], nil
}

// privateFile fails unless the file (what) at path is owned by this user
// or root and gives group and others no access.
func privateFile(path string, fi os.FileInfo, what string) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s %s holds a secret and is owned by uid %d, not by you or root: chown it", what, path, st.Uid)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s %s holds a secret and is accessible by group or others (mode %04o): chmod 600 %s", what, path, perm, path)
	}
	return nil
}
