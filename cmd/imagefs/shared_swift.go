package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imagefs/imagefs/store/swiftdata"
	"github.com/ncw/swift/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Shared mode with the sealed data in OpenStack Swift: --data
// swift://CONTAINER. The account's credentials come from the daemon's
// environment, where the swift CLI looks for them (ST_AUTH, ST_USER,
// ST_KEY for tempauth v1; OS_AUTH_URL, OS_USERNAME, OS_PASSWORD,
// OS_PROJECT_NAME, OS_USER_DOMAIN_NAME, ... for Keystone v3), or from the
// config file's [data] section (the same names in lower case; they win
// over the environment). Never from the command line.

// swiftHelp documents the Swift data store (mount --help).
const swiftHelp = `Sealed data in OpenStack Swift (--data swift://CONTAINER):
  Each image is uploaded once when sealed, as segments in
  CONTAINER_segments plus a static large object manifest CONTAINER/ID; it
  is active only once the manifest is in. Every host downloads an image
  at its first open into its cache (--cache-dir, default STORE/swift-cache),
  checks size, MD5 and SHA-512 against the catalog while streaming, and
  serves it from there; a copy that does not match is moved to
  CACHE/quarantine and the open fails (EIO). Least recently opened closed
  images are evicted past --cache-size. A deleted image's objects go after
  --delete-delay (for removals pending from an earlier mount too, counted
  from their delete). The catalog records swift://CONTAINER as its data
  store: a host given another container or a directory is refused. Every Swift call waits at most its timeout (Swift down:
  cached images are served; an uncached open fails with EIO; a seal kills
  the image with the reason).
  Credentials: the daemon's environment as for the swift CLI (ST_AUTH,
  ST_USER, ST_KEY; or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD,
  OS_PROJECT_NAME, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME,
  OS_REGION_NAME, ST_AUTH_VERSION), or a section [data] of the config
  file with the same names in lower case (st_auth = URL, st_key = KEY,
  ...; they win over the environment) and timeout = 10s (each Swift call
  to connect and answer, and the longest pause of a transfer; or
  GOSWIFT_TIMEOUT in the environment).
  A config file with st_key or os_password must be mode 0600.
`

// Defaults of the Swift data store.
const (
	defaultSwiftTimeout = swiftdata.DefaultTimeout
	defaultDeleteDelay  = swiftdata.DefaultDeleteDelay
)

// dataKeys are the keys of [data] in the config file: the swift CLI's
// environment variables in lower case, and timeout. Secret ones make the
// file private.
var dataKeys = map[string]bool{
	"st_auth": true, "st_user": true, "st_key": true, "st_auth_version": true,
	"os_auth_url": true, "os_username": true, "os_password": true, "os_user_id": true,
	"os_project_name": true, "os_project_id": true, "os_tenant_name": true, "os_tenant_id": true,
	"os_user_domain_name": true, "os_user_domain_id": true,
	"os_project_domain_name": true, "os_project_domain_id": true,
	"os_region_name": true, "os_endpoint_type": true,
	"os_application_credential_id": true, "os_application_credential_secret": true,
	"timeout": true,
}

var dataSecretKeys = []string{"st_key", "os_password", "os_application_credential_secret"}

// dataConfigKey takes key k = v of [data] (line n of path) into vals. Its
// errors never quote a value.
func dataConfigKey(path string, n int, k, v string, vals map[string]string) error {
	switch {
	case !dataKeys[k]:
		if len(k) > 40 || strings.Trim(k, "abcdefghijklmnopqrstuvwxyz_") != "" {
			return fmt.Errorf("config file %s line %d: unknown key", path, n)
		}
		return fmt.Errorf("config file %s line %d: unknown key %q in [data]", path, n, k)
	case vals[k] != "":
		return fmt.Errorf("config file %s line %d: %s given twice", path, n, k)
	case v == "":
		return fmt.Errorf("config file %s line %d: %s has no value", path, n, k)
	}
	vals[k] = v
	return nil
}

// dataSecret reports whether [data] holds a secret.
func dataSecret(vals map[string]string) bool {
	for _, k := range dataSecretKeys {
		if vals[k] != "" {
			return true
		}
	}
	return false
}

// isSwiftData reports whether the --data value names a Swift container.
func isSwiftData(s string) bool { return strings.HasPrefix(s, "swift://") }

// swiftSettings is the Swift data store of a mount. It never prints its
// connection (which holds the key).
type swiftSettings struct {
	Container   string
	conn        *swift.Connection
	Timeout     time.Duration
	CacheDir    string
	CacheSize   int64
	DeleteDelay time.Duration
	SegmentSize int64
}

