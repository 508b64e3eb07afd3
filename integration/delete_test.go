package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Deleting an image with the tools that delete directories (issue 13
// item 1): rm -rf, rm -r (prompts answered), find -delete and rmdir end
// with the image gone, data and record, exit 0; a refused delete
// (protected, not the owner, read-only mount) changes nothing, no
// property included, and the tool reports it; cp -f, install, mv and
// cp --remove-destination onto a sealed image.vhd never delete it.

// deleteTools are the commands that delete a directory, as sh scripts
// with the path as $1.
var deleteTools = []struct{ name, script string }{
	{"rm -rf", `rm -rf "$1"`},
	{"rm -r", `yes | rm -r "$1"`},
	{"rm -ri", `yes | rm -ri "$1"`},
	{"find -delete", `find "$1" -delete`},
	{"rmdir", `rmdir "$1"`},
}

// makeImageIn makes images/<name> with a custom property, in status
// (active, queued or killed); it returns the id.
func makeImageIn(t *testing.T, m *fsMount, name, status string, fx vhdFixture) string {
	t.Helper()
	m.mkimage(name)
	switch status {
	case "active":
		run(t, "cp", fx.Path, m.dataFile(name))
	case "killed":
		junk := filepath.Join(t.TempDir(), "junk.vhd")
		if err := os.WriteFile(junk, []byte(strings.Repeat("not a vhd\n", 1000)), 0o644); err != nil {
			t.Fatal(err)
		}
		execCmd("cp", junk, m.dataFile(name)) // refused at close: killed
	}
	writeProp(t, m, name, "os_distro", "superos")
	if got := m.prop(name, "status"); got != status {
		t.Fatalf("images/%s: status %q, want %s", name, got, status)
	}
	return m.prop(name, "id")
}

// wantDeleted checks that image name (id) is gone: both paths, the data
// file, the listing and the view.
func wantDeleted(t *testing.T, m *fsMount, what, name, id string) {
	t.Helper()
	for _, p := range []string{m.images(name), m.byID(id), m.backing(id)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: lstat %s: %v, want ENOENT", what, p, err)
		}
	}
	ents, err := os.ReadDir(m.images())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == name {
			t.Errorf("%s: ls images/ still lists %s", what, name)
		}
	}
}

func testDeleteWithTools(t *testing.T, m *fsMount) {
	requireTools(t, "rm", "find", "rmdir", "yes")
	fx := makeVHD(t, 2*mib, "dynamic")
	for _, tool := range deleteTools {
		for _, status := range []string{"active", "queued", "killed"} {
			name := strings.ReplaceAll(tool.name, " ", "") + "-" + status
			id := makeImageIn(t, m, name, status, fx)
			r := shErr(tool.script, m.images(name))
			what := tool.name + " of a " + status + " image"
			// rm -ri prints its questions on stderr.
			if r.err != nil || strings.Contains(r.stderr, "cannot") || (tool.name != "rm -ri" && r.stderr != "") {
				t.Errorf("%s: %s, want exit 0 and no message", what, r)
			}
			wantDeleted(t, m, what, name, id)
			// The name is free again.
			m.mkimage(name)
			run(t, "cp", fx.Path, m.dataFile(name))
			m.checkSealed(t, name, fx)
		}
	}
	m.stop()
	if rep := fsckJSON(t, m.Store); rep.code != 0 || len(rep.Problems) != 0 {
		t.Errorf("fsck after the deletes: exit %d, %v", rep.code, rep.Problems)
	}
}

// TestDeleteWithTools: each tool deletes an active, a queued and a killed
// image, on a mount of one user (entries cached) and with --allow-other
// (entries looked up every time).
func TestDeleteWithTools(t *testing.T) {
	t.Run("cached", func(t *testing.T) { testDeleteWithTools(t, mount(t)) })
	t.Run("allow-other", func(t *testing.T) { testDeleteWithTools(t, mountAllowOther(t).fsMount) })
}

