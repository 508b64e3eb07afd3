package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
)

// keystoneMount is a mount serving the Images API in keystone mode, the
// test Keystone of scripts/keystone.sh validating its tokens, projects
// tp1 and tp2 mapped to uids 1001 and 1002.
type keystoneMount struct {
	*fsMount
	url string
	k   testutil.Keystone
}

func mountWithKeystoneAPI(t *testing.T) *keystoneMount {
	t.Helper()
	requireTools(t, "openstack", "qemu-img")
	if skipReason != "" {
		t.Skip(skipReason)
	}
	k := testutil.KeystoneServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	m := mount(t)
	svc := k.Account(t, "imagefs")
	sections := fmt.Sprintf("[keystone]\nauth_url = %s\nusername = %s\npassword = %s\nproject_name = %s\ntimeout = 30s\n[api]\nproject = %s=1001\nproject = %s=1002\n",
		k.AuthURL, svc.User, svc.Password, svc.Project, k.Projects["tp1"], k.Projects["tp2"])
	// On a shared catalog (IMAGEFS_TEST_CATALOG=etcd) the mount has a
	// config file already: the sections go into it.
	addAPISections(t, m, sections)
	m.Args = append(m.Args, "--api-listen", addr, "--api-auth", "keystone")
	m.remount()
	return &keystoneMount{fsMount: m, url: "http://" + addr, k: k}
}

// osc runs the openstack CLI as user with password authentication through
// Keystone (the password in a clouds.yaml of mode 0600, not the command
// line), the image endpoint overridden to the mount's API
// (image_endpoint_override: the catalog's endpoint is another port).
func (a *keystoneMount) osc(user string, args ...string) result {
	acc := a.k.Account(a.t, user)
	home := filepath.Join(a.t.TempDir(), "home")
	os.MkdirAll(filepath.Join(home, ".config", "openstack"), 0o700)
	clouds := fmt.Sprintf("clouds:\n  t:\n    auth:\n      auth_url: %s\n      username: %s\n      password: %s\n      project_name: %s\n"+
		"      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n"+
		"    identity_api_version: 3\n    image_endpoint_override: %s\n", a.k.AuthURL, acc.User, acc.Password, acc.Project, a.url)
	if err := os.WriteFile(filepath.Join(home, ".config", "openstack", "clouds.yaml"), []byte(clouds), 0o600); err != nil {
		a.t.Fatal(err)
	}
	cmd := exec.Command("openstack", args...)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OS_") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "HOME="+home, "OS_CLOUD=t")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), err: err}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	return r
}

func (a *keystoneMount) oscOK(user string, args ...string) string {
	a.t.Helper()
	r := a.osc(user, args...)
	if r.err != nil {
		a.t.Fatalf("openstack (as %s) %s: %s", user, strings.Join(args, " "), r)
	}
	return r.stdout
}

