package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestAPITagsAndHidden drives tags and os_hidden with the real openstack
// CLI (image create/set/unset --tag, image list --tag, image set
// --hidden/--unhidden, image list --hidden) and checks each step on the
// mount (properties/tags, by-tag/, properties/os_hidden), and the
// reverse: tags and os_hidden written on the mount, seen by the CLI.
func TestAPITagsAndHidden(t *testing.T) {
	a := mountWithAPI(t)
	vhd := makeVHD(t, 2*mib, "fixed")

	// CLI -> mount.
	id := strings.TrimSpace(a.oscOK("image", "create", "--file", vhd.Path, "--disk-format", "vhd", "--container-format", "bare",
		"--tag", "x86", "--tag", "lts", "-f", "value", "-c", "id", "tagged"))
	if got := a.prop("tagged", "tags"); got != "lts\nx86" {
		t.Fatalf("properties/tags after create --tag: %q", got)
	}
	a.oscOK("image", "set", "--tag", "beta", "tagged")
	a.oscOK("image", "unset", "--tag", "lts", "tagged")
	if got := a.prop("tagged", "tags"); got != "beta\nx86" {
		t.Fatalf("properties/tags after set/unset --tag: %q", got)
	}
	if got := dirNames(t, filepath.Join(a.Mnt, "by-tag", "beta")); !slices.Equal(got, []string{"tagged"}) {
		t.Fatalf("by-tag/beta: %v", got)
	}
	if target, err := os.Readlink(filepath.Join(a.Mnt, "by-tag", "beta", "tagged")); err != nil || target != "../../by-id/"+id {
		t.Fatalf("by-tag/beta/tagged -> %q (%v)", target, err)
	}
	cmp(t, vhd.Path, filepath.Join(a.Mnt, "by-tag", "beta", "tagged", "image.vhd"))
	if _, err := os.Lstat(filepath.Join(a.Mnt, "by-tag", "lts")); !os.IsNotExist(err) {
		t.Fatalf("by-tag/lts after unset --tag: %v", err)
	}

	// Mount -> CLI: tags written as a file.
	a.mkimage("fromfs")
	sh(t, `printf 'x86\nmounted\n' > "$1"`, a.propFile("fromfs", "tags"))
	list := func(args ...string) []string {
		out := strings.Fields(a.oscOK(append([]string{"image", "list", "-f", "value", "-c", "Name"}, args...)...))
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--tag", "mounted"}, []string{"fromfs"}},
		{[]string{"--tag", "x86"}, []string{"fromfs", "tagged"}},
		{[]string{"--tag", "x86", "--tag", "beta"}, []string{"tagged"}},
		{[]string{"--tag", "nope"}, nil},
	} {
		if got := list(c.args...); !slices.Equal(got, c.want) {
			t.Errorf("image list %v: %v, want %v", c.args, got, c.want)
		}
	}
	var shown struct{ Tags []string }
	if err := json.Unmarshal([]byte(a.oscOK("image", "show", "-f", "json", "-c", "tags", "fromfs")), &shown); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(shown.Tags, []string{"mounted", "x86"}) {
		t.Fatalf("image show fromfs tags: %v", shown.Tags)
	}
	// A tag the rules refuse, on either face: nothing changes.
	if r := a.osc("image", "set", "--tag", strings.Repeat("x", 256), "fromfs"); r.err == nil {
		t.Fatalf("set a 256-character tag: %s", r)
	}
	if r := execCmd("bash", "-c", `printf 'ok\nbad\ttab\n' > "$1"`, "bash", a.propFile("fromfs", "tags")); r.err == nil || !strings.Contains(r.stderr, "Invalid argument") {
		t.Fatalf("a tag with a tab written on the mount: %s", r)
	}
	if got := a.prop("fromfs", "tags"); got != "mounted\nx86" {
		t.Fatalf("properties/tags after refused changes: %q", got)
	}

	// os_hidden: CLI -> mount; a hidden image is left out of the default
	// listing, listed by --hidden, still in images/.
	if got := a.prop("tagged", "os_hidden"); got != "false" {
		t.Fatalf("os_hidden = %q", got)
	}
	a.oscOK("image", "set", "--hidden", "tagged")
	if got := a.prop("tagged", "os_hidden"); got != "true" {
		t.Fatalf("os_hidden after set --hidden: %q", got)
	}
	if got := list(); !slices.Equal(got, []string{"fromfs"}) {
		t.Fatalf("image list with tagged hidden: %v", got)
	}
	if got := list("--hidden"); !slices.Equal(got, []string{"tagged"}) {
		t.Fatalf("image list --hidden: %v", got)
	}
	if got := dirNames(t, a.images()); !slices.Equal(got, []string{"fromfs", "tagged"}) {
		t.Fatalf("images/ with tagged hidden: %v", got)
	}
	a.oscOK("image", "set", "--unhidden", "tagged")
	// Mount -> CLI.
	sh(t, `echo true > "$1"`, a.propFile("fromfs", "os_hidden"))
	if got := list(); !slices.Equal(got, []string{"tagged"}) {
		t.Fatalf("image list with fromfs hidden on the mount: %v", got)
	}
	// This CLI shows os_hidden among the "properties" (the fields it
	// has no column for).
	var hid struct {
		Properties map[string]any
	}
	out := a.oscOK("image", "show", "-f", "json", "fromfs")
	if err := json.Unmarshal([]byte(out), &hid); err != nil || hid.Properties["os_hidden"] != true {
		t.Fatalf("image show fromfs: not hidden (%v): %s", err, out)
	}
}
