package integration

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
)

// Tests of the filter views, by-property/<key>/<value>/<name> ->
// ../../../by-id/<id> (layout.md, "Filter views"), and of imagefs ls.

// viewName is the directory name layout.md gives a value: '/' as %2F and
// '%' as %25 (and the whole values . and .., which cannot be names, as
// %2E and %2E%2E).
func viewName(v string) string {
	switch v {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return strings.NewReplacer("%", "%25", "/", "%2F").Replace(v)
}

// listed reports whether a value has a view directory: not empty, at most
// 255 bytes once escaped.
func listed(v string) bool { return v != "" && len(viewName(v)) <= 255 }

func (m *fsMount) view(key string, value ...string) string {
	p := []string{m.Mnt, "by-property", key}
	for _, v := range value {
		p = append(p, viewName(v))
	}
	return filepath.Join(p...)
}

// viewNames lists by-property/<key>/<value>/ (nil when it does not exist)
// and checks that every entry is a symlink to ../../../by-id/<id> of the
// image with that name.
func (m *fsMount) viewNames(t testing.TB, key, value string) []string {
	t.Helper()
	dir := m.view(key, value)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("ls %s: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
		if e.Type() != os.ModeSymlink {
			t.Errorf("%s/%s: type %v, want a symlink", dir, e.Name(), e.Type())
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Errorf("readlink %s/%s: %v", dir, e.Name(), err)
			continue
		}
		id, ok := strings.CutPrefix(target, "../../../by-id/")
		if !ok {
			t.Errorf("%s/%s -> %s, want ../../../by-id/<id>", dir, e.Name(), target)
			continue
		}
		if got := readOptional(m.propFile(e.Name(), "id")); got != id+"\n" {
			t.Errorf("%s/%s -> by-id/%s, but images/%s has id %q", dir, e.Name(), id, e.Name(), got)
		}
	}
	return out
}

func wantView(t testing.TB, m *fsMount, key, value string, want ...string) {
	t.Helper()
	got := m.viewNames(t, key, value)
	if !slices.Equal(got, want) {
		t.Errorf("ls by-property/%s/%s = %q, want %q", key, viewName(value), got, want)
	}
}

// goneSoon fails unless path is ENOENT within 50 ms. Listings are never
// cached, so they change at once; a path the kernel looked up is valid
// for the view's entry timeout, the shortest go-fuse allows (1 ns, which
// the kernel rounds up to one jiffy, 1-10 ms).
func goneSoon(t testing.TB, path string) {
	t.Helper()
	deadline := time.Now().Add(50 * time.Millisecond)
	for {
		_, err := os.Lstat(path)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("lstat %s 50 ms after the change: %v, want ENOENT", path, err)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func writeProp(t testing.TB, m *fsMount, name, key, value string) {
	t.Helper()
	if err := os.WriteFile(m.propFile(name, key), []byte(value+"\n"), 0o644); err != nil {
		t.Fatalf("echo %q > images/%s/properties/%s: %v", value, name, key, err)
	}
}

// TestViewsFollowProperties: setting, changing and removing a property
// (as a file or an xattr), renaming, sealing and deleting an image move it
// between views at once, for core and custom properties; a path looked up
// before a change is gone right after it (nothing stale in the kernel's
// caches); the link has one stable inode.
func TestViewsFollowProperties(t *testing.T) {
	m := mount(t)
	requireTools(t, "setfattr")
	ida := m.mkimage("a")
	m.mkimage("b")
	m.mkimage("c")

	writeProp(t, m, "a", "os_distro", "superos")
	run(t, "setfattr", "-n", "user.os_distro", "-v", "superos", m.dataFile("b"))
	writeProp(t, m, "c", "os_distro", "hyperos")
	wantView(t, m, "os_distro", "superos", "a", "b")
	wantView(t, m, "os_distro", "hyperos", "c")
	if got := dirNames(t, m.view("os_distro")); !slices.Equal(got, []string{"hyperos", "superos"}) {
		t.Errorf("ls by-property/os_distro = %q", got)
	}
	keys := dirNames(t, filepath.Join(m.Mnt, "by-property"))
	for _, k := range []string{"os_distro", "status", "min_ram", "owner", "visibility", "name", "id", "created_at"} {
		if !slices.Contains(keys, k) {
			t.Errorf("ls by-property/ = %q, lacks %s", keys, k)
		}
	}
	// Through the link: the image's own directory.
	if got := readProp(t, filepath.Join(m.view("os_distro", "superos"), "a", "properties", "id")); got != ida {
		t.Errorf("by-property/os_distro/superos/a/properties/id = %q, want %q", got, ida)
	}
	link := filepath.Join(m.view("os_distro", "superos"), "a")
	ino := inode(t, link)
	if other := inode(t, filepath.Join(m.view("status", "queued"), "a")); other != ino {
		t.Errorf("the link of image a has inode %s in one view and %s in another", ino, other)
	}

	// Change: a moves from superos to hyperos: the listings show it at
	// once, and the path looked up before is gone.
	writeProp(t, m, "a", "os_distro", "hyperos")
	wantView(t, m, "os_distro", "superos", "b")
	goneSoon(t, link)
	wantView(t, m, "os_distro", "hyperos", "a", "c")
	if got := inode(t, filepath.Join(m.view("os_distro", "hyperos"), "a")); got != ino {
		t.Errorf("link inode changed with the value: %s, then %s", ino, got)
	}

	// Remove (file and xattr): the value directory disappears with its
	// last image.
	run(t, "rm", m.propFile("b", "os_distro"))
	wantView(t, m, "os_distro", "superos")
	if got := dirNames(t, m.view("os_distro")); !slices.Equal(got, []string{"hyperos"}) {
		t.Errorf("ls by-property/os_distro right after superos lost its last image = %q", got)
	}
	goneSoon(t, m.view("os_distro", "superos"))
	run(t, "setfattr", "-x", "user.os_distro", m.dataFile("c"))
	wantView(t, m, "os_distro", "hyperos", "a")

	// Core properties.
	writeProp(t, m, "a", "min_ram", "1024")
	wantView(t, m, "min_ram", "1024", "a")
	wantView(t, m, "min_ram", "0", "b", "c")
	wantView(t, m, "visibility", "private", "a", "b", "c")

	// Rename: same link, new name.
	run(t, "mv", m.images("c"), m.images("c2"))
	wantView(t, m, "min_ram", "0", "b", "c2")
	wantView(t, m, "name", "c2", "c2")
	wantView(t, m, "name", "c")

	// Seal: status and the system properties move.
	fx := makeVHD(t, 2*mib, "fixed")
	run(t, "cp", fx.Path, m.dataFile("b"))
	m.checkSealed(t, "b", fx)
	wantView(t, m, "status", "active", "b")
	wantView(t, m, "status", "queued", "a", "c2")
	wantView(t, m, "checksum", fx.MD5, "b")

	// Delete.
	run(t, "rmdir", m.images("a"))
	wantView(t, m, "os_distro", "hyperos")
	wantView(t, m, "status", "queued", "c2")
	if keys := dirNames(t, filepath.Join(m.Mnt, "by-property")); slices.Contains(keys, "os_distro") {
		t.Errorf("ls by-property/ = %q: os_distro is no longer in use", keys)
	}
}

// TestViewsEscaping: a value with '/' and '%' is listed escaped and
// round-trips to the value; other spellings are not aliases; empty values
// and values over 255 bytes once escaped are not listed.
func TestViewsEscaping(t *testing.T) {
	m := mount(t)
	values := map[string]string{
		"slash":   "superos/2024.1",
		"percent": "50%",
		"escaped": "%2F",
		"both":    "a/b%c/",
		"dot":     ".",
		"max":     strings.Repeat("v", 255),
		"long":    strings.Repeat("v", 256),
		"longesc": strings.Repeat("/", 86), // 258 bytes escaped
		"empty":   "",
	}
	for name, v := range values {
		m.mkimage(name)
		writeProp(t, m, name, "os_distro", v)
	}
	var want []string
	for name, v := range values {
		if listed(v) {
			want = append(want, viewName(v))
			wantView(t, m, "os_distro", v, name)
		} else if _, err := os.Stat(m.view("os_distro", v)); v != "" && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: stat of the view of a %d-byte value: %v, want ENOENT", name, len(v), err)
		}
	}
	slices.Sort(want)
	got := dirNames(t, m.view("os_distro"))
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("ls by-property/os_distro = %q, want %q", got, want)
	}
	// Round trip: each directory name is the escaped value of the images
	// in it.
	for _, dir := range got {
		for _, name := range dirNames(t, filepath.Join(m.view("os_distro"), dir)) {
			if v := readProp(t, filepath.Join(m.view("os_distro"), dir, name, "properties", "os_distro")); viewName(v) != dir {
				t.Errorf("by-property/os_distro/%s/%s has os_distro %q", dir, name, v)
			}
		}
	}
	for _, alias := range []string{"superos%2f2024.1", "50%", "%41", "superos%2F2024%2E1"} {
		if _, err := os.Stat(filepath.Join(m.view("os_distro"), alias)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat by-property/os_distro/%s: %v, want ENOENT (not the canonical name)", alias, err)
		}
	}
}

// chmodPathForOthers lets other users reach path (o+rx on the directories
// above it).
var chmodPathForOthers = testutil.ChmodPathForOthers

// asUser runs a shell script as uid/gid with no supplementary groups.
func asUser(uid string, script string, args ...string) result {
	return execCmd("setpriv", append(testutil.SetprivArgs(uid, false), append([]string{"sh", "-c", script, "sh"}, args...)...)...)
}

func mustAsUser(t testing.TB, uid, script string, args ...string) string {
	t.Helper()
	r := asUser(uid, script, args...)
	if r.err != nil {
		t.Fatalf("as uid %s: %s: %s", uid, script, r)
	}
	return r.stdout
}

// TestViewsVisibility: with --allow-other, the views show each user what
// images/ shows them: another user's private image, its keys and its
// values never appear, by listing or by lookup; community images only for
// their owner; imagefs ls as that user agrees.
func TestViewsVisibility(t *testing.T) {
	m := mount(t)
	requireTools(t, "setpriv")
	m.Args = []string{"--allow-other"}
	m.remount()
	chmodPathForOthers(t, m.Mnt)
	chmodPathForOthers(t, binary)

	const alice, bob = "1001", "1002"
	mustAsUser(t, alice, `mkdir "$1/alice-private" "$1/alice-community" &&
		echo superos > "$1/alice-private/properties/os_distro" &&
		echo apollo > "$1/alice-private/properties/secret_project" &&
		echo superos > "$1/alice-community/properties/os_distro" &&
		echo community > "$1/alice-community/properties/visibility"`, m.images())
	m.mkimage("pub")
	writeProp(t, m, "pub", "os_distro", "superos")
	writeProp(t, m, "pub", "visibility", "public")

	ls := func(uid, dir string) []string {
		t.Helper()
		r := asUser(uid, `ls -1 "$1"`, dir)
		if r.err != nil {
			return nil
		}
		return strings.Fields(r.stdout)
	}
	superos := m.view("os_distro", "superos")
	if got := ls(bob, superos); !slices.Equal(got, []string{"pub"}) {
		t.Errorf("as bob: ls by-property/os_distro/superos = %q, want [pub]", got)
	}
	if got := ls(alice, superos); !slices.Equal(got, []string{"alice-community", "alice-private", "pub"}) {
		t.Errorf("as alice: ls by-property/os_distro/superos = %q", got)
	}
	if got := ls("0", superos); !slices.Equal(got, []string{"alice-community", "alice-private", "pub"}) {
		t.Errorf("as root: ls by-property/os_distro/superos = %q", got)
	}
	if got := ls(bob, filepath.Join(m.Mnt, "by-property")); slices.Contains(got, "secret_project") || !slices.Contains(got, "os_distro") {
		t.Errorf("as bob: ls by-property/ = %q (secret_project is only on alice's private image)", got)
	}
	if got := ls(alice, filepath.Join(m.Mnt, "by-property")); !slices.Contains(got, "secret_project") {
		t.Errorf("as alice: ls by-property/ = %q, lacks secret_project", got)
	}
	for _, p := range []string{
		filepath.Join(superos, "alice-private"),
		filepath.Join(superos, "alice-community"),
		m.view("secret_project"),
		m.view("secret_project", "apollo"),
		filepath.Join(m.view("secret_project", "apollo"), "alice-private"),
	} {
		if r := asUser(bob, `stat "$1"`, p); r.err == nil || !strings.Contains(r.stderr, "No such file") {
			t.Errorf("as bob: stat %s: %s, want ENOENT", p, r)
		}
	}
	if r := asUser(bob, `ls "$1"`, m.view("visibility", "private")); r.err == nil {
		t.Errorf("as bob: ls by-property/visibility/private: %s, want ENOENT", r)
	}

	// Alice makes her image public: bob sees it at once.
	mustAsUser(t, "0", `echo public > "$1"`, m.propFile("alice-private", "visibility"))
	if got := ls(bob, superos); !slices.Equal(got, []string{"alice-private", "pub"}) {
		t.Errorf("as bob after alice-private became public: %q", got)
	}
	mustAsUser(t, alice, `echo private > "$1"`, m.propFile("alice-private", "visibility"))

	out := mustAsUser(t, bob, `"$1" ls "$2" --property os_distro=superos --json`, binary, m.Mnt)
	var rows []map[string]*string
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("imagefs ls --json as bob: %v\n%s", err, out)
	}
	if len(rows) != 1 || *rows[0]["name"] != "pub" {
		t.Errorf("imagefs ls --property os_distro=superos as bob = %s, want pub only", out)
	}
}