func (s *swiftSettings) String() string {
	return fmt.Sprintf("swift://%s cache %s size %d delete-delay %v", s.Container, s.CacheDir, s.CacheSize, s.DeleteDelay)
}

// resolveSwift fills sc.Swift for --data swift://CONTAINER from the
// environment, the config file's [data] and the cache flags; for a data
// directory, those must not be given.
func (c *mountConfig) resolveSwift(sc *sharedConfig) error {
	if !isSwiftData(sc.Data) {
		switch {
		case len(sc.DataConfig) > 0:
			return fmt.Errorf("config file %s has a [data] section, which is for --data swift://CONTAINER", sc.ConfigFile)
		case c.cacheDir != "" || c.cacheSize != "" || c.deleteDelay != "":
			return errors.New("--cache-dir, --cache-size and --delete-delay are for --data swift://CONTAINER")
		}
		return nil
	}
	container := strings.TrimSuffix(strings.TrimPrefix(sc.Data, "swift://"), "/")
	if container == "" || strings.ContainsAny(container, "/?#@:") || len(container) > 200 {
		return fmt.Errorf("--data %q: want swift://CONTAINER (a container name, no / ? # @ :)", sc.Data)
	}
	ss := &swiftSettings{Container: container, Timeout: defaultSwiftTimeout, DeleteDelay: defaultDeleteDelay}
	conn := &swift.Connection{}
	if err := conn.ApplyEnvironment(); err != nil {
		// Its errors name a numeric setting (GOSWIFT_TIMEOUT, ...), never a key.
		return fmt.Errorf("Swift settings in the environment: %w", err)
	}
	if conn.Timeout > 0 { // GOSWIFT_TIMEOUT; [data] timeout wins
		ss.Timeout = conn.Timeout
	}
	if err := applyDataConfig(conn, ss, sc.DataConfig, sc.ConfigFile); err != nil {
		return err
	}
	if conn.AuthUrl == "" || conn.UserName == "" && conn.UserId == "" && conn.ApplicationCredentialId == "" {
		return errors.New("--data swift://: no Swift account: set ST_AUTH, ST_USER and ST_KEY (or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, ...) in the daemon's environment, or in [data] of the config file (--config)")
	}
	ss.conn = conn
	var err error
	if c.cacheDir != "" {
		ss.CacheDir, err = filepath.Abs(c.cacheDir)
	} else {
		ss.CacheDir, err = filepath.Abs(filepath.Join(c.store, "swift-cache"))
	}
	if err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	if c.cacheSize != "" {
		if ss.CacheSize, err = parseSize(c.cacheSize); err != nil {
			return fmt.Errorf("--cache-size %q: %v", c.cacheSize, err)
		}
	}
	if c.deleteDelay != "" {
		if ss.DeleteDelay, err = time.ParseDuration(c.deleteDelay); err != nil || ss.DeleteDelay < 0 {
			return fmt.Errorf("--delete-delay %q: want a duration (10m, 1h, 0s)", c.deleteDelay)
		}
		if ss.DeleteDelay == 0 {
			ss.DeleteDelay = -1 // swiftdata: at once
		}
	}
	if c.segmentSize != "" {
		if ss.SegmentSize, err = parseSize(c.segmentSize); err != nil || ss.SegmentSize < 1<<20 || ss.SegmentSize > 5<<30 {
			return fmt.Errorf("--swift-segment-size %q: want 1M to 5G", c.segmentSize)
		}
	}
	sc.Swift = ss
	return nil
}

// applyDataConfig sets conn's fields from [data] (vals).
func applyDataConfig(conn *swift.Connection, ss *swiftSettings, vals map[string]string, path string) error {
	str := map[string]*string{
		"st_auth": &conn.AuthUrl, "st_user": &conn.UserName, "st_key": &conn.ApiKey,
		"os_auth_url": &conn.AuthUrl, "os_username": &conn.UserName, "os_password": &conn.ApiKey,
		"os_user_id": &conn.UserId, "os_project_name": &conn.Tenant, "os_project_id": &conn.TenantId,
		"os_tenant_name": &conn.Tenant, "os_tenant_id": &conn.TenantId,
		"os_user_domain_name": &conn.Domain, "os_user_domain_id": &conn.DomainId,
		"os_project_domain_name": &conn.TenantDomain, "os_project_domain_id": &conn.TenantDomainId,
		"os_region_name":                   &conn.Region,
		"os_application_credential_id":     &conn.ApplicationCredentialId,
		"os_application_credential_secret": &conn.ApplicationCredentialSecret,
	}
	for k, v := range vals {
		if p := str[k]; p != nil {
			*p = v
		}
	}
	if v := vals["os_endpoint_type"]; v != "" {
		conn.EndpointType = swift.EndpointType(v)
	}
	if v := vals["st_auth_version"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 3 {
			return fmt.Errorf("config file %s: st_auth_version = %q: want 1, 2 or 3", path, v)
		}
		conn.AuthVersion = n
	}
	if v := vals["timeout"]; v != "" {
		t, err := time.ParseDuration(v)
		if err != nil || t <= 0 {
			return fmt.Errorf("config file %s: timeout = %q: want a positive duration (10s)", path, v)
		}
		ss.Timeout = t
	}
	return nil
}

