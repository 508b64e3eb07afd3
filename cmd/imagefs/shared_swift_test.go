package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// swiftConfig parses args (imagefs mount's, STORE and MOUNTPOINT last)
// and resolves shared mode.
func swiftConfig(t *testing.T, args ...string) (*mountConfig, error) {
	t.Helper()
	c := defaultMountConfig()
	var opts []string
	fl := mountFlags(c, &opts)
	if err := fl.Parse(args); err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		if err := c.applyOptions(o); err != nil {
			return c, err
		}
	}
	c.store = fl.Arg(0)
	return c, c.resolveShared()
}

func clearSwiftEnv(t *testing.T) {
	for _, k := range []string{"ST_AUTH", "ST_USER", "ST_KEY", "OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD",
		"OS_PROJECT_NAME", "OS_USER_DOMAIN_NAME", "OS_PROJECT_DOMAIN_NAME", "OS_REGION_NAME", "GOSWIFT_TIMEOUT", "ST_AUTH_VERSION"} {
		t.Setenv(k, "")
	}
}

func TestSwiftDataFromEnvironment(t *testing.T) {
	clearSwiftEnv(t)
	store := t.TempDir()
	t.Setenv("ST_AUTH", "http://127.0.0.1:1/auth/v1.0")
	t.Setenv("ST_USER", "test:tester")
	t.Setenv("ST_KEY", testSecret)
	c, err := swiftConfig(t, "--catalog", "etcd://127.0.0.1:1", "--data", "swift://images", "--host-id", "h",
		"--cache-size", "2G", "--delete-delay", "90s", store, "mnt")
	if err != nil {
		t.Fatal(err)
	}
	ss := c.shared.Swift
	if ss == nil || ss.Container != "images" || ss.conn.AuthUrl != "http://127.0.0.1:1/auth/v1.0" ||
		ss.conn.UserName != "test:tester" || ss.conn.ApiKey != testSecret {
		t.Fatalf("swift settings from ST_*: %+v", ss)
	}
	if ss.CacheDir != filepath.Join(store, "swift-cache") || ss.CacheSize != 2<<30 || ss.DeleteDelay != 90*time.Second || ss.Timeout != defaultSwiftTimeout {
		t.Errorf("cache %s size %d delete delay %v timeout %v", ss.CacheDir, ss.CacheSize, ss.DeleteDelay, ss.Timeout)
	}
	// Printed and logged without the key.
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "catalog", c.shared, "data", ss.String())
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", c.shared, c.shared, c.shared, ss), buf.String()} {
		if strings.Contains(s, testSecret) {
			t.Errorf("the key is printed: %s", s)
		}
	}

	// Keystone v3 from OS_*.
	clearSwiftEnv(t)
	t.Setenv("OS_AUTH_URL", "https://keystone.example/v3")
	t.Setenv("OS_USERNAME", "u")
	t.Setenv("OS_PASSWORD", testSecret)
	t.Setenv("OS_PROJECT_NAME", "p")
	t.Setenv("OS_USER_DOMAIN_NAME", "Default")
	t.Setenv("GOSWIFT_TIMEOUT", "3s")
	c, err = swiftConfig(t, "--catalog", "etcd://127.0.0.1:1", "-o", "data=swift://images,cache_dir=/var/cache/x,delete_delay=0s", "--host-id", "h", store, "mnt")
	if err != nil {
		t.Fatal(err)
	}
	ss = c.shared.Swift
	if ss.conn.Tenant != "p" || ss.conn.Domain != "Default" || ss.conn.ApiKey != testSecret || ss.Timeout != 3*time.Second ||
		ss.CacheDir != "/var/cache/x" || ss.DeleteDelay >= 0 {
		t.Errorf("swift settings from OS_* and -o: %+v conn tenant %q domain %q", ss, ss.conn.Tenant, ss.conn.Domain)
	}

	// Never on the command line.
	if _, err := swiftConfig(t, "-o", "st_key="+testSecret, store, "mnt"); err == nil || strings.Contains(err.Error(), testSecret) {
		t.Errorf("-o st_key=: %v, want refused without the key", err)
	}

	// No account anywhere.
	clearSwiftEnv(t)
	if _, err := swiftConfig(t, "--catalog", "etcd://127.0.0.1:1", "--data", "swift://images", "--host-id", "h", store, "mnt"); err == nil || !strings.Contains(err.Error(), "ST_AUTH") {
		t.Errorf("no credentials: %v", err)
	}
}

