package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imagefs/imagefs/imagesapi"
)

// The Images API's part of the config file (--config): [keystone], the
// Keystone that validates the callers' tokens (--api-auth keystone), and
// [api], the project lines. In single-host mode a config file may hold
// only these sections.

// apiConfigHelp documents the API's sections of the config file.
const apiConfigHelp = `Images API sections of the config file (--config FILE, single-host or
  shared mode):
  [keystone]                          with --api-auth keystone
    auth_url = http://HOST:5000/v3    Keystone's identity v3 endpoint
    username = NAME                   the service user that validates tokens
    password = SECRET                 its password (file mode 0600)
    project_name = NAME               the project its token is scoped to
    user_domain_name = Default        the user's domain
    project_domain_name = Default     the project's domain
    timeout = 5s                      each call to Keystone; past it, 503
    cache_size = 10000                tokens remembered (a valid one 5 min at
                                      most, never past its expiry)
    cafile = PATH                     PEM CA certificates an https auth_url's
                                      certificate is checked against (default:
                                      the system's)
  [api]
    project = PROJECT_ID=UID          as --api-project (repeatable)
    cert_file = PATH                  serve the API over https (TLS 1.2 or
                                      later): the PEM server certificate, then
                                      its chain; reloaded when it changes
    key_file = PATH                   its PEM private key, unencrypted, mode
                                      0600 (root's: 0640 at most)
    client_socket_timeout = 900       seconds without a byte of an image body
                                      (PUT .../file, .../stage) before the
                                      upload is cut off, queued again; 0: no
                                      limit (Glance's name and default)
  (relative paths are the config file's directory's)
`

// keystoneKeys are the keys of [keystone].
var keystoneKeys = map[string]bool{
	"auth_url": true, "username": true, "password": true, "project_name": true,
	"user_domain_name": true, "project_domain_name": true, "timeout": true, "cache_size": true,
	"cafile": true,
}

// apiFileSettings is what the config file says of the API.
type apiFileSettings struct {
	keystone *imagesapi.KeystoneConfig // nil without [keystone]
	projects []string                  // [api] project values, ID=UID
	// certFile, keyFile: [api] cert_file and key_file, absolute; both or
	// neither.
	certFile, keyFile string
	// idle: [api] client_socket_timeout as imagesapi.Options'
	// ClientSocketTimeout (0: not given; negative: 0 given, no limit).
	idle   time.Duration
	shared bool // it has [etcd] or [data]
}