// TestAPIKeystoneOpenstackCLI: the real openstack CLI, authenticated by
// password through the real Keystone, against a mount's API in keystone
// mode: a member's image belongs to its project's uid on the mount and
// to its project through the API, another project does not see it until
// it is public, the admin role is root, and requests without a valid
// token are 401.
func TestAPIKeystoneOpenstackCLI(t *testing.T) {
	a := mountWithKeystoneAPI(t)
	vhd := makeVHD(t, 4*mib, "fixed")

	id := strings.TrimSpace(a.oscOK("tu1", "image", "create", "--file", vhd.Path, "--disk-format", "vhd",
		"--container-format", "bare", "--private", "--property", "os_distro=superos", "-f", "value", "-c", "id", "ks-img"))
	if got := a.prop("ks-img", "id"); got != id {
		t.Fatalf("images/ks-img has id %s, the CLI created %s", got, id)
	}
	if uid := strings.TrimSpace(run(t, "stat", "-c", "%u", a.images("ks-img"))); uid != "1001" || a.prop("ks-img", "owner") != "1001" {
		t.Fatalf("images/ks-img: uid %s, owner %s; want tp1's uid 1001", uid, a.prop("ks-img", "owner"))
	}
	if a.prop("ks-img", "status") != "active" || a.prop("ks-img", "checksum") != vhd.MD5 {
		t.Fatalf("images/ks-img: status %s checksum %s", a.prop("ks-img", "status"), a.prop("ks-img", "checksum"))
	}
	cmp(t, vhd.Path, a.dataFile("ks-img"))
	var shown map[string]any
	if err := json.Unmarshal([]byte(a.oscOK("tu1", "image", "show", "-f", "json", id)), &shown); err != nil {
		t.Fatal(err)
	}
	if shown["owner"] != a.k.Projects["tp1"] {
		t.Fatalf("owner through the API: %v, want tp1's id %s", shown["owner"], a.k.Projects["tp1"])
	}

	// Another project: not listed, not shown; then public: listed.
	names := func(user string) []string {
		return strings.Fields(a.oscOK(user, "image", "list", "-f", "value", "-c", "Name"))
	}
	if slices.Contains(names("tu2"), "ks-img") {
		t.Fatal("tp2 lists tp1's private image")
	}
	if r := a.osc("tu2", "image", "show", id); r.err == nil {
		t.Fatalf("tp2 shows tp1's private image: %s", r)
	}
	// The admin role is root: it may make the image public (a member may
	// not, as in Glance's default policy and on the mount).
	if r := a.osc("tu1", "image", "set", "--public", id); r.err == nil {
		t.Fatalf("a member made an image public: %s", r)
	}
	a.oscOK("tuadm", "image", "set", "--public", id)
	if a.prop("ks-img", "visibility") != "public" || !slices.Contains(names("tu2"), "ks-img") {
		t.Fatal("the admin's --public is not seen by the mount or by tp2")
	}
	// tp3 has no uid: it sees public images, may create nothing.
	if !slices.Contains(names("tu3"), "ks-img") {
		t.Fatal("tp3 (unmapped) does not list a public image")
	}
	if r := a.osc("tu3", "image", "create", "--disk-format", "vhd", "--container-format", "bare", "tp3-img"); r.err == nil {
		t.Fatalf("an unmapped project created an image: %s", r)
	}

	// No token, a bad token: 401 as Glance behind keystonemiddleware.
	for _, tok := range []string{"", "not-a-token"} {
		req, _ := http.NewRequest("GET", a.url+"/v2/images", nil)
		if tok != "" {
			req.Header.Set("X-Auth-Token", tok)
		}
		req.Header.Set("X-Roles", "admin") // noauth's header: ignored here
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("token %q: %d, want 401", tok, resp.StatusCode)
		}
	}

	a.oscOK("tu1", "image", "delete", id)
	if _, err := os.Stat(a.images("ks-img")); !os.IsNotExist(err) {
		t.Fatalf("images/ks-img after image delete: %v", err)
	}
	// The service user's password is in no log line.
	if log, _ := os.ReadFile(a.log); strings.Contains(string(log), a.k.Account(t, "imagefs").Password) {
		t.Fatal("the daemon's log holds the service user's password")
	}
}

// TestAPIKeystoneServiceUserRefused: a [keystone] section whose service
// user Keystone refuses (here a wrong password; as pasted from an example
// with a comment after the value) fails the mount, saying so without the
// password, where it used to mount and answer 503 to every request.
func TestAPIKeystoneServiceUserRefused(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	k := testutil.KeystoneServer(t)
	svc := k.Account(t, "imagefs")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	conf := filepath.Join(dir, "imagefs.conf")
	body := fmt.Sprintf("[keystone]\nauth_url = %s\nusername = %s\npassword = %s # the service user's\nproject_name = %s\ntimeout = 30s\n",
		k.AuthURL, svc.User, svc.Password, svc.Project)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// Output to a file, not a pipe: a daemon that did mount would hold a
	// pipe open and the test would wait on it.
	out := filepath.Join(dir, "mount.out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "mount", "--config", conf, "--api-listen", addr, "--api-auth", "keystone", filepath.Join(dir, "store"), mnt)
	cmd.Stdout, cmd.Stderr = f, f
	runErr := cmd.Run()
	f.Close()
	msg, _ := os.ReadFile(out)
	if isMounted(mnt) {
		execCmd("fusermount3", "-u", mnt)
		t.Fatalf("mounted with a service user Keystone refuses: %v: %s", runErr, msg)
	}
	if runErr == nil || !strings.Contains(string(msg), "could not authenticate") || !strings.Contains(string(msg), "401") || strings.Contains(string(msg), svc.Password) {
		t.Fatalf("mount with a refused service user: want a failure naming it (401), without the password: %v: %s", runErr, msg)
	}
}
