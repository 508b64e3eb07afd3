package integration

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Projects of TestMembersOpenstackCLI: the owner's and the member's,
// uuid-like as Keystone's (openstack image add project takes such an id
// as it is).
const (
	ownerProject  = "6b1f3c2a9d8e4f7a8b6c5d4e3f2a1b0c" // uid 1001 (userA)
	memberProject = "0f3c9a2e5b7d4e1f8a6b5c4d3e2f1a0b" // uid 1002 (userB)
)

// identityProxy serves the API of target as one project: it sets the
// identity headers Glance's noauth (and imagefs's) reads, as Keystone's
// middleware sets them from a token, and answers the CLI's identity
// lookups (GET /projects/ID) 403, as Keystone answers a user who may not
// read projects, so that the CLI takes a project id as given. It returns
// the proxy's URL.
func identityProxy(t *testing.T, target, project string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/projects") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error": {"code": 403, "title": "Forbidden", "message": "You are not authorized to perform the requested action."}}`))
			return
		}
		r.Header.Set("X-Tenant-Id", project)
		r.Header.Set("X-Roles", "member,reader")
		rp.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// glanceAt runs the glance CLI against endpoint (with a token that
// noauth does not look at).
func glanceAt(t *testing.T, endpoint string, args ...string) result {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	os.MkdirAll(home, 0o700)
	cmd := exec.Command("glance", append([]string{"--os-image-url", endpoint, "--os-auth-token", "unused"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), err: err}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	return r
}

// oscAt runs the openstack CLI (auth type none) against endpoint.
func oscAt(t *testing.T, endpoint string, args ...string) result {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	os.MkdirAll(home, 0o700)
	cmd := exec.Command("openstack", append([]string{"--os-auth-type", "none", "--os-endpoint", endpoint}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), err: err}
	if cmd.ProcessState != nil {
		r.code = cmd.ProcessState.ExitCode()
	}
	return r
}

func oscAtOK(t *testing.T, endpoint string, args ...string) string {
	t.Helper()
	r := oscAt(t, endpoint, args...)
	if r.err != nil {
		t.Fatalf("openstack %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// TestMembersOpenstackCLI: the owner shares an image with the openstack
// CLI (image add project), the member accepts and rejects it with the
// glance CLI (member-update) and on the mount (writing its status to
// properties/members), and each step shows the same on both faces: the
// members property, what the member lists under images/ and with image
// list, and image member list. (openstack image set --accept takes the
// member's project from its Keystone token, which noauth has not; with
// --project it also sets the image's owner, which a member may not.)
func TestMembersOpenstackCLI(t *testing.T) {
	requireTools(t, "openstack", "glance")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a := mountAllowOther(t, "--api-listen", addr,
		"--api-project", ownerProject+"="+userA, "--api-project", memberProject+"="+userB)
	api := "http://" + addr
	owner, member := identityProxy(t, api, ownerProject), identityProxy(t, api, memberProject)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "shared-cli", fx)
	A, B := a.as(userA), a.as(userB)
	A.must("write", a.propFile("shared-cli", "visibility"), "shared\n")

	memberStatus := func() string { // as the owner sees it with the CLI
		t.Helper()
		out := oscAtOK(t, owner, "image", "member", "list", "-f", "value", "-c", "Member ID", "-c", "Status", id)
		return strings.TrimSpace(out)
	}
	listedFor := func() (cli, mount bool) { // does the member list it, with the CLI and under images/?
		t.Helper()
		cli = slices.Contains(strings.Fields(oscAtOK(t, member, "image", "list", "-f", "value", "-c", "ID")), id)
		return cli, slices.Contains(B.ls(a.images()), "shared-cli")
	}
	propsAs := func(uid string) string { // properties/members through by-id, as uid
		t.Helper()
		return memberStatuses(mustAsUser(t, uid, `cat "$1"`, a.byID(id, "properties", "members")))
	}

	// The owner shares it: pending; the member reaches it by id only.
	oscAtOK(t, owner, "image", "add", "project", id, memberProject)
	if got := memberStatus(); got != memberProject+" pending" {
		t.Fatalf("image member list: %q", got)
	}
	if got := propsAs(userB); got != userB+" pending" {
		t.Fatalf("properties/members on the mount: %q, want the member's uid, pending", got)
	}
	if cli, mnt := listedFor(); cli || mnt {
		t.Fatalf("pending: listed for the member (CLI %v, images/ %v)", cli, mnt)
	}
	mustAsUser(t, userB, `cmp "$1" "$2"`, fx.Path, a.byID(id, "image.vhd"))
	if got := oscAtOK(t, member, "image", "list", "--member-status", "pending", "--shared", "-f", "value", "-c", "ID"); strings.TrimSpace(got) != id {
		t.Fatalf("image list --member-status pending --shared as the member: %q", got)
	}
	// The owner does not accept for the member (CLI and mount).
	if r := glanceAt(t, owner, "member-update", id, memberProject, "accepted"); r.err == nil || !strings.Contains(r.stderr+r.stdout, "403") {
		t.Fatalf("the owner accepts: %s", r)
	}
	A.want("write", a.propFile("shared-cli", "members"), []string{userB + " accepted\n"}, syscall.EPERM)

	// The member accepts with the CLI: listed on both faces.
	if r := glanceAt(t, member, "member-update", id, memberProject, "accepted"); r.err != nil || !strings.Contains(r.stdout, "accepted") {
		t.Fatalf("glance member-update accepted: %s", r)
	}
	if got := memberStatus(); got != memberProject+" accepted" {
		t.Fatalf("after --accept: %q", got)
	}
	if got := propsAs(userA); got != userB+" accepted" {
		t.Fatalf("after --accept, properties/members: %q", got)
	}
	if cli, mnt := listedFor(); !cli || !mnt {
		t.Fatalf("accepted: not listed for the member (CLI %v, images/ %v)", cli, mnt)
	}
	mustAsUser(t, userB, `cmp "$1" "$2"`, fx.Path, a.dataFile("shared-cli"))

	// Rejects with the CLI: not listed, still usable by id.
	if r := glanceAt(t, member, "member-update", id, memberProject, "rejected"); r.err != nil {
		t.Fatalf("glance member-update rejected: %s", r)
	}
	if got := memberStatus(); got != memberProject+" rejected" {
		t.Fatalf("after --reject: %q", got)
	}
	if cli, mnt := listedFor(); cli || mnt {
		t.Fatalf("rejected: listed for the member (CLI %v, images/ %v)", cli, mnt)
	}
	mustAsUser(t, userB, `cmp "$1" "$2"`, fx.Path, a.byID(id, "image.vhd"))
	oscAtOK(t, member, "image", "show", id)

	// The member accepts on the mount: the CLI sees it.
	mustAsUser(t, userB, `echo accepted > "$1"`, a.byID(id, "properties", "members"))
	if got := memberStatus(); got != memberProject+" accepted" {
		t.Fatalf("after echo accepted on the mount: %q", got)
	}
	if cli, mnt := listedFor(); !cli || !mnt {
		t.Fatalf("accepted on the mount: not listed (CLI %v, images/ %v)", cli, mnt)
	}
	// The member changes nothing else: another member, its removal.
	for _, v := range []string{userB + " accepted\n1003 pending\n", "\n", "1003 accepted\n"} {
		B.want("write", a.propFile("shared-cli", "members"), []string{v}, syscall.EACCES)
	}
	if got := propsAs(userA); got != userB+" accepted" {
		t.Fatalf("after the member's refused writes: %q", got)
	}

	// The owner removes it with the CLI: hidden from the member.
	oscAtOK(t, owner, "image", "remove", "project", id, memberProject)
	if got := memberStatus(); got != "" {
		t.Fatalf("after image remove project: %q", got)
	}
	wantHidden(t, a, B, "shared-cli", id)
}

// acceptAs makes uid, a pending member of images/<name>, accept it: it
// writes its status to properties/members under by-id/ (a pending member
// reaches the image by id only, as Glance).
func (m *fsMount) acceptAs(t testing.TB, uid, name string) {
	t.Helper()
	mustAsUser(t, uid, `echo accepted > "$1"`, m.byID(m.prop(name, "id"), "properties", "members"))
}

// memberStatuses is a members property's "ID STATUS" lines, without the
// times that follow.
func memberStatuses(v string) string {
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(v), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			lines = append(lines, f[0]+" "+f[1])
		} else if len(f) == 1 {
			lines = append(lines, f[0])
		}
	}
	return strings.Join(lines, "\n")
}