// readAPIConfig reads the API's sections of the config file at path
// (absolute); other sections are readSharedConfig's and are skipped. Its
// errors name the file, the line and the key, never a value (a line may
// be a secret). A file with a password must be private to its owner.
func readAPIConfig(path string) (*apiFileSettings, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("config file %s: not a regular file", path)
	}
	out := &apiFileSettings{}
	ks := map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			name, ok := strings.CutSuffix(line[1:], "]")
			section = strings.TrimSpace(name)
			switch {
			case !ok:
				return nil, fmt.Errorf("config file %s line %d: unknown section (want [etcd], [data], [keystone] or [api])", path, n)
			case section == "etcd" || section == "data":
				out.shared = true
			case section != "keystone" && section != "api":
				return nil, fmt.Errorf("config file %s line %d: unknown section (want [etcd], [data], [keystone] or [api])", path, n)
			}
			continue
		}
		if section != "keystone" && section != "api" {
			continue // [etcd], [data], or before a section: readSharedConfig's
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("config file %s line %d: want key = value", path, n)
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch {
		case v == "":
			return nil, fmt.Errorf("config file %s line %d: %s has no value", path, n, k)
		case section == "api" && k == "project":
			out.projects = append(out.projects, v)
		case section == "api" && (k == "cert_file" || k == "key_file"):
			dst := &out.certFile
			if k == "key_file" {
				dst = &out.keyFile
			}
			if *dst != "" {
				return nil, fmt.Errorf("config file %s line %d: %s given twice", path, n, k)
			}
			*dst = configPath(path, v)
		case section == "api" && k == "client_socket_timeout":
			if out.idle != 0 {
				return nil, fmt.Errorf("config file %s line %d: %s given twice", path, n, k)
			}
			sec, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("config file %s line %d: client_socket_timeout: want whole seconds (900; 0: no limit)", path, n)
			}
			out.idle = time.Duration(sec) * time.Second
			if sec == 0 {
				out.idle = -1
			}
		case section == "api" || !keystoneKeys[k]:
			if len(k) > 24 || strings.Trim(k, "abcdefghijklmnopqrstuvwxyz_") != "" {
				return nil, fmt.Errorf("config file %s line %d: unknown key", path, n)
			}
			return nil, fmt.Errorf("config file %s line %d: unknown key %q in [%s]", path, n, k, section)
		case ks[k] != "":
			return nil, fmt.Errorf("config file %s line %d: %s given twice", path, n, k)
		default:
			ks[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if (out.certFile == "") != (out.keyFile == "") {
		return nil, fmt.Errorf("config file %s: [api] needs both cert_file and key_file for TLS (they may name one file)", path)
	}
	if len(ks) == 0 {
		return out, nil
	}
	if ks["password"] != "" {
		if err := privateFile(path, fi, "config file"); err != nil {
			return nil, err
		}
	}
	for _, k := range []string{"auth_url", "username", "password", "project_name"} {
		if ks[k] == "" {
			return nil, fmt.Errorf("config file %s: [keystone] needs %s (auth_url, username, password, project_name)", path, k)
		}
	}
	kc := &imagesapi.KeystoneConfig{
		AuthURL: ks["auth_url"], Username: ks["username"], Password: ks["password"],
		UserDomain: ks["user_domain_name"], Project: ks["project_name"], ProjectDomain: ks["project_domain_name"],
	}
	if v := ks["cafile"]; v != "" {
		kc.CAFile = configPath(path, v)
	}
	if v := ks["timeout"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("config file %s: timeout = %q: want a positive duration (5s, 500ms)", path, v)
		}
		kc.Timeout = d
	}
	if v := ks["cache_size"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("config file %s: cache_size = %q: want a positive number of tokens", path, v)
		}
		kc.CacheSize = n
	}
	out.keystone = kc
	return out, nil
}

// configPath is a path of the config file at conf: relative ones are of
// its directory.
func configPath(conf, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(conf), p)
}

// resolveAPIConfig reads the config file's API sections into c.api
// (before anything is mounted): the Keystone settings, and the project
// lines (added to --api-project's; a project given twice is an error).
func (c *mountConfig) resolveAPIConfig() error {
	if c.configFile == "" || c.api.listen == "" {
		if c.api.listen != "" && c.api.auth == imagesapi.AuthKeystone {
			return fmt.Errorf("--api-auth keystone needs the Keystone settings: --config FILE with a [keystone] section (see imagefs mount --help)")
		}
		return nil
	}
	path, err := filepath.Abs(c.configFile)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	fs, err := readAPIConfig(path)
	if err != nil {
		return err
	}
	if fs.shared && !c.isShared() {
		return fmt.Errorf("config file %s: [etcd] and [data] are for shared mode, which needs --data DIR", path)
	}
	for _, p := range fs.projects {
		id, _, _ := strings.Cut(p, "=")
		if _, dup := c.api.projects[id]; dup {
			return fmt.Errorf("config file %s: [api] project %s is mapped twice (here or by --api-project)", path, id)
		}
		if err := c.api.addProject(p); err != nil {
			return fmt.Errorf("config file %s: [api] %w", path, err)
		}
	}
	if c.api.auth == imagesapi.AuthKeystone {
		if fs.keystone == nil {
			return fmt.Errorf("--api-auth keystone: config file %s has no [keystone] section", path)
		}
		c.api.keystone = fs.keystone
	}
	c.api.certFile, c.api.keyFile = fs.certFile, fs.keyFile
	c.api.idle = fs.idle
	return nil
}
