package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testSecret = "s3cr3t-Pa55word-Do-Not-Print"

// writeConfig writes a config file with mode perm in dir.
func writeConfig(t *testing.T, dir, text string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "etcd.conf")
	if err := os.WriteFile(p, []byte(text), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func TestSharedFlags(t *testing.T) {
	data := t.TempDir()
	c := defaultMountConfig()
	var opts []string
	fl := mountFlags(c, &opts)
	err := fl.Parse([]string{"--catalog", "etcd://127.0.0.1:2379,127.0.0.1:22379,[::1]:32379,etcd.example", "--data", data, "--host-id", "host-a", "store", "mnt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	if err := c.resolveShared(); err != nil {
		t.Fatal(err)
	}
	want := &sharedConfig{
		Endpoints: []string{"http://127.0.0.1:2379", "http://127.0.0.1:22379", "http://[::1]:32379", "http://etcd.example:2379"},
		Namespace: "/imagefs/", DialTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second, LeaseTTL: 10 * time.Second,
		Data: data, Host: "host-a",
	}
	if !reflect.DeepEqual(c.shared, want) {
		t.Errorf("got  %+v\nwant %+v", *c.shared, *want)
	}

	// Not shared: nothing to resolve.
	c = defaultMountConfig()
	if err := c.resolveShared(); err != nil || c.shared != nil {
		t.Errorf("single host: shared %v, err %v", c.shared, err)
	}

	// The default host id is the hostname.
	c = defaultMountConfig()
	c.catalog, c.data = "etcd+tls://h:1", data
	if err := c.resolveShared(); err != nil {
		t.Fatal(err)
	}
	if h, _ := os.Hostname(); c.shared.Host != h {
		t.Errorf("host %q, want the hostname %q", c.shared.Host, h)
	}
	if !c.shared.TLS || c.shared.Endpoints[0] != "https://h:1" {
		t.Errorf("etcd+tls: %+v", c.shared)
	}
}

func TestSharedUsageErrors(t *testing.T) {
	data := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--catalog", "etcd://h:2379"}, "--catalog needs --data"},
		{[]string{"--data", data}, "--data needs --catalog"},
		{[]string{"--config", "/x"}, "needs --data"},
		{[]string{"--host-id", "a"}, "--host-id is for shared mode"},
		{[]string{"-o", "catalog=etcd://h:2379"}, "--catalog needs --data"},
		{[]string{"-o", "data=" + data}, "--data needs --catalog"},
	} {
		c := defaultMountConfig()
		var opts []string
		fl := mountFlags(c, &opts)
		if err := fl.Parse(append(tc.args, "store", "mnt")); err != nil {
			t.Fatal(err)
		}
		var err error
		for _, o := range opts {
			if err = c.applyOptions(o); err != nil {
				break
			}
		}
		if err == nil {
			err = c.check()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.args, err, tc.want)
		}
	}
	for cat, want := range map[string]string{
		"h:2379":                                "want etcd://",
		"http://h:2379":                         "want etcd:// (plain) or etcd+tls://",
		"etcd://h:99999":                        "want 1 to 65535",
		"etcd://h:2379,,g":                      "empty HOST:PORT",
		"etcd://h:2379/path":                    "want only HOST:PORT",
		"etcd://:2379":                          "no host",
		"etcd://user:" + testSecret + "@h:2379": "credentials in the URL are refused",
		"https://user:" + testSecret + "@h":     "credentials in the URL are refused",
	} {
		c := defaultMountConfig()
		c.catalog, c.data = cat, data
		err := c.resolveShared()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("catalog %q: err %v, want %q", cat, err, want)
		} else if strings.Contains(err.Error(), testSecret) {
			t.Errorf("catalog error quotes the password: %v", err)
		}
	}
	for _, id := range []string{"a/b", "a b", strings.Repeat("x", 254)} {
		c := defaultMountConfig()
		c.catalog, c.data, c.hostID = "etcd://h", data, id
		if err := c.resolveShared(); err == nil {
			t.Errorf("--host-id %q accepted", id)
		}
	}
	c := defaultMountConfig()
	c.catalog, c.data = "etcd://h", filepath.Join(data, "missing")
	if err := c.resolveShared(); err == nil {
		t.Errorf("a missing data directory was accepted")
	}
}