// openSwiftData opens the Swift data store of ss.
func openSwiftData(ss *swiftSettings, host string, lg *slog.Logger) (*swiftdata.Backend, error) {
	return swiftdata.New(swiftdata.Config{
		Conn: ss.conn, Container: ss.Container, SegmentSize: ss.SegmentSize,
		CacheDir: ss.CacheDir, CacheSize: ss.CacheSize, DeleteDelay: ss.DeleteDelay,
		Timeout: ss.Timeout, Host: host, Logger: lg,
	})
}

// parseSize parses a byte count: N, or N with K, M, G, T (powers of 1024;
// KiB, MB... accepted as the same).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, errors.New("want a byte count: N, NK, NM, NG or NT")
	}
	return n * mult, nil
}

// swiftCollector exports the Swift data store's counters (set once the
// backend is open).
type swiftCollector struct {
	b atomic.Pointer[swiftdata.Backend]
}

type swiftMetric struct {
	name, help string
	counter    bool
	val        func(swiftdata.Stats) int64
}

// swiftDescs are the descriptions of swiftMetrics, in order.
var swiftDescs = func() []*prometheus.Desc {
	d := make([]*prometheus.Desc, len(swiftMetrics))
	for i, m := range swiftMetrics {
		d[i] = prometheus.NewDesc("imagefs_data_"+m.name, m.help, nil, nil)
	}
	return d
}()

var swiftMetrics = []swiftMetric{
	{"fetches_total", "Images downloaded from Swift into this host's cache, verified.", true, func(s swiftdata.Stats) int64 { return s.Fetches }},
	{"fetch_bytes_total", "Bytes downloaded from Swift into the cache, verified.", true, func(s swiftdata.Stats) int64 { return s.FetchBytes }},
	{"fetch_failures_total", "Downloads from Swift that failed (Swift error, or a mismatch).", true, func(s swiftdata.Stats) int64 { return s.FetchFailures }},
	{"verify_failures_total", "Downloads whose size, MD5 or SHA-512 did not match the catalog (quarantined; the log names the image).", true, func(s swiftdata.Stats) int64 { return s.VerifyFailures }},
	{"cache_hits_total", "Opens served by a copy already in the cache.", true, func(s swiftdata.Stats) int64 { return s.CacheHits }},
	{"uploads_total", "Seals uploaded to Swift (segments and manifest).", true, func(s swiftdata.Stats) int64 { return s.Uploads }},
	{"streamed_segments_total", "Segments sent to Swift while their upload was still being written.", true, func(s swiftdata.Stats) int64 { return s.Streamed }},
	{"upload_bytes_total", "Bytes uploaded to Swift by seals.", true, func(s swiftdata.Stats) int64 { return s.UploadBytes }},
	{"upload_failures_total", "Seals that Swift did not take (the image is killed).", true, func(s swiftdata.Stats) int64 { return s.UploadFailures }},
	{"evictions_total", "Cached copies evicted past --cache-size.", true, func(s swiftdata.Stats) int64 { return s.Evictions }},
	{"deletes_total", "Deleted images whose objects were removed from Swift.", true, func(s swiftdata.Stats) int64 { return s.Deletes }},
	{"deletes_pending", "Deleted images whose objects wait for --delete-delay.", false, func(s swiftdata.Stats) int64 { return s.DeletesPending }},
	{"cache_bytes", "Bytes of the cached copies.", false, func(s swiftdata.Stats) int64 { return s.CacheBytes }},
	{"cache_images", "Images in the cache.", false, func(s swiftdata.Stats) int64 { return s.CacheEntries }},
}

func (c *swiftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range swiftDescs {
		ch <- d
	}
}

func (c *swiftCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b.Load()
	if b == nil {
		return
	}
	st := b.Stats()
	for i, m := range swiftMetrics {
		t := prometheus.GaugeValue
		if m.counter {
			t = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(swiftDescs[i], t, float64(m.val(st)))
	}
}
