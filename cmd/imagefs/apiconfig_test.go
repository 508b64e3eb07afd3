package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAPIKeystoneConfig: --api-auth keystone takes Keystone's settings and
// project lines from the config file, in single-host mode too; it may
// listen on any address; the file must be private when it holds the
// password, and no error quotes a value.
func TestAPIKeystoneConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "imagefs.conf")
	const text = `# the API's Keystone
[keystone]
auth_url = http://127.0.0.1:5000/v3
username = imagefs
password = s3cret-pw
project_name = service
timeout = 2s
cache_size = 100
[api]
project = 0123abcd=1001
project = 4567ef=1002
`
	os.WriteFile(conf, []byte(text), 0o600)
	c := defaultMountConfig()
	if err := c.applyOptions("api_listen=0.0.0.0:9292,api_auth=keystone,config=" + conf + ",api_project=demo=1000"); err != nil {
		t.Fatal(err)
	}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	if c.isShared() {
		t.Fatal("a config file with [keystone] only, no --data: shared mode")
	}
	if err := c.resolveShared(); err != nil || c.shared != nil {
		t.Fatalf("resolveShared: %v %+v", err, c.shared)
	}
	if err := c.resolveAPIConfig(); err != nil {
		t.Fatal(err)
	}
	k := c.api.keystone
	if k == nil || k.AuthURL != "http://127.0.0.1:5000/v3" || k.Username != "imagefs" || k.Password != "s3cret-pw" ||
		k.Project != "service" || k.Timeout != 2*time.Second || k.CacheSize != 100 {
		t.Fatalf("keystone settings: %+v", k)
	}
	if c.api.projects["0123abcd"] != 1001 || c.api.projects["4567ef"] != 1002 || c.api.projects["demo"] != 1000 {
		t.Fatalf("projects: %v", c.api.projects)
	}

	// Readable by others: refused, with the way out.
	os.Chmod(conf, 0o644)
	c = defaultMountConfig()
	c.applyOptions("api_listen=127.0.0.1:9292,api_auth=keystone,config=" + conf)
	if err := c.resolveAPIConfig(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable config with the password: %v", err)
	}
	os.Chmod(conf, 0o600)

	for _, tc := range []struct{ text, want string }{
		{"[keystone]\nauth_url = http://k/v3\nusername = u\nproject_name = p\n", "needs password"},
		{"[keystone]\npassword = s3cret-pw\n", "needs auth_url"},
		{"[keystone]\ns3cret-pw\n", "want key = value"},
		{"[keystone]\nS3cret-pw = x\n", "unknown key"},
		{"[keystone]\npasswd = s3cret-pw\n", `unknown key "passwd"`},
		{"[api]\nproject = x\n", "want PROJECT_ID=UID"},
		{"[api]\nproject = x=1\nproject = x=2\n", "mapped twice"},
		{"[keystone]\ntimeout = s3cret-pw\n", "needs auth_url"},
		{"[ldap]\n", "unknown section"},
		{"[etcd]\nendpoints = etcd://h:1\n", "needs --data"},
		{"[api]\n", "no [keystone] section"},
	} {
		os.WriteFile(conf, []byte(tc.text), 0o600)
		c := defaultMountConfig()
		c.applyOptions("api_listen=127.0.0.1:9292,api_auth=keystone,config=" + conf)
		err := c.resolveAPIConfig()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: %v, want %q", tc.text, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("config %q: the error quotes the secret: %v", tc.text, err)
		}
	}

	// Shared mode's reader skips the API's sections.
	data := t.TempDir()
	os.WriteFile(conf, []byte("[etcd]\nendpoints = etcd://127.0.0.1:1\n"+text), 0o600)
	c = defaultMountConfig()
	c.applyOptions("api_listen=127.0.0.1:9292,api_auth=keystone,config=" + conf + ",data=" + data)
	if err := c.resolveShared(); err != nil || c.shared == nil {
		t.Fatalf("shared mode with [keystone] in its config: %v", err)
	}
	if err := c.resolveAPIConfig(); err != nil || c.api.keystone == nil {
		t.Fatalf("shared mode's API config: %v", err)
	}
}

// TestAPIClientSocketTimeout: [api] client_socket_timeout (Glance's,
// whole seconds) is the API's no-progress limit on an image body; 0 is
// no limit, absent is imagesapi's default (900 s).
func TestAPIClientSocketTimeout(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "imagefs.conf")
	for _, tc := range []struct {
		text string
		want time.Duration
		err  string
	}{
		{"[api]\nclient_socket_timeout = 30\n", 30 * time.Second, ""},
		{"[api]\nclient_socket_timeout = 0\n", -1, ""},
		{"[api]\nproject = x=1001\n", 0, ""},
		{"[api]\nclient_socket_timeout = 5m\n", 0, "client_socket_timeout: want whole seconds"},
		{"[api]\nclient_socket_timeout = -1\n", 0, "client_socket_timeout: want whole seconds"},
		{"[api]\nclient_socket_timeout = 30\nclient_socket_timeout = 40\n", 0, "given twice"},
	} {
		os.WriteFile(conf, []byte(tc.text), 0o600)
		c := defaultMountConfig()
		if err := c.applyOptions("api_listen=127.0.0.1:9292,config=" + conf); err != nil {
			t.Fatal(err)
		}
		err := c.resolveAPIConfig()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("config %q: %v, want %q", tc.text, err, tc.err)
			}
			continue
		}
		if err != nil || c.api.idle != tc.want {
			t.Errorf("config %q: %v, idle %v, want %v", tc.text, err, c.api.idle, tc.want)
		}
	}
}