func TestSharedOptions(t *testing.T) {
	c := defaultMountConfig()
	list := "ro,catalog=etcd://10.0.0.1:2379,10.0.0.2:2379,[::1]:2379,data=/srv/images,config=/etc/imagefs/etcd.conf,host-id=hv-7,allow_other"
	if err := c.applyOptions(list); err != nil {
		t.Fatal(err)
	}
	if c.catalog != "etcd://10.0.0.1:2379,10.0.0.2:2379,[::1]:2379" || c.data != "/srv/images" ||
		c.configFile != "/etc/imagefs/etcd.conf" || c.hostID != "hv-7" || !c.readOnly || !c.allowOther {
		t.Errorf("applyOptions(%q) = %+v", list, c)
	}
	// A host list does not swallow what follows another option.
	if err := defaultMountConfig().applyOptions("data=/x,h:2379"); err == nil {
		t.Errorf("a HOST:PORT after data= was accepted")
	}
	// Credentials are refused as options, and their values never quoted.
	for _, opt := range []string{"password=" + testSecret, "user=admin,password=" + testSecret, "key=" + testSecret, "passwd-x=" + testSecret} {
		err := defaultMountConfig().applyOptions(opt)
		if err == nil {
			t.Errorf("applyOptions(%q) accepted", opt)
			continue
		}
		if strings.Contains(err.Error(), testSecret) {
			t.Errorf("applyOptions(%q): the error quotes the value: %v", opt, err)
		}
	}
	// There is no flag for a password (and pflag does not quote one).
	c = defaultMountConfig()
	var opts []string
	fl := mountFlags(c, &opts)
	err := fl.Parse([]string{"--password=" + testSecret, "s", "m"})
	if err == nil || strings.Contains(err.Error(), testSecret) {
		t.Errorf("--password=...: err %v", err)
	}
}

func TestSharedConfigFile(t *testing.T) {
	dir := t.TempDir()
	data := t.TempDir()
	for _, f := range []string{"client.crt", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "client.key"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := `# imagefs shared catalog
[etcd]
endpoints = etcd+tls://10.0.0.1:2379,10.0.0.2:2379
username = imagefs
password = ` + testSecret + `
 cert = client.crt
key = ` + filepath.Join(dir, "client.key") + `
ca=ca.crt
; timeouts
dial_timeout = 2s
request_timeout = 1500ms
lease_ttl = 7s
namespace = /test/ns/
`
	conf := writeConfig(t, dir, text, 0o600)
	c := defaultMountConfig()
	c.configFile, c.data, c.hostID = conf, data, "h1"
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	if err := c.resolveShared(); err != nil {
		t.Fatal(err)
	}
	want := &sharedConfig{
		Endpoints: []string{"https://10.0.0.1:2379", "https://10.0.0.2:2379"}, TLS: true,
		Namespace: "/test/ns/", Username: "imagefs", Password: testSecret,
		CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key"), CAFile: filepath.Join(dir, "ca.crt"),
		DialTimeout: 2 * time.Second, RequestTimeout: 1500 * time.Millisecond, LeaseTTL: 7 * time.Second,
		Data: data, Host: "h1", ConfigFile: conf,
	}
	if !reflect.DeepEqual(c.shared, want) {
		t.Errorf("got  %+v\nwant %+v", *c.shared, *want)
	}
	// Printed or logged, the config shows no password.
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("shared catalog", "catalog", c.shared)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("shared catalog", "catalog", c.shared)
	printed := fmt.Sprintf("%v %+v %#v %s", c.shared, c.shared, c.shared, c.shared) + logged.String()
	if strings.Contains(printed, testSecret) {
		t.Errorf("the password is printed: %s", printed)
	}
	if !strings.Contains(logged.String(), "10.0.0.2:2379") {
		t.Errorf("the log line lacks the endpoints: %s", logged.String())
	}

	// --catalog wins over the file's endpoints.
	c = defaultMountConfig()
	c.configFile, c.data, c.catalog = conf, data, "etcd+tls://other:1"
	if err := c.resolveShared(); err != nil || c.shared.Endpoints[0] != "https://other:1" {
		t.Errorf("--catalog and endpoints: %v, %v", c.shared, err)
	}
	// cert or ca with plain etcd:// is an error.
	c = defaultMountConfig()
	c.configFile, c.data, c.catalog = conf, data, "etcd://other:1"
	if err := c.resolveShared(); err == nil || !strings.Contains(err.Error(), "use etcd+tls://") {
		t.Errorf("cert with etcd://: %v", err)
	}

	// A secret in a file group or others can read: refused, naming the
	// file and chmod 600.
	for _, perm := range []os.FileMode{0o640, 0o604, 0o660, 0o602} {
		writeConfig(t, dir, text, perm)
		c := defaultMountConfig()
		c.configFile, c.data = conf, data
		err := c.resolveShared()
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+conf) {
			t.Errorf("mode %04o: err %v, want chmod 600 %s", perm, err, conf)
		}
	}
	// Without a secret, any mode will do.
	writeConfig(t, dir, "[etcd]\nendpoints = etcd://h:1\nlease_ttl = 3s\n", 0o644)
	c = defaultMountConfig()
	c.configFile, c.data = conf, data
	if err := c.resolveShared(); err != nil {
		t.Errorf("a config without secrets, mode 0644: %v", err)
	}
	// A key path in a readable file is refused too, and so is a key file
	// others can read.
	keyOnly := "[etcd]\nendpoints = etcd+tls://h:1\ncert = client.crt\nkey = client.key\n"
	writeConfig(t, dir, keyOnly, 0o644)
	c = defaultMountConfig()
	c.configFile, c.data = conf, data
	if err := c.resolveShared(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("key path, mode 0644: %v", err)
	}
	writeConfig(t, dir, keyOnly, 0o600)
	os.Chmod(filepath.Join(dir, "client.key"), 0o644)
	c = defaultMountConfig()
	c.configFile, c.data = conf, data
	if err := c.resolveShared(); err == nil || !strings.Contains(err.Error(), "chmod 600 "+filepath.Join(dir, "client.key")) {
		t.Errorf("key file mode 0644: %v", err)
	}
	os.Chmod(filepath.Join(dir, "client.key"), 0o600)
}