func TestSwiftDataConfigFile(t *testing.T) {
	clearSwiftEnv(t)
	t.Setenv("ST_AUTH", "http://env.example/auth/v1.0")
	t.Setenv("ST_USER", "env:user")
	t.Setenv("ST_KEY", "env-key")
	dir, store := t.TempDir(), t.TempDir()
	text := "[etcd]\nendpoints = etcd://127.0.0.1:1\n[data]\nst_auth = http://file.example/auth/v1.0\nst_user = file:user\nst_key = " + testSecret + "\ntimeout = 4s\n"
	p := writeConfig(t, dir, text, 0o644)
	if _, err := swiftConfig(t, "--config", p, "--data", "swift://c", "--host-id", "h", store, "mnt"); err == nil || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), testSecret) {
		t.Errorf("a readable config file with st_key: %v, want refused (chmod 600) without the key", err)
	}
	p = writeConfig(t, dir, text, 0o600)
	c, err := swiftConfig(t, "--config", p, "--data", "swift://c", "--host-id", "h", store, "mnt")
	if err != nil {
		t.Fatal(err)
	}
	if ss := c.shared.Swift; ss.conn.AuthUrl != "http://file.example/auth/v1.0" || ss.conn.UserName != "file:user" || ss.conn.ApiKey != testSecret || ss.Timeout != 4*time.Second {
		t.Errorf("[data] does not win over the environment: %+v", ss)
	}
	for _, bad := range []struct{ text, want string }{
		{"[data]\n" + testSecret + " = x\n", "unknown key"},
		{"[data]\nst_key = " + testSecret + "\nst_key = " + testSecret + "\n", "given twice"},
		{"[data]\nst_auth_version = " + testSecret + "\n", "want 1, 2 or 3"},
		{"[data]\ntimeout = never\n", "want a positive duration"},
		{"[swift]\n", "unknown section"},
	} {
		p := writeConfig(t, dir, "[etcd]\nendpoints = etcd://127.0.0.1:1\n"+bad.text, 0o600)
		_, err := swiftConfig(t, "--config", p, "--data", "swift://c", "--host-id", "h", store, "mnt")
		if err == nil || !strings.Contains(err.Error(), bad.want) || bad.want != "want 1, 2 or 3" && strings.Contains(err.Error(), testSecret) {
			t.Errorf("config %q: %v, want an error with %q and no secret", bad.text, err, bad.want)
		}
	}
	// [data] and the cache flags need swift://.
	p = writeConfig(t, dir, text, 0o600)
	if _, err := swiftConfig(t, "--config", p, "--data", t.TempDir(), "--host-id", "h", store, "mnt"); err == nil || !strings.Contains(err.Error(), "[data]") {
		t.Errorf("[data] with a data directory: %v", err)
	}
	if _, err := swiftConfig(t, "--catalog", "etcd://127.0.0.1:1", "--data", t.TempDir(), "--cache-size", "1G", "--host-id", "h", store, "mnt"); err == nil || !strings.Contains(err.Error(), "swift://") {
		t.Errorf("--cache-size with a data directory: %v", err)
	}
	for _, bad := range []string{"swift://", "swift://a/b", "swift://u:p@c"} {
		if _, err := swiftConfig(t, "--catalog", "etcd://127.0.0.1:1", "--data", bad, "--host-id", "h", store, "mnt"); err == nil {
			t.Errorf("--data %s accepted", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512": 512, "4K": 4096, "1M": 1 << 20, "1MiB": 1 << 20, "10G": 10 << 30, "2t": 2 << 40, "3GB": 3 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5G", "1P", "99999999999T"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
