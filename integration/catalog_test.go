package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Tests of the one-pass listing (fs/catalog.go: MOUNTPOINT/.catalog/)
// that imagefs ls reads, of its JSON types, and of what ls -l and du cost
// on the views (fs/views.go, fs/viewcache.go).

// catalogNames parses catalog lines (one JSON object per image) and
// returns the names, checking that every line has an id.
func catalogNames(t *testing.T, out string) []string {
	t.Helper()
	var names []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]string
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("catalog line %q: %v", sc.Text(), err)
		}
		if rec["id"] == "" || rec["name"] == "" {
			t.Errorf("catalog line without id or name: %q", sc.Text())
		}
		names = append(names, rec["name"])
	}
	return names
}

// lsNames returns the names of imagefs ls --json output.
func lsNames(t *testing.T, out string) []string {
	t.Helper()
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("imagefs ls --json: %v\n%s", err, out)
	}
	var names []string
	for _, r := range rows {
		names = append(names, r["name"].(string))
	}
	return names
}

// only keeps the names that start with one of the prefixes.
func only(names []string, prefixes ...string) []string {
	var out []string
	for _, n := range names {
		for _, p := range prefixes {
			if strings.HasPrefix(n, p) {
				out = append(out, n)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestCatalogVisibility: the catalog files and imagefs ls, which reads
// them, show each user (root, and others through setpriv) the images the
// tree lists for them: another user's private image never, a shared one
// to its members, a community one to its owner only, a public one to all.
func TestCatalogVisibility(t *testing.T) {
	m := mount(t)
	requireTools(t, "setpriv", "ls", "cat")
	m.Args = []string{"--allow-other"}
	m.remount()
	chmodPathForOthers(t, m.Mnt)
	chmodPathForOthers(t, binary)

	const alice = "1001"
	for _, v := range []string{"private", "shared", "public", "community"} {
		mustAsUser(t, alice, `mkdir "$1" && echo superos > "$1/properties/os_distro"`, m.images("alice-"+v))
		if v == "public" {
			writeProp(t, m, "alice-"+v, "visibility", v) // root only, as in Glance
		} else {
			mustAsUser(t, alice, `echo "$2" > "$1/properties/visibility"`, m.images("alice-"+v), v)
		}
	}
	mustAsUser(t, alice, `printf '1002\n' > "$1"`, m.propFile("alice-shared", "members"))
	m.acceptAs(t, "1002", "alice-shared") // listed once the member accepts
	run(t, "mkdir", m.images("root-private"))
	writeProp(t, m, "root-private", "os_distro", "superos")
	writeProp(t, m, "root-private", "visibility", "private")

	all := []string{"alice-community", "alice-private", "alice-public", "alice-shared", "root-private"}
	want := map[string][]string{
		"0":    all,
		"1001": {"alice-community", "alice-private", "alice-public", "alice-shared"},
		"1002": {"alice-public", "alice-shared"},
		"1003": {"alice-public"},
	}
	view := filepath.Join(m.Mnt, "by-property", "os_distro", "superos")
	for _, uid := range []string{"0", "1001", "1002", "1003"} {
		as := func(script string, args ...string) string {
			if uid == "0" {
				return sh(t, script, args...)
			}
			return mustAsUser(t, uid, script, args...)
		}
		w := want[uid]
		tree := only(strings.Fields(as(`ls "$1"`, view)), "alice-", "root-")
		if !slices.Equal(tree, w) {
			t.Errorf("uid %s: ls by-property/os_distro/superos = %q, want %q", uid, tree, w)
		}
		got := only(catalogNames(t, as(`cat "$1"`, filepath.Join(m.Mnt, ".catalog", "by-property", "os_distro", "superos"))), "alice-", "root-")
		if !slices.Equal(got, w) {
			t.Errorf("uid %s: cat .catalog/by-property/os_distro/superos: %q, want %q", uid, got, w)
		}
		got = only(catalogNames(t, as(`cat "$1"`, filepath.Join(m.Mnt, ".catalog", "images"))), "alice-", "root-")
		if !slices.Equal(got, w) {
			t.Errorf("uid %s: cat .catalog/images: %q, want %q", uid, got, w)
		}
		got = only(lsNames(t, as(`"$1" ls "$2" --property os_distro=superos --json`, binary, m.Mnt)), "alice-", "root-")
		if !slices.Equal(got, w) {
			t.Errorf("uid %s: imagefs ls --property os_distro=superos: %q, want %q", uid, got, w)
		}
		got = only(lsNames(t, as(`"$1" ls "$2" --json`, binary, m.Mnt)), "alice-", "root-")
		if !slices.Equal(got, w) {
			t.Errorf("uid %s: imagefs ls: %q, want %q", uid, got, w)
		}
		// A view nobody has gives an empty file, as one the user does
		// not see: the lookup tells nothing.
		if out := as(`cat "$1"`, filepath.Join(m.Mnt, ".catalog", "by-property", "no_such_key", "x")); out != "" {
			t.Errorf("uid %s: a view of no image: %q", uid, out)
		}
	}

	// Not listed in the root: find, du and rsync of the mount skip it.
	if got := dirNames(t, m.Mnt); slices.Contains(got, ".catalog") {
		t.Errorf("ls -a MOUNTPOINT = %q lists .catalog", got)
	}
	// Read-only.
	if err := os.WriteFile(filepath.Join(m.Mnt, ".catalog", "images"), []byte("x"), 0o644); err == nil {
		t.Errorf("writing .catalog/images succeeded")
	}
}

// TestLsOnePass: imagefs ls reads the catalog file and nothing per image
// (it read each image's properties as xattrs, and each view link,
// before: 4-5 s for 5,000 matches).
func TestLsOnePass(t *testing.T) {
	requireTools(t, "strace")
	m := mount(t)
	const n = 20
	for i := range n {
		run(t, "mkdir", m.images(fmt.Sprintf("img-%02d", i)))
		writeProp(t, m, fmt.Sprintf("img-%02d", i), "os_distro", "superos")
	}
	trace := filepath.Join(t.TempDir(), "strace")
	out := run(t, "strace", "-f", "-qq", "-o", trace, "-e", "trace=%file,getxattr,lgetxattr,readlinkat,readlink",
		binary, "ls", m.Mnt, "--property", "os_distro=superos", "--column", "min_ram", "--json")
	if got := lsNames(t, out); len(got) != n {
		t.Fatalf("imagefs ls found %d images, want %d", len(got), n)
	}
	calls := 0
	for _, line := range strings.Split(string(readFile(trace)), "\n") {
		if strings.Contains(line, m.Mnt) {
			calls++
			if strings.Contains(line, "xattr") || strings.Contains(line, "readlink") || strings.Contains(line, "/by-id/") {
				t.Errorf("imagefs ls made a per-image call: %s", line)
			}
		}
	}
	if calls > 4 {
		t.Errorf("imagefs ls made %d calls on paths of the mount for %d images, want a few:\n%s", calls, n, readFile(trace))
	}
}

// TestLsJSONTypes: in imagefs ls --json, size, virtual_size, min_ram and
// min_disk are numbers, protected and os_hidden booleans and tags a list,
// as in Glance's image JSON, and a missing one is null (tags: []). (Every
// one of them is typed in the store now, os_hidden and tags included: no
// value of them is anything else.)
func TestLsJSONTypes(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 2*mib, "fixed")
	run(t, "mkdir", m.images("typed"))
	run(t, "cp", fx.Path, m.dataFile("typed"))
	writeProp(t, m, "typed", "min_ram", "1024")
	writeProp(t, m, "typed", "protected", "true")
	writeProp(t, m, "typed", "os_hidden", "false")
	writeProp(t, m, "typed", "tags", "x86\nlts")
	run(t, "mkdir", m.images("odd"))

	out := run(t, binary, "ls", m.Mnt, "--json", "--column", "virtual_size", "--column", "min_ram",
		"--column", "min_disk", "--column", "protected", "--column", "os_hidden", "--column", "tags")
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2:\n%s", len(rows), out)
	}
	odd, typed := rows[0], rows[1]
	wantJSON := map[string]any{
		"name": "typed", "size": float64(fileSize(t, fx.Path)), "virtual_size": float64(fx.VirtualSize),
		"min_ram": float64(1024), "min_disk": float64(0), "protected": true, "os_hidden": false,
	}
	for k, w := range wantJSON {
		if typed[k] != w {
			t.Errorf("typed: %q = %#v (%T), want %#v (%T)", k, typed[k], typed[k], w, w)
		}
	}
	if tags, _ := json.Marshal(typed["tags"]); string(tags) != `["lts","x86"]` {
		t.Errorf("typed: tags %s, want [\"lts\",\"x86\"]", tags)
	}
	if odd["size"] != nil || odd["virtual_size"] != nil || odd["os_hidden"] != false || odd["protected"] != false {
		t.Errorf("odd: size %#v, virtual_size %#v, os_hidden %#v, protected %#v; want null, null, false, false",
			odd["size"], odd["virtual_size"], odd["os_hidden"], odd["protected"])
	}
	if tags, ok := odd["tags"].([]any); !ok || len(tags) != 0 {
		t.Errorf("odd: tags %#v, want []", odd["tags"])
	}
	if !strings.Contains(out, `"min_ram": 1024`) || !strings.Contains(out, `"protected": true`) {
		t.Errorf("numbers and booleans are not bare in the output:\n%s", out)
	}
}

// TestViewListingCost: ls -l of a view answers from what READDIRPLUS
// gave: run again, it asks nothing per link (no LOOKUP, GETATTR,
// GETXATTR or READLINK; it asked 9 LOOKUPs, 7 GETATTRs, a GETXATTR and a
// READLINK per link); du counts no blocks for the links (it counted
// 4 KiB each). A change still shows at once (TestViewsFollowProperties).
func TestViewListingCost(t *testing.T) {
	requireTools(t, "ls", "du")
	m := mount(t)
	m.Args = []string{"--metrics-addr", "127.0.0.1:0"}
	m.remount()
	addr := metricsAddrOf(t, m.log)
	const n = 40
	for i := range n {
		run(t, "mkdir", m.images(fmt.Sprintf("img-%02d", i)))
		writeProp(t, m, fmt.Sprintf("img-%02d", i), "os_distro", "superos")
	}
	requests := func(ops ...string) (sum float64) {
		got := scrape(t, addr)
		for _, op := range ops {
			sum += got[fmt.Sprintf(`imagefs_fuse_requests_total{op=%q}`, op)]
		}
		return sum
	}
	view := filepath.Join(m.Mnt, "by-property", "os_distro", "superos")
	perLink := []string{"lookup", "getattr", "getxattr", "listxattr", "readlink"}
	if lines := strings.Count(sh(t, `ls -l "$1"`, view), " -> ../../../by-id/"); lines != n {
		t.Fatalf("ls -l of the view shows %d links, want %d", lines, n)
	}
	before := requests(perLink...)
	sh(t, `ls -l "$1" >/dev/null`, view)
	if got := requests(perLink...) - before; got >= n/4 {
		t.Errorf("ls -l of a view of %d links, again: %v lookup/getattr/getxattr/readlink requests, want fewer than %d", n, got, n/4)
	}
	if out := strings.Fields(sh(t, `du -s -B1 "$1"`, filepath.Join(m.Mnt, "by-property"))); len(out) == 0 || out[0] != "0" {
		t.Errorf("du -s by-property/ = %q, want 0 bytes (links have no blocks)", out)
	}
}

// TestViewCacheAllowOther: with --allow-other the kernel, which shares
// cached entries between users, keeps the view entries of public images
// only (every user sees them), and drops them when the image stops being
// public; a private image's entries, looked up by root or its owner, are
// never served to another user from the kernel's cache.
func TestViewCacheAllowOther(t *testing.T) {
	m := mount(t)
	requireTools(t, "setpriv", "ls", "stat")
	m.Args = []string{"--allow-other"}
	m.remount()
	chmodPathForOthers(t, m.Mnt)
	const alice, bob = "1001", "1002"
	mustAsUser(t, alice, `mkdir "$1" && echo cachedos > "$1/properties/os_distro"`, m.images("pub"))
	mustAsUser(t, alice, `mkdir "$1" && echo secretos > "$1/properties/os_distro"`, m.images("priv"))
	writeProp(t, m, "pub", "visibility", "public") // root only
	mustAsUser(t, alice, `echo private > "$1"`, m.propFile("priv", "visibility"))

	view := filepath.Join(m.Mnt, "by-property", "os_distro")
	hidden := func(uid string, paths ...string) {
		t.Helper()
		for _, p := range paths {
			if r := asUser(uid, `stat "$1"`, p); r.err == nil {
				t.Errorf("uid %s: stat %s succeeded, want ENOENT", uid, p)
			}
		}
	}
	// Root and the owner look the private image's paths up (ls -l: every
	// entry and link); the other user still finds none of them.
	sh(t, `ls -lR "$1" >/dev/null`, view)
	mustAsUser(t, alice, `ls -lR "$1" >/dev/null`, view)
	hidden(bob, filepath.Join(view, "secretos"), filepath.Join(view, "secretos", "priv"))
	if got := strings.Fields(mustAsUser(t, bob, `ls "$1"`, view)); !slices.Equal(got, []string{"cachedos"}) {
		t.Errorf("uid %s: ls by-property/os_distro = %q, want [cachedos]", bob, got)
	}

	// The public image: every user reads its link.
	link := filepath.Join(view, "cachedos", "pub")
	for _, uid := range []string{bob, alice} {
		if out := mustAsUser(t, uid, `ls -l "$1"`, link); !strings.Contains(out, "-> ../../../by-id/") {
			t.Errorf("uid %s: ls -l %s = %q", uid, link, out)
		}
	}
	// It stops being public: gone for the other user at once, from the
	// link up to the key, while the owner still sees it.
	mustAsUser(t, alice, `echo private > "$1"`, m.propFile("pub", "visibility"))
	hidden(bob, link, filepath.Join(view, "cachedos"), view)
	mustAsUser(t, alice, `stat "$1" >/dev/null`, link)
}