// TestDeleteRefused: a delete that is refused changes nothing, no
// property included, and the tool says why: a protected image (its owner
// and root), another user's image (uid 1002, also with the capabilities
// that skip the kernel's mode checks), a read-only mount.
func TestDeleteRefused(t *testing.T) {
	requireTools(t, "rm", "find", "rmdir", "yes")
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	id := a.ownedImage(userA, "a-img", fx)
	writeProp(t, a.fsMount, "a-img", "visibility", "public")
	a.as(userA).must("write", a.propFile("a-img", "os_version"), "2024.1\n")

	survives := func(what string, before map[string]string) {
		t.Helper()
		a.unchanged("a-img", before, what)
		cmp(t, fx.Path, a.dataFile("a-img"))
		cmp(t, fx.Path, a.byID(id, "image.vhd"))
		if _, err := os.Stat(a.backing(id)); err != nil {
			t.Errorf("after %s: %v", what, err)
		}
	}
	try := func(who, prefix string, want ...string) {
		t.Helper()
		before := a.snapshot("a-img")
		for _, tool := range deleteTools {
			what := who + ": " + tool.name
			var r result
			if prefix == "" {
				r = shErr(tool.script, a.images("a-img"))
			} else {
				r = execCmd("setpriv", append(strings.Fields(prefix), "sh", "-c", tool.script, "sh", a.images("a-img"))...)
			}
			if r.code == 0 {
				t.Errorf("%s exited 0", what)
			}
			said := false
			for _, w := range want {
				said = said || strings.Contains(r.stderr, w)
			}
			if !said {
				t.Errorf("%s: stderr %q, want %q", what, r.stderr, want)
			}
			survives(what, before)
		}
	}

	// Not the owner: the kernel refuses (the directories are the
	// owner's; rmdir: the sticky bit of images/); with CAP_DAC_OVERRIDE
	// and CAP_FOWNER imagefs does.
	try("uid 1002", "--reuid="+userB+" --regid="+userB+" --clear-groups", "Permission denied", "Operation not permitted")
	try("uid 1002+caps", "--reuid="+userB+" --regid="+userB+" --clear-groups --inh-caps=+dac_override,+fowner --ambient-caps=+dac_override,+fowner", "Permission denied")

	// Under by-id/ images are not deleted (rmdir by-id/<id> is EPERM),
	// and rm -r or find -delete there remove nothing on their way.
	before := a.snapshot("a-img")
	for _, tool := range deleteTools {
		r := shErr(tool.script, a.byID(id))
		if r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
			t.Errorf("root: %s of by-id/<id>: %s, want EPERM", tool.name, r)
		}
		survives("root: "+tool.name+" of by-id/<id>", before)
	}

	// Protected: its owner and root.
	a.as(userA).must("write", a.propFile("a-img", "protected"), "true\n")
	try("uid 1001, protected", "--reuid="+userA+" --regid="+userA+" --clear-groups", "Operation not permitted")
	try("root, protected", "", "Operation not permitted")
	a.as(userA).must("write", a.propFile("a-img", "protected"), "false\n")

	// A read-only mount.
	a.Args = append(a.Args, "--read-only")
	a.remount()
	try("root, read-only mount", "", "Read-only file system")
}

// TestDeleteNotByCopy: cp -f, install, cp --remove-destination and mv
// across filesystems unlink image.vhd before they create it again; on a
// sealed image that unlink is refused (EPERM) and the image stays active,
// data and properties untouched. A bare rm of image.vhd does not delete
// the image either.
func TestDeleteNotByCopy(t *testing.T) {
	requireTools(t, "cp", "install", "mv", "rm")
	m := mount(t)
	fx := makeVHD(t, 2*mib, "fixed")
	other := makeVHD(t, 3*mib, "fixed")
	id := makeImageIn(t, m, "img", "active", fx)
	moved := filepath.Join(t.TempDir(), "moved.vhd")
	for _, script := range []string{
		`cp -f "$1" "$2"`,
		`install -m 644 "$1" "$2"`,
		`cp --remove-destination "$1" "$2"`,
		`cp "$1" "$3" && mv -f "$3" "$2"`,
		`rm -f "$2"`,
		`cd "$(dirname "$2")" && rm -f image.vhd`,
	} {
		r := shErr(script, other.Path, m.dataFile("img"), moved)
		if r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
			t.Errorf("%s onto a sealed image.vhd: %s, want EPERM", script, r)
		}
		m.checkSealed(t, "img", fx)
		if got := m.prop("img", "os_distro"); got != "superos" {
			t.Errorf("after %s: os_distro = %q", script, got)
		}
		if got := m.prop("img", "id"); got != id {
			t.Errorf("after %s: id %s, want %s", script, got, id)
		}
	}
}

// TestDeleteByOwner: a non-root owner deletes their own images with each
// tool (the kernel's mode and sticky-bit checks apply to the deleted
// image's directory as before the delete).
func TestDeleteByOwner(t *testing.T) {
	requireTools(t, "rm", "find", "rmdir", "yes")
	a := mountAllowOther(t)
	fx := sharedFixture(t)
	for _, tool := range deleteTools {
		name := "a-" + strings.ReplaceAll(tool.name, " ", "")
		id := a.ownedImage(userA, name, fx)
		r := asUser(userA, tool.script, a.images(name))
		if r.err != nil || strings.Contains(r.stderr, "cannot") || (tool.name != "rm -ri" && r.stderr != "") {
			t.Errorf("uid 1001: %s of their image: %s, want exit 0 and no message", tool.name, r)
		}
		wantDeleted(t, a.fsMount, "uid 1001: "+tool.name, name, id)
	}
}

// TestDeleteByFindName: find NAME -name image.vhd -delete deletes the
// image (an unlink of image.vhd by a process walking the directory) and
// the name is free at once for another process's mkdir, though find never
// removed the directory (mkdir makes the kernel look the cached entry up
// again: LOOKUP_EXCL).
func TestDeleteByFindName(t *testing.T) {
	requireTools(t, "find")
	m := mount(t)
	fx := makeVHD(t, 2*mib, "fixed")
	id := makeImageIn(t, m, "img", "active", fx)
	run(t, "find", m.images("img"), "-name", "image.vhd", "-delete")
	wantDeleted(t, m, "find -name image.vhd -delete", "img", id)
	m.mkimage("img")
	run(t, "cp", fx.Path, m.dataFile("img"))
	m.checkSealed(t, "img", fx)
}