// scanViews computes by-property/ from a full scan of images/*/properties/:
// key -> directory name -> image names.
func scanViews(t testing.TB, m *fsMount) map[string]map[string][]string {
	t.Helper()
	want := map[string]map[string][]string{}
	for _, name := range dirNames(t, m.images()) {
		for _, key := range dirNames(t, m.images(name, "properties")) {
			v := m.prop(name, key)
			if !listed(v) {
				continue
			}
			if want[key] == nil {
				want[key] = map[string][]string{}
			}
			want[key][viewName(v)] = append(want[key][viewName(v)], name)
		}
	}
	return want
}

// walkViews reads the whole of by-property/ (checking every link).
func walkViews(t testing.TB, m *fsMount) map[string]map[string][]string {
	t.Helper()
	got := map[string]map[string][]string{}
	for _, key := range dirNames(t, filepath.Join(m.Mnt, "by-property")) {
		got[key] = map[string][]string{}
		for _, dir := range dirNames(t, m.view(key)) {
			names := m.viewNames(t, key, mustParseViewName(t, dir))
			slices.Sort(names)
			got[key][dir] = names
		}
	}
	return got
}

func mustParseViewName(t testing.TB, dir string) string {
	t.Helper()
	switch dir {
	case "%2E":
		return "."
	case "%2E%2E":
		return ".."
	}
	v := strings.NewReplacer("%2F", "/", "%25", "%").Replace(dir)
	if viewName(v) != dir {
		t.Fatalf("by-property/ directory %q is not an escaped value", dir)
	}
	return v
}