// TestSharedConfigErrorsHideSecrets: every malformed config file, each
// holding the password, gets an error naming the file and line, and the
// error never contains the password.
func TestSharedConfigErrorsHideSecrets(t *testing.T) {
	dir := t.TempDir()
	data := t.TempDir()
	for text, want := range map[string]string{
		"password = " + testSecret + "\n[etcd]\n":                                       "line 1: a key before [etcd]",
		"[etcd]\n" + testSecret + "\n":                                                  "line 2: want key = value",
		"[etcd]\npassword " + testSecret + "\n":                                         "line 2: want key = value",
		"[etcd]\npasword = " + testSecret + "\n":                                        `line 2: unknown key "pasword"`,
		"[etcd]\n" + testSecret + " = x\n":                                              "line 2: unknown key",
		"[etcd]\nusername=u\npassword = " + testSecret + "\npassword = " + testSecret:   "line 4: password given twice",
		"[etcd]\npassword = " + testSecret + "\n":                                       "username and password go together",
		"[" + testSecret + "]\n":                                                        "line 1: unknown section",
		"[etcd]\nusername = u\npassword = " + testSecret + "\nlease_ttl = 1.5s\n":       "lease_ttl = 1.5s: want whole seconds",
		"[etcd]\nusername = u\npassword = " + testSecret + "\ndial_timeout = soon\n":    `dial_timeout = "soon"`,
		"[etcd]\nusername = u\npassword = " + testSecret + "\nnamespace = imagefs\n":    "want a key prefix",
		"[etcd]\nusername = u\npassword = " + testSecret + "\n":                         "no catalog",
		"[etcd]\nusername = u\npassword = " + testSecret + "\nkey = nope.key\ncert=x\n": "cert: stat",
		"[etcd]\npassword = " + testSecret + strings.Repeat("x", 70<<10) + "\n":         "token too long",
	} {
		conf := writeConfig(t, dir, text, 0o600)
		c := defaultMountConfig()
		c.configFile, c.data = conf, data
		err := c.resolveShared()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %.40q: err %v, want %q", text, err, want)
			continue
		}
		if !strings.Contains(err.Error(), conf) {
			t.Errorf("config %.40q: the error does not name the file: %v", text, err)
		}
		if strings.Contains(err.Error(), testSecret) {
			t.Errorf("config %.40q: the error holds the password: %v", text, err)
		}
	}
	c := defaultMountConfig()
	c.configFile, c.data = filepath.Join(dir, "none.conf"), data
	if err := c.resolveShared(); err == nil {
		t.Errorf("a missing config file was accepted")
	}
}
