package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// glance runs the glance CLI (python3-glanceclient) against the mount's
// API: a token it sends and noauth ignores (no identity header: the
// admin), a private HOME (it caches schemas there), no stdin.
func (a *apiMount) glance(args ...string) result {
	home := filepath.Join(a.t.TempDir(), "home")
	os.MkdirAll(home, 0o700)
	cmd := exec.Command("glance", append([]string{"--os-auth-token", "noauth", "--os-image-url", a.url}, args...)...)
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

func (a *apiMount) glanceOK(args ...string) string {
	a.t.Helper()
	r := a.glance(args...)
	if r.err != nil {
		a.t.Fatalf("glance %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// TestAPIGlanceMetadefs drives the glance CLI's md-* commands (which
// check every response against the /v2/schemas/metadefs/* schemas the
// server serves) through a namespace's life; the definitions outlive a
// remount, and the mount shows none of them.
func TestAPIGlanceMetadefs(t *testing.T) {
	requireTools(t, "glance")
	a := mountWithAPI(t)
	want := func(out string, subs ...string) {
		t.Helper()
		for _, s := range subs {
			if !strings.Contains(out, s) {
				t.Fatalf("output lacks %q:\n%s", s, out)
			}
		}
	}
	want(a.glanceOK("md-resource-type-list"), "OS::Glance::Image", "OS::Nova::Flavor", "OS::Cinder::Volume")
	want(a.glanceOK("md-namespace-create", "OS::Demo", "--visibility", "public", "--description", "demo ns", "--protected", "true"),
		"OS::Demo", "demo ns")
	want(a.glanceOK("md-resource-type-associate", "OS::Demo", "--name", "OS::Glance::Image", "--prefix", "demo_"), "demo_")
	want(a.glanceOK("md-property-create", "OS::Demo", "--name", "speed", "--title", "Speed", "--schema", `{"type": "integer", "minimum": 1}`),
		"speed", "integer")
	want(a.glanceOK("md-object-create", "OS::Demo", "--name", "Obj", "--schema", `{"description": "an object", "properties": {"a": {"type": "string", "title": "A"}}}`),
		"an object")
	want(a.glanceOK("md-tag-create-multiple", "OS::Demo", "--names", "a,b,c"), "a", "b", "c")
	want(a.glanceOK("md-tag-update", "OS::Demo", "a", "--name", "a2"), "a2")

	// The mount shows images only; the definitions stay across a remount.
	if ents, err := os.ReadDir(filepath.Join(a.Mnt, "images")); err != nil || len(ents) != 0 {
		t.Fatalf("images/ after metadefs: %v %v", ents, err)
	}
	a.remount()
	show := a.glanceOK("md-namespace-show", "OS::Demo", "--resource-type", "OS::Glance::Image")
	want(show, "demo_speed", `"Obj"`, `"a2"`, "OS::Glance::Image")
	want(a.glanceOK("md-object-property-show", "OS::Demo", "Obj", "a"), "string")
	want(a.glanceOK("md-namespace-list"), "OS::Demo")

	// Protected: no delete until unprotected (403 from the CLI).
	if r := a.glance("md-namespace-delete", "OS::Demo"); r.err == nil || !strings.Contains(r.stderr+r.stdout, "403") {
		t.Fatalf("delete of a protected namespace: %s", r)
	}
	a.glanceOK("md-namespace-update", "OS::Demo", "--protected", "false")
	a.glanceOK("md-namespace-delete", "OS::Demo")
	if r := a.glance("md-namespace-show", "OS::Demo"); r.err == nil || !strings.Contains(r.stderr+r.stdout, "404") {
		t.Fatalf("show after delete: %s", r)
	}
}