// TestViewsAfterRemount: after a mix of changes and a remount, and after
// a kill -9, by-property/ equals what a full scan of every image's
// properties computes.
func TestViewsAfterRemount(t *testing.T) {
	m := mount(t)
	distros := []string{"superos", "hyperos", "a/b%c", "", strings.Repeat("x", 300)}
	for i := range 12 {
		name := "img-" + string(rune('a'+i))
		m.mkimage(name)
		writeProp(t, m, name, "os_distro", distros[i%len(distros)])
		if i%3 == 0 {
			writeProp(t, m, name, "min_ram", "2048")
		}
		if i%4 == 1 {
			writeProp(t, m, name, "com.rackspace__1__release_id", "rel-"+string(rune('0'+i%2)))
		}
	}
	writeProp(t, m, "img-b", "os_distro", "superos")
	run(t, "rm", m.propFile("img-c", "os_distro"))
	run(t, "mv", m.images("img-d"), m.images("img-d-renamed"))
	run(t, "rmdir", m.images("img-e"))

	check := func(when string) {
		t.Helper()
		want, got := scanViews(t, m), walkViews(t, m)
		for _, dirs := range want {
			for _, names := range dirs {
				slices.Sort(names)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: by-property/ differs from a full scan of the properties\n got: %v\nwant: %v", when, got, want)
		}
	}
	check("before remount")
	m.remount()
	check("after remount")

	// Every change is committed with its index entries in one synced
	// batch: after a kill -9 right after changes, the views still equal
	// the properties.
	writeProp(t, m, "img-a", "os_distro", "hyperos")
	writeProp(t, m, "img-f", "os_distro", "superos/2")
	run(t, "rmdir", m.images("img-g"))
	m.crash()
	m.start()
	check("after kill -9 and restart")
	if got := m.viewNames(t, "os_distro", "superos/2"); !slices.Equal(got, []string{"img-f"}) {
		t.Errorf("after kill -9: by-property/os_distro/superos%%2F2 = %q, want [img-f]", got)
	}
}

// TestImagefsLs: imagefs ls filters with --property (through by-property/
// and xattrs), adds --column, sorts with --sort and prints a table or JSON.
func TestImagefsLs(t *testing.T) {
	m := mount(t)
	ids := map[string]string{}
	for _, n := range []string{"superos-2024.1", "superos-2024.2", "hyperos-9", "slashy"} {
		ids[n] = m.mkimage(n)
	}
	writeProp(t, m, "superos-2024.1", "os_distro", "superos")
	writeProp(t, m, "superos-2024.2", "os_distro", "superos")
	writeProp(t, m, "superos-2024.2", "min_ram", "1024")
	writeProp(t, m, "hyperos-9", "os_distro", "hyperos")
	writeProp(t, m, "slashy", "os_distro", "a/b%c")

	lsJSON := func(args ...string) []map[string]*string {
		t.Helper()
		out := run(t, binary, append([]string{"ls", m.Mnt, "--json"}, args...)...)
		var raw []map[string]any // numbers and booleans as JSON's (ls_json_test.go)
		if err := json.Unmarshal([]byte(out), &raw); err != nil {
			t.Fatalf("imagefs ls --json %q: %v\n%s", args, err, out)
		}
		var rows []map[string]*string
		for _, r := range raw {
			row := map[string]*string{}
			for k, v := range r {
				switch v := v.(type) {
				case nil:
					row[k] = nil
				case string:
					row[k] = &v
				default:
					b, _ := json.Marshal(v)
					s := string(b)
					row[k] = &s
				}
			}
			rows = append(rows, row)
		}
		return rows
	}
	names := func(rows []map[string]*string) []string {
		var out []string
		for _, r := range rows {
			out = append(out, *r["name"])
		}
		return out
	}

	rows := lsJSON("--property", "os_distro=superos")
	if got := names(rows); !slices.Equal(got, []string{"superos-2024.1", "superos-2024.2"}) {
		t.Fatalf("--property os_distro=superos: %q", got)
	}
	for _, r := range rows {
		for _, k := range []string{"name", "id", "status", "size", "created_at"} {
			if _, ok := r[k]; !ok {
				t.Errorf("--json row lacks %s: %v", k, r)
			}
		}
		if *r["id"] != ids[*r["name"]] || *r["status"] != "queued" || r["size"] != nil {
			t.Errorf("--json row %v: id, status or size wrong (want %s, queued, null)", r, ids[*r["name"]])
		}
	}
	if got := names(lsJSON("-p", "os_distro=superos", "-p", "min_ram=1024")); !slices.Equal(got, []string{"superos-2024.2"}) {
		t.Errorf("two filters: %q", got)
	}
	if got := names(lsJSON("-p", "os_distro=a/b%c")); !slices.Equal(got, []string{"slashy"}) {
		t.Errorf("a value with / and %%: %q", got)
	}
	if got := lsJSON("-p", "os_distro=nothing"); len(got) != 0 {
		t.Errorf("no match: %v", got)
	}
	if got := names(lsJSON("--sort", "name:desc")); !slices.Equal(got, []string{"superos-2024.2", "superos-2024.1", "slashy", "hyperos-9"}) {
		t.Errorf("--sort name:desc: %q", got)
	}
	rows = lsJSON("-p", "os_distro=superos", "--column", "min_ram", "--sort", "min_ram:desc")
	if got := names(rows); !slices.Equal(got, []string{"superos-2024.2", "superos-2024.1"}) || *rows[0]["min_ram"] != "1024" {
		t.Errorf("--column min_ram --sort min_ram:desc: %q %v", got, rows)
	}

	table := run(t, binary, "ls", m.Mnt, "--property", "os_distro=superos", "--column", "os_distro")
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("table has %d lines, want 6 (rule, header, rule, 2 rows, rule):\n%s", len(lines), table)
	}
	if h := strings.Fields(strings.ReplaceAll(lines[1], "|", " ")); !slices.Equal(h, []string{"name", "id", "status", "size", "created_at", "os_distro"}) {
		t.Errorf("header %q", lines[1])
	}
	for i, n := range []string{"superos-2024.1", "superos-2024.2"} {
		if f := strings.Fields(strings.ReplaceAll(lines[3+i], "|", " ")); len(f) < 2 || f[0] != n || f[1] != ids[n] {
			t.Errorf("row %d = %q, want %s %s", i, lines[3+i], n, ids[n])
		}
	}
	if !strings.HasPrefix(lines[0], "+-") || lines[0] != lines[2] || lines[0] != lines[5] {
		t.Errorf("table rules:\n%s", table)
	}
	if r := execCmd(binary, "ls", m.Mnt, "--property", "novalue"); r.code != 2 {
		t.Errorf("imagefs ls --property novalue: %s, want exit 2", r)
	}
	if r := execCmd(binary, "ls", t.TempDir()); r.code != 1 {
		t.Errorf("imagefs ls on a directory that is not a mount: %s, want exit 1", r)
	}
}
